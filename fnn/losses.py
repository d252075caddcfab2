"""Criteria: ``loss, cache = crit.forward(y, target)`` and ``dy = crit.backward(cache)``.

Targets are one-hot (or any real weights) of y's shape, as in the classic API; integer one-hot
arrays are converted to y's dtype. The loss is a 0-d numpy value in y's dtype, averaged over
the batch (the first axis).
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import numpy as np

from .core import as_float_array, expect_shape

__all__ = ["MSECriterion", "ClassNLLCriterionUnstable", "ClassNLLCriterion", "CriterionCache"]


@attrs.frozen
class CriterionCache:
    y: np.ndarray  # the input (for the unstable NLL: clipped)
    target: np.ndarray  # in y's dtype


class _Criterion:
    """Shared checks: y a float array of the expected rank, target of y's shape."""

    _ndim: int | None = 2  # required rank of y, None for any rank >= 1

    def _inputs(self, y: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
        y = as_float_array(self, y)
        if (self._ndim is None and y.ndim < 1) or (self._ndim is not None and y.ndim != self._ndim):
            expect_shape(self, y, ("N", "C") if self._ndim == 2 else ("N", "..."))
        target = np.asarray(target)
        if target.dtype.kind not in "fiub":
            raise TypeError(f"{self!r}: expected a numeric target, got dtype {target.dtype}")
        expect_shape(self, target, y.shape, "target")
        return y, target.astype(y.dtype, copy=False)


@attrs.frozen
class MSECriterion(_Criterion):
    """loss = sum((y - t)^2) / N; dy = 2 (y - t) / N. Any shape (N, ...)."""

    _ndim = None

    def forward(self, y: np.ndarray, target: np.ndarray) -> tuple[np.generic, CriterionCache]:
        y, t = self._inputs(y, target)
        return np.sum(np.square(y - t)) / y.shape[0], CriterionCache(y=y, target=t)

    def backward(self, cache: CriterionCache) -> np.ndarray:
        dy = cache.y - cache.target
        dy *= 2
        dy /= cache.y.shape[0]
        return dy


@attrs.frozen
class ClassNLLCriterionUnstable(_Criterion):
    """On probabilities: loss = -sum(t * log(clip(y, EPS, 1 - EPS))) / N, EPS = 1e-15;
    dy = -t / clip(y, EPS, 1 - EPS) / N. y, t (N, C)."""

    EPS: ClassVar[float] = 1e-15

    def forward(self, y: np.ndarray, target: np.ndarray) -> tuple[np.generic, CriterionCache]:
        y, t = self._inputs(y, target)
        yc = np.clip(y, self.EPS, 1 - self.EPS)
        return -np.sum(np.log(yc) * t) / y.shape[0], CriterionCache(y=yc, target=t)

    def backward(self, cache: CriterionCache) -> np.ndarray:
        dy = np.negative(cache.target)
        dy /= cache.y
        dy /= cache.y.shape[0]
        return dy


@attrs.frozen
class ClassNLLCriterion(_Criterion):
    """On log-probabilities (after LogSoftMax): loss = -sum(t * y) / N; dy = -t / N. y, t (N, C)."""

    def forward(self, y: np.ndarray, target: np.ndarray) -> tuple[np.generic, CriterionCache]:
        y, t = self._inputs(y, target)
        return -np.sum(y * t) / y.shape[0], CriterionCache(y=y, target=t)

    def backward(self, cache: CriterionCache) -> np.ndarray:
        dy = np.negative(cache.target)
        dy /= cache.y.shape[0]
        return dy
