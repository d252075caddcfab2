"""Pooling over windows: max and average (kernel, stride, padding as PyTorch), and a global
average over the image."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs
import numpy as np

from .conv import check_out_size, int_or_pair_field, out_size, pair
from .core import Layer, as_float_array, expect_shape

__all__ = ["MaxPool2d", "MaxPoolCache", "AvgPool2d", "GlobalAvgPool2d", "PoolCache"]


@attrs.frozen
class MaxPoolCache:
    argmax: np.ndarray  # (N, C, Ho, Wo) int8/int32: offset i*kw + j of each window's first max
    x_shape: tuple
    dtype: np.dtype
    state: Any = ()


@attrs.frozen
class PoolCache:
    x_shape: tuple
    state: Any = ()


def _first_max(y: np.ndarray, taps: Iterable[np.ndarray], n_offsets: int) -> np.ndarray:
    """The offset of the first maximum of each window in row-major order, given y (the maxima)
    and the window's values at its ``n_offsets`` offsets but the last, in order: the number of
    leading offsets that are not maximal."""
    argmax = np.zeros(y.shape, dtype=np.int8 if n_offsets <= 127 else np.int32)
    leading = np.ones(y.shape, dtype=bool)
    not_max = np.empty(y.shape, dtype=bool)
    for tap in taps:
        np.not_equal(tap, y, out=not_max)
        np.logical_and(leading, not_max, out=leading)
        argmax += leading
    return argmax


@attrs.frozen(repr=False)
class _Pool2d(Layer):
    """Windows of ``kernel_size`` every ``stride`` (default: the kernel) over the input padded
    by ``padding`` on both sides (at most half the kernel, as PyTorch), each an int or a pair
    (rows, columns). Output size (PyTorch's floor rule): Ho = (H + 2p - kh) // s + 1."""

    kernel_size: int | tuple[int, int] = int_or_pair_field(attrs.NOTHING, 1, kw_only=False)
    stride: int | tuple[int, int] | None = int_or_pair_field(None, 1, kw_only=False)
    padding: int | tuple[int, int] = int_or_pair_field(0, 0, kw_only=False)

    def __attrs_post_init__(self) -> None:
        if any(2 * p > k for p, k in zip(pair(self.padding), pair(self.kernel_size))):
            raise ValueError(f"{type(self).__name__}: padding must be at most half the kernel, "
                             f"got padding={self.padding!r}, kernel_size={self.kernel_size!r}")

    def _geometry(self, x_shape: tuple) -> tuple:
        """(kernel, stride, padding, output size), each a pair; ValueError if no window fits."""
        k, p = pair(self.kernel_size), pair(self.padding)
        s = k if self.stride is None else pair(self.stride)
        out = tuple(out_size(*a) for a in zip(x_shape[2:], k, s, p))
        check_out_size(self, x_shape, out)
        return k, s, p, out

    def _padded(self, x: np.ndarray, p: tuple[int, int], value: float) -> np.ndarray:
        if p == (0, 0):
            return x
        return np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])), constant_values=value)


def _taps(xpad: np.ndarray, k: tuple[int, int], s: tuple[int, int], out: tuple[int, int]
          ) -> list[tuple[slice, slice]]:
    """For each window offset (i, j), row-major: the slices of the padded input that offset
    reads for all windows at once (rows i, i + sh, ..., columns likewise)."""
    return [(slice(i, i + s[0] * (out[0] - 1) + 1, s[0]), slice(j, j + s[1] * (out[1] - 1) + 1,
                                                                s[1]))
            for i in range(k[0]) for j in range(k[1])]


def _unpad(dxpad: np.ndarray, p: tuple[int, int], x_shape: tuple) -> np.ndarray:
    if p == (0, 0):
        return dxpad
    return np.ascontiguousarray(dxpad[:, :, p[0]:p[0] + x_shape[2], p[1]:p[1] + x_shape[3]])


@attrs.frozen(repr=False)
class MaxPool2d(_Pool2d):
    """y[n, c, r, s] = max of the window x[n, c, r*sh - ph : r*sh - ph + kh, ...] (padding
    is -inf: it never wins).

    Classic configuration (``MaxPool2d(k)``: stride = kernel, no padding): H and W must be
    divisible by k, else ValueError; y (N, C, H/k, W/k). With an explicit stride or padding,
    PyTorch's floor rule: windows that do not fit are dropped. The gradient goes to the
    window's maximum; on ties to the first one in row-major order (as PyTorch); overlapping
    windows add their gradients. The cache holds the offset of each maximum. Forward and
    backward loop over the kh*kw window offsets only, on whole arrays, and use no masked writes
    (with the random masks of real data they are several times slower than branch-free
    arithmetic).
    """

    def _windows(self, x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        k = pair(self.kernel_size)[0]
        return x.reshape(n, c, h // k, k, w // k, k)

    def _classic(self, x_shape: tuple) -> bool:
        """Square kernel k, stride k, no padding, H and W divisible by k: non-overlapping
        windows that tile the image, computed by the tuned kernel."""
        k = pair(self.kernel_size)
        return (k[0] == k[1] and pair(self.padding) == (0, 0)
                and (self.stride is None or pair(self.stride) == k)
                and x_shape[2] % k[0] == 0 and x_shape[3] % k[0] == 0)

    def forward(self, params: Any, state: Any, x: np.ndarray
                ) -> tuple[np.ndarray, MaxPoolCache]:
        x = as_float_array(self, x)
        expect_shape(self, x, ("N", "C", "H", "W"))
        kh, kw = pair(self.kernel_size)
        if self.stride is None and pair(self.padding) == (0, 0) and (x.shape[2] % kh
                                                                    or x.shape[3] % kw):
            size = kh if kh == kw else f"{kh} (H) and {kw} (W)"
            raise ValueError(f"{self!r}: expected input of shape (N, C, H, W) with H and W "
                             f"divisible by {size}, got shape {tuple(x.shape)}")
        if not self._classic(x.shape):
            return self._forward_general(state, x)
        k = kh
        y = self._max(x)
        xw = self._windows(x)
        argmax = _first_max(y, (xw[:, :, :, o // k, :, o % k] for o in range(k * k - 1)), k * k)
        return y, MaxPoolCache(argmax=argmax, x_shape=x.shape, dtype=x.dtype, state=state)

    def _forward_general(self, state: Any, x: np.ndarray) -> tuple[np.ndarray, MaxPoolCache]:
        k, s, p, out = self._geometry(x.shape)
        xpad = self._padded(x, p, -np.inf)
        taps = [xpad[:, :, r, c] for r, c in _taps(xpad, k, s, out)]
        y = taps[0].copy()
        for tap in taps[1:]:
            np.maximum(y, tap, out=y)
        argmax = _first_max(y, taps[:-1], len(taps))
        return y, MaxPoolCache(argmax=argmax, x_shape=x.shape, dtype=x.dtype, state=state)

    def _max(self, x: np.ndarray) -> np.ndarray:
        """Window maxima in two passes: over the k columns of each window, then its k rows."""
        k = pair(self.kernel_size)[0]
        if k == 1:
            return x.copy()
        rows = np.maximum(x[..., 0::k], x[..., 1::k])  # (N, C, H, W/k)
        for j in range(2, k):
            np.maximum(rows, x[..., j::k], out=rows)
        y = np.maximum(rows[:, :, 0::k], rows[:, :, 1::k])
        for i in range(2, k):
            np.maximum(y, rows[:, :, i::k], out=y)
        return y

    def backward(self, params: Any, cache: MaxPoolCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, tuple]:
        n, c, h, w = cache.x_shape
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, (n, c, *cache.argmax.shape[2:]), "gradient")
        if not self._classic(cache.x_shape):
            return self._backward_general(cache, dy), ()
        k = pair(self.kernel_size)[0]
        dx = np.empty(cache.x_shape, dtype=dy.dtype)
        dxw = self._windows(dx)
        is_max = np.empty(dy.shape, dtype=bool)
        for o in range(k * k):
            np.equal(cache.argmax, o, out=is_max)
            np.multiply(dy, is_max, out=dxw[:, :, :, o // k, :, o % k])
        return dx, ()

    def _backward_general(self, cache: MaxPoolCache, dy: np.ndarray) -> np.ndarray:
        k, s, p, out = self._geometry(cache.x_shape)
        n, c, h, w = cache.x_shape
        dxpad = np.zeros((n, c, h + 2 * p[0], w + 2 * p[1]), dtype=dy.dtype)
        is_max = np.empty(dy.shape, dtype=bool)
        for o, (r, col) in enumerate(_taps(dxpad, k, s, out)):
            np.equal(cache.argmax, o, out=is_max)
            dxpad[:, :, r, col] += dy * is_max  # overlapping windows add up
        return _unpad(dxpad, p, cache.x_shape)


@attrs.frozen(repr=False)
class AvgPool2d(_Pool2d):
    """y[n, c, r, s] = the mean of the window x[n, c, r*sh - ph : r*sh - ph + kh, ...] of the
    zero-padded input, divided by kh*kw also where it overlaps the padding (PyTorch's
    count_include_pad=True). Stride defaults to the kernel; windows that do not fit are
    dropped (floor rule, no divisibility required). dx: dy/(kh*kw) added to every input of each
    window. The cache holds x's shape only."""

    def forward(self, params: Any, state: Any, x: np.ndarray) -> tuple[np.ndarray, PoolCache]:
        x = as_float_array(self, x)
        expect_shape(self, x, ("N", "C", "H", "W"))
        k, s, p, out = self._geometry(x.shape)
        xpad = self._padded(x, p, 0.0)
        taps = _taps(xpad, k, s, out)
        y = xpad[:, :, taps[0][0], taps[0][1]].copy()
        for r, c in taps[1:]:
            y += xpad[:, :, r, c]
        y /= k[0] * k[1]
        return y, PoolCache(x_shape=x.shape, state=state)

    def backward(self, params: Any, cache: PoolCache, dy: np.ndarray) -> tuple[np.ndarray, tuple]:
        n, c, h, w = cache.x_shape
        k, s, p, out = self._geometry(cache.x_shape)
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, (n, c, *out), "gradient")
        share = dy / (k[0] * k[1])
        dxpad = np.zeros((n, c, h + 2 * p[0], w + 2 * p[1]), dtype=dy.dtype)
        for r, col in _taps(dxpad, k, s, out):
            dxpad[:, :, r, col] += share
        return _unpad(dxpad, p, cache.x_shape), ()


@attrs.frozen(repr=False)
class GlobalAvgPool2d(Layer):
    """y[n, c] = mean over (h, w) of x[n, c, h, w]: (N, C, H, W) -> (N, C) (PyTorch:
    adaptive_avg_pool2d(x, 1).flatten(1)). dx = dy/(H*W) at every pixel. The cache holds x's
    shape only."""

    def forward(self, params: Any, state: Any, x: np.ndarray) -> tuple[np.ndarray, PoolCache]:
        x = as_float_array(self, x)
        expect_shape(self, x, ("N", "C", "H", "W"))
        return x.mean(axis=(2, 3)), PoolCache(x_shape=x.shape, state=state)

    def backward(self, params: Any, cache: PoolCache, dy: np.ndarray) -> tuple[np.ndarray, tuple]:
        n, c, h, w = cache.x_shape
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, (n, c), "gradient")
        dx = np.empty(cache.x_shape, dtype=dy.dtype)
        dx[...] = (dy / (h * w))[:, :, None, None]
        return dx, ()
