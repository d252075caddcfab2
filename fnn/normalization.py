"""Batch normalization (without the affine part: follow it with ChannelwiseScaling)."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import numpy as np

from .core import (
    Key,
    Layer,
    as_float_array,
    as_key,
    cast_like,
    expect_shape,
    in_range,
    positive_int,
    real_float,
)

__all__ = ["BatchNormalization", "BatchNormState", "BatchNormCache"]


@attrs.frozen
class BatchNormState:
    training: bool
    moving_mean: np.ndarray  # (n_features,)
    moving_variance: np.ndarray  # (n_features,)


@attrs.frozen
class BatchNormCache:
    xhat: np.ndarray | None  # normalized input (training mode only)
    inv_std: np.ndarray  # 1 / sqrt(var + EPS), (n_features,)
    training: bool
    x_shape: tuple  # (N, n_features), to check dy in either mode
    state: BatchNormState


@attrs.frozen
class BatchNormalization(Layer):
    """Normalize each feature over the batch: y = (x - mean) / sqrt(var + EPS), EPS = 1e-3.

    Training mode uses the batch mean and the *biased* batch variance and returns, in
    ``cache.state``, the moving statistics ``moving = alpha * moving + (1 - alpha) * batch``
    (alpha weights the OLD statistic; alpha = 0 keeps only the last batch). Evaluation mode
    uses the moving statistics and leaves the state unchanged.

    Shapes: x, y (N, n_features). No params. State: ``training``, ``moving_mean`` (zeros),
    ``moving_variance`` (ones). Backward (training), with xhat the normalized input:
    dx = (dy - mean(dy) - xhat * mean(dy * xhat)) / sqrt(var + EPS); (eval) dy / sqrt(mv + EPS).
    """

    EPS: ClassVar[float] = 1e-3

    n_features: int = attrs.field(validator=positive_int)
    alpha: float = attrs.field(default=0.0, converter=real_float,
                               validator=in_range(0.0, 1.0, high_open=False))

    def init(self, key: int | Key) -> tuple[tuple, BatchNormState]:
        as_key(key)
        return (), BatchNormState(training=True, moving_mean=np.zeros(self.n_features),
                                  moving_variance=np.ones(self.n_features))

    def forward(self, params: Any, state: BatchNormState, x: np.ndarray
                ) -> tuple[np.ndarray, BatchNormCache]:
        x = as_float_array(self, x)
        expect_shape(self, x, ("N", self.n_features))
        if not state.training:
            inv_std = 1.0 / np.sqrt(cast_like(state.moving_variance, x) + self.EPS)
            y = x - cast_like(state.moving_mean, x)
            y *= inv_std
            return y, BatchNormCache(xhat=None, inv_std=inv_std, training=False,
                                     x_shape=x.shape, state=state)
        mean = x.mean(axis=0)
        y = x - mean
        var = np.einsum("ij,ij->j", y, y) / x.shape[0]
        inv_std = 1.0 / np.sqrt(var + self.EPS)
        y *= inv_std
        a = self.alpha
        new_state = BatchNormState(
            training=True,
            moving_mean=cast_like(state.moving_mean, x) * a + mean * (1 - a),
            moving_variance=cast_like(state.moving_variance, x) * a + var * (1 - a))
        return y, BatchNormCache(xhat=y, inv_std=inv_std, training=True, x_shape=x.shape,
                                 state=new_state)

    def backward(self, params: Any, cache: BatchNormCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, tuple]:
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, cache.x_shape, "gradient")
        if not cache.training:
            return dy * cache.inv_std, ()
        xhat = cache.xhat
        n = xhat.shape[0]
        mean_dy = dy.sum(axis=0) / n
        mean_dy_xhat = np.einsum("ij,ij->j", dy, xhat) / n
        dx = xhat * mean_dy_xhat
        np.subtract(dy, dx, out=dx)
        dx -= mean_dy
        dx *= cache.inv_std
        return dx, ()
