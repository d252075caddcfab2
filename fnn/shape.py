"""Flatten: (N, ...) -> (N, prod(...))."""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np

from .core import Layer, as_float_array, expect_shape, spec

__all__ = ["Flatten", "FlattenCache"]


@attrs.frozen
class FlattenCache:
    """Flatten's cache: x's shape."""

    x_shape: tuple
    state: Any = ()


@spec
class Flatten(Layer):
    """y = x.reshape(N, -1); dx = dy.reshape(x.shape). Both are copies (outputs never alias
    inputs). Needs at least one axis (the batch); an empty batch gives (0, prod(...))."""

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) < 1:
            raise ValueError(f"{self!r}: expected input of shape (N, ...), got shape "
                             f"{tuple(input_shape)}")
        return (input_shape[0], math.prod(input_shape[1:]))

    def forward(self, params: Any, state: Any, x: np.ndarray) -> tuple[np.ndarray, FlattenCache]:
        """Inputs: params and state ``()``, x (N, ...).

        Returns y (N, prod(...)) (a copy) and a :class:`FlattenCache` (x's shape)."""
        x = as_float_array(self, x)
        return x.reshape(self.output_shape(x.shape)).copy(), FlattenCache(x_shape=x.shape,
                                                                          state=state)

    def backward(self, params: Any, cache: FlattenCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, tuple]:
        """Inputs: params, the forward's cache, dy (N, prod(...)).

        Returns dx of x's shape (a copy) and ``()``."""
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, self.output_shape(cache.x_shape), "gradient")
        return dy.reshape(cache.x_shape).copy(), ()
