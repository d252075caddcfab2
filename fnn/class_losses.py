"""The class criteria CrossEntropy and NLLLoss (torch.nn.functional.cross_entropy, nll_loss).

Inputs are (N, C), or (N, T, C) for sequences (any (N, ..., C)): the class axis is the LAST
one, as for fnn's SoftMax, LogSoftMax and Linear. PyTorch puts it at axis 1 ((N, C, T)): a torch
input is ``x.permute(0, 2, 1)`` of ours, with the same targets (N, T). Targets are class indices
of shape y.shape[:-1] ((N,) or (N, T); ``ignore_index`` marks padding) or, for CrossEntropy,
probabilities of y's shape. ``backward(cache, dloss=1.0)`` as every criterion (fnn.losses).
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from .activations import log_softmax
from .core import as_float_array, expect_shape, in_range, real_float, shape_str, spec
from .losses import _float_tuple, _floats_for, _optional_floats, _Reduced

__all__ = ["ClassCache", "NLLLoss", "CrossEntropy"]


@attrs.frozen
class ClassCache:
    """What CrossEntropy's / NLLLoss's backward needs."""

    log_probs: np.ndarray  # (N, ..., C): log-softmax of the logits (CrossEntropy) or the input
    target: np.ndarray  # class indices (N, ...) as int64, or probabilities (N, ..., C), y's dtype
    denominator: Any  # what "mean" divides by


def _rows(a: np.ndarray) -> np.ndarray:
    """(N, ..., C) as (M, C): one row per position (a view when a is contiguous)."""
    return a.reshape(-1, a.shape[-1])


@spec(kw_only=True)
class _ClassLoss(_Reduced):
    """Shared by NLLLoss and CrossEntropy: class weights, labels, the weighted mean. The per-row
    helpers work on (M, C) rows and (M,) labels (see ``_rows``)."""

    _ndim = None  # the rank is checked by _input: (N, ..., C)

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
            return np.ones(y.shape[-1], y.dtype)
        return _floats_for(self, "weight", self.weight, y.dtype, y.shape[-1])

    def _input(self, y: Any) -> np.ndarray:
        y = as_float_array(self, y)
        if y.ndim < 2:
            raise ValueError(f"{self!r}: expected input of shape (N, C) or (N, T, C) (the class "
                             f"axis last), got shape {tuple(y.shape)}")
        return y

    def _labels(self, y: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Integer class indices of shape y.shape[:-1] in [0, C) (or ignore_index), int64."""
        if not np.issubdtype(target.dtype, np.integer):
            raise TypeError(f"{self!r}: class-index targets {shape_str(y.shape[:-1])} must be "
                            f"integers, got dtype {target.dtype}; probability targets have "
                            f"the input's shape {shape_str(y.shape)}")
        expect_shape(self, target, y.shape[:-1], "target")
        labels = target.astype(np.int64, copy=False)
        bad = ((labels < 0) | (labels >= y.shape[-1])) & self._kept(labels)
        if np.any(bad):
            raise ValueError(f"{self!r}: class index {labels[bad][0]} out of range for "
                             f"{y.shape[-1]} classes")
        return labels

    def _row_factor(self, cache: ClassCache, dloss: Any) -> np.ndarray:
        """Each row's dloss / denominator (see _upstream), 0 for ignored rows (also when the
        mean is over nothing, where the others are nan: torch's gradients); (M,)."""
        y, labels = cache.log_probs, cache.target
        factor = self._upstream(dloss, labels.shape, cache.denominator, y.dtype)
        if self.ignore_index is not None:
            factor = np.where(self._kept(labels), factor, 0).astype(y.dtype, copy=False)
        return factor.reshape(-1) if np.ndim(factor) else factor

    def _kept(self, labels: np.ndarray) -> np.ndarray:
        """False where the label is ignore_index."""
        return labels != self.ignore_index if self.ignore_index is not None \
            else np.ones(labels.shape, bool)

    def _picked(self, y: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, w_t): each row's class (0 for ignored rows) and its weight (0 if ignored).
        Σₙ w_t is the denominator of torch's (weighted) mean."""
        if self.ignore_index is None:
            return labels, self._class_weights(y)[labels]
        kept = self._kept(labels)
        rows = np.where(kept, labels, 0)
        return rows, np.where(kept, self._class_weights(y)[rows], 0).astype(y.dtype)

    def _nll(self, y: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(losses, w_t): −w_t·y[t] per row, exactly 0 for ignored rows whatever y holds there
        (a −inf in an ignored row gives no 0·(−inf) = nan)."""
        rows, w_t = self._picked(y, labels)
        picked = y[np.arange(y.shape[0]), rows]
        if self.ignore_index is not None:
            picked[~self._kept(labels)] = 0
        return -w_t * picked, w_t


@spec(kw_only=True)
class NLLLoss(_ClassLoss):
    """On log-probabilities y (N, C) or (N, T, C) (class axis last; torch: (N, C, T)) with
    class indices t (N,) or (N, T): loss element −w[t]·y[..., t]; "mean" divides by Σ w[t] over
    the kept elements (their count without weights). dy[..., t] = −w[t] (times dloss, over the
    denominator), 0 elsewhere. Elements whose label is ``ignore_index`` count for nothing.
    torch.nn.NLLLoss (its ignore_index default −100 is None here: every label must be valid).

    Inputs: y (N, ..., C) float; target (N, ...) integers. Returns (loss, ClassCache): the loss
    is 0-d for "mean"/"sum" and (N, ...) for "none", in y's dtype. ``backward(cache,
    dloss=1.0)`` returns dy of y's shape and dtype.
    """

    def forward(self, y: np.ndarray, target: np.ndarray) -> tuple[Any, ClassCache]:
        y = self._input(y)
        labels = self._labels(y, np.asarray(target))
        losses, w_t = self._nll(_rows(y), labels.reshape(-1))
        total_weight = np.sum(w_t)
        return (self._reduce(losses.reshape(labels.shape), total_weight),
                ClassCache(y, labels, total_weight))

    def backward(self, cache: ClassCache, dloss: Any = 1.0) -> np.ndarray:
        y = _rows(self._cache(cache, ClassCache).log_probs)
        rows, w_t = self._picked(y, cache.target.reshape(-1))
        dy = np.zeros_like(y)
        dy[np.arange(y.shape[0]), rows] = -w_t * self._row_factor(cache, dloss)
        return dy.reshape(cache.log_probs.shape)


@spec(kw_only=True)
class CrossEntropy(_ClassLoss):
    """Softmax cross-entropy on logits x (N, C) or (N, T, C), as
    torch.nn.functional.cross_entropy.

    The class axis is the last one (fnn's convention, as SoftMax); torch's is axis 1, so
    torch's input (N, C, T) is ``x.permute(0, 2, 1)`` of ours, with the same targets.
    logp = log_softmax(x) over the last axis (max subtracted first: stable for logits of ±1e4),
    ε = ``label_smoothing``, w the class ``weight`` (ones if None), C classes. Targets:

    - class indices t (N,) or (N, T), integers: loss element
      (1 − ε)·(−w[t]·logp[..., t]) + (ε/C)·Σ_c (−w_c·logp[..., c]); "mean" divides the sum of
      both terms by Σ w[t] over the kept elements (their count without weights);
      ``ignore_index`` elements (padding) count for nothing;
    - probabilities (or one-hot rows, integer ones are converted) q of x's shape: with
      q' = (1 − ε)·q + ε/C, loss element −Σ_c w_c·q'_c·logp_c (a class with q'_c = 0 adds 0,
      even where logp_c = −inf; torch gives nan there); "mean" divides by N (by N·T).

    Both are Σ_c Q_c·(−logp_c) for a matrix Q, so dx = softmax(x)·Σ_c Q − Q (times dloss, over
    the denominator). The cache holds logp.

    Inputs: x (N, ..., C) float; target as above. Returns (loss, ClassCache): 0-d for
    "mean"/"sum", (N, ...) for "none", in x's dtype. ``backward(cache, dloss=1.0)`` returns dx
    of x's shape and dtype.
    """

    label_smoothing: float = attrs.field(default=0.0, converter=real_float,
                                         validator=in_range(0.0, 1.0, high_open=False))

    def forward(self, y: np.ndarray, target: np.ndarray) -> tuple[Any, ClassCache]:
        x = self._input(y)
        logp = log_softmax(x)
        eps, c = self.label_smoothing, x.shape[-1]
        target = np.asarray(target)
        if target.ndim == x.ndim - 1:
            labels = self._labels(x, target)
            flat = _rows(logp)
            losses, w_t = self._nll(flat, labels.reshape(-1))
            if eps:
                if self.ignore_index is not None:  # ignored rows as zeros: whatever they hold
                    flat = np.where(self._kept(labels.reshape(-1))[:, None], flat, 0)
                smooth = -(flat @ self._class_weights(x))
                losses = (1 - eps) * losses + (eps / c) * smooth
            total_weight = np.sum(w_t)
            return (self._reduce(losses.reshape(labels.shape), total_weight),
                    ClassCache(logp, labels, total_weight))
        _, q = self._inputs(x, target)
        with np.errstate(invalid="ignore"):  # 0 · (−inf) is handled below: no warning
            products = self._q_matrix(q) * logp
        losses = -np.sum(products, axis=-1)
        if np.isnan(losses).any():  # maybe 0 · (−inf): classes with q' = 0 count for nothing
            products[self._q_matrix(q) == 0] = 0
            losses = -np.sum(products, axis=-1)
        return self._reduce(losses, losses.size), ClassCache(logp, q, losses.size)

    def backward(self, cache: ClassCache, dloss: Any = 1.0) -> np.ndarray:
        logp, target = _rows(self._cache(cache, ClassCache).log_probs), cache.target
        n, c = logp.shape
        eps = self.label_smoothing
        dx = np.exp(logp)
        if target.ndim == cache.log_probs.ndim - 1:
            labels = target.reshape(-1)
            rows, w_t = self._picked(logp, labels)
            w = self._class_weights(logp)
            kept = self._kept(labels).astype(logp.dtype)
            # Q = (1 − ε)·w_t·onehot(t) + (ε/C)·w per kept row: Σ_c Q = (1 − ε)·w_t + (ε/C)·Σw
            dx *= ((1 - eps) * w_t + (eps / c) * np.sum(w) * kept)[:, None]
            if eps:
                dx -= (eps / c) * w * kept[:, None]
            dx[np.arange(n), rows] -= (1 - eps) * w_t
            factor = self._row_factor(cache, dloss)
        else:
            q = _rows(self._q_matrix(target))
            dx *= np.sum(q, axis=1, keepdims=True)
            dx -= q
            factor = self._upstream(dloss, target.shape[:-1], cache.denominator, logp.dtype)
            factor = factor.reshape(-1) if np.ndim(factor) else factor
        dx *= factor[:, None] if np.ndim(factor) else factor
        return dx.reshape(cache.log_probs.shape)

    def _q_matrix(self, q: np.ndarray) -> np.ndarray:
        """w_c·((1 − ε)·q + ε/C) for probability targets q (N, ..., C)."""
        eps, c = self.label_smoothing, q.shape[-1]
        if eps:
            q = (1 - eps) * q + eps / c
        return q * self._class_weights(q)
