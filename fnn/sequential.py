"""Sequential: a chain of layers that is itself a layer; Residual: x + layer(x)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from .core import Key, Layer, as_float_array, split_key

__all__ = ["Sequential", "SequentialCache", "Residual", "ResidualCache"]


@attrs.frozen
class SequentialCache:
    caches: tuple  # the children's caches, in order
    state: tuple  # the children's new states, in order


def _note(err: BaseException, i: int, layer: Any, what: str) -> None:
    err.add_note(f"in Sequential layer {i} ({what}): {layer!r}")


@attrs.frozen
class Sequential(Layer):
    """Apply ``layers`` in order. params and state are tuples of the children's (one entry per
    child, ``()`` for a child with none); the cache holds the children's caches and the tuple of
    their new states. ``init(key)`` gives each child its own key split off ``key``. An exception
    raised by a child carries a note with the child's index and repr. backward returns dx = None
    when the first layer does (Embedding: integer inputs have no gradient)."""

    layers: tuple = attrs.field(converter=tuple)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> Any:
        return self.layers[i]

    def init(self, key: int | Key) -> tuple[tuple, tuple]:
        pairs = [layer.init(k) for layer, k in zip(self.layers, split_key(key, len(self.layers)))]
        return tuple(p for p, _ in pairs), tuple(s for _, s in pairs)

    def _check(self, tree: Any, name: str) -> None:
        if not isinstance(tree, tuple) or len(tree) != len(self.layers):
            raise ValueError(f"{self!r}: expected {name} as a tuple of {len(self.layers)} "
                             f"entries (one per layer), got {type(tree).__name__}"
                             + (f" of {len(tree)}" if isinstance(tree, (tuple, list)) else ""))

    def forward(self, params: Sequence, state: Sequence, x: np.ndarray
                ) -> tuple[np.ndarray, SequentialCache]:
        self._check(params, "params")
        self._check(state, "state")
        caches, states = [], []
        for i, (layer, p, s) in enumerate(zip(self.layers, params, state)):
            try:
                x, cache = layer.forward(p, s, x)
            except Exception as err:
                _note(err, i, layer, "forward")
                raise
            caches.append(cache)
            states.append(cache.state)
        return x, SequentialCache(caches=tuple(caches), state=tuple(states))

    def backward(self, params: Sequence, cache: SequentialCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, tuple]:
        self._check(params, "params")
        grads = [None] * len(self.layers)
        for i in reversed(range(len(self.layers))):
            layer = self.layers[i]
            try:
                dy, grads[i] = layer.backward(params[i], cache.caches[i], dy)
            except Exception as err:
                _note(err, i, layer, "backward")
                raise
            if dy is None and i > 0:  # dx = None (integer inputs): only the first layer's
                raise ValueError(f"Sequential layer {i}, {layer!r}, returned dx = None (a layer "
                                 f"of integer inputs, such as Embedding, must come first)")
        return dy, tuple(grads)


@attrs.frozen
class ResidualCache:
    inner: Any  # the inner layer's cache
    state: Any  # the inner layer's new state


@attrs.frozen
class Residual(Layer):
    """y = x + layer(x): a skip connection around ``layer``, whose output must have x's shape.

    params and state are the inner layer's own (``init(key)`` is ``layer.init(key)``); the
    cache holds the inner cache and the inner new state. Backward: dx = dy + dx_inner, dparams
    the inner layer's. A shape mismatch raises ValueError naming both layers and shapes.
    """

    layer: Any

    def init(self, key: int | Key) -> tuple[Any, Any]:
        return self.layer.init(key)

    def forward(self, params: Any, state: Any, x: np.ndarray) -> tuple[np.ndarray, ResidualCache]:
        x = as_float_array(self, x)
        fx, inner = self.layer.forward(params, state, x)
        if fx.shape != x.shape:
            raise ValueError(f"{self!r}: the inner layer {self.layer!r} maps input of shape "
                             f"{tuple(x.shape)} to shape {tuple(fx.shape)}; a residual needs "
                             f"the same shape")
        return x + fx, ResidualCache(inner=inner, state=inner.state)

    def backward(self, params: Any, cache: ResidualCache, dy: np.ndarray) -> tuple[np.ndarray, Any]:
        dy = as_float_array(self, dy, "gradient")
        dx, dparams = self.layer.backward(params, cache.inner, dy)
        return dx + dy, dparams
