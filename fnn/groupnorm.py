"""GroupNorm: each sample's channels normalized in groups, as torch.nn.GroupNorm.

Computed by LayerNorm on a view of its input (and ChannelwiseScaling for its affine part), the
way normalization.py computes LayerNorm by BatchNormalization.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np

from . import init as initializers
from .core import (
    Key,
    Layer,
    as_float_array,
    as_key,
    boolean,
    dtype_field,
    expect_shape,
    initializer_field,
    positive_int,
    positive_real,
    real_float,
    spec,
)
from .linear import ChannelwiseScaling, ScalingParams, scaling_shapes
from .normalization import LayerNorm, NormCache

__all__ = ["GroupNorm"]


def _channels_last(a: np.ndarray) -> np.ndarray:
    """(N, C, *S) as (N * prod(S), C): one row per position, one column per channel."""
    return np.moveaxis(a, 1, -1).reshape(-1, a.shape[1])


def _channels_first(a2: np.ndarray, shape: tuple) -> np.ndarray:
    """The inverse of :func:`_channels_last` for an array of ``shape``, C-contiguous."""
    return np.ascontiguousarray(np.moveaxis(a2.reshape(shape[0], *shape[2:], shape[1]), -1, 1))


@spec
class GroupNorm(Layer):
    """Normalize each group of channels of each sample, as torch.nn.GroupNorm.

    The C = num_channels channels are split into G = num_groups groups of C/G consecutive
    channels; per sample n and group g, mean and biased var run over the group's channels and
    all positions: y = (x - mean) / sqrt(var + eps) [* gamma_c + beta_c when ``affine``]. No
    state, no modes, no batch coupling. Backward, with D = C/G * prod(*) the size of a group:
    dx = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) / sqrt(var + eps), dxhat = dy * gamma,
    means over each group's D values; dgamma = sum of dy * xhat, dbeta = sum of dy over all
    axes but C.

    Inputs: x (N, C, *), any number of trailing axes (none included). Returns: y of x's shape.
    Params: ``ScalingParams(gamma (C,), beta (C,))`` from gamma_init and beta_init (None: ones
    and zeros) in ``dtype``, or ``()`` without affine. Computed as LayerNorm((D,)) on x viewed
    as (N, G, D) [then ChannelwiseScaling(C) on the (N * prod(*), C) view]; the cache
    (:class:`NormCache`) holds their caches.
    """

    num_groups: int = attrs.field(validator=positive_int)
    num_channels: int = attrs.field(validator=positive_int)
    eps: float = attrs.field(default=1e-5, converter=real_float, validator=positive_real)
    affine: bool = attrs.field(default=True, validator=boolean)
    gamma_init: Any = initializer_field()
    beta_init: Any = initializer_field()
    dtype: str = dtype_field()

    def __attrs_post_init__(self) -> None:
        if self.num_channels % self.num_groups:
            raise ValueError(f"GroupNorm: num_channels must be divisible by num_groups, got "
                             f"num_channels={self.num_channels}, num_groups={self.num_groups}")

    def init(self, key: int | Key) -> tuple[ScalingParams | tuple, tuple]:
        """Inputs: ``key``, an int seed or a :class:`fnn.Key` (used for gamma and beta).

        Returns ``(ScalingParams(gamma, beta) (num_channels,), ())``, or ``((), ())`` without
        ``affine``."""
        as_key(key)
        if not self.affine:
            return (), ()
        # ChannelwiseScaling draws gamma then beta from keys split off key, as LayerNorm's
        return ChannelwiseScaling(
            self.num_channels, dtype=self.dtype,
            gamma_init=initializers.ones if self.gamma_init is None else self.gamma_init,
            beta_init=initializers.zeros if self.beta_init is None else self.beta_init,
        ).init(key)

    def param_shapes(self) -> ScalingParams | tuple:
        return scaling_shapes((self.num_channels,), self.dtype) if self.affine else ()

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        trailing = [None] * max(len(input_shape) - 2, 0)
        return expect_shape(self, input_shape, ("N", self.num_channels, *trailing))

    def _grouped(self, a: np.ndarray) -> tuple[np.ndarray, LayerNorm]:
        """``a`` as (N, G, D) and the LayerNorm((D,)) that normalizes each (n, g) row."""
        d = math.prod(a.shape[1:]) // self.num_groups
        n = a.shape[0] if d else 0  # an empty trailing axis: no value to normalize either
        return (a.reshape(n, self.num_groups, max(d, 1)),
                LayerNorm(max(d, 1), eps=self.eps, elementwise_affine=False))

    def forward(self, params: ScalingParams | tuple, state: Any, x: np.ndarray
                ) -> tuple[np.ndarray, NormCache]:
        """Inputs: params (``ScalingParams`` or ``()``), state ``()``, x (N, num_channels, *).

        Returns y of x's shape (read-only without affine: the cache keeps it) and a
        :class:`NormCache`. An empty x gives an empty y."""
        self.check_spec(params, state)
        x = as_float_array(self, x)
        self.output_shape(x.shape)
        groups, norm_layer = self._grouped(x)
        y, norm = norm_layer.forward((), (), groups)
        y, affine = y.reshape(x.shape), None
        if self.affine:
            y2, affine = ChannelwiseScaling(self.num_channels).forward(params, (),
                                                                       _channels_last(y))
            y = _channels_first(y2, x.shape)
        return y, NormCache(norm=norm, affine=affine, x_shape=x.shape, state=state)

    def backward(self, params: ScalingParams | tuple, cache: NormCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, ScalingParams | tuple]:
        """Inputs: params, the forward's cache, dy of x's shape.

        Returns dx of x's shape and ``ScalingParams(dgamma, dbeta)`` (num_channels,) (or
        ``()``)."""
        self.check_params(params)
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, cache.x_shape, "gradient")
        dparams: ScalingParams | tuple = ()
        if cache.affine is not None:
            dy2, dparams = ChannelwiseScaling(self.num_channels).backward(
                params, cache.affine, _channels_last(dy))
            dy = _channels_first(dy2, cache.x_shape)
        groups, norm_layer = self._grouped(dy)
        dx, _ = norm_layer.backward((), cache.norm, groups)
        return dx.reshape(cache.x_shape), dparams
