"""Max pooling with stride equal to the kernel."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from .core import Layer, as_float_array, expect_shape, positive_int

__all__ = ["MaxPool2d", "MaxPoolCache"]


@attrs.frozen
class MaxPoolCache:
    argmax: np.ndarray  # (N, C, H/k, W/k) int8/int16: offset i*k + j of each window's max
    x_shape: tuple
    dtype: np.dtype
    state: Any = ()


@attrs.frozen
class MaxPool2d(Layer):
    """y[n, c, r, s] = max of the k x k window x[n, c, r*k:(r+1)*k, s*k:(s+1)*k]; stride = k.

    Shapes: x (N, C, H, W) with H and W divisible by k -> y (N, C, H/k, W/k). The gradient goes
    to the window's maximum; on ties to the first one in row-major order (as PyTorch). The cache
    holds the offset of each maximum. Forward and backward loop over the k*k window offsets
    only, on whole arrays.
    """

    kernel_size: int = attrs.field(validator=positive_int)

    def _windows(self, x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        k = self.kernel_size
        return x.reshape(n, c, h // k, k, w // k, k)

    def forward(self, params: Any, state: Any, x: np.ndarray
                ) -> tuple[np.ndarray, MaxPoolCache]:
        x = as_float_array(self, x)
        expect_shape(self, x, ("N", "C", "H", "W"))
        k = self.kernel_size
        if x.shape[2] % k or x.shape[3] % k:
            raise ValueError(f"{self!r}: expected input of shape (N, C, H, W) with H and W "
                             f"divisible by {k}, got shape {tuple(x.shape)}")
        xw = self._windows(x)
        y = xw[:, :, :, 0, :, 0].copy()
        argmax = np.zeros(y.shape, dtype=np.int8 if k * k <= 127 else np.int32)
        for o in range(1, k * k):
            v = xw[:, :, :, o // k, :, o % k]
            better = v > y  # strict: the first maximum wins ties
            np.copyto(y, v, where=better)
            argmax[better] = o
        return y, MaxPoolCache(argmax=argmax, x_shape=x.shape, dtype=x.dtype, state=state)

    def backward(self, params: Any, cache: MaxPoolCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, tuple]:
        n, c, h, w = cache.x_shape
        k = self.kernel_size
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, (n, c, h // k, w // k), "gradient")
        dx = np.empty(cache.x_shape, dtype=dy.dtype)
        dxw = self._windows(dx)
        for o in range(k * k):
            np.multiply(dy, cache.argmax == o, out=dxw[:, :, :, o // k, :, o % k])
        return dx, ()
