"""Criteria: ``loss, cache = crit.forward(y, target)`` and ``dy = crit.backward(cache)``.

Classic criteria (MSECriterion, ClassNLLCriterion, ClassNLLCriterionUnstable): targets are
one-hot (or any real weights) of y's shape, as in the classic API; integer one-hot arrays are
converted to y's dtype. The loss is a 0-d numpy value in y's dtype, averaged over the batch (the
first axis).

PyTorch-style criteria (CrossEntropy, NLLLoss, BCEWithLogits, L1, Huber): keyword-only
hyperparameters and torch's ``reduction``, see the section below.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import numpy as np
import scipy.special

from .core import as_float_array, expect_shape, finite_real, in_range, real_float

__all__ = ["MSECriterion", "ClassNLLCriterionUnstable", "ClassNLLCriterion", "CriterionCache",
           "CrossEntropy", "NLLLoss", "BCEWithLogits", "L1", "Huber", "ClassCache",
           "REDUCTIONS"]


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
    """On probabilities: loss = -sum(t * log(clip(y, eps, 1 - eps))) / N, eps = EPS = 1e-15 by
    default; dy = -t / clip(y, eps, 1 - eps) / N. y, t (N, C)."""

    EPS: ClassVar[float] = 1e-15

    eps: float = attrs.field(default=EPS, converter=real_float, validator=in_range(0.0, 0.5))

    def forward(self, y: np.ndarray, target: np.ndarray) -> tuple[np.generic, CriterionCache]:
        y, t = self._inputs(y, target)
        yc = np.clip(y, self.eps, 1 - self.eps)
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


# --- criteria with PyTorch's reduction: "mean" | "sum" | "none" ------------------------------
#
# Unlike the classic criteria above (always a sum over the batch divided by N), these follow
# torch.nn.functional: "mean" averages over every loss element (the weighted mean for class
# weights), "sum" adds them, "none" returns them. ``backward(cache, dloss=None)`` is the gradient
# of sum(dloss * loss); dloss defaults to 1, i.e. the gradient of the returned loss (of its sum
# for "none").

REDUCTIONS = ("mean", "sum", "none")


def _reduction(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value not in REDUCTIONS:
        raise ValueError(f"{type(instance).__name__}: {attribute.name} must be one of "
                         f"{REDUCTIONS}, got {value!r}")


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


def _positive(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    finite_real(instance, attribute, value)
    if value <= 0:
        raise ValueError(f"{type(instance).__name__}: {attribute.name} must be positive, "
                         f"got {value!r}")


def _floats_for(owner: Any, name: str, values: tuple, dtype: np.dtype, n: int) -> np.ndarray:
    """``values`` as an array in ``dtype``; its length must be ``n`` (the class count)."""
    if len(values) != n:
        raise ValueError(f"{owner!r}: {name} has {len(values)} entries, the input has {n} "
                         f"classes")
    return np.asarray(values, dtype)


def _nan_if_zero(denominator: Any, dtype: np.dtype) -> np.generic:
    return dtype.type(denominator if denominator != 0 else np.nan)


@attrs.frozen(kw_only=True)
class _Reduced(_Criterion):
    """A criterion whose per-element losses are reduced as torch's ``reduction``."""

    reduction: str = attrs.field(default="mean", validator=_reduction)

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
        if dloss is None:
            factor = np.ones((), dtype)
        else:
            dloss = as_float_array(self, dloss, "dloss")
            expect_shape(self, dloss, loss_shape if self.reduction == "none" else (), "dloss")
            factor = dloss.astype(dtype, copy=False)
        return factor / _nan_if_zero(denominator, dtype) if self.reduction == "mean" else factor


@attrs.frozen(kw_only=True)
class _Elementwise(_Reduced):
    """loss element = f(y, t) for y, t of one shape (N, ...); "mean" divides by y.size."""

    _ndim = None

    def forward(self, y: np.ndarray, target: np.ndarray) -> tuple[Any, CriterionCache]:
        y, t = self._inputs(y, target)
        return self._reduce(self._losses(y, t), y.size), CriterionCache(y=y, target=t)

    def backward(self, cache: CriterionCache, dloss: Any = None) -> np.ndarray:
        dy = self._gradient(cache.y, cache.target)
        dy *= self._upstream(dloss, cache.y.shape, cache.y.size, cache.y.dtype)
        return dy


@attrs.frozen(kw_only=True)
class L1(_Elementwise):
    """loss element |y - t|; dy = sign(y - t) (0 where y = t, as torch). Any shape (N, ...);
    torch.nn.L1Loss."""

    def _losses(self, y: np.ndarray, t: np.ndarray) -> np.ndarray:
        return np.abs(y - t)

    def _gradient(self, y: np.ndarray, t: np.ndarray) -> np.ndarray:
        return np.sign(y - t)


@attrs.frozen(kw_only=True)
class Huber(_Elementwise):
    """With d = y - t: loss element d²/2 where |d| < delta, else delta·(|d| − delta/2);
    dy = clip(d, −delta, delta). Any shape (N, ...); torch.nn.HuberLoss (delta > 0)."""

    delta: float = attrs.field(default=1.0, converter=real_float, validator=_positive)

    def _losses(self, y: np.ndarray, t: np.ndarray) -> np.ndarray:
        a = np.abs(y - t)
        return np.where(a < self.delta, 0.5 * a * a, self.delta * (a - 0.5 * self.delta))

    def _gradient(self, y: np.ndarray, t: np.ndarray) -> np.ndarray:
        return np.clip(y - t, -self.delta, self.delta)


@attrs.frozen(kw_only=True)
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


@attrs.frozen
class ClassCache:
    log_probs: np.ndarray  # (N, C): log-softmax of the logits (CrossEntropy) or the input (NLL)
    target: np.ndarray  # class indices (N,) as int64, or probabilities (N, C) in y's dtype
    denominator: Any  # what "mean" divides by


@attrs.frozen(kw_only=True)
class _ClassLoss(_Reduced):
    """Shared by NLLLoss and CrossEntropy: class weights, labels, the weighted mean."""

    weight: tuple[float, ...] | None = attrs.field(default=None, converter=_float_tuple,
                                                   validator=_optional_floats)
    ignore_index: int | None = attrs.field(
        default=None, converter=lambda v: int(v) if isinstance(v, np.integer) else v)

    @ignore_index.validator
    def _check_ignore_index(self, attribute: attrs.Attribute, value: Any) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{type(self).__name__}: ignore_index must be None or an int, "
                             f"got {value!r}")

    def _class_weights(self, y: np.ndarray) -> np.ndarray:
        """The weight of each class, (C,) in y's dtype (ones without ``weight``)."""
        if self.weight is None:
            return np.ones(y.shape[1], y.dtype)
        return _floats_for(self, "weight", self.weight, y.dtype, y.shape[1])

    def _input(self, y: Any) -> np.ndarray:
        y = as_float_array(self, y)
        if y.ndim != 2:
            expect_shape(self, y, ("N", "C"))
        return y

    def _labels(self, y: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Integer class indices (N,) in [0, C) (or ignore_index) as int64."""
        if not np.issubdtype(target.dtype, np.integer):
            raise TypeError(f"{self!r}: class-index targets (N,) must be integers, got dtype "
                            f"{target.dtype}; probability targets have shape (N, C)")
        expect_shape(self, target, (y.shape[0],), "target")
        labels = target.astype(np.int64, copy=False)
        bad = ((labels < 0) | (labels >= y.shape[1])) & self._kept(labels)
        if np.any(bad):
            raise ValueError(f"{self!r}: class index {labels[bad][0]} out of range for "
                             f"{y.shape[1]} classes")
        return labels

    def _row_factor(self, cache: ClassCache, dloss: Any) -> np.ndarray:
        """Each row's dloss / denominator (see _upstream), 0 for ignored rows (also when the
        mean is over nothing, where the others are nan: torch's gradients)."""
        y = cache.log_probs
        factor = self._upstream(dloss, (y.shape[0],), cache.denominator, y.dtype)
        return np.where(self._kept(cache.target), factor, 0).astype(y.dtype, copy=False)

    def _kept(self, labels: np.ndarray) -> np.ndarray:
        """False where the label is ignore_index."""
        return labels != self.ignore_index if self.ignore_index is not None \
            else np.ones(labels.shape, bool)

    def _picked(self, y: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, w_t): each row's class (0 for ignored rows) and its weight (0 if ignored).
        Σₙ w_t is the denominator of torch's (weighted) mean."""
        kept = self._kept(labels)
        rows = np.where(kept, labels, 0)
        return rows, np.where(kept, self._class_weights(y)[rows], 0).astype(y.dtype)


@attrs.frozen(kw_only=True)
class NLLLoss(_ClassLoss):
    """On log-probabilities y (N, C) with class indices t (N,): loss element −w[tₙ]·y[n, tₙ];
    "mean" divides by Σₙ w[tₙ] (N without weights). dy[n, tₙ] = −w[tₙ] (times dloss, over the
    denominator), 0 elsewhere. Rows whose label is ``ignore_index`` count for nothing.
    torch.nn.NLLLoss (its ignore_index default −100 is None here: every label must be valid)."""

    def forward(self, y: np.ndarray, target: np.ndarray) -> tuple[Any, ClassCache]:
        y = self._input(y)
        labels = self._labels(y, np.asarray(target))
        rows, w_t = self._picked(y, labels)
        losses, total_weight = -w_t * y[np.arange(y.shape[0]), rows], np.sum(w_t)
        return self._reduce(losses, total_weight), ClassCache(y, labels, total_weight)

    def backward(self, cache: ClassCache, dloss: Any = None) -> np.ndarray:
        y = cache.log_probs
        rows, w_t = self._picked(y, cache.target)
        dy = np.zeros_like(y)
        dy[np.arange(y.shape[0]), rows] = -w_t * self._row_factor(cache, dloss)
        return dy


@attrs.frozen(kw_only=True)
class CrossEntropy(_ClassLoss):
    """Softmax cross-entropy on logits x (N, C), as torch.nn.functional.cross_entropy.

    logp = log_softmax(x) (max subtracted first: stable for logits of ±1e4), ε =
    ``label_smoothing``, w the class ``weight`` (ones if None), C classes. Targets:

    - class indices t (N,), integers: loss element
      (1 − ε)·(−w[tₙ]·logp[n, tₙ]) + (ε/C)·Σ_c (−w_c·logp[n, c]); "mean" divides the sum of
      both terms by Σₙ w[tₙ] (N without weights); ``ignore_index`` rows count for nothing;
    - probabilities (or one-hot rows, integer ones are converted) q (N, C): with
      q' = (1 − ε)·q + ε/C, loss element −Σ_c w_c·q'[n, c]·logp[n, c]; "mean" divides by N.

    Both are Σ_c Q[n, c]·(−logp[n, c]) for a matrix Q, so dx = softmax(x)·Σ_c Q − Q (times dloss,
    over the denominator). The cache holds logp.
    """

    label_smoothing: float = attrs.field(default=0.0, converter=real_float,
                                         validator=in_range(0.0, 1.0, high_open=False))

    def forward(self, y: np.ndarray, target: np.ndarray) -> tuple[Any, ClassCache]:
        x = self._input(y)
        m = np.max(x, axis=1, keepdims=True)
        logp = x - m
        logp -= np.log(np.sum(np.exp(logp), axis=1, keepdims=True))
        eps, c = self.label_smoothing, x.shape[1]
        target = np.asarray(target)
        if target.ndim == 1:
            labels = self._labels(x, target)
            rows, w_t = self._picked(x, labels)
            losses = -w_t * logp[np.arange(x.shape[0]), rows]
            if eps:
                smooth = -(logp @ self._class_weights(x)) * self._kept(labels)
                losses = (1 - eps) * losses + (eps / c) * smooth
            total_weight = np.sum(w_t)
            return self._reduce(losses, total_weight), ClassCache(logp, labels, total_weight)
        _, q = self._inputs(x, target)
        losses = -np.sum(self._q_matrix(q) * logp, axis=1)
        return self._reduce(losses, x.shape[0]), ClassCache(logp, q, x.shape[0])

    def backward(self, cache: ClassCache, dloss: Any = None) -> np.ndarray:
        logp, target = cache.log_probs, cache.target
        n, c = logp.shape
        eps = self.label_smoothing
        if target.ndim == 1:
            rows, w_t = self._picked(logp, target)
            w = self._class_weights(logp)
            kept = self._kept(target).astype(logp.dtype)
            # Q = (1 − ε)·w_t·onehot(t) + (ε/C)·w per kept row: Σ_c Q = (1 − ε)·w_t + (ε/C)·Σw
            dx = np.exp(logp)
            dx *= ((1 - eps) * w_t + (eps / c) * np.sum(w) * kept)[:, None]
            if eps:
                dx -= (eps / c) * w * kept[:, None]
            dx[np.arange(n), rows] -= (1 - eps) * w_t
            factor = self._row_factor(cache, dloss)
        else:
            q = self._q_matrix(target)
            dx = np.exp(logp)
            dx *= np.sum(q, axis=1, keepdims=True)
            dx -= q
            factor = self._upstream(dloss, (n,), cache.denominator, logp.dtype)
        dx *= factor[:, None] if np.ndim(factor) else factor
        return dx

    def _q_matrix(self, q: np.ndarray) -> np.ndarray:
        """w_c·((1 − ε)·q + ε/C) for probability targets q (N, C)."""
        eps, c = self.label_smoothing, q.shape[1]
        if eps:
            q = (1 - eps) * q + eps / c
        return q * self._class_weights(q)
