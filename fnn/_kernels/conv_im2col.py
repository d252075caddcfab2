"""im2col / col2im convolution for any stride, padding, dilation and groups.

The input is zero-padded explicitly; a strided read-only view (N, G, C/G, kh, kw, Ho, Wo) of it
is copied block by block (batch blocks sized for the L2 cache, run on fnn.parallel's threads)
into columns and multiplied by the kernel of each group (one batched matrix product). Backward
adds the column gradients back with one strided addition per kernel offset (kh*kw of them).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import parallel
from . import batch_block, pool
from .geometry import Window


def zero_pad(x: np.ndarray, pads: tuple[int, int]) -> np.ndarray:
    """x (N, C, H, W) with ``pads`` = (ph, pw) zeros on both sides of H and W (x itself if
    none)."""
    return pool.pad(x, pads, 0.0)


def windows(xpad: np.ndarray, groups: int, k: tuple[int, int], out: tuple[int, int],
            stride: tuple[int, int], dilation: tuple[int, int]) -> np.ndarray:
    """Read-only view (N, G, C/G, kh, kw, Ho, Wo) of a zero-padded input (N, C, Hp, Wp):
    win[n, g, c, i, j, r, s] = xpad[n, g*C/G + c, r*sh + i*dh, s*sw + j*dw]."""
    n, c = xpad.shape[:2]
    sn, sc, sh, sw = xpad.strides
    return as_strided(xpad, (n, groups, c // groups, *k, *out),
                      (sn, sc * (c // groups), sc, dilation[0] * sh, dilation[1] * sw,
                       stride[0] * sh, stride[1] * sw), writeable=False)


def forward(x: np.ndarray, W: np.ndarray, window: Window, groups: int) -> np.ndarray:
    """y[n, o, r, s] = sum over the c of o's group and (i, j) of
    W[o, c, i, j] xpad[n, c, r*sh + i*dh, s*sw + j*dw] (no bias): x (N, C, H, W), W (O, C/G, kh,
    kw) in x's dtype -> y (N, O, Ho, Wo); the output size must be positive."""
    n, c, h, w = x.shape
    k, G = window.kernel, groups
    out = window.out_sizes((h, w))
    win = windows(zero_pad(x, window.padding), G, k, out, window.stride, window.dilation)
    kk, p = c // G * k[0] * k[1], out[0] * out[1]
    W3 = W.reshape(G, -1, kk)
    y = np.empty((n, G, W3.shape[1], p), dtype=x.dtype)
    m = batch_block(n, c * k[0] * k[1] * p * x.itemsize)
    cols = parallel.per_thread(lambda: np.empty((m, *win.shape[1:]), dtype=x.dtype))

    def block(sl: slice) -> None:
        cb = cols()[:sl.stop - sl.start]
        np.copyto(cb, win[sl])
        np.matmul(W3, cb.reshape(-1, G, kk, p), out=y[sl])

    parallel.run(block, parallel.blocks(n, m), blas=True)
    return y.reshape(n, W.shape[0], *out)


def backward(x: np.ndarray, W: np.ndarray, dy: np.ndarray, window: Window, groups: int,
             need_dx: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    """(dx, dW) of :func:`forward` for the output gradient dy (N, O, Ho, Wo); x, W and dy in
    one dtype. dW = sum_n dy cols^T per group (the batch blocks' partials added in block
    order), dx = col2im(W^T dy), None if not ``need_dx``."""
    n, c, h, w = x.shape
    (ph, pw), k, G = window.padding, window.kernel, groups
    (sh, sw), (dh, dw) = window.stride, window.dilation
    out = dy.shape[2:]
    dt = dy.dtype
    win = windows(zero_pad(x, (ph, pw)), G, k, out, (sh, sw), (dh, dw))
    kk, p = c // G * k[0] * k[1], out[0] * out[1]
    W3T = W.reshape(G, -1, kk).transpose(0, 2, 1)
    dy4 = dy.reshape(n, G, W.shape[0] // G, p)
    m = batch_block(n, c * k[0] * k[1] * p * np.dtype(dt).itemsize)
    buffers = parallel.per_thread(lambda: (
        np.empty((m, *win.shape[1:]), dtype=dt), np.empty((m, G, kk, p), dtype=dt),
        np.empty((m, G, dy4.shape[2], kk), dtype=dt)))
    dxpad = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dt) if need_dx else None

    def block(sl: slice) -> np.ndarray:
        cols, dcols, part = buffers()
        nb = sl.stop - sl.start
        cb = cols[:nb]
        np.copyto(cb, win[sl])
        cb = cb.reshape(nb, G, kk, p)
        dW = np.matmul(dy4[sl], cb.transpose(0, 1, 3, 2), out=part[:nb]).sum(axis=0)
        if need_dx:
            dc = np.matmul(W3T, dy4[sl], out=dcols[:nb]).reshape(nb, c, *k, *out)
            # col2im: window offset (i, j) of output pixel (r, q) read input pixel
            # (r*sh + i*dh, q*sw + j*dw); add each offset's gradients back there
            for i in range(k[0]):
                for j in range(k[1]):
                    dxpad[sl, :, i * dh:i * dh + sh * (out[0] - 1) + 1:sh,
                          j * dw:j * dw + sw * (out[1] - 1) + 1:sw] += dc[:, :, i, j]
        return dW

    parts = parallel.run(block, parallel.blocks(n, m), blas=True)
    dW = parallel.sum_in_order(parts, np.zeros((G, dy4.shape[2], kk), dtype=dt))
    if not need_dx:
        return None, dW.reshape(W.shape)
    dx = dxpad[:, :, ph:ph + h, pw:pw + w]
    return np.ascontiguousarray(dx) if ph or pw else dx, dW.reshape(W.shape)
