"""Sequential: a chain of layers that is itself a layer; Residual: x + layer(x)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import numpy as np

from .core import Key, Layer, as_float_array, backward_params, spec, split_key

__all__ = ["Sequential", "SequentialCache", "Residual", "ResidualCache"]


@attrs.frozen
class SequentialCache:
    """Sequential's cache: the children's caches and new states."""

    caches: tuple  # the children's caches, in order
    state: tuple  # the children's new states, in order


def _layers(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Validator: every child has the three layer methods (else a TypeError now, not a bare
    AttributeError at the first init or forward)."""
    for i, layer in enumerate(value if attribute.name == "layers" else (value,)):
        if not all(callable(getattr(layer, m, None)) for m in ("init", "forward", "backward")):
            where = f"layers[{i}]" if attribute.name == "layers" else attribute.name
            raise TypeError(f"{type(instance).__name__}: {where} must be an fnn layer (with "
                            f"init, forward and backward), got {layer!r}")


def _note(err: BaseException, i: int, layer: Any, what: str) -> None:
    err.add_note(f"in Sequential layer {i} ({what}): {layer!r}")


@spec
class Sequential(Layer):
    """Apply ``layers`` in order. params and state are tuples of the children's (one entry per
    child, ``()`` for a child with none); the cache holds the children's caches and the tuple of
    their new states. ``init(key)`` gives each child its own key split off ``key``. An exception
    raised by a child carries a note with the child's index and repr. ``repr`` shows one child
    per line. backward returns dx = None when the first layer does (Embedding: integer inputs
    have no gradient)."""

    layers: tuple = attrs.field(converter=tuple, validator=_layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> Any:
        return self.layers[i]

    def __repr__(self) -> str:
        if not self.layers:
            return "Sequential([])"
        lines = "".join("\n  " + repr(layer).replace("\n", "\n  ") + ","
                        for layer in self.layers)
        return f"Sequential([{lines}\n])"

    def init(self, key: int | Key, input_shape: tuple[int, ...] | None = None
             ) -> tuple[tuple, tuple]:
        """Inputs: ``key``, an int seed or a :class:`fnn.Key` (each child gets a key split off
        it); optionally ``input_shape`` (batch axis first): the chain is checked against it
        first, and a ValueError names the first layer that does not fit.

        Returns ``(params, state)``: tuples with one entry per child."""
        if input_shape is not None:
            self.output_shape(input_shape)
        pairs = [layer.init(k) for layer, k in zip(self.layers, split_key(key, len(self.layers)))]
        return tuple(p for p, _ in pairs), tuple(s for _, s in pairs)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(input_shape)
        for i, layer in enumerate(self.layers):
            try:
                shape = tuple(layer.output_shape(shape))
            except Exception as err:
                _note(err, i, layer, "output_shape")
                raise
        return shape

    def param_shapes(self) -> tuple:
        return tuple(layer.param_shapes() for layer in self.layers)

    def state_shapes(self) -> tuple:
        return tuple(layer.state_shapes() for layer in self.layers)

    def _check(self, tree: Any, name: str) -> None:
        if not isinstance(tree, tuple) or len(tree) != len(self.layers):
            raise ValueError(f"{self!r}: expected {name} as a tuple of {len(self.layers)} "
                             f"entries (one per layer), got {type(tree).__name__}"
                             + (f" of {len(tree)}" if isinstance(tree, (tuple, list)) else ""))

    def forward(self, params: Sequence, state: Sequence, x: np.ndarray
                ) -> tuple[np.ndarray, SequentialCache]:
        """Inputs: params and state (tuples, one entry per child), x (the first child's input).

        Returns the last child's output and a :class:`SequentialCache`."""
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
        """Inputs: params, the forward's cache, dy (the last child's output shape).

        Returns dx (the first child's input shape) and the tuple of the children's dparams."""
        return self._backward(params, cache, dy, need_dx=True)

    def backward_params(self, params: Sequence, cache: SequentialCache, dy: np.ndarray
                        ) -> tuple:
        """``backward(params, cache, dy)[1]`` without the first child's input gradient (its
        ``backward_params`` is called instead of its ``backward``)."""
        return self._backward(params, cache, dy, need_dx=False)[1]

    def _backward(self, params: Sequence, cache: SequentialCache, dy: np.ndarray,
                  need_dx: bool) -> tuple[np.ndarray | None, tuple]:
        self._check(params, "params")
        grads = [None] * len(self.layers)
        for i in reversed(range(len(self.layers))):
            layer = self.layers[i]
            try:
                if i == 0 and not need_dx:
                    grads[0] = backward_params(layer, params[0], cache.caches[0], dy)
                    dy = None
                else:
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
    """Residual's cache: the inner layer's cache and new state."""

    inner: Any  # the inner layer's cache
    state: Any  # the inner layer's new state


@spec
class Residual(Layer):
    """y = x + layer(x): a skip connection around ``layer``, whose output must have x's shape.

    params and state are the inner layer's own (``init(key)`` is ``layer.init(key)``); the
    cache holds the inner cache and the inner new state. Backward: dx = dy + dx_inner, dparams
    the inner layer's. Errors (a shape mismatch, or an error of the inner layer) name the
    Residual and the inner layer.
    """

    layer: Any = attrs.field(validator=_layers)

    def init(self, key: int | Key) -> tuple[Any, Any]:
        """Inputs: ``key``. Returns the inner layer's ``init(key)``."""
        return self.layer.init(key)

    def param_shapes(self) -> Any:
        return self.layer.param_shapes()

    def state_shapes(self) -> Any:
        return self.layer.state_shapes()

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        with self._naming("output_shape"):
            inner = tuple(self.layer.output_shape(input_shape))
        if inner != tuple(input_shape):
            self._mismatch(input_shape, inner)
        return tuple(input_shape)

    def _mismatch(self, shape: tuple, inner: tuple) -> None:
        raise ValueError(f"{self!r}: the inner layer {self.layer!r} maps input of shape "
                         f"{tuple(shape)} to shape {tuple(inner)}; a residual needs the same "
                         f"shape")

    @contextlib.contextmanager
    def _naming(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as err:
            err.add_note(f"in the inner layer of Residual ({what}): {self!r}")
            raise

    def forward(self, params: Any, state: Any, x: np.ndarray) -> tuple[np.ndarray, ResidualCache]:
        """Inputs: the inner layer's params and state, x.

        Returns y = x + layer(x) (x's shape) and a :class:`ResidualCache`."""
        x = as_float_array(self, x)
        with self._naming("forward"):
            fx, inner = self.layer.forward(params, state, x)
        if fx.shape != x.shape:
            self._mismatch(x.shape, fx.shape)
        return x + fx, ResidualCache(inner=inner, state=inner.state)

    def backward(self, params: Any, cache: ResidualCache, dy: np.ndarray) -> tuple[np.ndarray, Any]:
        """Inputs: params, the forward's cache, dy (x's shape).

        Returns dx = dy + the inner layer's dx, and the inner layer's dparams."""
        dy = as_float_array(self, dy, "gradient")
        with self._naming("backward"):
            dx, dparams = self.layer.backward(params, cache.inner, dy)
        return dx + dy, dparams

    def backward_params(self, params: Any, cache: ResidualCache, dy: np.ndarray) -> Any:
        """The inner layer's dparams, without any input gradient."""
        dy = as_float_array(self, dy, "gradient")
        with self._naming("backward"):
            return backward_params(self.layer, params, cache.inner, dy)
