"""The classic criteria, each over one fnn criterion: ``loss = forward(input, target)``,
``gradInput = backward(input, target)``; targets are one-hot (N, C); losses are averaged over
the batch."""

from __future__ import annotations

from typing import Any

import fnn

from .module import Criterion

__all__ = ["MSECriterion", "ClassNLLCriterionUnstable", "ClassNLLCriterion"]


class FnnCriterion(Criterion):
    """A classic criterion computed by the fnn criterion ``_fnn``. ``backward`` reuses the
    forward's cache when called with the same input and target objects."""

    _fnn: Any = None

    def __init__(self) -> None:
        super().__init__()
        self._last: tuple | None = None  # (input, target, cache) of the last forward

    def _spec(self) -> Any:
        return self._fnn()

    def updateOutput(self, input: Any, target: Any) -> Any:
        loss, cache = self._spec().forward(input, target)
        self._last = (input, target, cache)
        self.output = loss
        return loss

    def updateGradInput(self, input: Any, target: Any) -> Any:
        spec, last = self._spec(), self._last
        if last is not None and last[0] is input and last[1] is target:
            cache = last[2]
        else:
            cache = spec.forward(input, target)[1]
        self.gradInput = spec.backward(cache)
        return self.gradInput

    def __repr__(self) -> str:
        return self._fnn.__name__


class MSECriterion(FnnCriterion):
    """loss = sum((input - target)^2) / N; gradInput = 2 (input - target) / N."""

    _fnn = fnn.MSECriterion


class ClassNLLCriterionUnstable(FnnCriterion):
    """On probabilities: loss = -sum(target * log(clip(input, EPS, 1 - EPS))) / N, EPS = 1e-15."""

    _fnn = fnn.ClassNLLCriterionUnstable
    EPS = fnn.ClassNLLCriterionUnstable.EPS

    def _spec(self) -> Any:
        return self._fnn(eps=self.EPS)


class ClassNLLCriterion(FnnCriterion):
    """On log-probabilities (after LogSoftMax): loss = -sum(target * input) / N."""

    _fnn = fnn.ClassNLLCriterion
