"""2-D convolution (cross-correlation), stride 1, zero "same" padding, odd kernel."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from .core import Key, Layer, as_float_array, cast_like, expect_shape, positive_int
from .linear import uniform_fan

__all__ = ["Conv2d", "ConvParams", "ConvCache"]


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
    cols: np.ndarray  # im2col of the padded input, (N, in_channels * k * k, H * W)
    x_shape: tuple
    state: Any = ()


def im2col(xp: np.ndarray, k: int, h: int, w: int) -> np.ndarray:
    """Columns of a padded (N, C, h + k - 1, w + k - 1) input: (N, C * k * k, h * w).

    cols[n, (c, i, j), (r, s)] = xp[n, c, r + i, s + j]. One strided copy per kernel offset
    (k * k copies, no loop over batch or channels).
    """
    n, c = xp.shape[:2]
    cols = np.empty((n, c, k, k, h, w), dtype=xp.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, i, j] = xp[:, :, i:i + h, j:j + w]
    return cols.reshape(n, c * k * k, h * w)


def col2im(dcols: np.ndarray, c: int, k: int, h: int, w: int) -> np.ndarray:
    """Adjoint of :func:`im2col` followed by cropping the padding: (N, C*k*k, h*w) -> (N, C, h, w).

    Adds each kernel offset's slab into the padded image (k * k slab additions, no scatter).
    """
    n = dcols.shape[0]
    p = k // 2
    d = dcols.reshape(n, c, k, k, h, w)
    dxp = np.zeros((n, c, h + 2 * p, w + 2 * p), dtype=dcols.dtype)
    for i in range(k):
        for j in range(k):
            dxp[:, :, i:i + h, j:j + w] += d[:, :, i, j]
    return dxp[:, :, p:p + h, p:p + w].copy()


@attrs.frozen
class Conv2d(Layer):
    """y[n, o] = b[o] + sum_c correlate(x[n, c], W[o, c]) with zero "same" padding, stride 1.

    Shapes: x (N, in_channels, H, W) -> y (N, out_channels, H, W); W (out, in, k, k) with odd k,
    b (out,). Init: W then b from U(±1/sqrt(in_channels)) (the classic rule). Computed as
    im2col + one batched matrix product; the cache holds the columns (k*k times x's size).
    """

    in_channels: int = attrs.field(validator=positive_int)
    out_channels: int = attrs.field(validator=positive_int)
    kernel_size: int = attrs.field(validator=_odd_positive)

    def init(self, key: int | Key) -> tuple[ConvParams, tuple]:
        k = self.kernel_size
        W, b = uniform_fan(key, self.in_channels,
                           (self.out_channels, self.in_channels, k, k), (self.out_channels,))
        return ConvParams(W=W, b=b), ()

    def forward(self, params: ConvParams, state: Any, x: np.ndarray
                ) -> tuple[np.ndarray, ConvCache]:
        x = as_float_array(self, x)
        expect_shape(self, x, ("N", self.in_channels, "H", "W"))
        n, c, h, w = x.shape
        k, p = self.kernel_size, self.kernel_size // 2
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x
        cols = im2col(xp, k, h, w)
        W2 = cast_like(params.W, x).reshape(self.out_channels, -1)
        y = np.matmul(W2, cols)  # (N, out, H*W)
        y += cast_like(params.b, x)[:, None]
        return y.reshape(n, self.out_channels, h, w), ConvCache(cols=cols, x_shape=x.shape,
                                                                state=state)

    def backward(self, params: ConvParams, cache: ConvCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, ConvParams]:
        n, c, h, w = cache.x_shape
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, (n, self.out_channels, h, w), "gradient")
        cols = cache.cols
        dy2 = dy.reshape(n, self.out_channels, h * w)
        W2 = cast_like(params.W, cols).reshape(self.out_channels, -1)
        dx = col2im(np.matmul(W2.T, dy2), c, self.kernel_size, h, w)
        dW = np.matmul(dy2, cols.transpose(0, 2, 1)).sum(axis=0).reshape(params.W.shape)
        db = dy2.sum(axis=(0, 2))
        return dx, ConvParams(W=cast_like(dW, params.W), b=cast_like(db, params.b))
