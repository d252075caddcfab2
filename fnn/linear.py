"""Linear (fully connected) layer and ChannelwiseScaling."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from ._kernels.matmul import matmul
from .core import (
    Key,
    Layer,
    ShapeDtype,
    as_float_array,
    cast_like,
    dtype_field,
    expect_shape,
    initializer_field,
    positive_int,
    spec,
    split_key,
)
from .init import init_param

__all__ = ["Linear", "LinearParams", "LinearCache", "ChannelwiseScaling", "ScalingParams",
           "ScalingCache", "scaling_shapes", "affine", "affine_backward"]


@attrs.frozen
class LinearParams:
    """Linear's params: W (n_out, n_in) and b (n_out,)."""

    W: np.ndarray  # (n_out, n_in)
    b: np.ndarray  # (n_out,)


@attrs.frozen
class LinearCache:
    """Linear's cache: the input x (N, ..., n_in)."""

    x: np.ndarray
    state: Any = ()


@spec
class Linear(Layer):
    """y = x @ W.T + b, over the last axis of x (as torch.nn.Linear).

    Shapes: x (N, n_in) -> y (N, n_out), or any x (N, ..., n_in) -> y (N, ..., n_out);
    W (n_out, n_in), b (n_out,). Backward (x viewed as (M, n_in), M the product of the leading
    axes): dx = dy @ W, dW = dy.T @ x, db = sum of dy over the M rows. Init: W and b from
    ``w_init`` and ``b_init`` (keys split off the key in that order), each None = the classic
    U(±1/sqrt(n_in)), in ``dtype`` (default float64). The cache holds x. Computation is in x's
    dtype; dparams come back in the params' dtypes.
    """

    n_in: int = attrs.field(validator=positive_int)
    n_out: int = attrs.field(validator=positive_int)
    w_init: Any = initializer_field()
    b_init: Any = initializer_field()
    dtype: str = dtype_field()

    def init(self, key: int | Key) -> tuple[LinearParams, tuple]:
        """Inputs: ``key``, an int seed or a :class:`fnn.Key`.

        Returns ``(LinearParams(W (n_out, n_in), b (n_out,)), ())`` in ``dtype``."""
        kw, kb = split_key(key, 2)
        W = init_param(self.w_init, kw, (self.n_out, self.n_in), self.dtype, self.n_in)
        b = init_param(self.b_init, kb, (self.n_out,), self.dtype, self.n_in)
        return LinearParams(W=W, b=b), ()

    def param_shapes(self) -> LinearParams:
        """W (n_out, n_in), b (n_out,) in ``dtype``."""
        return LinearParams(W=ShapeDtype((self.n_out, self.n_in), self.dtype),
                            b=ShapeDtype((self.n_out,), self.dtype))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(N, ..., n_in) -> (N, ..., n_out)."""
        _check_last_axis(self, input_shape)
        return (*input_shape[:-1], self.n_out)

    def forward(self, params: LinearParams, state: Any, x: np.ndarray
                ) -> tuple[np.ndarray, LinearCache]:
        """Inputs: params (:class:`LinearParams`), state ``()``, x (N, ..., n_in).

        Returns y (N, ..., n_out) in x's dtype and a :class:`LinearCache` (holds x)."""
        self.check_spec(params, state)
        x = as_float_array(self, x)
        if x.ndim <= 2:  # the classic path (and its message for a 1-D x)
            expect_shape(self, x, ("N", self.n_in))
            return affine(x, params.W, params.b), LinearCache(x=x, state=state)
        _check_last_axis(self, x.shape)
        y = affine(x.reshape(-1, self.n_in), params.W, params.b)
        return y.reshape(*x.shape[:-1], self.n_out), LinearCache(x=x, state=state)

    def backward(self, params: LinearParams, cache: LinearCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, LinearParams]:
        """Inputs: params, the forward's cache, dy (N, ..., n_out).

        Returns dx = dy @ W (x's shape) and ``LinearParams(W=dy.T @ x, b=dy summed over the
        rows)`` in the params' dtypes (x and dy viewed as (M, n_in), (M, n_out))."""
        self.check_params(params)
        x2, dy2 = self._rows(cache.x, dy)
        dx, dW, db = affine_backward(x2, params.W, dy2)
        return dx.reshape(cache.x.shape), LinearParams(W=cast_like(dW, params.W),
                                                       b=cast_like(db, params.b))

    def backward_params(self, params: LinearParams, cache: LinearCache, dy: np.ndarray
                        ) -> LinearParams:
        """``backward(params, cache, dy)[1]`` without computing dx (one matrix product
        fewer)."""
        self.check_params(params)
        x2, dy2 = self._rows(cache.x, dy)
        _, dW, db = affine_backward(x2, params.W, dy2, need_dx=False)
        return LinearParams(W=cast_like(dW, params.W), b=cast_like(db, params.b))

    def _rows(self, x: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x and the checked dy as (M, n_in) and (M, n_out) (views)."""
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, (*x.shape[:-1], self.n_out), "gradient")
        if x.ndim == 2:  # the classic path
            return x, dy
        return x.reshape(-1, self.n_in), dy.reshape(-1, self.n_out)


def _check_last_axis(layer: Linear, shape: tuple[int, ...]) -> None:
    if len(shape) < 2 or shape[-1] != layer.n_in:
        raise ValueError(f"{layer!r}: expected input of shape (N, ..., {layer.n_in}), got "
                         f"shape {tuple(shape)}")


def affine(x: np.ndarray, W: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """y = x @ W.T (+ b) in x's dtype, for x (M, n_in), W (n_out, n_in), b (n_out,) or None:
    the one matrix product of Linear and of the projections in fnn.attention."""
    y = matmul(x, cast_like(W, x).T)
    if b is not None:
        y += cast_like(b, x)
    return y


def affine_backward(x: np.ndarray, W: np.ndarray, dy: np.ndarray, need_dx: bool = True
                    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(dx, dW, db) of :func:`affine` for x (M, n_in), dy (M, n_out): dx = dy @ W in x's dtype
    (None unless ``need_dx``), dW = dy.T @ x and db = dy summed over the rows, both in dy's
    dtype (cast them to the params' dtypes)."""
    return ((matmul(dy, cast_like(W, x)) if need_dx else None), matmul(dy.T, x),
            dy.sum(axis=0))


@attrs.frozen
class ScalingParams:
    """The params of ChannelwiseScaling and of the affine parts of the normalisation layers: gamma
    and beta."""

    gamma: np.ndarray  # (n_out,)
    beta: np.ndarray  # (n_out,)


def scaling_shapes(shape: tuple[int, ...], dtype: str) -> ScalingParams:
    """``ScalingParams`` of :class:`ShapeDtype` leaves: gamma and beta of ``shape``."""
    return ScalingParams(gamma=ShapeDtype(shape, dtype), beta=ShapeDtype(shape, dtype))


@attrs.frozen
class ScalingCache:
    """ChannelwiseScaling's cache: the input x (N, n_out)."""

    x: np.ndarray
    state: Any = ()


@spec
class ChannelwiseScaling(Layer):
    """y = x * gamma + beta, per feature (the affine part of batch normalization).

    Shapes: x (N, n_out) -> y (N, n_out); gamma, beta (n_out,). Init: gamma and beta from
    ``gamma_init`` and ``beta_init`` (keys split off the key in that order), each None = the
    classic U(±1/sqrt(n_out)), in ``dtype`` (default float64). The cache holds x.
    """

    n_out: int = attrs.field(validator=positive_int)
    gamma_init: Any = initializer_field()
    beta_init: Any = initializer_field()
    dtype: str = dtype_field()

    def init(self, key: int | Key) -> tuple[ScalingParams, tuple]:
        """Inputs: ``key``, an int seed or a :class:`fnn.Key`.

        Returns ``(ScalingParams(gamma (n_out,), beta (n_out,)), ())`` in ``dtype``."""
        kg, kb = split_key(key, 2)
        shape = (self.n_out,)
        return ScalingParams(gamma=init_param(self.gamma_init, kg, shape, self.dtype, self.n_out),
                             beta=init_param(self.beta_init, kb, shape, self.dtype, self.n_out)
                             ), ()

    def param_shapes(self) -> ScalingParams:
        return scaling_shapes((self.n_out,), self.dtype)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return expect_shape(self, input_shape, ("N", self.n_out))

    def forward(self, params: ScalingParams, state: Any, x: np.ndarray
                ) -> tuple[np.ndarray, ScalingCache]:
        """Inputs: params (:class:`ScalingParams`), state ``()``, x (N, n_out).

        Returns y (N, n_out) in x's dtype and a :class:`ScalingCache` (holds x)."""
        self.check_spec(params, state)
        x = as_float_array(self, x)
        expect_shape(self, x, ("N", self.n_out))
        y = x * cast_like(params.gamma, x)
        y += cast_like(params.beta, x)
        return y, ScalingCache(x=x, state=state)

    def backward(self, params: ScalingParams, cache: ScalingCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, ScalingParams]:
        """Inputs: params, the forward's cache, dy (N, n_out).

        Returns dx = dy * gamma and ``ScalingParams(gamma=sum of dy * x, beta=sum of dy)``
        (sums over N) in the params' dtypes."""
        self.check_params(params)
        x = cache.x
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, x.shape, "gradient")
        dx = dy * cast_like(params.gamma, x)
        dgamma = np.einsum("ij,ij->j", dy, x)
        dbeta = dy.sum(axis=0)
        return dx, ScalingParams(gamma=cast_like(dgamma, params.gamma),
                                 beta=cast_like(dbeta, params.beta))
