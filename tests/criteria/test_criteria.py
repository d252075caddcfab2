"""The PyTorch-style criteria (CrossEntropy, NLLLoss, BCEWithLogits, L1, Huber): values by hand,
finite-difference gradients for every reduction and option, dtypes, purity, stability on logits
of ±1e4, agreement with the classic criteria, errors."""

from __future__ import annotations

from typing import Any

import attrs
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from cases import input_values
from hypothesis import given
from hypothesis import strategies as st

import fnn
from fnn.activations import log_softmax
from fnn.testing import check_loss_gradients, read_only

REDUCTIONS = ("mean", "sum", "none")


@attrs.frozen
class SumOf:
    """sum(dloss * loss) of a criterion with reduction "none" (a scalar for the gradient check;
    its gradient is the criterion's backward with that dloss)."""

    crit: Any
    dloss: np.ndarray

    def forward(self, y: np.ndarray, target: Any) -> tuple[Any, Any]:
        loss, cache = self.crit.forward(y, target)
        return np.sum(self.dloss * loss), cache

    def backward(self, cache: Any) -> np.ndarray:
        return self.crit.backward(cache, self.dloss)


# --- problems: (criterion, y, target) drawn by hypothesis ---------------------------------------

@st.composite
def class_problems(draw: st.DrawFn, cls: type = fnn.CrossEntropy, dtype: Any = np.float64
                   ) -> tuple[Any, np.ndarray, np.ndarray]:
    """CrossEntropy (labels, probabilities or one-hot; weight, smoothing, ignore_index) or
    NLLLoss (labels on log-probabilities) with a drawn reduction, on (N, C) or (N, T, C)."""
    lead = draw(st.sampled_from([(draw(st.integers(1, 4)),), (2, 3), (1, 2)]))
    c = draw(st.integers(2, 5))
    y = input_values(draw, (*lead, c))
    labels = draw(hnp.arrays(np.int64, lead, elements=st.integers(0, c - 1)))
    kw: dict[str, Any] = dict(reduction=draw(st.sampled_from(REDUCTIONS)))
    if draw(st.booleans()):
        kw["weight"] = draw(st.lists(st.floats(0.25, 3.0), min_size=c, max_size=c))
    kind = "labels" if cls is fnn.NLLLoss else draw(st.sampled_from(["labels", "probs"]))
    if cls is fnn.CrossEntropy:
        kw["label_smoothing"] = draw(st.sampled_from([0.0, 0.1, 0.5]))
    else:
        y = log_softmax(y)
    if kind == "labels" and np.any(labels != labels.flat[0]) and draw(st.booleans()):
        kw["ignore_index"] = int(labels.flat[0])  # some rows ignored, not all
    target = labels
    if kind == "probs":
        q = np.exp(input_values(draw, y.shape))
        target = q / q.sum(axis=-1, keepdims=True)
    return cls(**kw), y.astype(dtype), (target.astype(dtype) if kind == "probs" else target)


@st.composite
def elementwise_problems(draw: st.DrawFn, dtype: Any = np.float64
                         ) -> tuple[Any, np.ndarray, np.ndarray]:
    """BCEWithLogits (hard or soft targets, pos_weight), L1 or Huber with a drawn reduction;
    for L1 and Huber, y - t stays at least 0.05 away from the kinks (0 and ±delta)."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=3))
    reduction = draw(st.sampled_from(REDUCTIONS))
    y = input_values(draw, shape)
    which = draw(st.sampled_from(["bce", "l1", "huber"]))
    if which == "bce":
        t = draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 1.0, 0.3, 0.8])))
        pw = None
        if draw(st.booleans()):
            size = draw(st.sampled_from([1, shape[-1]]))
            pw = draw(st.lists(st.floats(0.5, 3.0), min_size=size, max_size=size))
        return fnn.BCEWithLogits(pos_weight=pw, reduction=reduction), y.astype(dtype), \
            t.astype(dtype)
    d = input_values(draw, shape)  # |d| in [0.05, 3]
    if which == "l1":
        return fnn.L1(reduction=reduction), (y + d).astype(dtype), y.astype(dtype)
    delta = draw(st.sampled_from([0.5, 1.0, 2.0]))
    d = np.where(np.abs(np.abs(d) - delta) < 0.05, d * 1.1, d)
    return fnn.Huber(delta=delta, reduction=reduction), (y + d).astype(dtype), y.astype(dtype)


def problems(dtype: Any = np.float64) -> st.SearchStrategy:
    return st.one_of(class_problems(fnn.CrossEntropy, dtype), class_problems(fnn.NLLLoss, dtype),
                     elementwise_problems(dtype))


def scalar_criterion(crit: Any, y: np.ndarray, target: Any, seed: int = 0) -> Any:
    """``crit``, or for reduction "none" the scalar sum(dloss * loss) with a random dloss."""
    if crit.reduction != "none":
        return crit
    shape = np.shape(crit.forward(y, target)[0])
    return SumOf(crit, np.random.default_rng(seed).standard_normal(shape).astype(y.dtype))


# --- values by hand ----------------------------------------------------------------------------

def test_values_by_hand():
    # uniform logits: -log p = log C for every target kind
    loss, cache = fnn.CrossEntropy().forward(np.zeros((2, 4)), np.array([1, 3]))
    assert loss == pytest.approx(np.log(4), rel=1e-15)
    np.testing.assert_allclose(fnn.CrossEntropy().backward(cache),
                               [[0.125, -0.375, 0.125, 0.125], [0.125, 0.125, 0.125, -0.375]],
                               rtol=1e-15)
    # weighted mean: (w1 l1 + w3 l3) / (w1 + w3); smoothing mixes in the mean over classes
    x = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    w = np.array([0.5, 2.0, 1.0])
    loss, _ = fnn.CrossEntropy(weight=w).forward(x, np.array([1, 2]))
    assert loss == pytest.approx(-(2 * logp[0, 1] + 1 * logp[1, 2]) / 3, rel=1e-14)
    loss, _ = fnn.CrossEntropy(label_smoothing=0.3, reduction="none").forward(x, np.array([1, 2]))
    expected = 0.7 * -logp[[0, 1], [1, 2]] + 0.1 * -logp.sum(axis=1)
    np.testing.assert_allclose(loss, expected, rtol=1e-14)
    loss, _ = fnn.NLLLoss(weight=w, reduction="sum").forward(logp, np.array([0, 2]))
    assert loss == pytest.approx(-(0.5 * logp[0, 0] + logp[1, 2]), rel=1e-15)
    # BCE at x = 0 is log 2 for any target; pos_weight scales the positive term
    loss, _ = fnn.BCEWithLogits(pos_weight=[3.0], reduction="none").forward(
        np.zeros(3), np.array([1.0, 0.0, 0.5]))
    np.testing.assert_allclose(loss, np.log(2) * np.array([3.0, 1.0, 2.0]), rtol=1e-15)
    # L1 and Huber (delta 1): |d| and d²/2 or |d| - 1/2
    d = np.array([[-3.0, -0.5, 0.0, 0.5, 2.0]])
    loss, cache = fnn.L1().forward(d, np.zeros_like(d))
    assert loss == 6.0 / 5
    np.testing.assert_array_equal(fnn.L1().backward(cache), [[-0.2, -0.2, 0.0, 0.2, 0.2]])
    loss, cache = fnn.Huber(reduction="sum").forward(d, np.zeros_like(d))
    assert loss == 2.5 + 0.125 + 0 + 0.125 + 1.5
    np.testing.assert_array_equal(fnn.Huber(reduction="sum").backward(cache),
                                  [[-1.0, -0.5, 0.0, 0.5, 1.0]])


# --- gradients, dtypes, purity ------------------------------------------------------------------

@given(problem=problems())
def test_gradients_float64(problem):
    crit, y, t = problem
    check_loss_gradients(scalar_criterion(crit, y, t), y, t)


# dloss in the normal range: with a subnormal dloss (e.g. 2.2e-308) the products lose their
# relative precision (gradual underflow), whatever the order of the operations
@given(problem=problems(), dloss=st.floats(-2.0, 2.0).filter(lambda v: v == 0 or abs(v) > 1e-290))
def test_scalar_dloss_scales_the_gradient(problem, dloss):
    crit, y, t = problem
    if crit.reduction == "none":
        crit = attrs.evolve(crit, reduction="sum")
    cache = crit.forward(y, t)[1]
    np.testing.assert_allclose(crit.backward(cache, dloss), dloss * crit.backward(cache),
                               rtol=1e-15, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(data=st.data())
def test_dtype_preserved(dtype, data):
    crit, y, t = data.draw(problems(dtype))
    loss, cache = crit.forward(y, t)
    assert loss.dtype == dtype
    per_row = isinstance(crit, (fnn.CrossEntropy, fnn.NLLLoss))
    expected = () if crit.reduction != "none" else y.shape[:-1] if per_row else y.shape
    assert np.shape(loss) == expected
    dloss = 1.0 if crit.reduction != "none" else np.ones(np.shape(loss), np.float64)
    assert crit.backward(cache, dloss).dtype == dtype
    assert crit.backward(cache).dtype == dtype


@given(problem=problems())
def test_pure(problem):
    crit, y, t = problem
    y_ro, t_ro = read_only((np.asarray(y), np.asarray(t)))
    loss, cache = crit.forward(y_ro, t_ro)
    dy = crit.backward(cache)
    np.testing.assert_array_equal(crit.backward(cache), dy)
    np.testing.assert_array_equal(y_ro, y)
    np.testing.assert_array_equal(t_ro, t)
    assert not np.may_share_memory(dy, y_ro) and not np.may_share_memory(dy, t_ro)
    np.testing.assert_array_equal(crit.forward(y_ro, t_ro)[0], loss)


# --- consistency ------------------------------------------------------------------------------

@given(problem=class_problems(fnn.CrossEntropy))
def test_one_hot_targets_equal_labels_for_sum_and_none(problem):
    """Smoothing and weights give the same per-row loss for a label and its one-hot row (the
    means differ: labels divide by Σ w[t], probabilities by N, as in torch)."""
    crit, y, t = problem
    if t.ndim != y.ndim - 1 or crit.ignore_index is not None:
        return
    crit = attrs.evolve(crit, reduction="none")
    onehot = np.eye(y.shape[-1], dtype=np.int64)[t]
    loss_labels, cache_labels = crit.forward(y, t)
    loss_onehot, cache_onehot = crit.forward(y, onehot)
    np.testing.assert_allclose(loss_onehot, loss_labels, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(crit.backward(cache_onehot), crit.backward(cache_labels),
                               rtol=1e-13, atol=1e-15)


@given(data=st.data())
def test_cross_entropy_is_the_classic_logsoftmax_nll(data):
    n, c = data.draw(st.integers(1, 4)), data.draw(st.integers(2, 5))
    x = input_values(data.draw, (n, c))
    labels = data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, c - 1)))
    onehot = np.eye(c)[labels]
    loss, cache = fnn.CrossEntropy().forward(x, labels)
    logp, lsm_cache = fnn.LogSoftMax().forward((), (), x)
    classic, classic_cache = fnn.ClassNLLCriterion().forward(logp, onehot)
    nll, nll_cache = fnn.NLLLoss().forward(logp, labels)
    assert loss == pytest.approx(classic, rel=1e-13, abs=1e-15)
    assert nll == pytest.approx(classic, rel=1e-15, abs=0)
    dx = fnn.LogSoftMax().backward((), lsm_cache, fnn.ClassNLLCriterion().backward(classic_cache))
    np.testing.assert_allclose(fnn.CrossEntropy().backward(cache), dx[0], rtol=1e-12,
                               atol=1e-15)
    np.testing.assert_array_equal(fnn.NLLLoss().backward(nll_cache),
                                  fnn.ClassNLLCriterion().backward(classic_cache))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stable_for_huge_logits(dtype):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [1e4, 1e4, -1e4]], dtype)
    labels = np.array([1, 2, 0])
    loss, cache = fnn.CrossEntropy(reduction="none", label_smoothing=0.1).forward(x, labels)
    dx = fnn.CrossEntropy(reduction="none", label_smoothing=0.1).backward(cache)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(dx))
    # row 0: -log p = 2e4 for the label; row 1: 0 for the label; row 2: log 2
    np.testing.assert_allclose(loss, [0.9 * 2e4 + 0.1 / 3 * (0 + 2e4 + 1e4),
                                      0.1 / 3 * (2e4 + 2e4),
                                      0.9 * np.log(2) + 0.1 / 3 * (3 * np.log(2) + 2e4)],
                               rtol=1e-6)
    np.testing.assert_allclose(dx[0], [1 - 0.1 / 3, -0.9 - 0.1 / 3, -0.1 / 3], atol=1e-6)
    bce, xb = fnn.BCEWithLogits(reduction="sum"), np.array([[1e4, -1e4], [-1e4, 1e4]], dtype)
    right, right_cache = bce.forward(xb, (xb > 0).astype(dtype))
    assert right == 0 and np.all(bce.backward(right_cache) == 0)
    wrong, wrong_cache = bce.forward(xb, (xb < 0).astype(dtype))
    assert wrong == 4e4 and np.all(np.abs(bce.backward(wrong_cache)) == 1)


# --- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("crit, y, t, error, match", [
    (fnn.CrossEntropy(), np.zeros((2, 3)), np.array([0, 3]), ValueError, "out of range"),
    (fnn.CrossEntropy(), np.zeros((2, 3)), np.array([-1, 0]), ValueError, "out of range"),
    (fnn.NLLLoss(ignore_index=-1), np.zeros((2, 3)), np.array([-2, 0]), ValueError,
     "out of range"),
    (fnn.CrossEntropy(), np.zeros((2, 3)), np.array([0.0, 1.0]), TypeError, "integers"),
    (fnn.CrossEntropy(), np.zeros((2, 3)), np.array([0, 1, 2]), ValueError, r"\(2,\)"),
    (fnn.CrossEntropy(), np.zeros((2, 3)), np.zeros((2, 4)), ValueError, r"\(2, 3\)"),
    (fnn.NLLLoss(), np.zeros((2, 3)), np.zeros((2, 3)), TypeError, "integers"),
    (fnn.CrossEntropy(), np.zeros(3), np.array([0]), ValueError, r"\(N, C\)"),
    (fnn.CrossEntropy(), np.zeros((2, 3), np.int64), np.array([0, 1]), TypeError,
     "floating-point"),
    (fnn.CrossEntropy(weight=[1.0, 2.0]), np.zeros((2, 3)), np.array([0, 1]), ValueError,
     "weight has 2 entries"),
    (fnn.BCEWithLogits(pos_weight=[1.0, 2.0]), np.zeros((2, 3)), np.zeros((2, 3)), ValueError,
     "pos_weight has 2 entries"),
    (fnn.L1(), np.zeros((2, 3)), np.zeros((3, 2)), ValueError, r"\(2, 3\)"),
    (fnn.Huber(), np.zeros((2, 3)), np.array([["a"] * 3] * 2), TypeError, "numeric target"),
    # sequences (N, T, C): labels (N, T), probabilities (N, T, C)
    (fnn.CrossEntropy(), np.zeros((2, 4, 3)), np.zeros((2, 5), np.int64), ValueError,
     r"expected target of shape \(2, 4\), got shape \(2, 5\)"),
    (fnn.NLLLoss(), np.zeros((2, 4, 3)), np.zeros((2, 4, 3), np.int64), ValueError,
     r"expected target of shape \(2, 4\)"),
    (fnn.CrossEntropy(), np.zeros((2, 4, 3)), np.zeros((2, 4)), TypeError,
     r"class-index targets \(2, 4\) must be integers, got dtype float64"),
    (fnn.CrossEntropy(), np.zeros((2, 4, 3)), np.zeros((2, 4, 2)), ValueError,
     r"expected target of shape \(2, 4, 3\)"),
    (fnn.NLLLoss(), np.zeros((2, 4, 3)), np.full((2, 4), 3), ValueError, "class index 3 out"),
    (fnn.NLLLoss(), np.zeros(3), np.array(1), ValueError, r"\(N, C\) or \(N, T, C\)"),
    (fnn.CrossEntropy(), np.zeros((2, 3), np.float16).astype(object), np.array([0, 1]),
     TypeError, "floating-point input"),
    (fnn.CrossEntropy(), np.zeros((2, 3)), np.full((2, 3), "a"), TypeError, "numeric target"),
])
def test_input_errors_name_the_criterion(crit, y, t, error, match):
    with pytest.raises(error, match=match) as info:
        crit.forward(y, t)
    assert repr(crit) in str(info.value)


@pytest.mark.parametrize("crit", [fnn.CrossEntropy(reduction="none"), fnn.L1(reduction="none"),
                                  fnn.CrossEntropy(), fnn.Huber(reduction="sum"),
                                  fnn.NLLLoss(reduction="none")])
@pytest.mark.parametrize("shape", [(2, 3), (2, 4, 3)])
def test_dloss_shape_checked(crit, shape):
    class_loss = isinstance(crit, fnn.CrossEntropy | fnn.NLLLoss)
    loss, cache = crit.forward(np.zeros(shape), np.zeros(shape[:-1], np.int64) if class_loss
                               else np.zeros(shape))
    for bad in [np.ones(5), np.ones((*np.shape(loss), 1))]:
        with pytest.raises(ValueError, match="dloss") as info:
            crit.backward(cache, bad)
        assert repr(crit) in str(info.value) and str(np.shape(loss)) in str(info.value)
    with pytest.raises(TypeError, match="floating-point dloss"):
        crit.backward(cache, None)
    assert crit.backward(cache, 2).shape == shape  # a real scalar broadcasts, also for "none"


@pytest.mark.parametrize("make", [
    lambda: fnn.CrossEntropy(reduction="avg"),
    lambda: fnn.CrossEntropy(label_smoothing=1.5),
    lambda: fnn.CrossEntropy(label_smoothing=-0.1),
    lambda: fnn.CrossEntropy(weight=[[1.0, 2.0]]),
    lambda: fnn.CrossEntropy(weight=[1.0, np.nan]),
    lambda: fnn.CrossEntropy(weight=[]),
    lambda: fnn.NLLLoss(ignore_index=1.0),
    lambda: fnn.BCEWithLogits(pos_weight="2"),
    lambda: fnn.Huber(delta=0.0),
    lambda: fnn.Huber(delta=-1.0),
    lambda: fnn.Huber(delta=np.inf),
    lambda: fnn.L1(reduction=None),
])
def test_bad_hyperparameters_raise_at_construction(make):
    with pytest.raises(ValueError):
        make()


def test_hyperparameters_are_keyword_only_and_hashable():
    with pytest.raises(TypeError):
        fnn.Huber(2.0)
    crit = fnn.CrossEntropy(weight=np.array([1, 2]), label_smoothing=0.1)
    assert crit.weight == (1.0, 2.0) and hash(crit) == hash(
        fnn.CrossEntropy(weight=[1.0, 2.0], label_smoothing=0.1))


def test_train_step_and_fit_with_cross_entropy():
    """fnn.fit gives the criterion one-hot rows: CrossEntropy takes them as probabilities."""
    x, labels = np.random.default_rng(0).standard_normal((12, 4)), np.arange(12) % 3
    net = fnn.Sequential([fnn.Linear(4, 3)])
    params, state = net.init(0)
    opt = fnn.AdamW(learning_rate=0.1)
    result = fnn.fit(net, fnn.CrossEntropy(), opt, params, state, opt.init(params), x=x,
                     labels=labels, epochs=3, batch_size=4, key=0)
    assert result.history["loss"][-1] < result.history["loss"][0]


@pytest.mark.parametrize("crit", [fnn.MSECriterion(), fnn.ClassNLLCriterion(), fnn.L1(),
                                  fnn.CrossEntropy(), fnn.NLLLoss()])
def test_backward_given_something_else_than_the_cache(crit):
    """backward(loss) or another criterion's cache: a TypeError naming the criterion."""
    class_loss = isinstance(crit, fnn.CrossEntropy | fnn.NLLLoss)
    loss, _ = crit.forward(np.zeros((2, 3)), np.zeros(2, np.int64) if class_loss
                           else np.eye(3)[[0, 1]])
    other = fnn.L1() if class_loss else fnn.CrossEntropy()
    _, other_cache = other.forward(np.zeros((2, 3)), np.eye(3)[[0, 1]])
    for bad in [loss, other_cache, None]:
        with pytest.raises(TypeError, match="backward expects the .*Cache that forward") as info:
            crit.backward(bad)
        assert repr(crit) in str(info.value)
