"""The normalization layers: BatchNormalization's training update rule, evaluation with the
moving statistics, the batch coupling and eps; BatchNorm2d's statistics over N, H, W, its state
rules and affine params; LayerNorm's shapes and hyperparameters."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from cases import input_values
from helpers import CLOSE
from hypothesis import given
from hypothesis import strategies as st

import fnn
from fnn import tree
from fnn.linear import ScalingParams
from fnn.normalization import BatchNormState


def images(data: st.DataObject, c: int) -> np.ndarray:
    n, h, w = (data.draw(st.integers(1, 3)) for _ in range(3))
    return input_values(data.draw, (n, c, h, w))


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


# --- BatchNormalization eps -------------------------------------------------------------------

@given(eps=st.floats(1e-8, 10.0), data=st.data())
def test_batchnorm_eps_is_used_in_both_modes(eps, data):
    layer = fnn.BatchNormalization(3, alpha=0.5, eps=eps)
    assert layer.EPS == 1e-3 and fnn.BatchNormalization(3).eps == 1e-3
    _, state = layer.init(0)
    x = input_values(data.draw, (4, 3))
    y, cache = layer.forward((), state, x)
    mean, var = x.mean(axis=0), x.var(axis=0)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + eps), **CLOSE)
    mv = cache.state.moving_variance
    y_eval, _ = layer.forward((), fnn.eval_mode(cache.state), x)
    np.testing.assert_allclose(y_eval, (x - cache.state.moving_mean) / np.sqrt(mv + eps),
                               **CLOSE)


# --- BatchNorm2d ------------------------------------------------------------------------------

@given(alpha=st.floats(0.0, 1.0), c=st.integers(1, 3), data=st.data())
def test_batchnorm2d_statistics_over_n_h_w_and_update_rule(alpha, c, data):
    """Per channel over N, H, W; biased variance; alpha weights the OLD statistic."""
    layer = fnn.BatchNorm2d(c, alpha=alpha, eps=0.01)
    x = images(data, c)
    old = BatchNormState(True, input_values(data.draw, (c,)),
                         np.abs(input_values(data.draw, (c,))))
    y, cache = layer.forward((), old, x)
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    expected = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 0.01)
    np.testing.assert_allclose(y, expected, **CLOSE)
    assert y.flags.c_contiguous
    new = cache.state
    assert new.training
    np.testing.assert_allclose(new.moving_mean, alpha * old.moving_mean + (1 - alpha) * mean,
                               **CLOSE)
    np.testing.assert_allclose(new.moving_variance,
                               alpha * old.moving_variance + (1 - alpha) * var, **CLOSE)


@given(c=st.integers(1, 3), data=st.data())
def test_batchnorm2d_eval_uses_moving_stats_and_affine(c, data):
    layer = fnn.BatchNorm2d(c, alpha=0.3, affine=True)
    gamma, beta = input_values(data.draw, (c,)), input_values(data.draw, (c,))
    mm, mv = input_values(data.draw, (c,)), np.abs(input_values(data.draw, (c,)))
    state = BatchNormState(False, mm, mv)
    x = images(data, c)
    y, cache = layer.forward(ScalingParams(gamma, beta), state, x)
    e = (slice(None), None, None)
    np.testing.assert_allclose(y, (x - mm[e]) / np.sqrt(mv[e] + 1e-3) * gamma[e] + beta[e],
                               **CLOSE)
    assert cache.state is state


def test_batchnorm2d_init_params_state_and_dtype():
    params, state = fnn.BatchNorm2d(3).init(0)
    assert params == () and state.training
    np.testing.assert_array_equal(state.moving_mean, np.zeros(3))
    np.testing.assert_array_equal(state.moving_variance, np.ones(3))
    params, state = fnn.BatchNorm2d(3, affine=True, dtype=np.float32).init(0)
    np.testing.assert_array_equal(params.gamma, np.ones(3))
    np.testing.assert_array_equal(params.beta, np.zeros(3))
    assert all(a.dtype == np.float32 for a in tree.leaves((params, state.moving_mean,
                                                           state.moving_variance)))
    params, _ = fnn.BatchNorm2d(3, affine=True, gamma_init=fnn.init.zeros,
                                beta_init=fnn.init.ones).init(0)
    np.testing.assert_array_equal(params.gamma, np.zeros(3))
    np.testing.assert_array_equal(params.beta, np.ones(3))


# --- LayerNorm --------------------------------------------------------------------------------

@given(lead=st.lists(st.integers(1, 3), max_size=2),
       shape=st.lists(st.integers(1, 4), min_size=1, max_size=2), data=st.data())
def test_layernorm_normalizes_each_sample_over_the_last_axes(lead, shape, data):
    layer = fnn.LayerNorm(shape)
    gamma, beta = input_values(data.draw, tuple(shape)), input_values(data.draw, tuple(shape))
    x = input_values(data.draw, (2, *lead, *shape))
    y, cache = layer.forward(ScalingParams(gamma, beta), (), x)
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5) * gamma + beta, **CLOSE)
    assert cache.state == ()


def test_layernorm_hyperparameters_and_init():
    assert fnn.LayerNorm(4).normalized_shape == (4,)
    assert fnn.LayerNorm(np.int64(4)).normalized_shape == (4,)
    assert fnn.LayerNorm([2, 3]).normalized_shape == (2, 3)
    params, state = fnn.LayerNorm((2, 3)).init(0)
    assert state == () and params.gamma.shape == params.beta.shape == (2, 3)
    np.testing.assert_array_equal(params.gamma, np.ones((2, 3)))
    np.testing.assert_array_equal(params.beta, np.zeros((2, 3)))
    assert fnn.LayerNorm(3, elementwise_affine=False).init(0) == ((), ())
    params, _ = fnn.LayerNorm(3, dtype="float32").init(0)
    assert params.gamma.dtype == params.beta.dtype == np.float32


@pytest.mark.parametrize("layer, shape, expected", [
    (fnn.LayerNorm(3), (2, 4), "(N, 3)"),
    (fnn.LayerNorm(3), (3,), "(N, 3)"),
    (fnn.LayerNorm((2, 3)), (5, 4, 3, 3), "(N, *, 2, 3)"),
    (fnn.BatchNorm2d(2), (2, 3, 4, 4), "(N, 2, H, W)"),
    (fnn.BatchNorm2d(2), (2, 2), "(N, 2, H, W)"),
], ids=["layernorm-features", "layernorm-no-batch", "layernorm-trailing", "bn2d-channels",
        "bn2d-rank"])
def test_norm_wrong_input_shape(layer, shape, expected):
    params, state = layer.init(0)
    with pytest.raises(ValueError) as info:
        layer.forward(params, state, np.ones(shape))
    message = str(info.value)
    assert repr(layer) in message and expected in message and f"got shape {shape}" in message
