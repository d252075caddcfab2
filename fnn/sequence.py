"""Layers around recurrent ones: Bidirectional (a forward and a reversed copy side by side) and
LastStep (the last step of a sequence, for sequence classifiers)."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from .core import Key, Layer, as_float_array, backward_params, expect_shape, spec, split_key

__all__ = ["Bidirectional", "BidirectionalParams", "BidirectionalCache", "LastStep",
           "LastStepCache"]


@attrs.frozen
class BidirectionalParams:
    """Bidirectional's params: the two directions' records."""

    forward: Any  # the left-to-right layer's params
    backward: Any  # the right-to-left layer's params


@attrs.frozen
class BidirectionalCache:
    """Bidirectional's cache: the two directions' caches and the output's shape."""

    forward: Any  # the two layers' caches
    backward: Any
    y_shape: tuple  # the output's shape; the forward layer's part is the first half
    state: Any = ()


def _reversible(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not (attrs.has(type(value)) and isinstance(getattr(value, "reverse", None), bool)
            and hasattr(value, "forward")):
        raise ValueError(f"{type(instance).__name__}: {attribute.name} must be a layer with a "
                         f"reverse option (fnn.RNN, fnn.LSTM, fnn.GRU), got {value!r}")


@spec
class Bidirectional(Layer):
    """y = concat(layer(x), reversed(layer)(x)) over the last axis, as PyTorch's
    ``bidirectional=True``: ``Bidirectional(fnn.LSTM(F, H))`` is ``nn.LSTM(F, H,
    bidirectional=True, batch_first=True)``.

    Inputs x (N, T, F) -> y (N, T, 2H): y[..., :H] from ``layer`` and y[..., H:] from a copy
    with ``reverse`` flipped (for ``reverse=False``: y[:, t, H:] has read x_T ... x_t). Params
    ``BidirectionalParams(forward, backward)``, each the layer's own record, drawn from two keys
    split off the key (leaves in PyTorch's order: weight_ih_l0, ..., weight_ih_l0_reverse,
    ...); state the tuple of the two states. Backward: dx = dx_forward + dx_backward.
    """

    layer: Any = attrs.field(validator=_reversible)

    @property
    def layers(self) -> tuple[Any, Any]:
        """(the forward layer, the reversed copy)."""
        return self.layer, attrs.evolve(self.layer, reverse=not self.layer.reverse)

    def param_shapes(self) -> BidirectionalParams:
        return BidirectionalParams(*(layer.param_shapes() for layer in self.layers))

    def state_shapes(self) -> tuple:
        return tuple(layer.state_shapes() for layer in self.layers)

    def kink_distance(self, params: BidirectionalParams, state: tuple, x: np.ndarray) -> float:
        """The smaller of the two layers' distances to a kink (for ``fnn.testing``)."""
        own = [getattr(layer, "kink_distance", None) for layer in self.layers]
        return min((f(p, s, x) for f, p, s in zip(own, (params.forward, params.backward), state)
                    if callable(f)), default=np.inf)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        try:
            shape = self.layer.output_shape(input_shape)
        except ValueError as err:  # the user built the Bidirectional: name it too
            err.add_note(f"in the layer of {self!r}")
            raise
        return (*shape[:-1], 2 * shape[-1])

    def init(self, key: int | Key) -> tuple[BidirectionalParams, tuple]:
        """Inputs: ``key`` (split in two: the forward and the reversed copy).

        Returns ``(BidirectionalParams(forward, backward), (forward state, backward state))``."""
        (pf, sf), (pb, sb) = (layer.init(k) for layer, k in zip(self.layers, split_key(key, 2)))
        return BidirectionalParams(pf, pb), (sf, sb)

    def forward(self, params: BidirectionalParams, state: Any, x: np.ndarray
                ) -> tuple[np.ndarray, BidirectionalCache]:
        """Inputs: params (:class:`BidirectionalParams`), state (a pair), x (N, T, F).

        Returns y (N, T, 2H) and a :class:`BidirectionalCache` (both layers' caches)."""
        self.check_spec(params, state)
        x = as_float_array(self, x)  # a wrong dtype or rank names the Bidirectional
        self.output_shape(x.shape)
        fwd, bwd = self.layers
        yf, cf = fwd.forward(params.forward, state[0], x)
        yb, cb = bwd.forward(params.backward, state[1], x)
        y = np.concatenate([yf, yb], axis=-1)
        return y, BidirectionalCache(cf, cb, y.shape, (cf.state, cb.state))

    def backward(self, params: BidirectionalParams, cache: BidirectionalCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, BidirectionalParams]:
        """Inputs: params, the forward's cache, dy (N, T, 2H).

        Returns dx = dx_forward + dx_backward (N, T, F) and :class:`BidirectionalParams` of the
        two layers' gradients."""
        dyf, dyb = self._split(params, cache, dy)
        fwd, bwd = self.layers
        dxf, gf = fwd.backward(params.forward, cache.forward, dyf)
        dxb, gb = bwd.backward(params.backward, cache.backward, dyb)
        dxf += dxb
        return dxf, BidirectionalParams(gf, gb)

    def backward_params(self, params: BidirectionalParams, cache: BidirectionalCache,
                        dy: np.ndarray) -> BidirectionalParams:
        """``backward(params, cache, dy)[1]`` without computing dx."""
        dyf, dyb = self._split(params, cache, dy)
        fwd, bwd = self.layers
        return BidirectionalParams(backward_params(fwd, params.forward, cache.forward, dyf),
                                   backward_params(bwd, params.backward, cache.backward, dyb))

    def _split(self, params: BidirectionalParams, cache: BidirectionalCache, dy: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        self.check_params(params)
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, cache.y_shape, "gradient")
        h = cache.y_shape[-1] // 2
        return dy[..., :h], dy[..., h:]


@attrs.frozen
class LastStepCache:
    """LastStep's cache: x's shape and dtype."""

    x_shape: tuple
    dtype: str
    state: Any = ()


@spec
class LastStep(Layer):
    """y = x[:, -1]: the last step of each sequence, so that ``Sequential([LSTM(F, H),
    LastStep(), Linear(H, C)])`` classifies sequences (PyTorch: ``output[:, -1]``).

    Inputs x (N, T, ...) with T >= 1 -> y (N, ...) (a copy). Backward: dx (N, T, ...) is zero
    except dx[:, -1] = dy. No params, no state; the cache holds x's shape and dtype. All
    sequences of a batch have length T (pad at the front to batch unequal lengths).
    """

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) < 2 or (input_shape[1] is not None and input_shape[1] < 1):
            raise ValueError(f"{self!r}: expected input of shape (N, T, ...) with T >= 1, got "
                             f"shape {tuple(input_shape)}")
        return (input_shape[0], *input_shape[2:])

    def forward(self, params: Any, state: Any, x: np.ndarray) -> tuple[np.ndarray, LastStepCache]:
        """Inputs: params ``()``, state ``()``, x (N, T, ...).

        Returns y = x[:, -1] (N, ...) and a :class:`LastStepCache`."""
        self.check_spec(params, state)
        x = as_float_array(self, x)
        self.output_shape(x.shape)
        return x[:, -1].copy(), LastStepCache(x.shape, x.dtype.name, state)

    def backward(self, params: Any, cache: LastStepCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, tuple]:
        """Inputs: params ``()``, the forward's cache, dy (N, ...).

        Returns dx (N, T, ...), zero but for the last step, and ``()``."""
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, self.output_shape(cache.x_shape), "gradient")
        dx = np.zeros(cache.x_shape, cache.dtype)
        dx[:, -1] = dy
        return dx, ()

