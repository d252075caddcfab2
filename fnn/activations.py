"""Softmax family and elementwise activations.

Elementwise activations accept any shape (they follow Conv2d in CNNs); SoftMax and LogSoftMax
work over the last axis of (N, C). All are parameterless and stateless: ``init`` gives
``((), ())`` and ``dparams`` is ``()``.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np
from scipy.special import expit, ndtr

from . import parallel
from .core import Layer, as_float_array, expect_shape, finite_real, one_of, real_float, spec

__all__ = ["ActivationCache", "SoftMax", "LogSoftMax", "ReLU", "LeakyReLU", "ELU", "SoftPlus",
           "Tanh", "Sigmoid", "GELU", "Identity"]


@attrs.frozen
class ActivationCache:
    """What an activation's backward needs: its input ``x`` and/or output ``y``."""

    x: np.ndarray | None
    y: np.ndarray | None
    state: Any = ()


class _Activation(Layer):
    """Shared forward/backward plumbing; subclasses define ``_f`` and ``_df``.

    ``_f(x) -> y`` and ``_df(x, y, dy) -> dx`` on arrays of rank >= 1 (a 0-d input is computed
    as shape (1,) and returned 0-d). ``_keep`` names what the cache keeps; an output that the
    cache keeps is returned read-only, so that changing it in place cannot silently change the
    next backward.
    """

    _keep = ("x",)
    _shape: tuple | None = None  # an expected shape, or None for any shape
    _parallel = True  # large inputs on fnn's threads (see ReLU)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if self._shape is not None:
            return expect_shape(self, input_shape, self._shape)
        return tuple(input_shape)

    def forward(self, params: Any, state: Any, x: np.ndarray) -> tuple[np.ndarray, ActivationCache]:
        """Inputs: params and state ``()``, x of any shape (SoftMax, LogSoftMax: (N, C)).

        Returns y of x's shape and dtype and an :class:`ActivationCache`."""
        x = as_float_array(self, x)
        if self._shape is not None:
            expect_shape(self, x, self._shape)
        y = self._f(x.reshape(1)).reshape(()) if x.ndim == 0 else self._blocked(self._f, x)
        if "y" in self._keep:
            y.flags.writeable = False
        return y, ActivationCache(x=x if "x" in self._keep else None,
                                  y=y if "y" in self._keep else None, state=state)

    def backward(self, params: Any, cache: ActivationCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, tuple]:
        """Inputs: params, the forward's cache, dy of the output's shape.

        Returns dx (the input's shape, dy's dtype) and ``()``."""
        ref = cache.x if cache.x is not None else cache.y
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, ref.shape, "gradient")
        if dy.ndim == 0:
            flat = [None if a is None else a.reshape(1) for a in (cache.x, cache.y)]
            return self._df(*flat, dy.reshape(1)).reshape(()), ()
        return self._blocked(self._df, cache.x, cache.y, dy), ()

    def _blocked(self, fn: Any, *arrays: np.ndarray | None) -> np.ndarray:
        """``fn(*arrays)`` (None entries passed through as None); large inputs are computed on
        fixed blocks (of elements, or of rows) spread over fnn's threads (if ``_parallel``),
        with the same bits whatever the number of threads."""
        if not self._parallel:
            return fn(*arrays)
        present = [a for a in arrays if a is not None]

        def call(*parts: np.ndarray) -> np.ndarray:
            it = iter(parts)
            return fn(*(None if a is None else next(it) for a in arrays))

        split = parallel.map_elements if self._shape is None else parallel.map_rows
        return split(call, *present)


@spec
class SoftMax(_Activation):
    """y_ij = exp(x_ij - m_i) / sum_k exp(x_ik - m_i), m_i = max_k x_ik; x, y (N, C).

    Backward: dx = y * (dy - sum_k dy_k y_k). The cache holds y.
    """

    _keep = ("y",)
    _shape = ("N", "C")

    def _f(self, x):
        e = x - x.max(axis=1, keepdims=True)
        np.exp(e, out=e)
        e /= e.sum(axis=1, keepdims=True)
        return e

    def _df(self, x, y, dy):
        dx = dy - np.einsum("ij,ij->i", dy, y)[:, None]
        dx *= y
        return dx


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """log softmax(x) along ``axis``: z - log sum exp(z) with z = x - max(x) (the max subtracted
    first: stable for logits of ±1e4). A new array of x's shape and dtype; x is not modified.
    The one implementation behind LogSoftMax and CrossEntropy."""
    z = x - x.max(axis=axis, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=axis, keepdims=True))
    return z


@spec
class LogSoftMax(_Activation):
    """y_ij = x_ij - m_i - log sum_k exp(x_ik - m_i); x, y (N, C).

    Backward: dx = dy - exp(y) * sum_k dy_k. The cache holds y.
    """

    _keep = ("y",)
    _shape = ("N", "C")

    def _f(self, x):
        return log_softmax(x, axis=1)

    def _df(self, x, y, dy):
        dx = np.exp(y)
        dx *= -dy.sum(axis=1, keepdims=True)
        dx += dy
        return dx


@spec
class ReLU(_Activation):
    """y = max(x, 0); dx = dy * (x > 0), as the classic module. Any shape. The cache holds x."""

    # One operation per element, bound by memory: two threads made it 1.01-1.26x slower in
    # float32 (0.95-0.99x in float64) on the 2-core test machine, every other activation
    # 0.54-0.93x (docs/performance.md). Its blocked path stays (tested): switching it on
    # changes no bit.
    _parallel = False

    def _f(self, x):
        return np.maximum(x, 0)

    def _df(self, x, y, dy):
        # a product with the mask is several times faster than np.where
        return np.multiply(dy, x > 0)


@spec
class LeakyReLU(_Activation):
    """y = x if x > 0 else slope * x (slope default 0.03, the classic value; PyTorch's is
    0.01); dx = dy where x > 0, else slope * dy. Any shape. The cache holds x."""

    slope: float = attrs.field(default=0.03, converter=real_float, validator=finite_real)

    # Without np.where (2-6x slower), bit for bit the same: y = max(x, slope*x) for
    # 0 < slope <= 1 (min for slope > 1; np.where for slope <= 0, where inf*0 is nan);
    # dx = dy * [slope, 1][x > 0] (a two-entry lookup).
    def _f(self, x):
        if self.slope <= 0:
            return np.where(x > 0, x, x * self.slope)
        y = x * self.slope
        return (np.maximum if self.slope <= 1 else np.minimum)(x, y, out=y)

    def _df(self, x, y, dy):
        factor = np.array([self.slope, 1.0], dtype=dy.dtype)
        return dy * factor[(x > 0).view(np.uint8)]


@spec
class ELU(_Activation):
    """y = x if x > 0 else alpha * (exp(x) - 1) (alpha default 1.0); dx = dy * alpha * exp(x)
    for x <= 0. Computed with expm1 as PyTorch does. Any shape. The cache holds x."""

    alpha: float = attrs.field(default=1.0, converter=real_float, validator=finite_real)

    def _f(self, x):
        if self.alpha <= 0:  # the sums below would turn a -0.0 into +0.0
            return np.where(x > 0, x, np.expm1(np.minimum(x, 0)) * self.alpha)
        # alpha * expm1(min(x, 0)) is 0 where x > 0, so adding max(x, 0) selects without where
        y = np.minimum(x, 0)
        np.expm1(y, out=y)
        y *= self.alpha
        y += np.maximum(x, 0)
        return y

    def _df(self, x, y, dy):
        if self.alpha <= 0:
            return np.where(x > 0, dy, dy * (np.exp(np.minimum(x, 0)) * self.alpha))
        # factor = alpha * exp(x) where x <= 0, exactly 1 where x > 0 (alpha * 0 + 1)
        positive = x > 0
        factor = np.minimum(x, 0)
        np.exp(factor, out=factor)
        factor *= self.alpha
        factor *= ~positive
        factor += positive
        return np.multiply(dy, factor, out=factor if factor.dtype == dy.dtype else None)


@spec
class SoftPlus(_Activation):
    """y = log(1 + exp(x)), computed as max(x, 0) + log1p(exp(-|x|)) so that no exp overflows
    and large |x| lose no precision; dx = dy * sigmoid(x). Any shape. The cache holds x."""

    def _f(self, x):
        y = np.log1p(np.exp(-np.abs(x)))
        y += np.maximum(x, 0)
        return y

    def _df(self, x, y, dy):
        return dy * expit(x)


@spec
class Tanh(_Activation):
    """y = tanh(x); dx = dy * (1 - y^2). Any shape. The cache holds y."""

    _keep = ("y",)

    def _f(self, x):
        return np.tanh(x)

    def _df(self, x, y, dy):
        return dy * (1 - y * y)


@spec
class Sigmoid(_Activation):
    """y = 1 / (1 + exp(-x)) (scipy's expit: no overflow); dx = dy * y * (1 - y). Any shape.
    The cache holds y."""

    _keep = ("y",)

    def _f(self, x):
        return expit(x)

    def _df(self, x, y, dy):
        return dy * (y * (1 - y))



_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_CUBIC = 0.044715


@spec
class GELU(_Activation):
    """Gaussian error linear unit, as torch.nn.GELU. Any shape. The cache holds x.

    approximate="none": y = x * Phi(x), Phi the standard normal CDF (scipy's ndtr, accurate in
    the lower tail); dx = dy * (Phi(x) + x * phi(x)), phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
    approximate="tanh": y = x/2 * (1 + tanh(u)), u = sqrt(2/pi) * (x + 0.044715 x^3);
    dx = dy * (1/2 (1 + t) + x/2 (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)), t = tanh(u).
    """

    approximate: str = attrs.field(default="none", validator=one_of("none", "tanh"))

    def _f(self, x):
        if self.approximate == "tanh":
            return 0.5 * x * (1 + np.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * (x * x * x))))
        return x * ndtr(x)

    def _df(self, x, y, dy):
        if self.approximate == "tanh":
            t = np.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * (x * x * x)))
            du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_CUBIC * x * x)
            return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)
        pdf = np.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
        return dy * (ndtr(x) + x * pdf)


@spec
class Identity(_Activation):
    """y = x (a copy); dx = dy (a copy). Any shape. The cache holds x (to check dy's shape)."""

    def _f(self, x):
        return x.copy()

    def _df(self, x, y, dy):
        return dy.copy()
