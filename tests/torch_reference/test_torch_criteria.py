"""PyTorch reference tests for the PyTorch-style criteria (CrossEntropy, NLLLoss, BCEWithLogits,
L1, Huber): loss and dy against torch.nn.functional and autograd (for reduction "none", the
gradient of sum(dloss * loss) for a random dloss), over every combination of target kind, class
weight, label smoothing, ignore_index and reduction, and on logits of ±1e4.

Tolerances: float64 atol = rtol = 1e-10, float32 atol = rtol = 1e-5 (torch_kit.assert_close).
Our values must be in the input dtype. ``python tests/torch_reference/test_torch_criteria.py``
prints the largest absolute difference per case and dtype.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from torch_kit import (
    DTYPES,
    Compared,
    as_numpy,
    assert_close,
    max_abs_diff,
    tensor,
    torch,
)

import fnn

F = torch.nn.functional


# --- criteria ---------------------------------------------------------------------------------

def criterion_versus(crit: Any, y: np.ndarray, target: Any,
                     ref: Callable[[torch.Tensor], torch.Tensor], rng: np.random.Generator
                     ) -> Compared:
    """Our loss and dy against ``ref(y)`` and autograd. For reduction "none" both take a random
    dloss; for "mean" and "sum" a random scalar dloss half of the time."""
    loss, cache = crit.forward(y, target)
    yt = tensor(y, grad=True)
    lt = ref(yt)
    if crit.reduction == "none":
        dloss = rng.standard_normal(np.shape(loss)).astype(y.dtype)
    elif rng.random() < 0.5:
        dloss = np.asarray(rng.standard_normal(), y.dtype)
    else:  # the default dloss = 1.0
        lt.backward()
        return [("loss", loss, lt), ("dy", crit.backward(cache), yt.grad)]
    lt.backward(tensor(dloss))
    return [("loss", loss, lt), ("dy", crit.backward(cache, dloss), yt.grad)]


def logits(rng: np.random.Generator, dtype: type, shape: tuple, scale: float = 3.0
           ) -> np.ndarray:
    return (scale * rng.standard_normal(shape)).astype(dtype)


def classes_at_axis_1(t: torch.Tensor) -> torch.Tensor:
    """Our class-last layout (N, T, C) as torch's (N, C, T); (N, C) stays."""
    return t.movedim(-1, 1) if t.ndim > 2 else t


def class_problem(rng: np.random.Generator, dtype: type, kind: str, lead: tuple = (6,),
                  c: int = 5) -> tuple[Any, torch.Tensor]:
    """(our target, torch's target) of ``kind`` for positions ``lead`` ((N,) or (N, T)):
    "labels" int, "probs" rows of a random softmax, "onehot" int64 rows for us and float rows
    for torch (with the class axis at 1)."""
    labels = rng.integers(0, c, lead)
    if kind == "labels":
        return labels, tensor(labels)
    if kind == "onehot":
        onehot = np.eye(c, dtype=np.int64)[labels]
        return onehot, classes_at_axis_1(tensor(onehot.astype(dtype)))
    q = np.exp(rng.standard_normal((*lead, c)))
    q = (q / q.sum(axis=-1, keepdims=True)).astype(dtype)
    return q, classes_at_axis_1(tensor(q))


REDUCTIONS = ("mean", "sum", "none")


def cross_entropy(kind: str, weighted: bool, smoothing: float, reduction: str,
                  ignore: bool = False, scale: float = 3.0, seq: bool = False) -> Callable:
    """CrossEntropy on (6, 5), or with ``seq`` on (3, 4, 5) against torch's (3, 5, 4)."""
    def case(dtype: type, rng: np.random.Generator) -> Compared:
        lead, c = ((3, 4) if seq else (6,)), 5
        target, ref_target = class_problem(rng, dtype, kind, lead, c)
        weight = rng.uniform(0.2, 2.0, c) if weighted else None
        kw: dict[str, Any] = dict(reduction=reduction, label_smoothing=smoothing)
        if ignore:
            target[rng.random(lead) < 0.4] = 2
            ref_target = tensor(target)
            kw["ignore_index"] = 2
        crit = fnn.CrossEntropy(weight=weight, **kw)
        ref_weight = None if weight is None else tensor(weight.astype(dtype))
        return criterion_versus(
            crit, logits(rng, dtype, (*lead, c), scale), target,
            lambda y: F.cross_entropy(classes_at_axis_1(y), ref_target, weight=ref_weight, **kw),
            rng)

    return case


def nll(weighted: bool, reduction: str, ignore: bool, seq: bool = False) -> Callable:
    """NLLLoss on (7, 4), or with ``seq`` on (2, 5, 4) against torch's (2, 4, 5)."""
    def case(dtype: type, rng: np.random.Generator) -> Compared:
        lead, c = ((2, 5) if seq else (7,)), 4
        x = logits(rng, dtype, (*lead, c))
        logp = (x - np.logaddexp.reduce(x.astype(np.float64), axis=-1, keepdims=True)
                ).astype(dtype)
        labels = rng.integers(0, c, lead)
        kw: dict[str, Any] = dict(reduction=reduction)
        if ignore:
            labels.flat[:3] = -100  # torch's default ignore_index, made explicit here
            kw["ignore_index"] = -100
        weight = rng.uniform(0.2, 2.0, c) if weighted else None
        ref_weight = None if weight is None else tensor(weight.astype(dtype))
        return criterion_versus(fnn.NLLLoss(weight=weight, **kw), logp, labels,
                                lambda y: F.nll_loss(classes_at_axis_1(y), tensor(labels),
                                                     weight=ref_weight, **kw), rng)

    return case


def bce(pos_weight: str, reduction: str, scale: float = 3.0, vector: bool = False
        ) -> Callable:
    def case(dtype: type, rng: np.random.Generator) -> Compared:
        shape = (8,) if vector else (6, 3)
        x = logits(rng, dtype, shape, scale)
        t = rng.random(shape)
        t = np.where(rng.random(shape) < 0.5, np.round(t), t).astype(dtype)  # hard and soft
        pw = {"none": None, "one": rng.uniform(0.5, 3.0, 1),
              "per class": rng.uniform(0.5, 3.0, shape[-1])}[pos_weight]
        ref_pw = None if pw is None else tensor(pw.astype(dtype))
        return criterion_versus(
            fnn.BCEWithLogits(pos_weight=pw, reduction=reduction), x, t,
            lambda y: F.binary_cross_entropy_with_logits(y, tensor(t), pos_weight=ref_pw,
                                                         reduction=reduction), rng)

    return case


def regression(crit: Any, ref: Callable) -> Callable:
    """L1 or Huber on (N, C, K) with some exact ties (d = 0) and some |d| = delta."""
    def case(dtype: type, rng: np.random.Generator) -> Compared:
        y = logits(rng, dtype, (4, 3, 2), 1.5)
        t = logits(rng, dtype, y.shape, 1.5)
        t.flat[:2] = y.flat[:2]
        if isinstance(crit, fnn.Huber):
            t.flat[2:4] = y.flat[2:4] + np.array([crit.delta, -crit.delta], dtype)
        return criterion_versus(crit, y, t, lambda yt: ref(yt, tensor(t)), rng)

    return case


CRITERION_CASES: dict[str, Callable] = {}
for kind, weighted, smoothing, reduction in itertools.product(
        ("labels", "probs", "onehot"), (False, True), (0.0, 0.15), REDUCTIONS):
    CRITERION_CASES[f"CrossEntropy {kind} weight={weighted} ls={smoothing} {reduction}"] = \
        cross_entropy(kind, weighted, smoothing, reduction)
for weighted, smoothing, reduction in itertools.product((False, True), (0.0, 0.15), REDUCTIONS):
    CRITERION_CASES[f"CrossEntropy labels ignore_index weight={weighted} ls={smoothing} "
                    f"{reduction}"] = cross_entropy("labels", weighted, smoothing, reduction,
                                                    ignore=True)
for kind, reduction in itertools.product(("labels", "probs"), REDUCTIONS):
    CRITERION_CASES[f"CrossEntropy {kind} logits ±1e4 {reduction}"] = cross_entropy(
        kind, True, 0.1, reduction, scale=1e4)
for weighted, reduction, ignore in itertools.product((False, True), REDUCTIONS, (False, True)):
    CRITERION_CASES[f"NLLLoss weight={weighted} ignore={ignore} {reduction}"] = nll(
        weighted, reduction, ignore)
for kind, weighted, smoothing, reduction in itertools.product(
        ("labels", "probs"), (False, True), (0.0, 0.15), REDUCTIONS):
    CRITERION_CASES[f"CrossEntropy (N,T,C) {kind} weight={weighted} ls={smoothing} "
                    f"{reduction}"] = cross_entropy(kind, weighted, smoothing, reduction, seq=True)
for smoothing, reduction in itertools.product((0.0, 0.15), REDUCTIONS):
    CRITERION_CASES[f"CrossEntropy (N,T,C) padding ignore_index ls={smoothing} {reduction}"] = \
        cross_entropy("labels", True, smoothing, reduction, ignore=True, seq=True)
for weighted, reduction, ignore in itertools.product((False, True), REDUCTIONS, (False, True)):
    CRITERION_CASES[f"NLLLoss (N,T,C) weight={weighted} ignore={ignore} {reduction}"] = nll(
        weighted, reduction, ignore, seq=True)
for pw, reduction in itertools.product(("none", "one", "per class"), REDUCTIONS):
    CRITERION_CASES[f"BCEWithLogits pos_weight={pw} {reduction}"] = bce(pw, reduction)
for reduction in REDUCTIONS:
    CRITERION_CASES[f"BCEWithLogits (N,) {reduction}"] = bce("one", reduction, vector=True)
    CRITERION_CASES[f"BCEWithLogits logits ±1e4 {reduction}"] = bce("per class", reduction,
                                                                      scale=1e4)
    CRITERION_CASES[f"L1 {reduction}"] = regression(
        fnn.L1(reduction=reduction), lambda y, t, r=reduction: F.l1_loss(y, t, reduction=r))
    for delta in (1.0, 0.3):
        CRITERION_CASES[f"Huber delta={delta} {reduction}"] = regression(
            fnn.Huber(delta=delta, reduction=reduction),
            lambda y, t, d=delta, r=reduction: F.huber_loss(y, t, reduction=r, delta=d))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("labels, kw", [
    ([1, 1], dict(ignore_index=1)),  # every row ignored: nan loss, zero gradient
    ([1, 1], dict(weight=[1.0, 0.0, 1.0])),  # total weight 0: nan loss and gradient
    ([1, 0], dict(weight=[1.0, 0.0, 1.0])),
])
def test_mean_over_nothing_is_nan_as_in_torch(labels: list, kw: dict, smoothing: float,
                                             dtype: type) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(dtype)
    ref_kw = {k: (tensor(np.asarray(v, dtype)) if k == "weight" else v) for k, v in kw.items()}
    crits = [(fnn.CrossEntropy(label_smoothing=smoothing, **kw),
              lambda y: F.cross_entropy(y, tensor(labels), label_smoothing=smoothing,
                                        **ref_kw))]
    if not smoothing:
        crits.append((fnn.NLLLoss(**kw), lambda y: F.nll_loss(y, tensor(labels), **ref_kw)))
    for crit, ref in crits:
        pairs = criterion_versus(crit, x, np.array(labels), ref, np.random.default_rng(1))
        for what, ours, theirs in pairs:
            np.testing.assert_array_equal(np.isnan(ours), np.isnan(as_numpy(theirs)), what)
        assert_close([(w, np.nan_to_num(o), np.nan_to_num(as_numpy(r))) for w, o, r in pairs],
                     dtype)


def seeded(name: str, dtype: type) -> np.random.Generator:
    return np.random.default_rng([DTYPES.index(dtype), *name.encode()])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", CRITERION_CASES)
def test_criterion_matches_torch(name: str, dtype: type) -> None:
    pairs = CRITERION_CASES[name](dtype, seeded(name, dtype))
    assert all(np.all(np.isfinite(as_numpy(o))) for _, o, _ in pairs)
    assert_close(pairs, dtype)


# --- report -----------------------------------------------------------------------------------

if __name__ == "__main__":
    print(f"{'case':64s} {'float64':>10s} {'float32':>10s}")
    for name, case in CRITERION_CASES.items():
        d = [max_abs_diff(case(dt, seeded(name, dt))) for dt in DTYPES]
        print(f"{name:64s} {d[0]:10.2e} {d[1]:10.2e}")
