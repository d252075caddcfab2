"""Flatten: (N, ...) -> (N, prod(...))."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from .core import Layer, as_float_array, expect_shape

__all__ = ["Flatten", "FlattenCache"]


@attrs.frozen
class FlattenCache:
    x_shape: tuple
    state: Any = ()


@attrs.frozen
class Flatten(Layer):
    """y = x.reshape(N, -1); dx = dy.reshape(x.shape). Both are copies (outputs never alias
    inputs). Needs at least one axis (the batch)."""

    def forward(self, params: Any, state: Any, x: np.ndarray) -> tuple[np.ndarray, FlattenCache]:
        x = as_float_array(self, x)
        if x.ndim < 1:
            raise ValueError(f"{self!r}: expected input of shape (N, ...), got shape {x.shape}")
        return x.reshape(x.shape[0], -1).copy(), FlattenCache(x_shape=x.shape, state=state)

    def backward(self, params: Any, cache: FlattenCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, tuple]:
        dy = as_float_array(self, dy, "gradient")
        n = cache.x_shape[0]
        expect_shape(self, dy, (n, int(np.prod(cache.x_shape[1:], dtype=np.int64))), "gradient")
        return dy.reshape(cache.x_shape).copy(), ()
