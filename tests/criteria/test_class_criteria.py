"""The class criteria of fnn.class_losses (CrossEntropy, NLLLoss) beyond the generic checks of
test_criteria.py: sequences (N, T, C) with targets (N, T) equal the flattened batch, and
−inf in ignored rows or masked classes gives no 0 · (−inf) = nan."""

from __future__ import annotations

import numpy as np
import pytest

import fnn
from fnn.activations import log_softmax

REDUCTIONS = ("mean", "sum", "none")


# --- no 0 · (−inf) = nan: masked classes and ignored rows ---------------------------------------

@pytest.mark.filterwarnings("ignore:invalid value encountered in matmul")  # BLAS on ±inf rows
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_minus_inf_in_ignored_rows_and_masked_classes_stays_finite(dtype, smoothing):
    """An ignored row (padding) may hold anything, −inf included: its loss is exactly 0, as in
    torch; a −inf logit or log-probability in a non-target class gives the finite loss."""
    x = np.array([[-np.inf, 1.0, 0.0], [-np.inf, -np.inf, 2.0], [0.5, -np.inf, 0.0]], dtype)
    labels = np.array([1, 0, 2])  # row 1 is ignored (label 0 = ignore_index)
    finite = x.copy()
    finite[1] = 0.0  # what the ignored row holds does not matter
    for crit in [fnn.CrossEntropy(ignore_index=0, reduction="none"),
                 fnn.NLLLoss(ignore_index=0, reduction="none")]:
        y = x if isinstance(crit, fnn.CrossEntropy) else log_softmax(x)
        y_finite = finite if isinstance(crit, fnn.CrossEntropy) else log_softmax(finite)
        loss, cache = crit.forward(y, labels)
        dy = crit.backward(cache)
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(dy)) and loss[1] == 0
        np.testing.assert_array_equal(loss, crit.forward(y_finite, labels)[0])
        assert np.all(dy[1] == 0)
    # smoothing over a row with a −inf class (not ignored) is +inf, as torch; ignored rows stay 0
    loss = fnn.CrossEntropy(ignore_index=0, label_smoothing=smoothing,
                            reduction="none").forward(x, labels)[0]
    assert loss[1] == 0 and (np.isinf(loss[0]) if smoothing else np.isfinite(loss[0]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_probability_targets_with_zero_on_a_minus_inf_logit(dtype):
    """0 · log 0 = 0: a class of target probability 0 at logit −inf adds nothing (torch: nan)."""
    x = np.array([[0.0, -np.inf, np.log(3.0)]], dtype)
    q = np.array([[0.5, 0.0, 0.5]], dtype)
    loss, cache = fnn.CrossEntropy().forward(x, q)
    expected = -(0.5 * np.log(0.25) + 0.5 * np.log(0.75))
    assert loss.dtype == dtype and loss == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(fnn.CrossEntropy().backward(cache), [[-0.25, 0.0, 0.25]],
                               atol=1e-7)


# --- sequences: (N, T, C) with targets (N, T) ---------------------------------------------------

@pytest.mark.parametrize("make, kind", [
    (lambda r: fnn.CrossEntropy(reduction=r), "labels"),
    (lambda r: fnn.CrossEntropy(reduction=r, ignore_index=3, weight=[1, 2, 3, 4],
                                label_smoothing=0.2), "labels"),
    (lambda r: fnn.CrossEntropy(reduction=r, label_smoothing=0.1), "probs"),
    (lambda r: fnn.NLLLoss(reduction=r, ignore_index=3, weight=[0.5, 1, 2, 1]), "labels"),
])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_sequence_equals_flattened_batch(make, kind, reduction):
    """(N, T, C) with targets (N, T) is the (N·T, C) problem: the same loss (reshaped for
    "none", the same mean over every kept position) and dy."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 4))
    labels = rng.integers(0, 4, (2, 5))
    labels[0, :2] = 3  # padding, for the criteria with ignore_index=3
    target = labels if kind == "labels" else rng.dirichlet(np.ones(4), (2, 5))
    crit = make(reduction)
    y = x if isinstance(crit, fnn.CrossEntropy) else log_softmax(x)
    loss, cache = crit.forward(y, target)
    flat_target = target.reshape(10, *target.shape[2:])
    flat_loss, flat_cache = crit.forward(y.reshape(10, 4), flat_target)
    assert np.shape(loss) == ((2, 5) if reduction == "none" else ())
    np.testing.assert_allclose(np.reshape(loss, -1), np.reshape(flat_loss, -1), rtol=1e-15)
    dloss, flat_dloss = 0.5, 0.5
    if reduction == "none":
        dloss = rng.standard_normal((2, 5))
        flat_dloss = dloss.reshape(10)
    np.testing.assert_allclose(crit.backward(cache, dloss),
                               crit.backward(flat_cache, flat_dloss).reshape(x.shape), rtol=1e-15)
