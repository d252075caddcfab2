"""Pooling kernels on (N, C, H, W) arrays: window taps, first-maximum offsets, the tuned
non-overlapping max pool, and the general max and average pools.

Every loop runs over the kh*kw window offsets only, on whole arrays ("taps": for one offset, the
values of every window at once). No masked writes in the common path: with the random masks of
real data they are several times slower than branch-free arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import parallel
from .geometry import Window

Taps = list[tuple[slice, slice]]


def taps(window: Window, out: tuple[int, int]) -> Taps:
    """For each window offset (i, j), row-major: the slices of the padded input that offset
    reads for all windows at once (rows i, i + sh, ..., columns likewise)."""
    (kh, kw), (sh, sw) = window.kernel, window.stride
    return [(slice(i, i + sh * (out[0] - 1) + 1, sh), slice(j, j + sw * (out[1] - 1) + 1, sw))
            for i in range(kh) for j in range(kw)]


def pad(x: np.ndarray, p: tuple[int, int], value: float) -> np.ndarray:
    """x padded by p = (ph, pw) entries of ``value`` on both sides of H and W (x if none)."""
    if p == (0, 0):
        return x
    n, c, h, w = x.shape
    # a filled array and one copy: the same values as np.pad, and faster (1.2x to 1.7x here)
    xpad = np.full((n, c, h + 2 * p[0], w + 2 * p[1]), value, dtype=x.dtype)
    xpad[:, :, p[0]:p[0] + h, p[1]:p[1] + w] = x
    return xpad


def unpad(dxpad: np.ndarray, p: tuple[int, int], x_shape: tuple) -> np.ndarray:
    """The inverse of :func:`pad` (a contiguous copy of the middle, or dxpad if no padding)."""
    if p == (0, 0):
        return dxpad
    return np.ascontiguousarray(dxpad[:, :, p[0]:p[0] + x_shape[2], p[1]:p[1] + x_shape[3]])


def max_offsets(y: np.ndarray, window_taps: Sequence[np.ndarray]) -> np.ndarray:
    """The offset (row-major index in the window) of each window's maximum, given y (the
    maxima) and the window's values at every offset, in order: the first maximum on ties; in a
    window holding NaN (then y is NaN) the last NaN, as PyTorch. int8 when the offsets fit."""
    n = len(window_taps)
    argmax = np.zeros(y.shape, dtype=np.int8 if n <= 127 else np.int32)
    # the first maximum = the number of leading offsets that are not maximal
    leading = np.ones(y.shape, dtype=bool)
    not_max = np.empty(y.shape, dtype=bool)
    for tap in window_taps[:-1]:
        np.not_equal(tap, y, out=not_max)
        np.logical_and(leading, not_max, out=leading)
        argmax += leading
    # NaN != NaN: a NaN window came out as n - 1 above. One sum detects any NaN in y (it may
    # also flag inf - inf, harmless: the fix below is exact either way) far faster than isnan.
    if np.isnan(np.sum(y)):
        for o, tap in enumerate(window_taps):
            argmax[np.isnan(tap)] = o
    return argmax


# --- max pool -------------------------------------------------------------------------------

def tiles(window: Window, x_shape: tuple) -> bool:
    """Square kernel k, stride k, no padding, H and W divisible by k: non-overlapping windows
    that tile the image, computed by :func:`max_tiled`."""
    (kh, kw), h, w = window.kernel, *x_shape[2:]
    return (kh == kw and window.padding == (0, 0) and window.stride == (kh, kw)
            and h % kh == 0 and w % kh == 0)


def _tile_view(x: np.ndarray, k: int) -> np.ndarray:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // k, k, w // k, k)


def _tile_max(x: np.ndarray, k: int) -> np.ndarray:
    """Window maxima in two passes: over the k columns of each window, then its k rows."""
    if k == 1:
        return x.copy()
    rows = np.maximum(x[..., 0::k], x[..., 1::k])  # (N, C, H, W/k)
    for j in range(2, k):
        np.maximum(rows, x[..., j::k], out=rows)
    y = np.maximum(rows[:, :, 0::k], rows[:, :, 1::k])
    for i in range(2, k):
        np.maximum(y, rows[:, :, i::k], out=y)
    return y


def max_tiled(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, argmax) of the max pool with kernel = stride = k on x with H, W divisible by k."""
    y = _tile_max(x, k)
    xw = _tile_view(x, k)
    return y, max_offsets(y, [xw[:, :, :, o // k, :, o % k] for o in range(k * k)])


def max_tiled_backward(argmax: np.ndarray, dy: np.ndarray, x_shape: tuple, k: int
                       ) -> np.ndarray:
    """dx of :func:`max_tiled`: dy at each window's maximum, 0 elsewhere (written, not
    added: the windows do not overlap)."""
    dx = np.empty(x_shape, dtype=dy.dtype)
    dxw = _tile_view(dx, k)
    is_max = np.empty(dy.shape, dtype=bool)
    for o in range(k * k):
        np.equal(argmax, o, out=is_max)
        np.multiply(dy, is_max, out=dxw[:, :, :, o // k, :, o % k])
    return dx


def max_general(x: np.ndarray, window: Window, out: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray]:
    """(y, argmax) of the max pool of any window (padding -inf: it never wins) with output size
    ``out``."""
    xpad = pad(x, window.padding, -np.inf)
    values = [xpad[:, :, r, c] for r, c in taps(window, out)]
    y = values[0].copy()
    for tap in values[1:]:
        np.maximum(y, tap, out=y)
    return y, max_offsets(y, values)


def max_general_backward(argmax: np.ndarray, dy: np.ndarray, x_shape: tuple, window: Window
                         ) -> np.ndarray:
    """dx of :func:`max_general`: dy added at each window's maximum."""
    n, c, h, w = x_shape
    p = window.padding
    dxpad = np.zeros((n, c, h + 2 * p[0], w + 2 * p[1]), dtype=dy.dtype)
    is_max = np.empty(dy.shape, dtype=bool)
    for o, (r, col) in enumerate(taps(window, dy.shape[2:])):
        np.equal(argmax, o, out=is_max)
        dxpad[:, :, r, col] += dy * is_max  # overlapping windows add up
    return unpad(dxpad, p, x_shape)


# --- average pool ---------------------------------------------------------------------------

def avg(x: np.ndarray, window: Window, out: tuple[int, int]) -> np.ndarray:
    """Mean of each window of the zero-padded x, divided by kh*kw (padding included)."""
    xpad = pad(x, window.padding, 0.0)
    window_taps = taps(window, out)
    y = xpad[:, :, window_taps[0][0], window_taps[0][1]].copy()
    for r, c in window_taps[1:]:
        y += xpad[:, :, r, c]
    y /= window.kernel[0] * window.kernel[1]
    return y


def avg_backward(dy: np.ndarray, x_shape: tuple, window: Window) -> np.ndarray:
    """dx of :func:`avg`: dy / (kh*kw) added to every input of each window."""
    n, c, h, w = x_shape
    (kh, kw), p = window.kernel, window.padding
    share = dy / (kh * kw)
    dxpad = np.zeros((n, c, h + 2 * p[0], w + 2 * p[1]), dtype=dy.dtype)
    for r, col in taps(window, dy.shape[2:]):
        dxpad[:, :, r, col] += share
    return unpad(dxpad, p, x_shape)


# --- the pools on fixed blocks of images (fnn.parallel's threads) ----------------------------

# Input elements per block of images: the fastest of 2^16-2^19 on the 2-core test machine, with
# 1 and 2 threads, float32 and float64, for five pools (2^17 took 1.05-1.3x as long; 2^19 left
# the W2 step's second pool in one block; docs/performance.md).
IMAGE_BLOCK = 1 << 18


def by_images(fn: Callable[..., Any], x_shape: tuple, *arrays: np.ndarray) -> Any:
    """``fn(shape, *arrays)`` for a pool of an input of ``x_shape`` (N, C, H, W), ``arrays`` of
    shape (N, C, ...) (every image (n, c) is pooled on its own): computed on fixed blocks of the
    N*C images, each seen as (images, 1, ...) with ``shape`` = (images, 1, H, W), and the results
    (an array or a tuple) joined back into (N, C, ...). The blocks depend on x_shape only, and
    each image's values do not depend on its block: the same bits as one call on the whole.
    Small inputs, and arrays that are not C-contiguous, are passed whole."""
    n, c, h, w = x_shape
    if n * c * h * w < parallel.MIN_SIZE or not all(a.flags.c_contiguous for a in arrays):
        return fn(x_shape, *arrays)
    res = parallel.map_rows(lambda *bs: fn((len(bs[0]), 1, h, w), *bs),
                            *(a.reshape(n * c, 1, *a.shape[2:]) for a in arrays), min_size=0,
                            rows=max(1, IMAGE_BLOCK // max(1, h * w)), per_block=True)
    if isinstance(res, tuple):
        return tuple(r.reshape(n, c, *r.shape[2:]) for r in res)
    return res.reshape(n, c, *res.shape[2:])


def max_pool(x: np.ndarray, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """(y, argmax) of the max pool of x (N, C, H, W): :func:`max_tiled` for windows that tile
    the image, else :func:`max_general`, on blocks of images (:func:`by_images`)."""
    if tiles(window, x.shape):
        return by_images(lambda shape, xb: max_tiled(xb, window.kernel[0]), x.shape, x)
    out = window.out_sizes(x.shape[2:])
    return by_images(lambda shape, xb: max_general(xb, window, out), x.shape, x)


def max_pool_backward(argmax: np.ndarray, dy: np.ndarray, x_shape: tuple, window: Window
                      ) -> np.ndarray:
    """dx of :func:`max_pool`, on blocks of images."""
    if tiles(window, x_shape):
        k = window.kernel[0]
        return by_images(lambda shape, a, d: max_tiled_backward(a, d, shape, k), x_shape,
                         argmax, dy)
    return by_images(lambda shape, a, d: max_general_backward(a, d, shape, window), x_shape,
                     argmax, dy)


def avg_pool(x: np.ndarray, window: Window) -> np.ndarray:
    """:func:`avg` on blocks of images."""
    out = window.out_sizes(x.shape[2:])
    return by_images(lambda shape, xb: avg(xb, window, out), x.shape, x)


def avg_pool_backward(dy: np.ndarray, x_shape: tuple, window: Window) -> np.ndarray:
    """:func:`avg_backward` on blocks of images."""
    return by_images(lambda shape, d: avg_backward(d, shape, window), x_shape, dy)
