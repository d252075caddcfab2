"""Pooling over windows, max and average, on (N, C, L) and (N, C, H, W) inputs (kernel,
stride, padding as PyTorch), and a global average over the image.

This file holds the contract (hyperparameters, formulas, records, checks); the arrays are
computed by the private kernels in :mod:`fnn._kernels.pool` (1-D pools run as 2-D ones with
H = 1).
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import numpy as np

from ._kernels import pool
from ._kernels.geometry import Window, as_4d, int_or_tuple_field, shape_4d
from .core import Layer, as_float_array, expect_shape, spec

__all__ = ["MaxPool1d", "MaxPool2d", "MaxPoolCache", "AvgPool1d", "AvgPool2d",
           "GlobalAvgPool2d", "PoolCache"]


@attrs.frozen
class MaxPoolCache:
    """MaxPool1d's / MaxPool2d's cache: the offset of each window's maximum and x's shape."""

    argmax: np.ndarray  # (N, C, *output sizes) int8/int32: offset i*kw + j of each window's max
    x_shape: tuple
    state: Any = ()


@attrs.frozen
class PoolCache:
    """The average pools' cache: x's shape."""

    x_shape: tuple
    state: Any = ()


@spec
class _Pool(Layer):
    """Windows of ``kernel_size`` every ``stride`` (default: the kernel) over the input padded
    by ``padding`` on both sides (at most half the kernel, as PyTorch), each an int or a tuple
    of one per spatial axis (``ndim`` of them, named ``spatial``). Output size (PyTorch's floor
    rule): Lo = (L + 2p - k) // s + 1 along each axis."""

    ndim: ClassVar[int]
    spatial: ClassVar[tuple[str, ...]]

    kernel_size: int | tuple[int, ...] = int_or_tuple_field(attrs.NOTHING, 1, kw_only=False)
    stride: int | tuple[int, ...] | None = int_or_tuple_field(None, 1, kw_only=False)
    padding: int | tuple[int, ...] = int_or_tuple_field(0, 0, kw_only=False)

    def __attrs_post_init__(self) -> None:
        window = self.window()
        if any(2 * p > k for p, k in zip(window.padding, window.kernel)):
            raise ValueError(f"{type(self).__name__}: padding must be at most half the kernel, "
                             f"got padding={self.padding!r}, kernel_size={self.kernel_size!r}")

    def window(self) -> Window:
        """Kernel, stride and padding, one int per spatial axis each (dilation 1)."""
        return Window.of(self.ndim, self.kernel_size, self.stride, self.padding)

    def _check_sizes(self, x_shape: tuple) -> None:
        """A further input-size check of a subclass (none here)."""

    def _out_sizes(self, x_shape: tuple) -> tuple[int, ...]:
        """The output's spatial sizes; ValueError naming the layer when no window fits."""
        expect_shape(self, tuple(x_shape), ("N", "C", *self.spatial))
        self._check_sizes(x_shape)
        return self.window().checked_out_sizes(self, x_shape)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*input_shape[:2], *self._out_sizes(tuple(input_shape)))

    def _input(self, x: Any) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
        """(x, x as 4-D, the output size) of a forward's checked input."""
        x = as_float_array(self, x)
        out = self._out_sizes(x.shape)
        return x, as_4d(x), out

    def _gradient(self, dy: Any, x_shape: tuple, out: tuple[int, ...]) -> np.ndarray:
        """The checked output gradient of a backward."""
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, (*x_shape[:2], *out), "gradient")
        return dy


@spec
class _MaxPool(_Pool):
    """Max pooling: the layer docstrings are on MaxPool1d and MaxPool2d."""

    def forward(self, params: Any, state: Any, x: np.ndarray
                ) -> tuple[np.ndarray, MaxPoolCache]:
        """Inputs: params ``()``, state ``()``, x (N, C, *sizes).

        Returns y (N, C, *output sizes) in x's dtype and ``MaxPoolCache(argmax, x_shape)``."""
        x, x4, out = self._input(x)
        window = self.window().as_2d()
        y, argmax = pool.max_pool(x4, window)
        shape = (*x.shape[:2], *out)
        return y.reshape(shape), MaxPoolCache(argmax=argmax.reshape(shape), x_shape=x.shape,
                                              state=state)

    def backward(self, params: Any, cache: MaxPoolCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, tuple]:
        """Inputs: params ``()``, the forward's cache, dy (N, C, *output sizes).

        Returns dx (the input's shape, in dy's dtype) and ``()``."""
        dy = self._gradient(dy, cache.x_shape, cache.argmax.shape[2:])
        window, x4_shape = self.window().as_2d(), shape_4d(cache.x_shape)
        argmax, dy4 = as_4d(cache.argmax), as_4d(dy)
        dx = pool.max_pool_backward(argmax, dy4, x4_shape, window)
        return dx.reshape(cache.x_shape), ()


@spec
class MaxPool2d(_MaxPool):
    """y[n, c, r, q] = max of the window x[n, c, r*sh - ph : r*sh - ph + kh, q*sw - pw :
    q*sw - pw + kw] (padding is -inf: it never wins). Sizes are an int or a pair (rows,
    columns); stride None = the kernel.

    Classic configuration (``MaxPool2d(k)``: stride = kernel, no padding): H and W must be
    divisible by k, else ValueError; y (N, C, H/k, W/k). With an explicit stride or padding,
    PyTorch's floor rule: Ho = (H + 2p - kh) // s + 1, windows that do not fit are dropped.
    The gradient goes to the window's maximum; on ties to the first one in row-major order,
    in a window holding NaN (y is NaN) to its last NaN (both as PyTorch); overlapping windows
    add their gradients. The cache holds the offset of each maximum.
    """

    ndim: ClassVar[int] = 2
    spatial: ClassVar[tuple[str, ...]] = ("H", "W")

    def _check_sizes(self, x_shape: tuple) -> None:
        (kh, kw), (h, w) = self.window().kernel, x_shape[2:]
        if self.stride is None and self.window().padding == (0, 0) and (h % kh or w % kw):
            size = kh if kh == kw else f"{kh} (H) and {kw} (W)"
            raise ValueError(f"{self!r}: expected input of shape (N, C, H, W) with H and W "
                             f"divisible by {size}, got shape {tuple(x_shape)}")


@spec
class MaxPool1d(_MaxPool):
    """y[n, c, t] = max of the window x[n, c, t*s - p : t*s - p + k] (padding is -inf), as
    PyTorch's ``nn.MaxPool1d``: x (N, C, L) -> y (N, C, Lo), Lo = (L + 2p - k) // s + 1
    (the floor rule, also for the default stride = kernel). Gradient to the first maximum of
    each window (to its last NaN, if any: as PyTorch), added up where windows overlap.
    Computed as :class:`MaxPool2d` with H = 1."""

    ndim: ClassVar[int] = 1
    spatial: ClassVar[tuple[str, ...]] = ("L",)


@spec
class _AvgPool(_Pool):
    """Average pooling: the layer docstrings are on AvgPool1d and AvgPool2d."""

    def forward(self, params: Any, state: Any, x: np.ndarray) -> tuple[np.ndarray, PoolCache]:
        """Inputs: params ``()``, state ``()``, x (N, C, *sizes).

        Returns y (N, C, *output sizes) in x's dtype and ``PoolCache(x_shape)``."""
        x, x4, out = self._input(x)
        window = self.window().as_2d()
        y = pool.avg_pool(x4, window)
        return y.reshape(*x.shape[:2], *out), PoolCache(x_shape=x.shape, state=state)

    def backward(self, params: Any, cache: PoolCache, dy: np.ndarray) -> tuple[np.ndarray, tuple]:
        """Inputs: params ``()``, the forward's cache, dy (N, C, *output sizes).

        Returns dx (the input's shape, in dy's dtype) and ``()``."""
        dy = self._gradient(dy, cache.x_shape, self.window().out_sizes(cache.x_shape[2:]))
        dx = pool.avg_pool_backward(as_4d(dy), shape_4d(cache.x_shape), self.window().as_2d())
        return dx.reshape(cache.x_shape), ()


@spec
class AvgPool2d(_AvgPool):
    """y[n, c, r, q] = the mean of the window x[n, c, r*sh - ph : r*sh - ph + kh, q*sw - pw :
    q*sw - pw + kw] of the zero-padded input, divided by kh*kw also where it overlaps the
    padding (PyTorch's count_include_pad=True). Sizes an int or a pair; stride defaults to the
    kernel; windows that do not fit are dropped (floor rule Ho = (H + 2p - kh) // s + 1, no
    divisibility required). dx: dy/(kh*kw) added to every input of each window. The cache
    holds x's shape only."""

    ndim: ClassVar[int] = 2
    spatial: ClassVar[tuple[str, ...]] = ("H", "W")


@spec
class AvgPool1d(_AvgPool):
    """y[n, c, t] = the mean of the window x[n, c, t*s - p : t*s - p + k] of the zero-padded
    input, divided by k (PyTorch's ``nn.AvgPool1d``, count_include_pad=True): x (N, C, L) ->
    y (N, C, Lo), Lo = (L + 2p - k) // s + 1, stride default the kernel. dx: dy/k added to
    every input of each window. Computed as :class:`AvgPool2d` with H = 1."""

    ndim: ClassVar[int] = 1
    spatial: ClassVar[tuple[str, ...]] = ("L",)


@spec
class GlobalAvgPool2d(Layer):
    """y[n, c] = mean over (h, w) of x[n, c, h, w]: (N, C, H, W) -> (N, C) (PyTorch:
    adaptive_avg_pool2d(x, 1).flatten(1)). dx = dy/(H*W) at every pixel. The cache holds x's
    shape only."""

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        expect_shape(self, tuple(input_shape), ("N", "C", "H", "W"))
        return tuple(input_shape[:2])

    def forward(self, params: Any, state: Any, x: np.ndarray) -> tuple[np.ndarray, PoolCache]:
        """Inputs: params ``()``, state ``()``, x (N, C, H, W).

        Returns y (N, C) in x's dtype and ``PoolCache(x_shape)``."""
        x = as_float_array(self, x)
        expect_shape(self, x, ("N", "C", "H", "W"))
        return x.mean(axis=(2, 3)), PoolCache(x_shape=x.shape, state=state)

    def backward(self, params: Any, cache: PoolCache, dy: np.ndarray) -> tuple[np.ndarray, tuple]:
        """Inputs: params ``()``, the forward's cache, dy (N, C).

        Returns dx (N, C, H, W) = dy/(H*W) at every pixel, in dy's dtype, and ``()``."""
        n, c, h, w = cache.x_shape
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, (n, c), "gradient")
        dx = np.empty(cache.x_shape, dtype=dy.dtype)
        dx[...] = (dy / (h * w))[:, :, None, None]
        return dx, ()
