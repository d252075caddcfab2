"""2-D convolution (cross-correlation), stride 1, zero "same" padding, odd kernel.

Kernel layout (see docs/performance.md). With p = k // 2, each input channel image is stored
flattened and zero-padded by g = p*W + p elements at both ends ("flat padding"). A kernel offset
(i, j) is then a flat shift d = (i - p)*W + (j - p), so the k*k shifted copies of the input are
one strided view; only the columns where a shift wraps across an image row need zeroing. The
batch is processed in blocks whose column buffer fits in the L2 cache: per block one strided
copy (im2col) and one batched matrix product per pass, no loop over samples or channels. The
input gradient adds the k*k shifted column gradients with one reduction over a strided view.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
from numpy.lib.stride_tricks import as_strided

from .core import Key, Layer, as_float_array, cast_like, expect_shape, positive_int
from .linear import uniform_fan

__all__ = ["Conv2d", "ConvParams", "ConvCache"]

# Bytes of im2col columns per batch block: small enough that a block's columns, its output and
# its column gradient stay in a core's L2 cache, large enough that the products stay efficient.
BLOCK_BYTES = 1 << 20


def _odd_positive(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    positive_int(instance, attribute, value)
    if value % 2 == 0:
        raise ValueError(f"{type(instance).__name__}: {attribute.name} must be odd "
                         f"(\"same\" padding needs a centre), got {value!r}")


@attrs.frozen
class ConvParams:
    W: np.ndarray  # (out_channels, in_channels, k, k)
    b: np.ndarray  # (out_channels,)


@attrs.frozen
class ConvCache:
    xpad: np.ndarray  # the input, flat-padded: (N, in_channels, H*W + 2*g), g = (k//2)*(W + 1)
    x_shape: tuple
    state: Any = ()


def _flat_pad(x: np.ndarray, g: int) -> np.ndarray:
    """(N, C, H, W) -> (N, C, g + H*W + g): each channel image flattened between zero margins."""
    n, c, h, w = x.shape
    xpad = np.zeros((n, c, h * w + 2 * g), dtype=x.dtype)
    xpad[:, :, g:g + h * w] = x.reshape(n, c, h * w)
    return xpad


def _windows(xpad: np.ndarray, k: int, w: int, hw: int) -> np.ndarray:
    """Read-only view (N, C, k, k, H*W) of a flat-padded input:
    win[n, c, i, j, q] = xpad[n, c, i*w + j + q] = x[n, c, r + i - p, s + j - p] for q = r*w + s
    (a wrapped column where s + j - p falls outside [0, w) still needs zeroing)."""
    sn, sc, e = xpad.strides
    return as_strided(xpad, xpad.shape[:2] + (k, k, hw), (sn, sc, w * e, e, e), writeable=False)


def _zero_wrapped(a: np.ndarray, k: int, h: int, w: int) -> None:
    """Zero a[..., i, j, q] (shape (m, C, k, k, h*w)) where column s + j - p of q = r*w + s lies
    outside the image: there a flat shift reads the neighbouring row, not the zero padding."""
    p = k // 2
    a6 = a.reshape(a.shape[:4] + (h, w))
    for j in range(k):
        if j < p:
            a6[:, :, :, j, :, :p - j] = 0
        elif j > p:
            a6[:, :, :, j, :, max(0, w - (j - p)):] = 0


def _im2col(win: np.ndarray, out: np.ndarray, k: int, h: int, w: int) -> np.ndarray:
    """Columns of one block into ``out`` (m, C, k, k, h*w); returned as (m, C*k*k, h*w)."""
    np.copyto(out, win)
    _zero_wrapped(out, k, h, w)
    return out.reshape(out.shape[0], -1, h * w)


def _block(n: int, sample_bytes: int) -> int:
    return max(1, min(n, BLOCK_BYTES // max(1, sample_bytes)))


@attrs.frozen
class Conv2d(Layer):
    """y[n, o] = b[o] + sum_c correlate(x[n, c], W[o, c]) with zero "same" padding, stride 1.

    Shapes: x (N, in_channels, H, W) -> y (N, out_channels, H, W); W (out, in, k, k) with odd k,
    b (out,). Init: W then b from U(±1/sqrt(in_channels)) (the classic rule). Computed as
    im2col + a batched matrix product per block of the batch; backward: dW = sum_n dy cols^T,
    dx = col2im(W^T dy) (the adjoint of im2col), db = sum of dy over batch and pixels. The cache
    holds the flat-padded input (about x's size); backward rebuilds the columns block by block.
    Computation is in x's dtype (the promoted dtype of x and dy in backward).
    """

    in_channels: int = attrs.field(validator=positive_int)
    out_channels: int = attrs.field(validator=positive_int)
    kernel_size: int = attrs.field(validator=_odd_positive)

    def init(self, key: int | Key = 0) -> tuple[ConvParams, tuple]:
        k = self.kernel_size
        W, b = uniform_fan(key, self.in_channels,
                           (self.out_channels, self.in_channels, k, k), (self.out_channels,))
        return ConvParams(W=W, b=b), ()

    def forward(self, params: ConvParams, state: Any, x: np.ndarray
                ) -> tuple[np.ndarray, ConvCache]:
        x = as_float_array(self, x)
        expect_shape(self, x, ("N", self.in_channels, "H", "W"))
        n, c, h, w = x.shape
        k, o, hw = self.kernel_size, self.out_channels, h * w
        xpad = _flat_pad(x, (k // 2) * (w + 1))
        win = _windows(xpad, k, w, hw)
        W2 = cast_like(params.W, x).reshape(o, -1)
        b = cast_like(params.b, x)[:, None]
        y = np.empty((n, o, hw), dtype=x.dtype)
        m = _block(n, W2.shape[1] * hw * x.itemsize)
        cols = np.empty((m, c, k, k, hw), dtype=x.dtype)
        for s in range(0, n, m):
            e = min(n, s + m)
            yb = np.matmul(W2, _im2col(win[s:e], cols[:e - s], k, h, w), out=y[s:e])
            yb += b
        return y.reshape(n, o, h, w), ConvCache(xpad=xpad, x_shape=x.shape, state=state)

    def backward(self, params: ConvParams, cache: ConvCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, ConvParams]:
        n, c, h, w = cache.x_shape
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, (n, self.out_channels, h, w), "gradient")
        k, o, hw = self.kernel_size, self.out_channels, h * w
        g = (k // 2) * (w + 1)
        dt = np.result_type(cache.xpad, dy)
        win = _windows(cache.xpad.astype(dt, copy=False), k, w, hw)
        W2T = params.W.astype(dt, copy=False).reshape(o, -1).T
        ckk = W2T.shape[0]
        dy2 = dy.reshape(n, o, hw)
        m = _block(n, ckk * hw * np.dtype(dt).itemsize)
        cols = np.empty((m, c, k, k, hw), dtype=dt)
        # Column gradients live in the middle of zero-margined slabs, so that the view `shifted`
        # (shifted[.., i, j, q] = dcols[.., i, j, q - d_ij], zero out of range) adds them back
        # into dx with one reduction over (i, j): col2im without scatter.
        dpad = np.zeros((m, c, k, k, hw + 2 * g), dtype=dt)
        dcols = dpad[..., g:g + hw]
        s0, s1, s2, s3, e_ = dpad.strides
        shifted = as_strided(dpad[..., 2 * g:], dcols.shape, (s0, s1, s2 - w * e_, s3 - e_, e_),
                             writeable=False)
        dx = np.empty((n, c, hw), dtype=dt)
        dWT = np.zeros((ckk, o), dtype=dt)
        part = np.empty((m, ckk, o), dtype=dt)
        for s in range(0, n, m):
            e = min(n, s + m)
            cb = _im2col(win[s:e], cols[:e - s], k, h, w)
            dWT += np.matmul(cb, dy2[s:e].transpose(0, 2, 1), out=part[:e - s]).sum(axis=0)
            np.matmul(W2T, dy2[s:e], out=dpad[:e - s].reshape(e - s, ckk, -1)[:, :, g:g + hw])
            _zero_wrapped(dcols[:e - s], k, h, w)
            np.sum(shifted[:e - s], axis=(2, 3), out=dx[s:e])
        db = dy2.sum(axis=(0, 2))
        return dx.reshape(n, c, h, w), ConvParams(W=cast_like(dWT.T.reshape(params.W.shape),
                                                              params.W),
                                                  b=cast_like(db, params.b))
