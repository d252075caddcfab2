"""The tuned kernel of the classic convolution: stride 1, dilation 1, groups 1, a square odd
kernel k padded by p = k // 2 on every side (see docs/performance.md).

Each input channel image is stored flattened and zero-padded by g = p*W + p elements at both
ends ("flat padding"). A kernel offset (i, j) is then a flat shift d = (i - p)*W + (j - p), so
the k*k shifted copies of the input are one strided view; only the columns where a shift wraps
across an image row need zeroing. The batch is processed in blocks whose column buffer fits in
the L2 cache: per block one strided copy (im2col) and one batched matrix product per pass, no
loop over samples or channels; the blocks run on fnn.parallel's threads (BLAS at one thread
each). The input gradient adds the k*k shifted column gradients with
one reduction over a strided view (col2im without scatter).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import parallel
from . import batch_block


def flat_pad(x: np.ndarray, g: int) -> np.ndarray:
    """(N, C, H, W) -> (N, C, g + H*W + g): each channel image flattened between zero margins
    of g elements."""
    n, c, h, w = x.shape
    xpad = np.zeros((n, c, h * w + 2 * g), dtype=x.dtype)
    xpad[:, :, g:g + h * w] = x.reshape(n, c, h * w)
    return xpad


def windows(xpad: np.ndarray, k: int, w: int, hw: int) -> np.ndarray:
    """Read-only view (N, C, k, k, H*W) of a flat-padded input:
    win[n, c, i, j, q] = xpad[n, c, i*w + j + q] = x[n, c, r + i - p, s + j - p] for q = r*w + s
    (a wrapped column where s + j - p falls outside [0, w) still needs zeroing)."""
    sn, sc, e = xpad.strides
    return as_strided(xpad, xpad.shape[:2] + (k, k, hw), (sn, sc, w * e, e, e), writeable=False)


def zero_wrapped(a: np.ndarray, k: int, h: int, w: int) -> None:
    """Zero a[..., i, j, q] (shape (m, C, k, k, h*w)) where column s + j - p of q = r*w + s lies
    outside the image: there a flat shift reads the neighbouring row, not the zero padding."""
    p = k // 2
    a6 = a.reshape(a.shape[:4] + (h, w))
    for j in range(k):
        if j < p:
            a6[:, :, :, j, :, :p - j] = 0
        elif j > p:
            a6[:, :, :, j, :, max(0, w - (j - p)):] = 0


def im2col(win: np.ndarray, out: np.ndarray, k: int, h: int, w: int) -> np.ndarray:
    """Columns of one block into ``out`` (m, C, k, k, h*w); returned as (m, C*k*k, h*w)."""
    np.copyto(out, win)
    zero_wrapped(out, k, h, w)
    return out.reshape(out.shape[0], -1, h * w)


def forward(x: np.ndarray, W: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """y[n, o] = b[o] + sum_c correlate(x[n, c] padded by k // 2, W[o, c]): x (N, C, H, W),
    W (O, C, k, k) and b (O,) or None, all in x's dtype -> y (N, O, H, W)."""
    n, c, h, w = x.shape
    o, k, hw = W.shape[0], W.shape[2], h * w
    win = windows(flat_pad(x, (k // 2) * (w + 1)), k, w, hw)
    W2 = W.reshape(o, -1)
    b = None if b is None else b[:, None]
    y = np.empty((n, o, hw), dtype=x.dtype)
    m = batch_block(n, W2.shape[1] * hw * x.itemsize)
    cols = parallel.per_thread(lambda: np.empty((m, c, k, k, hw), dtype=x.dtype))

    def block(sl: slice) -> None:
        yb = np.matmul(W2, im2col(win[sl], cols()[:sl.stop - sl.start], k, h, w), out=y[sl])
        if b is not None:
            yb += b  # while the block is in cache

    parallel.run(block, parallel.blocks(n, m), blas=True)
    return y.reshape(n, o, h, w)


def backward(x: np.ndarray, W: np.ndarray, dy: np.ndarray, need_dx: bool = True
             ) -> tuple[np.ndarray | None, np.ndarray]:
    """(dx, dW) of :func:`forward` for the output gradient dy (N, O, H, W), in x's and W's
    dtype (dy may be narrower: the products promote it). dW = sum_n dy cols^T (the batch
    blocks' partials added in block order), dx = col2im(W^T dy), None if not ``need_dx``."""
    n, c, h, w = x.shape
    o, k, hw = W.shape[0], W.shape[2], h * w
    g = (k // 2) * (w + 1)
    dt = x.dtype
    win = windows(flat_pad(x, g), k, w, hw)
    W2T = W.reshape(o, -1).T
    ckk = W2T.shape[0]
    dy2 = dy.reshape(n, o, hw)
    m = batch_block(n, ckk * hw * np.dtype(dt).itemsize)
    buffers = parallel.per_thread(lambda: _backward_buffers(m, c, k, hw, g, w, ckk, o, dt,
                                                            need_dx))
    dx = np.empty((n, c, hw), dtype=dt) if need_dx else None

    def block(sl: slice) -> np.ndarray:
        cols, part, dpad, dcols, shifted = buffers()
        nb = sl.stop - sl.start
        cb = im2col(win[sl], cols[:nb], k, h, w)
        dWT = np.matmul(cb, dy2[sl].transpose(0, 2, 1), out=part[:nb]).sum(axis=0)
        if need_dx:
            np.matmul(W2T, dy2[sl], out=dpad[:nb].reshape(nb, ckk, -1)[:, :, g:g + hw])
            zero_wrapped(dcols[:nb], k, h, w)
            np.sum(shifted[:nb], axis=(2, 3), out=dx[sl])
        return dWT

    parts = parallel.run(block, parallel.blocks(n, m), blas=True)
    dWT = parallel.sum_in_order(parts, np.zeros((ckk, o), dtype=dt))
    return None if dx is None else dx.reshape(n, c, h, w), dWT.T.reshape(W.shape)


def _backward_buffers(m: int, c: int, k: int, hw: int, g: int, w: int, ckk: int, o: int,
                      dt: np.dtype, need_dx: bool) -> tuple:
    """One thread's scratch of :func:`backward`: columns, the dW partial product and (if dx is
    needed) the column gradients in the middle of zero-margined slabs, so that the view
    ``shifted`` (shifted[.., i, j, q] = dcols[.., i, j, q - d_ij], zero out of range) adds them
    back into dx with one reduction over (i, j): col2im without scatter."""
    cols = np.empty((m, c, k, k, hw), dtype=dt)
    part = np.empty((m, ckk, o), dtype=dt)
    if not need_dx:
        return cols, part, None, None, None
    dpad = np.zeros((m, c, k, k, hw + 2 * g), dtype=dt)
    dcols = dpad[..., g:g + hw]
    s0, s1, s2, s3, e_ = dpad.strides
    shifted = as_strided(dpad[..., 2 * g:], dcols.shape, (s0, s1, s2 - w * e_, s3 - e_, e_),
                         writeable=False)
    return cols, part, dpad, dcols, shifted
