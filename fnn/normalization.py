"""Normalization: BatchNormalization (features; no affine part: follow it with
ChannelwiseScaling), BatchNorm2d (channels of images) and LayerNorm (each sample).

BatchNorm2d and LayerNorm are computed by BatchNormalization on a 2-D view of their input (and
ChannelwiseScaling for their affine part), so the three share one implementation of the math.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
import numpy as np

from . import init as initializers
from . import tree
from ._kernels import batchnorm
from .core import (
    Key,
    Layer,
    ShapeDtype,
    as_float_array,
    as_key,
    boolean,
    cast_like,
    dtype_field,
    expect_shape,
    in_range,
    initializer_field,
    positive_int,
    positive_real,
    real_float,
    spec,
    split_key,
)
from .linear import ChannelwiseScaling, ScalingCache, ScalingParams, scaling_shapes

__all__ = ["BatchNormalization", "BatchNormState", "BatchNormCache", "BatchNorm2d", "LayerNorm",
           "NormCache", "batchnorm_state"]


@attrs.frozen
class BatchNormState:
    """The state of BatchNormalization and BatchNorm2d: the mode and the moving statistics."""

    training: bool
    moving_mean: np.ndarray  # (n_features,)
    moving_variance: np.ndarray  # (n_features,)


def batchnorm_state(n: int, dtype: Any, array: Any = np.zeros) -> BatchNormState:
    """The initial state of n statistics in training mode: moving_mean from ``array`` (zeros),
    moving_variance ones; with ``array=ShapeDtype`` (and any dtype) its shape-only form."""
    if array is ShapeDtype:
        return BatchNormState(training=True, moving_mean=ShapeDtype((n,), dtype),
                              moving_variance=ShapeDtype((n,), dtype))
    return BatchNormState(training=True, moving_mean=np.zeros(n, dtype),
                          moving_variance=np.ones(n, dtype))


@attrs.frozen
class BatchNormCache:
    """BatchNormalization's cache (also inside BatchNorm2d's and LayerNorm's :class:`NormCache`)."""

    xhat: np.ndarray | None  # normalized input (training mode only)
    inv_std: np.ndarray  # 1 / sqrt(var + eps), (n_features,)
    training: bool
    x_shape: tuple  # (N, n_features), to check dy in either mode
    state: BatchNormState


@spec
class BatchNormalization(Layer):
    """Normalize each feature over the batch: y = (x - mean) / sqrt(var + eps); ``eps``
    defaults to the class attribute EPS = 1e-3 (the classic value; PyTorch's is 1e-5).

    Training mode uses the batch mean and the *biased* batch variance and returns, in
    ``cache.state``, the moving statistics ``moving = alpha * moving + (1 - alpha) * batch``
    (alpha weights the OLD statistic; alpha = 0 keeps only the last batch). Evaluation mode
    uses the moving statistics and leaves the state unchanged.

    Shapes: x, y (N, n_features). No params. State: ``training``, ``moving_mean`` (zeros),
    ``moving_variance`` (ones), created in ``dtype`` (default float64; the statistics are
    computed in x's dtype either way). Backward (training), with xhat the normalized input:
    dx = (dy - mean(dy) - xhat * mean(dy * xhat)) / sqrt(var + eps); (eval) dy / sqrt(mv + eps).
    """

    EPS: ClassVar[float] = 1e-3

    n_features: int = attrs.field(validator=positive_int)
    alpha: float = attrs.field(default=0.0, converter=real_float,
                               validator=in_range(0.0, 1.0, high_open=False))
    eps: float = attrs.field(default=EPS, converter=real_float, validator=positive_real)
    dtype: str = dtype_field()

    def init(self, key: int | Key) -> tuple[tuple, BatchNormState]:
        """Inputs: ``key`` (unused: nothing random).

        Returns ``((), BatchNormState(training=True, moving_mean zeros (n_features,),
        moving_variance ones (n_features,)))`` in ``dtype``."""
        as_key(key)
        return (), batchnorm_state(self.n_features, self.dtype)

    def state_shapes(self) -> BatchNormState:
        return batchnorm_state(self.n_features, self.dtype, ShapeDtype)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return expect_shape(self, input_shape, ("N", self.n_features))

    def forward(self, params: Any, state: BatchNormState, x: np.ndarray
                ) -> tuple[np.ndarray, BatchNormCache]:
        """Inputs: params ``()``, a :class:`BatchNormState`, x (N, n_features) (N >= 1 in
        training: the statistics of an empty batch are undefined).

        Returns y (N, n_features), read-only in training (the cache keeps it as xhat), and a
        :class:`BatchNormCache` whose ``state`` has the new moving statistics (training) or
        is ``state`` itself (evaluation)."""
        self.check_spec(params, state)
        x = as_float_array(self, x)
        expect_shape(self, x, ("N", self.n_features))
        if state.training and x.shape[0] == 0:
            raise ValueError(f"{self!r}: training mode needs at least one sample for the batch "
                             f"statistics, got an empty batch of shape {x.shape} (the state is "
                             f"left unchanged)")
        if not state.training:
            inv_std = 1.0 / np.sqrt(cast_like(state.moving_variance, x) + self.eps)
            y = x - cast_like(state.moving_mean, x)
            y *= inv_std
            return y, BatchNormCache(xhat=None, inv_std=inv_std, training=False,
                                     x_shape=x.shape, state=state)
        y, mean, var, inv_std = batchnorm.forward(x, self.eps)
        y.flags.writeable = False
        a = self.alpha
        new_state = BatchNormState(
            training=True,
            moving_mean=cast_like(state.moving_mean, x) * a + mean * (1 - a),
            moving_variance=cast_like(state.moving_variance, x) * a + var * (1 - a))
        return y, BatchNormCache(xhat=y, inv_std=inv_std, training=True, x_shape=x.shape,
                                 state=new_state)

    def backward(self, params: Any, cache: BatchNormCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, tuple]:
        """Inputs: params, the forward's cache, dy (N, n_features).

        Returns dx (N, n_features) and ``()``."""
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, cache.x_shape, "gradient")
        if not cache.training:
            return dy * cache.inv_std, ()
        return batchnorm.backward(cache.xhat, cache.inv_std, dy), ()


@attrs.frozen
class NormCache:
    """Cache of BatchNorm2d and LayerNorm: the caches of the BatchNormalization and (affine only,
    else None) ChannelwiseScaling that compute them on a 2-D view of x."""

    norm: BatchNormCache | None  # None for an empty input (LayerNorm)
    affine: ScalingCache | None
    x_shape: tuple
    state: Any


def _affine_params(layer: Any, key: int | Key, shape: tuple[int, ...]) -> ScalingParams:
    """gamma and beta of ``shape`` from the layer's gamma_init and beta_init (None: ones and
    zeros), keys split off ``key`` in that order, in the layer's dtype."""
    kg, kb = split_key(key, 2)
    fan = math.prod(shape)
    gamma_init = initializers.ones if layer.gamma_init is None else layer.gamma_init
    beta_init = initializers.zeros if layer.beta_init is None else layer.beta_init
    return ScalingParams(gamma=initializers.init_param(gamma_init, kg, shape, layer.dtype, fan),
                         beta=initializers.init_param(beta_init, kb, shape, layer.dtype, fan))


@spec
class BatchNorm2d(Layer):
    """BatchNormalization per channel of images: statistics over N, H and W.

    y = (x - mean_c) / sqrt(var_c + eps) [* gamma_c + beta_c when ``affine``]. The same state
    rules as BatchNormalization: biased batch variance in training, moving statistics
    ``moving = alpha * moving + (1 - alpha) * batch`` (alpha weights the OLD statistic) returned
    in ``cache.state``; evaluation uses the moving statistics and keeps the state.

    Shapes: x, y (N, n_channels, H, W). State: ``BatchNormState`` with (n_channels,) statistics
    (zeros, ones) in ``dtype``. Params: ``()``, or with ``affine`` ``ScalingParams(gamma, beta)``
    of shape (n_channels,) from gamma_init and beta_init (None: ones and zeros). Computed as
    BatchNormalization(n_channels) [and ChannelwiseScaling] on x as (N*H*W, n_channels); the
    cache (:class:`NormCache`) holds their caches.
    """

    n_channels: int = attrs.field(validator=positive_int)
    alpha: float = attrs.field(default=0.0, converter=real_float,
                               validator=in_range(0.0, 1.0, high_open=False))
    eps: float = attrs.field(default=BatchNormalization.EPS, converter=real_float,
                             validator=positive_real)
    affine: bool = attrs.field(default=False, validator=boolean)
    gamma_init: Any = initializer_field()
    beta_init: Any = initializer_field()
    dtype: str = dtype_field()

    def _norm(self) -> BatchNormalization:
        return BatchNormalization(self.n_channels, self.alpha, self.eps)

    def init(self, key: int | Key) -> tuple[ScalingParams | tuple, BatchNormState]:
        """Inputs: ``key``, an int seed or a :class:`fnn.Key` (used for gamma and beta).

        Returns ``(ScalingParams(gamma, beta) (n_channels,) or () without affine,
        BatchNormState(training=True, zeros, ones (n_channels,)))`` in ``dtype``."""
        c = self.n_channels
        params = _affine_params(self, key, (c,)) if self.affine else ()
        return params, batchnorm_state(c, self.dtype)

    def param_shapes(self) -> ScalingParams | tuple:
        return scaling_shapes((self.n_channels,), self.dtype) if self.affine else ()

    def state_shapes(self) -> BatchNormState:
        return batchnorm_state(self.n_channels, self.dtype, ShapeDtype)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return expect_shape(self, input_shape, ("N", self.n_channels, "H", "W"))

    def forward(self, params: ScalingParams | tuple, state: BatchNormState, x: np.ndarray
                ) -> tuple[np.ndarray, NormCache]:
        """Inputs: params (``ScalingParams`` or ``()``), a :class:`BatchNormState`,
        x (N, n_channels, H, W) (N*H*W >= 1 in training).

        Returns y of x's shape and a :class:`NormCache` whose ``state`` has the new moving
        statistics (training) or is ``state`` itself (evaluation)."""
        self.check_spec(params, state)
        x = as_float_array(self, x)
        expect_shape(self, x, ("N", self.n_channels, "H", "W"))
        n, c, h, w = x.shape
        if state.training and n * h * w == 0:
            raise ValueError(f"{self!r}: training mode needs N*H*W >= 1 values per channel for "
                             f"the batch statistics, got input of shape {x.shape} (the state is "
                             f"left unchanged)")
        y2, norm = self._norm().forward((), state, _channels_last(x))
        affine = None
        if self.affine:
            y2, affine = ChannelwiseScaling(c).forward(params, (), y2)
        y = _channels_first(y2.reshape(n, h, w, c))
        return y, NormCache(norm=norm, affine=affine, x_shape=x.shape, state=norm.state)

    def backward(self, params: ScalingParams | tuple, cache: NormCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, ScalingParams | tuple]:
        """Inputs: params, the forward's cache, dy (N, n_channels, H, W).

        Returns dx of x's shape and ``ScalingParams(dgamma, dbeta)`` (or ``()``)."""
        self.check_params(params)
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, cache.x_shape, "gradient")
        n, c, h, w = cache.x_shape
        dy2, dparams = _channels_last(dy), ()
        if cache.affine is not None:
            dy2, dparams = ChannelwiseScaling(c).backward(params, cache.affine, dy2)
        dx2, _ = self._norm().backward((), cache.norm, dy2)
        return _channels_first(dx2.reshape(n, h, w, c)), dparams


def _channels_last(a: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> a C-contiguous (N*H*W, C) copy. (One call: copying blocks of samples on
    two threads was slower on the 2-core test machine, like BatchNormalization's passes.)"""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).reshape(-1, a.shape[1])


def _channels_first(a: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> a C-contiguous (N, C, H, W) copy."""
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def _shape_tuple(value: Any) -> Any:
    """Converter: an int or a sequence of ints as a tuple of Python ints (else left for the
    validator)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value),)
    if isinstance(value, Sequence) and all(isinstance(v, (int, np.integer))
                                           and not isinstance(v, bool) for v in value):
        return tuple(int(v) for v in value)
    return value


def _positive_shape(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not (isinstance(value, tuple) and value and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ValueError(f"{type(instance).__name__}: {attribute.name} must be a positive "
                         f"integer or a non-empty sequence of them, got {value!r}")


def _flat_params(params: ScalingParams) -> ScalingParams:
    return ScalingParams(gamma=params.gamma.reshape(-1), beta=params.beta.reshape(-1))


@spec
class LayerNorm(Layer):
    """Normalize each sample over its last dimensions, as torch.nn.LayerNorm.

    With D = prod(normalized_shape) and, per sample (each index of the leading axes),
    mean and biased var over the last len(normalized_shape) axes:
    y = (x - mean) / sqrt(var + eps) [* gamma + beta when ``elementwise_affine``]. No state, no
    modes. Shapes: x, y (N, ..., *normalized_shape); gamma, beta of normalized_shape
    (``ScalingParams``, from gamma_init and beta_init; None: ones and zeros; in ``dtype``).

    Computed as BatchNormalization on x viewed as (D, M) (M = x.size / D: the features of each
    sample form one column, so batch statistics are per-sample statistics) [then
    ChannelwiseScaling(D) on (M, D)]. Backward:
    dx = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) / sqrt(var + eps), dxhat = dy * gamma,
    means over each sample's D features; dgamma = sum of dy * xhat, dbeta = sum of dy over the
    leading axes. The cache (:class:`NormCache`) holds their caches.
    """

    normalized_shape: tuple[int, ...] = attrs.field(converter=_shape_tuple,
                                                    validator=_positive_shape)
    eps: float = attrs.field(default=1e-5, converter=real_float, validator=positive_real)
    elementwise_affine: bool = attrs.field(default=True, validator=boolean)
    gamma_init: Any = initializer_field()
    beta_init: Any = initializer_field()
    dtype: str = dtype_field()

    def init(self, key: int | Key) -> tuple[ScalingParams | tuple, tuple]:
        """Inputs: ``key``, an int seed or a :class:`fnn.Key` (used for gamma and beta).

        Returns ``(ScalingParams(gamma, beta) of normalized_shape, ())``, or ``((), ())``
        without ``elementwise_affine``."""
        as_key(key)
        if not self.elementwise_affine:
            return (), ()
        return _affine_params(self, key, self.normalized_shape), ()

    def param_shapes(self) -> ScalingParams | tuple:
        if not self.elementwise_affine:
            return ()
        return scaling_shapes(self.normalized_shape, self.dtype)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = self.normalized_shape
        leading = ["N", *[None] * max(len(input_shape) - 1 - len(shape), 0)]
        return expect_shape(self, input_shape, (*leading, *shape))

    def forward(self, params: ScalingParams | tuple, state: Any, x: np.ndarray
                ) -> tuple[np.ndarray, NormCache]:
        """Inputs: params (``ScalingParams`` or ``()``), state ``()``,
        x (N, ..., *normalized_shape).

        Returns y of x's shape (read-only without affine: the cache keeps it) and a
        :class:`NormCache`. An empty x gives an empty y."""
        self.check_spec(params, state)
        x = as_float_array(self, x)
        self.output_shape(x.shape)
        d = math.prod(self.normalized_shape)
        m = x.size // d
        if m == 0:
            return np.empty_like(x), NormCache(norm=None, affine=None, x_shape=x.shape,
                                               state=state)
        # each column of the (D, M) view is one sample: BatchNormalization's statistics over
        # its batch axis are the per-sample statistics (its moving statistics are discarded)
        yt, norm = BatchNormalization(m, eps=self.eps).forward(
            (), batchnorm_state(m, x.dtype), x.reshape(m, d).T)
        y2, affine = yt.T, None
        if self.elementwise_affine:
            y2, affine = ChannelwiseScaling(d).forward(_flat_params(params), (), y2)
        return y2.reshape(x.shape), NormCache(norm=norm, affine=affine, x_shape=x.shape,
                                              state=state)

    def backward(self, params: ScalingParams | tuple, cache: NormCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, ScalingParams | tuple]:
        """Inputs: params, the forward's cache, dy of x's shape.

        Returns dx of x's shape and ``ScalingParams(dgamma, dbeta)`` of normalized_shape (or
        ``()``)."""
        self.check_params(params)
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, cache.x_shape, "gradient")
        d = math.prod(self.normalized_shape)
        m = dy.size // d
        if m == 0:
            return np.zeros(cache.x_shape, dy.dtype), tree.map(np.zeros_like, params)
        dy2, dparams = dy.reshape(m, d), ()
        if cache.affine is not None:
            dy2, flat = ChannelwiseScaling(d).backward(_flat_params(params), cache.affine, dy2)
            dparams = ScalingParams(gamma=flat.gamma.reshape(self.normalized_shape),
                                    beta=flat.beta.reshape(self.normalized_shape))
        dxt, _ = BatchNormalization(m, eps=self.eps).backward((), cache.norm, dy2.T)
        return dxt.T.reshape(cache.x_shape), dparams
