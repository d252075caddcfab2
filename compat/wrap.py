"""The shell that turns an fnn layer spec into a classic stateful module.

``FnnModule`` keeps what a classic module keeps (attributes ``W``, ``gradW``, ``moving_mean``,
``output``, ``gradInput``, ...) and delegates every computation to fnn:

- the spec (e.g. ``fnn.Linear(n_in, n_out)``) is built from the current attributes and rebuilt
  only when they change; the params record (e.g. ``LinearParams(W=self.W, b=self.b)``) is built
  at every call, so assigned arrays and in-place optimizer updates are always used;
- ``updateOutput`` runs ``spec.forward`` and keeps the cache (the previous one is released
  first, so that its memory serves the new one; after a failed forward, backward recomputes
  from the input it is given);
- ``updateGradInput`` runs ``spec.backward``, which gives dx and dparams at once;
  ``accGradParameters`` called right after with the same input and gradOutput objects (as
  ``backward`` does) adds those dparams instead of computing them again. With other arrays,
  both recompute from the arrays given.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn.core import FLOAT_DTYPES
from fnn.tree import check_tree

from .module import Module

__all__ = ["FnnModule", "uniform_fan"]


def uniform_fan(fan: int, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    """The classic initialisation: float64 arrays drawn in order from the GLOBAL numpy RNG,
    ``np.random.uniform(-1/sqrt(fan), 1/sqrt(fan), size=shape)``."""
    bound = 1.0 / np.sqrt(fan)
    return [np.random.uniform(-bound, bound, size=shape) for shape in shapes]


class FnnModule(Module):
    """A classic module computed by an fnn layer spec.

    Subclasses set ``_fnn`` (the fnn layer class) and ``_hyper`` (the attributes passed to it,
    in order) or override ``_spec_key``/``_make_spec``; parametric ones set ``_record`` (the
    params record class), ``_param_names`` (its fields, equal to the attribute names) and
    ``_grad_names``; stateful ones override ``_state``/``_commit`` and name the attributes
    ``_commit`` replaces in ``_statistics`` (a failed Sequential forward puts them back).
    """

    _fnn: Any = None
    _hyper: tuple[str, ...] = ()
    _record: Any = None
    _param_names: tuple[str, ...] = ()
    _grad_names: tuple[str, ...] = ()
    _statistics: tuple[str, ...] = ()  # the attributes that ``_commit`` replaces
    _recomputable = True  # the forward is a function of the input (not so for Dropout)

    def __init__(self, **attributes: Any) -> None:
        super().__init__()
        vars(self).update(attributes)
        for p, g in zip(self._param_names, self._grad_names):
            setattr(self, g, np.zeros_like(getattr(self, p)))
        self._spec_for: tuple | None = None  # (hyperparameters, spec)
        self._input: Any = None  # the input of the last forward ...
        self._cache: Any = None  # ... and its fnn cache
        self._pending: tuple | None = None  # (input, gradOutput, dparams) of updateGradInput
        self._spec(None)  # invalid hyperparameters raise now

    # --- the fnn side --------------------------------------------------------------------------

    def _spec_key(self, x: Any) -> tuple:
        """The spec's hyperparameters, from the attributes (and, lazily, from the input x)."""
        return tuple(getattr(self, name) for name in self._hyper)

    def _make_spec(self, key: tuple) -> Any:
        return self._fnn(*key)

    def _spec(self, x: Any) -> Any:
        for name in self._param_names:  # the spec follows the params' shapes: check them first
            value = getattr(self, name)
            if not isinstance(value, np.ndarray) or value.dtype not in FLOAT_DTYPES:
                got = (f"dtype {value.dtype}" if isinstance(value, np.ndarray)
                       else type(value).__name__)
                raise TypeError(f"{type(self).__name__}: {name} must be a float32 or float64 "
                                f"ndarray, got {got}")
        try:
            key = self._spec_key(x)
        except IndexError:
            shapes = ", ".join(f"{n} {getattr(self, n).shape}" for n in self._param_names)
            raise ValueError(f"{type(self).__name__}: the parameters have shapes that fit no "
                             f"{self._fnn.__name__}: {shapes}") from None
        if self._spec_for is None or self._spec_for[0] != key:
            self._spec_for = (key, self._make_spec(key))
        return self._spec_for[1]

    def _params(self, spec: Any = None) -> Any:
        """The params record from the attributes; with ``spec``, first checked against the
        spec's shapes (a TypeError / ValueError naming this module and the attribute)."""
        if self._record is None:
            return ()
        params = self._record(*[getattr(self, name) for name in self._param_names])
        expected = () if spec is None else spec.param_shapes()
        if expected != ():
            check_tree(self, "", params, expected)
        return params

    def _state(self, spec: Any) -> Any:
        """The fnn state for a forward, from the attributes."""
        return ()

    def _commit(self, state: Any) -> None:
        """Store the state a successful forward returned (cache.state) in the attributes."""

    def _cache_for(self, input: Any) -> Any:
        """The last forward's cache if ``input`` is that forward's input, else a fresh one
        (whose new state is discarded)."""
        if input is self._input and self._cache is not None:
            return self._cache
        spec = self._spec(input)
        return spec.forward(self._params(spec), self._state(spec), input)[1]

    # --- the classic side ----------------------------------------------------------------------

    def updateOutput(self, input: Any) -> Any:
        spec = self._spec(input)
        if self._recomputable:  # free the old cache (e.g. Conv2d's columns) for this forward
            self._cache = self._pending = None
        y, cache = spec.forward(self._params(spec), self._state(spec), input)
        self._commit(cache.state)
        self._input, self._cache, self._pending = input, cache, None
        self.output = y
        return y

    def updateGradInput(self, input: Any, gradOutput: Any) -> Any:
        spec = self._spec(input)
        dx, dparams = spec.backward(self._params(spec), self._cache_for(input), gradOutput)
        self._pending = (input, gradOutput, dparams) if self._param_names else None
        self.gradInput = dx
        return dx

    def accGradParameters(self, input: Any, gradOutput: Any) -> None:
        """grad += d loss / d param for each parameter (Torch7: accumulate, in place, in the
        gradient's own dtype)."""
        if not self._param_names:
            return
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] is input and pending[1] is gradOutput:
            dparams = pending[2]
        else:
            dparams = self._spec(input).backward(self._params(), self._cache_for(input),
                                                 gradOutput)[1]
        pairs = [(g, getattr(self, g), getattr(dparams, p))
                 for p, g in zip(self._param_names, self._grad_names)]
        for name, grad, d in pairs:  # check all before changing any
            if np.shape(grad) != d.shape:
                raise ValueError(f"{self!r}: {name} has shape {np.shape(grad)}, the new gradient "
                                 f"has shape {d.shape}; call zeroGradParameters() after "
                                 f"assigning parameters of another shape")
        for _, grad, d in pairs:
            np.add(grad, d, out=grad)

    def zeroGradParameters(self) -> None:
        """Zero the gradients in place (a gradient whose parameter was replaced by one of
        another shape is replaced by zeros like the parameter)."""
        for p, g in zip(self._param_names, self._grad_names):
            param, grad = getattr(self, p), getattr(self, g)
            if isinstance(grad, np.ndarray) and grad.shape == np.shape(param):
                grad.fill(0)
            else:
                setattr(self, g, np.zeros_like(param))

    def getParameters(self) -> list:
        return [getattr(self, name) for name in self._param_names]

    def getGradParameters(self) -> list:
        return [getattr(self, name) for name in self._grad_names]

    def __repr__(self) -> str:
        return self._fnn.__name__
