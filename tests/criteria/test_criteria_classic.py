"""Criteria: values by hand, finite-difference gradients, dtypes, targets, shape errors, purity."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from cases import input_values
from hypothesis import given
from hypothesis import strategies as st

import fnn
from fnn.testing import check_loss_gradients, read_only

CRITERIA = [fnn.MSECriterion(), fnn.ClassNLLCriterionUnstable(), fnn.ClassNLLCriterion()]
IDS = ["mse", "nll-unstable", "nll"]


@st.composite
def problems(draw, criterion, dtype=np.float64):
    """(y, target) for ``criterion``: target one-hot (N, C); y probabilities in [0.05, 0.95] for
    the unstable NLL (away from its clipping), log-probabilities for the NLL, any values for MSE.
    """
    n, c = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    labels = draw(hnp.arrays(np.int64, n, elements=st.integers(0, c - 1)))
    target = np.eye(c)[labels]
    y = input_values(draw, (n, c))
    if isinstance(criterion, fnn.ClassNLLCriterionUnstable):
        y = 0.05 + 0.9 * (y + 3) / 6
    elif isinstance(criterion, fnn.ClassNLLCriterion):
        y = fnn.LogSoftMax().forward((), (), y)[0]
    return y.astype(dtype), target.astype(dtype)


def test_values_by_hand():
    y = np.array([[1.0, 2.0], [3.0, 4.0]])
    t = np.array([[0.0, 2.0], [1.0, 1.0]])
    loss, cache = fnn.MSECriterion().forward(y, t)
    assert loss == (1 + 0 + 4 + 9) / 2
    np.testing.assert_array_equal(fnn.MSECriterion().backward(cache), [[1.0, 0.0], [2.0, 3.0]])

    p = np.array([[0.25, 0.75], [0.5, 0.5], [1.0, 0.0]])
    onehot = np.array([[0, 1], [1, 0], [0, 1]])
    loss, cache = fnn.ClassNLLCriterionUnstable().forward(p, onehot)
    # the zero probability is clipped to EPS = 1e-15
    np.testing.assert_allclose(loss, -(np.log(0.75) + np.log(0.5) + np.log(1e-15)) / 3,
                               rtol=1e-15)
    np.testing.assert_allclose(fnn.ClassNLLCriterionUnstable().backward(cache),
                               [[0, -1 / 0.75 / 3], [-1 / 0.5 / 3, 0], [0, -1e15 / 3]],
                               rtol=1e-15)

    logp = np.log(p[:2])
    loss, cache = fnn.ClassNLLCriterion().forward(logp, onehot[:2])
    np.testing.assert_allclose(loss, -(np.log(0.75) + np.log(0.5)) / 2, rtol=1e-15)
    np.testing.assert_array_equal(fnn.ClassNLLCriterion().backward(cache),
                                  [[0, -0.5], [-0.5, 0]])


@pytest.mark.parametrize("criterion", CRITERIA, ids=IDS)
@given(data=st.data())
def test_gradients_float64(criterion, data):
    y, t = data.draw(problems(criterion))
    check_loss_gradients(criterion, y, t)


@pytest.mark.parametrize("criterion", CRITERIA, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(data=st.data())
def test_dtype_preserved_and_loss_is_0d(criterion, dtype, data):
    y, t = data.draw(problems(criterion, dtype))
    loss, cache = criterion.forward(y, t)
    assert np.ndim(loss) == 0 and loss.dtype == dtype
    assert criterion.backward(cache).dtype == dtype


@pytest.mark.parametrize("criterion", CRITERIA, ids=IDS)
@pytest.mark.parametrize("target_dtype", [np.int64, np.int8, np.bool_])
@given(data=st.data())
def test_integer_one_hot_targets_accepted_and_converted(criterion, target_dtype, data):
    y, t = data.draw(problems(criterion, np.float32))
    loss_int, cache_int = criterion.forward(y, t.astype(target_dtype))
    loss, cache = criterion.forward(y, t)
    assert cache_int.target.dtype == np.float32 and loss_int.dtype == np.float32
    assert loss_int == loss
    np.testing.assert_array_equal(criterion.backward(cache_int), criterion.backward(cache))


@pytest.mark.parametrize("criterion", CRITERIA, ids=IDS)
@given(data=st.data())
def test_pure(criterion, data):
    y, t = data.draw(problems(criterion))
    y_ro, t_ro = read_only((y, t))
    loss, cache = criterion.forward(y_ro, t_ro)
    dy = criterion.backward(cache)
    np.testing.assert_array_equal(criterion.backward(cache), dy)
    np.testing.assert_array_equal(y_ro, y)
    assert not np.may_share_memory(dy, y_ro) and not np.may_share_memory(dy, t_ro)
    assert criterion.forward(y_ro, t_ro)[0] == loss


@pytest.mark.parametrize("criterion", CRITERIA, ids=IDS)
@pytest.mark.parametrize("y_shape, t_shape", [((2, 3), (2, 4)), ((2, 3), (3, 3)),
                                              ((2, 3), (6,))])
def test_shape_mismatch(criterion, y_shape, t_shape):
    with pytest.raises(ValueError) as info:
        criterion.forward(np.full(y_shape, 0.5), np.zeros(t_shape))
    msg = str(info.value)
    assert repr(criterion) in msg and str(y_shape) in msg and str(t_shape) in msg


@pytest.mark.parametrize("criterion", CRITERIA[1:], ids=IDS[1:])
@pytest.mark.parametrize("y_shape", [(6,), (2, 3, 1)])
def test_nll_wants_two_dimensional_input(criterion, y_shape):
    with pytest.raises(ValueError, match=r"\(N, C\)") as info:
        criterion.forward(np.full(y_shape, 0.5), np.zeros(y_shape))
    assert repr(criterion) in str(info.value) and str(y_shape) in str(info.value)


@pytest.mark.parametrize("criterion", CRITERIA, ids=IDS)
def test_integer_input_rejected(criterion):
    with pytest.raises(TypeError, match="floating-point"):
        criterion.forward(np.ones((2, 3), dtype=np.int64), np.ones((2, 3)))


def test_unstable_nll_eps_option():
    y, t = np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]])
    assert fnn.ClassNLLCriterionUnstable().eps == fnn.ClassNLLCriterionUnstable.EPS == 1e-15
    loss, cache = fnn.ClassNLLCriterionUnstable(eps=0.1).forward(y, t)
    assert loss == pytest.approx(-np.log(0.1))
    np.testing.assert_allclose(fnn.ClassNLLCriterionUnstable(eps=0.1).backward(cache),
                               [[-10.0, 0.0]])
    with pytest.raises(ValueError, match="ClassNLLCriterionUnstable"):
        fnn.ClassNLLCriterionUnstable(eps=0.7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nll_finite_with_minus_inf_in_a_non_target_class(dtype):
    """A masked class (log-probability −inf, target 0) gives the finite loss of the target
    entries (torch.nn.NLLLoss does too), not 0 · (−inf) = nan."""
    logp = np.array([[-np.inf, -0.25, -1.5], [-0.5, -np.inf, -1.0]], dtype)
    onehot = np.array([[0, 1, 0], [1, 0, 0]], dtype)
    loss, cache = fnn.ClassNLLCriterion().forward(logp, onehot)
    assert loss.dtype == dtype and loss == dtype((0.25 + 0.5) / 2)
    np.testing.assert_array_equal(fnn.ClassNLLCriterion().backward(cache), -onehot / 2)
    soft = np.array([[0, 0.5, 0.5], [1, 0, 0]], dtype)  # soft targets: the t ≠ 0 entries
    assert fnn.ClassNLLCriterion().forward(logp, soft)[0] == dtype((0.125 + 0.75 + 0.5) / 2)
    assert np.isinf(fnn.ClassNLLCriterion().forward(logp, soft[::-1])[0])  # a target at −inf


@pytest.mark.parametrize("criterion", CRITERIA, ids=IDS)
@given(data=st.data(), dloss=st.floats(-2.0, 2.0))
def test_backward_takes_dloss(criterion, data, dloss):
    """backward(cache, dloss=1.0): the gradient of dloss · loss, as the PyTorch-style ones."""
    y, t = data.draw(problems(criterion))
    cache = criterion.forward(y, t)[1]
    np.testing.assert_array_equal(criterion.backward(cache, 1.0), criterion.backward(cache))
    np.testing.assert_allclose(criterion.backward(cache, dloss),
                               dloss * criterion.backward(cache), rtol=1e-15, atol=0)
    np.testing.assert_allclose(criterion.backward(cache, np.float32(dloss)),
                               np.float32(dloss) * criterion.backward(cache), rtol=1e-15, atol=0)


@pytest.mark.parametrize("criterion", CRITERIA, ids=IDS)
@pytest.mark.parametrize("dloss, error, match", [
    (np.ones(2), ValueError, r"dloss of shape \(\)"),
    (np.ones((1, 1)), ValueError, r"dloss of shape \(\)"),
    ("1", TypeError, "floating-point dloss"),
    (None, TypeError, "floating-point dloss"),
])
def test_bad_dloss_named(criterion, dloss, error, match):
    _, cache = criterion.forward(np.full((2, 3), 0.5), np.eye(3)[[0, 2]])
    with pytest.raises(error, match=match) as info:
        criterion.backward(cache, dloss)
    assert repr(criterion) in str(info.value)


@pytest.mark.parametrize("criterion", CRITERIA, ids=IDS)
@pytest.mark.parametrize("target", [np.array([["a"] * 3] * 2), np.full((2, 3), 1 + 1j),
                                    np.full((2, 3), None)])
def test_non_numeric_target_named(criterion, target):
    with pytest.raises(TypeError, match="numeric target") as info:
        criterion.forward(np.full((2, 3), 0.5), target)
    assert repr(criterion) in str(info.value)
