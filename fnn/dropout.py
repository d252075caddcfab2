"""Dropout with an explicit random key carried in the state."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from .core import (
    Key,
    Layer,
    as_float_array,
    as_key,
    expect_shape,
    generator,
    in_range,
    real_float,
    spec,
    split_key,
)

__all__ = ["Dropout", "DropoutState", "DropoutCache"]


@attrs.frozen
class DropoutState:
    """Dropout's state: the mode and the key of the next mask."""

    training: bool
    key: Key


@attrs.frozen
class DropoutCache:
    """Dropout's cache: the scaled mask (None in evaluation), x's shape, the new state."""

    mask: np.ndarray | None  # kept / (1 - p) per element, in x's dtype; None in eval mode
    x_shape: tuple  # to check dy in either mode
    state: DropoutState


@spec
class Dropout(Layer):
    """Inverted dropout: in training, zero each element with probability ``p`` (p is the DROP
    probability) and scale survivors by 1 / (1 - p); in evaluation, the identity.

    Any shape. No params. State: ``training`` and ``key``; each training call draws its mask
    from a key split off ``state.key`` and returns the advanced key in ``cache.state``, so
    successive steps draw new masks and a run is reproducible from one seed. The cache holds
    the scaled mask; backward is dx = dy * mask.
    """

    p: float = attrs.field(default=0.5, converter=real_float, validator=in_range(0.0, 1.0))

    def init(self, key: int | Key) -> tuple[tuple, DropoutState]:
        """Inputs: ``key``, an int seed or a :class:`fnn.Key`: the first mask's key.

        Returns ``((), DropoutState(training=True, key=key))``."""
        return (), DropoutState(training=True, key=as_key(key))

    def state_shapes(self) -> DropoutState:
        return DropoutState(training=True, key=Key(0))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)

    def forward(self, params: Any, state: DropoutState, x: np.ndarray
                ) -> tuple[np.ndarray, DropoutCache]:
        """Inputs: params ``()``, a :class:`DropoutState`, x of any shape.

        Returns y (x's shape and dtype) and a :class:`DropoutCache` whose ``state`` carries
        the next key (training) or the same state (evaluation)."""
        self.check_spec(params, state)
        x = as_float_array(self, x)
        if not state.training:
            return x.copy(), DropoutCache(mask=None, x_shape=x.shape, state=state)
        next_key, mask_key = split_key(state.key)
        draw_dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
        u = generator(mask_key).random(x.shape, dtype=draw_dtype)
        mask = (u >= self.p).astype(x.dtype)
        mask *= x.dtype.type(1.0 / (1.0 - self.p))
        # out=: a 0-d x gives a 0-d array (x * mask would be a numpy scalar), as the others
        return np.multiply(x, mask, out=np.empty_like(x)), DropoutCache(mask=mask, x_shape=x.shape,
                                      state=DropoutState(training=True, key=next_key))

    def backward(self, params: Any, cache: DropoutCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, tuple]:
        """Inputs: params, the forward's cache, dy of x's shape.

        Returns dx = dy * mask (a copy of dy in evaluation) and ``()``."""
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, cache.x_shape, "gradient")
        if cache.mask is None:
            return dy.copy(), ()
        return np.multiply(dy, cache.mask, out=np.empty_like(dy)), ()
