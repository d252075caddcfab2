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
    only, on whole arrays, and use no masked writes (with the random masks of real data they
    are several times slower than branch-free arithmetic).
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
        y = self._max(x)
        xw = self._windows(x)
        # First maximum in row-major order = the number of leading offsets that are not maximal.
        argmax = np.zeros(y.shape, dtype=np.int8 if k * k <= 127 else np.int32)
        leading = np.ones(y.shape, dtype=bool)
        not_max = np.empty(y.shape, dtype=bool)
        for o in range(k * k - 1):
            np.not_equal(xw[:, :, :, o // k, :, o % k], y, out=not_max)
            np.logical_and(leading, not_max, out=leading)
            argmax += leading
        return y, MaxPoolCache(argmax=argmax, x_shape=x.shape, dtype=x.dtype, state=state)

    def _max(self, x: np.ndarray) -> np.ndarray:
        """Window maxima in two passes: over the k columns of each window, then its k rows."""
        k = self.kernel_size
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
        k = self.kernel_size
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, (n, c, h // k, w // k), "gradient")
        dx = np.empty(cache.x_shape, dtype=dy.dtype)
        dxw = self._windows(dx)
        is_max = np.empty(dy.shape, dtype=bool)
        for o in range(k * k):
            np.equal(cache.argmax, o, out=is_max)
            np.multiply(dy, is_max, out=dxw[:, :, :, o // k, :, o % k])
        return dx, ()
