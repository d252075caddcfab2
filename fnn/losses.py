"""Criteria: ``loss, cache = crit.forward(y, target)`` and ``dy = crit.backward(cache, dloss=1.0)``.

Every criterion has this one backward signature: ``dy`` is the gradient of ``dloss · loss`` (of
``Σ dloss · loss`` when the loss is per element, reduction "none"), so the default ``dloss=1.0``
gives the gradient of the returned loss. dloss is a scalar, or an array of the loss's shape.

Classic criteria (MSECriterion, ClassNLLCriterion, ClassNLLCriterionUnstable): targets are
one-hot (or any real weights) of y's shape, as in the classic API; integer one-hot arrays are
converted to y's dtype. The loss is a 0-d numpy value in y's dtype, averaged over the batch (the
first axis).

PyTorch-style criteria (BCEWithLogits, L1, Huber here; CrossEntropy and NLLLoss in
``fnn.class_losses``): keyword-only hyperparameters and torch's ``reduction``, see the section
below.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import numpy as np
import scipy.special

from .core import as_float_array, expect_shape, in_range, one_of, positive_real, real_float, spec

__all__ = ["MSECriterion", "ClassNLLCriterionUnstable", "ClassNLLCriterion", "CriterionCache",
           "BCEWithLogits", "L1", "Huber", "REDUCTIONS"]


@attrs.frozen
class CriterionCache:
    """The classic criteria's cache: the input y and the target in y's dtype."""

    y: np.ndarray  # the input (for the unstable NLL: clipped)
    target: np.ndarray  # in y's dtype


def dloss_factor(owner: Any, dloss: Any, loss_shape: tuple, dtype: np.dtype) -> Any:
    """``dloss`` (a real scalar, or an array of ``loss_shape``) in ``dtype``; a
    TypeError/ValueError naming ``owner`` otherwise."""
    if type(dloss) is float:  # the default 1.0: no array round trip
        return dtype.type(dloss)
    dloss = as_float_array(owner, real_float(dloss), "dloss")
    if dloss.ndim:
        expect_shape(owner, dloss, loss_shape, "dloss")
    return dloss.astype(dtype, copy=False)


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

    def _cache(self, cache: Any, cls: type) -> Any:
        """``cache`` if it is a ``cls`` (what forward returns), else a TypeError naming self."""
        if not isinstance(cache, cls):
            raise TypeError(f"{self!r}: backward expects the {cls.__name__} that forward "
                            f"returned (loss, cache = forward(y, target)), got "
                            f"{type(cache).__name__}")
        return cache


class _Classic(_Criterion):
    """A classic criterion: a 0-d loss; ``backward`` is ``_dy(cache)`` times dloss."""

    def backward(self, cache: CriterionCache, dloss: Any = 1.0) -> np.ndarray:
        """Inputs: the forward's cache; dloss, a scalar. Returns dy = d(dloss · loss)/dy, of
        y's shape and dtype."""
        dy = self._dy(self._cache(cache, CriterionCache))
        dy *= dloss_factor(self, dloss, (), cache.y.dtype)
        return dy


@spec
class MSECriterion(_Classic):
    """loss = sum((y - t)^2) / N; dy = 2 (y - t) / N. Any shape (N, ...)."""

    _ndim = None

    def forward(self, y: np.ndarray, target: np.ndarray) -> tuple[np.generic, CriterionCache]:
        y, t = self._inputs(y, target)
        return np.sum(np.square(y - t)) / y.shape[0], CriterionCache(y=y, target=t)

    def _dy(self, cache: CriterionCache) -> np.ndarray:
        dy = cache.y - cache.target
        dy *= 2
        dy /= cache.y.shape[0]
        return dy


@spec
class ClassNLLCriterionUnstable(_Classic):
    """On probabilities: loss = -sum(t * log(clip(y, eps, 1 - eps))) / N, eps = EPS = 1e-15 by
    default; dy = -t / clip(y, eps, 1 - eps) / N. y, t (N, C)."""

    EPS: ClassVar[float] = 1e-15

    eps: float = attrs.field(default=EPS, converter=real_float, validator=in_range(0.0, 0.5))

    def forward(self, y: np.ndarray, target: np.ndarray) -> tuple[np.generic, CriterionCache]:
        y, t = self._inputs(y, target)
        yc = np.clip(y, self.eps, 1 - self.eps)
        return -np.sum(np.log(yc) * t) / y.shape[0], CriterionCache(y=yc, target=t)

    def _dy(self, cache: CriterionCache) -> np.ndarray:
        dy = np.negative(cache.target)
        dy /= cache.y
        dy /= cache.y.shape[0]
        return dy


@spec
class ClassNLLCriterion(_Classic):
    """On log-probabilities (after LogSoftMax): loss = -sum(t * y) / N; dy = -t / N. y, t (N, C).

    The sum runs over the entries where t ≠ 0 only, so a log-probability of −inf in a class of
    target weight 0 (a masked class) leaves the loss finite, as torch.nn.NLLLoss (0 · (−inf)
    would be nan)."""

    def forward(self, y: np.ndarray, target: np.ndarray) -> tuple[np.generic, CriterionCache]:
        y, t = self._inputs(y, target)
        with np.errstate(invalid="ignore"):  # 0 · (−inf) is handled below: no warning
            products = y * t
        total = np.sum(products)
        if np.isnan(total):  # maybe 0 · (−inf): the entries with t = 0 count for nothing
            products[t == 0] = 0
            total = np.sum(products)
        return -total / y.shape[0], CriterionCache(y=y, target=t)

    def _dy(self, cache: CriterionCache) -> np.ndarray:
        dy = np.negative(cache.target)
        dy /= cache.y.shape[0]
        return dy


# --- criteria with PyTorch's reduction: "mean" | "sum" | "none" ------------------------------
#
# Unlike the classic criteria above (always a sum over the batch divided by N), these follow
# torch.nn.functional: "mean" averages over every loss element (the weighted mean for class
# weights), "sum" adds them, "none" returns them.

REDUCTIONS = ("mean", "sum", "none")



def _float_tuple(value: Any) -> Any:
    """Converter: a 1-D real sequence (list, tuple, array) as a tuple of Python floats, which
    keeps the spec hashable and immutable; anything else is left for the validator."""
    a = np.asarray(value) if value is not None else None
    if a is not None and a.ndim == 1 and a.dtype.kind in "fiu":
        return tuple(float(v) for v in a)
    return value


def _optional_floats(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and not (isinstance(value, tuple) and value
                                  and all(np.isfinite(value))):
        raise ValueError(f"{type(instance).__name__}: {attribute.name} must be None or a "
                         f"non-empty 1-D sequence of finite numbers, got {value!r}")



def _floats_for(owner: Any, name: str, values: tuple, dtype: np.dtype, n: int) -> np.ndarray:
    """``values`` as an array in ``dtype``; its length must be ``n`` (the class count)."""
    if len(values) != n:
        raise ValueError(f"{owner!r}: {name} has {len(values)} entries, the input has {n} "
                         f"classes")
    return np.asarray(values, dtype)


def _nan_if_zero(denominator: Any, dtype: np.dtype) -> np.generic:
    return dtype.type(denominator if denominator != 0 else np.nan)


@spec(kw_only=True)
class _Reduced(_Criterion):
    """A criterion whose per-element losses are reduced as torch's ``reduction``."""

    reduction: str = attrs.field(default="mean", validator=one_of(*REDUCTIONS))

    def _reduce(self, losses: np.ndarray, denominator: Any) -> Any:
        """``losses`` (none), their sum, or their sum / ``denominator`` (mean), in their dtype.
        A mean over nothing (denominator 0: an empty input, every row ignored or of weight 0)
        is nan, as in torch."""
        if self.reduction == "none":
            return losses
        total = np.sum(losses)
        return total / _nan_if_zero(denominator, total.dtype) if self.reduction == "mean" \
            else total

    def _upstream(self, dloss: Any, loss_shape: tuple, denominator: Any, dtype: np.dtype) -> Any:
        """What each element's loss gradient is multiplied by: dloss, divided by the
        denominator for "mean"; dloss is a scalar, or of the losses' shape for "none"."""
        factor = dloss_factor(self, dloss, loss_shape if self.reduction == "none" else (), dtype)
        return factor / _nan_if_zero(denominator, dtype) if self.reduction == "mean" else factor


@spec(kw_only=True)
class _Elementwise(_Reduced):
    """loss element = f(y, t) for y, t of one shape (N, ...); "mean" divides by y.size."""

    _ndim = None

    def forward(self, y: np.ndarray, target: np.ndarray) -> tuple[Any, CriterionCache]:
        y, t = self._inputs(y, target)
        return self._reduce(self._losses(y, t), y.size), CriterionCache(y=y, target=t)

    def backward(self, cache: CriterionCache, dloss: Any = 1.0) -> np.ndarray:
        """Inputs: the forward's cache; dloss, a scalar (or y's shape for "none"). Returns
        dy = d(Σ dloss · loss)/dy, of y's shape and dtype."""
        dy = self._gradient(self._cache(cache, CriterionCache).y, cache.target)
        dy *= self._upstream(dloss, cache.y.shape, cache.y.size, cache.y.dtype)
        return dy


@spec(kw_only=True)
class L1(_Elementwise):
    """loss element |y - t|; dy = sign(y - t) (0 where y = t, as torch). Any shape (N, ...);
    torch.nn.L1Loss."""

    def _losses(self, y: np.ndarray, t: np.ndarray) -> np.ndarray:
        return np.abs(y - t)

    def _gradient(self, y: np.ndarray, t: np.ndarray) -> np.ndarray:
        return np.sign(y - t)


@spec(kw_only=True)
class Huber(_Elementwise):
    """With d = y - t: loss element d²/2 where |d| < delta, else delta·(|d| − delta/2);
    dy = clip(d, −delta, delta). Any shape (N, ...); torch.nn.HuberLoss (delta > 0)."""

    delta: float = attrs.field(default=1.0, converter=real_float, validator=positive_real)

    def _losses(self, y: np.ndarray, t: np.ndarray) -> np.ndarray:
        a = np.abs(y - t)
        return np.where(a < self.delta, 0.5 * a * a, self.delta * (a - 0.5 * self.delta))

    def _gradient(self, y: np.ndarray, t: np.ndarray) -> np.ndarray:
        return np.clip(y - t, -self.delta, self.delta)


@spec(kw_only=True)
class BCEWithLogits(_Elementwise):
    """Binary cross-entropy on logits x with targets t in [0, 1] (soft targets allowed):
    loss element −[pw·t·log σ(x) + (1 − t)·log(1 − σ(x))] = (1 − t)·x − (1 + (pw − 1)·t)·log σ(x),
    with log σ computed stably (scipy's log_expit); dy = (1 − t) − (1 + (pw − 1)·t)·σ(−x).
    ``pos_weight`` (pw, default 1) has one entry per class of the last axis (or one entry).
    Any shape (N, ...); torch.nn.BCEWithLogitsLoss (without its per-element ``weight``)."""

    pos_weight: tuple[float, ...] | None = attrs.field(default=None, converter=_float_tuple,
                                                       validator=_optional_floats)

    def _log_weight(self, y: np.ndarray, t: np.ndarray) -> Any:
        """1 + (pw − 1)·t (just 1 without pos_weight)."""
        if self.pos_weight is None:
            return 1
        pw = self.pos_weight
        if len(pw) not in (1, y.shape[-1]):
            raise ValueError(f"{self!r}: pos_weight has {len(pw)} entries, expected 1 or the "
                             f"size of the input's last axis (input shape {y.shape})")
        return 1 + (np.asarray(pw, y.dtype) - 1) * t

    def _losses(self, y: np.ndarray, t: np.ndarray) -> np.ndarray:
        return (1 - t) * y - self._log_weight(y, t) * scipy.special.log_expit(y)

    def _gradient(self, y: np.ndarray, t: np.ndarray) -> np.ndarray:
        return (1 - t) - self._log_weight(y, t) * scipy.special.expit(-y)
