"""Generic checks on every row of the layer table (tests/cases.py), then the semantics of single
layers (modes, Dropout keys, BatchNorm statistics, numerics, known answers). fnn.testing's
own tests (it catches broken layers) are in tests/test_testing.py."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
import scipy.signal
import scipy.special
from cases import CASE_IDS, CASES, examples, input_values
from helpers import float_leaves
from hypothesis import assume, given
from hypothesis import strategies as st

import fnn
from fnn import tree
from fnn.testing import (
    KINK_MARGIN,
    check_backward_params,
    check_batch_consistency,
    check_dtypes,
    check_gradients,
    check_modes,
    check_purity,
    check_shapes,
    kink_distance,
)
from fnn.testing.strategies import keys

ROWS = pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
UNCOUPLED = [case for case in CASES if not case.batch_coupled]


# --- the generic checks, one per acceptance item, each on every row: the public fnn.testing
# functions that fnn.testing.check_layer runs on a user's layer ----------------------------

@ROWS
@given(data=st.data())
def test_shapes_and_records(case, data):
    ex = data.draw(examples(case))
    check_shapes(ex.layer, ex.params, ex.state, ex.x)


@ROWS
@given(data=st.data())
def test_init_returns_training_mode(case, data):
    layer, _ = case.setup(data.draw)
    check_modes(layer, data.draw(keys()))


@ROWS
@given(data=st.data())
def test_purity(case, data):
    ex = data.draw(examples(case))
    check_purity(ex.layer, ex.params, ex.state, ex.x)


@ROWS
@given(data=st.data())
def test_dtype_preserved(case, data):
    ex = data.draw(examples(case))
    check_dtypes(ex.layer, ex.params, ex.state, ex.x)


@ROWS
@given(data=st.data())
def test_gradients_float64(case, data):
    ex = data.draw(examples(case))
    # central differences with step 1e-6 straddle no kink (ReLU at 0, a tie in a pool window)
    assume(kink_distance(ex.layer, ex.params, ex.state, ex.x) > KINK_MARGIN)
    check_gradients(ex.layer, ex.params, ex.state, ex.x)


@pytest.mark.parametrize("case", UNCOUPLED, ids=[c.name for c in UNCOUPLED])
@given(data=st.data())
def test_batch_consistency(case, data):
    ex = data.draw(examples(case, min_batch=2, max_batch=4))
    cut = data.draw(st.integers(1, ex.x.shape[0] - 1))
    check_batch_consistency(ex.layer, ex.params, ex.state, ex.x, cut)


# --- Dropout --------------------------------------------------------------------------------

@given(p=st.floats(0.05, 0.9), seed=st.integers(0, 2**32 - 1))
def test_dropout_advances_key_and_draws_new_masks(p, seed):
    layer = fnn.Dropout(p=p)
    _, state = layer.init(seed)
    x = np.ones((50, 40))
    y1, c1 = layer.forward((), state, x)
    y2, c2 = layer.forward((), c1.state, x)
    assert c1.state.key != state.key and c2.state.key != c1.state.key
    assert c1.state.training and c2.state.training
    assert not np.array_equal(y1, y2)
    # survivors are scaled by 1 / (1 - p), p is the DROP probability
    for y in (y1, y2):
        assert set(np.unique(y)) <= {0.0, 1 / (1 - p)}
        assert abs(np.mean(y == 0) - p) < 5 * np.sqrt(p * (1 - p) / x.size)
    # backward uses the forward's mask
    dx, _ = layer.backward((), c1, np.full(x.shape, 2.0))
    np.testing.assert_array_equal(dx, 2 * y1)


def test_dropout_reproducible_from_one_seed():
    layer, x = fnn.Dropout(p=0.5), np.ones((4, 6))

    def two_steps(seed: int) -> list[np.ndarray]:
        _, state = layer.init(seed)
        ys = []
        for _ in range(2):
            y, cache = layer.forward((), state, x)
            ys.append(y)
            state = cache.state
        return ys

    np.testing.assert_array_equal(two_steps(3), two_steps(3))
    assert not np.array_equal(two_steps(3)[0], two_steps(4)[0])


@given(p=st.floats(0.0, 0.9), x=st.data())
def test_dropout_eval_is_identity(p, x):
    layer = fnn.Dropout(p=p)
    state = fnn.eval_mode(layer.init(0)[1])
    x = input_values(x.draw, (3, 4))
    y, cache = layer.forward((), state, x)
    np.testing.assert_array_equal(y, x)
    assert cache.state == state
    np.testing.assert_array_equal(layer.backward((), cache, 2 * x)[0], 2 * x)


def test_dropout_p0_is_identity_in_training():
    layer = fnn.Dropout(p=0.0)
    _, state = layer.init(0)
    x = np.linspace(-1, 1, 30).reshape(5, 6)
    y, cache = layer.forward((), state, x)
    np.testing.assert_array_equal(y, x)
    assert cache.state.key != state.key


# --- BatchNormalization -----------------------------------------------------------------------

@given(alpha=st.floats(0.0, 1.0), data=st.data())
def test_batchnorm_training_update_rule(alpha, data):
    """alpha weights the OLD statistic; the batch variance is biased; EPS = 1e-3."""
    layer = fnn.BatchNormalization(3, alpha=alpha)
    assert layer.EPS == 1e-3
    _, state = layer.init(0)
    old_mean, old_var = input_values(data.draw, (3,)), np.abs(input_values(data.draw, (3,)))
    state = attrs.evolve(state, moving_mean=old_mean, moving_variance=old_var)
    x = input_values(data.draw, (4, 3))
    y, cache = layer.forward((), state, x)
    mean = x.sum(axis=0) / 4
    var = ((x - mean) ** 2).sum(axis=0) / 4
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-3), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cache.state.moving_mean, alpha * old_mean + (1 - alpha) * mean,
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cache.state.moving_variance, alpha * old_var + (1 - alpha) * var,
                               rtol=1e-12, atol=1e-12)
    assert cache.state.training


@given(data=st.data())
def test_batchnorm_eval_uses_moving_stats_and_keeps_state(data):
    layer = fnn.BatchNormalization(3, alpha=0.3)
    _, state = layer.init(0)
    mm, mv = input_values(data.draw, (3,)), np.abs(input_values(data.draw, (3,)))
    state = fnn.eval_mode(attrs.evolve(state, moving_mean=mm, moving_variance=mv))
    x = input_values(data.draw, (2, 3))
    y, cache = layer.forward((), state, x)
    np.testing.assert_allclose(y, (x - mm) / np.sqrt(mv + 1e-3), rtol=1e-12)
    assert cache.state is state


def test_batchnorm_training_couples_the_batch():
    layer = fnn.BatchNormalization(2)
    _, state = layer.init(0)
    x = np.array([[1.0, 2.0], [3.0, 5.0], [-1.0, 0.5]])
    x2 = x.copy()
    x2[2] += 1.0
    y, _ = layer.forward((), state, x)
    y2, _ = layer.forward((), state, x2)
    assert not np.allclose(y[:2], y2[:2])
    y_eval, _ = layer.forward((), fnn.eval_mode(state), x)
    y2_eval, _ = layer.forward((), fnn.eval_mode(state), x2)
    np.testing.assert_array_equal(y_eval[:2], y2_eval[:2])


# --- numerics and known answers ---------------------------------------------------------------

@given(data=st.data())
def test_softmax_rows_sum_to_one_and_survive_large_inputs(data):
    n, c = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 6))
    x = 1e3 * np.sign(input_values(data.draw, (n, c))) + input_values(data.draw, (n, c))
    for dtype in (np.float32, np.float64):
        xd = x.astype(dtype)
        y, _ = fnn.SoftMax().forward((), (), xd)
        log_y, _ = fnn.LogSoftMax().forward((), (), xd)
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(log_y))
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=10 * np.finfo(dtype).eps * c)
        exact = xd.astype(np.float64)  # the input as rounded to dtype
        np.testing.assert_allclose(y, scipy.special.softmax(exact, axis=1), atol=1e-6)
        np.testing.assert_allclose(log_y, scipy.special.log_softmax(exact, axis=1),
                                   rtol=1e-6, atol=1e-4)


def test_softplus_finite_and_accurate_up_to_1e4():
    x = np.concatenate([-np.logspace(-3, 4, 200), [0.0], np.logspace(-3, 4, 200)])
    y, cache = fnn.SoftPlus().forward((), (), x)
    np.testing.assert_allclose(y, np.logaddexp(0.0, x), rtol=1e-14, atol=0)
    dx, _ = fnn.SoftPlus().backward((), cache, np.ones_like(x))
    np.testing.assert_allclose(dx, scipy.special.expit(x), rtol=1e-14)
    x32 = x.astype(np.float32)
    y32, _ = fnn.SoftPlus().forward((), (), x32)
    assert np.all(np.isfinite(y32))
    # relative accuracy down to float32's smallest normal number (below it: subnormals)
    np.testing.assert_allclose(y32, np.logaddexp(0.0, x32.astype(np.float64)), rtol=1e-6,
                               atol=np.finfo(np.float32).tiny)


@pytest.mark.parametrize("layer, f", [
    (fnn.ReLU(), lambda x: np.maximum(x, 0)),
    (fnn.LeakyReLU(slope=0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
    (fnn.ELU(alpha=0.7), lambda x: np.where(x > 0, x, 0.7 * (np.exp(x) - 1))),
], ids=["relu", "leakyrelu", "elu"])
def test_activation_formulas(layer, f):
    x = np.linspace(-3, 3, 13).reshape(1, 13)
    np.testing.assert_allclose(layer.forward((), (), x)[0], f(x), rtol=1e-15)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_conv2d_matches_scipy_correlate(k):
    layer = fnn.Conv2d(2, 3, k)
    params, _ = layer.init(k)
    x = fnn.generator(k).standard_normal((2, 2, 5, 6))
    y, _ = layer.forward(params, (), x)
    for n in range(2):
        for o in range(3):
            ref = params.b[o] + sum(
                scipy.signal.correlate(x[n, c], params.W[o, c], mode="same") for c in range(2))
            np.testing.assert_allclose(y[n, o], ref, rtol=1e-12, atol=1e-12)


def test_maxpool_known_answer_and_tie_gradient_goes_to_first():
    x = np.array([[[[1.0, 5.0, 2.0, 2.0],
                    [3.0, 4.0, 2.0, 2.0]]]])
    layer = fnn.MaxPool2d(2)
    y, cache = layer.forward((), (), x)
    np.testing.assert_array_equal(y, [[[[5.0, 2.0]]]])
    dx, _ = layer.backward((), cache, np.array([[[[10.0, 20.0]]]]))
    np.testing.assert_array_equal(dx, [[[[0.0, 10.0, 20.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]])


@pytest.mark.parametrize("make", [
    lambda: fnn.LeakyReLU(slope=np.float64(0.1)), lambda: fnn.ELU(alpha=np.float64(0.5)),
    lambda: fnn.Dropout(p=np.float64(0.5)),
    lambda: fnn.BatchNormalization(3, alpha=np.float64(0.5))], ids=["leakyrelu", "elu",
                                                                     "dropout", "batchnorm"])
def test_numpy_scalar_hyperparameters_do_not_upcast(make):
    """A float64 numpy scalar as a hyperparameter must not turn float32 outputs into float64."""
    layer = make()
    params, state = layer.init(0)
    state = tree.cast(state, np.float32)
    x = -np.ones((2, 3), np.float32)
    y, cache = layer.forward(params, state, x)
    dx, _ = layer.backward(params, cache, x)
    assert y.dtype == dx.dtype == np.float32
    assert all(a.dtype == np.float32 for a in float_leaves(cache.state))


# --- backward_params: the dparams without the input gradient ----------------------------------

@ROWS
@given(data=st.data())
def test_backward_params_equals_backward_dparams(case, data):
    """What a training step calls on its first layer gives the same bits as backward's
    dparams, for every row (Linear, Conv2d, Sequential and Residual skip dx; the rest use
    the default)."""
    ex = data.draw(examples(case))
    check_backward_params(ex.layer, ex.params, ex.state, ex.x)
