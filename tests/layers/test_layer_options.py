"""Behaviour of the layers beyond the classic set that the generic table (tests/cases.py) does
not check: formulas and extremes of Tanh, Sigmoid and GELU; BatchNormalization's eps;
BatchNorm2d's statistics, state rules and affine params; LayerNorm's shapes; Residual's
threading of params, state and errors; initializer and dtype options of Linear and
ChannelwiseScaling; the shared layer repr and hyperparameter validation."""

from __future__ import annotations

import functools
import math
import warnings

import attrs
import numpy as np
import pytest
import scipy.special
from cases import input_values
from hypothesis import given
from hypothesis import strategies as st

import fnn
from fnn import tree
from fnn.core import split_key
from fnn.linear import ScalingParams
from fnn.normalization import BatchNormState

CLOSE = dict(rtol=1e-12, atol=1e-12)


def images(data: st.DataObject, c: int) -> np.ndarray:
    n, h, w = (data.draw(st.integers(1, 3)) for _ in range(3))
    return input_values(data.draw, (n, c, h, w))


# --- activations ------------------------------------------------------------------------------

X = np.linspace(-6, 6, 49).reshape(7, 7)


@pytest.mark.parametrize("layer, f, df", [
    (fnn.Tanh(), np.tanh, lambda x: 1 / np.cosh(x) ** 2),
    (fnn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x)),
     lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2),
    (fnn.GELU(), lambda x: 0.5 * x * (1 + scipy.special.erf(x / math.sqrt(2))),
     lambda x: (0.5 * (1 + scipy.special.erf(x / math.sqrt(2)))
                + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi))),
    (fnn.GELU("tanh"),
     lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))), None),
    (fnn.Identity(), lambda x: x, lambda x: np.ones_like(x)),
], ids=["tanh", "sigmoid", "gelu", "gelu-tanh", "identity"])
def test_activation_formulas(layer, f, df):
    y, cache = layer.forward((), (), X)
    np.testing.assert_allclose(y, f(X), **CLOSE)
    if df is not None:  # GELU tanh's derivative is checked by finite differences in the table
        dx, _ = layer.backward((), cache, np.full_like(X, 3.0))
        np.testing.assert_allclose(dx, 3.0 * df(X), **CLOSE)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layer", [fnn.Tanh(), fnn.Sigmoid(), fnn.GELU(), fnn.GELU("tanh")],
                         ids=["tanh", "sigmoid", "gelu", "gelu-tanh"])
def test_saturating_activations_are_finite_and_warning_free_at_1e4(layer, dtype):
    x = np.array([[-1e4, -50.0, -1.0, 0.0, 1.0, 50.0, 1e4]], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, cache = layer.forward((), (), x)
        dx, _ = layer.backward((), cache, np.ones_like(x))
    assert y.dtype == dx.dtype == dtype
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    # the limits: tanh and sigmoid to ±1 / 0..1 with zero slope; GELU to 0 and x with slope 0, 1
    lo, hi = (0.0, 1.0) if isinstance(layer, fnn.Sigmoid) else (-1.0, 1.0)
    if isinstance(layer, fnn.GELU):
        lo, hi = 0.0, x[0, -1]
        assert dx[0, 0] == 0 and dx[0, -1] == 1
    else:
        assert dx[0, 0] == 0 and dx[0, -1] == 0
    assert y[0, 0] == lo and y[0, -1] == hi


def test_gelu_exact_lower_tail_is_relatively_accurate():
    """x * Phi(x) for x = -10: Phi from ndtr keeps full relative precision (1 + erf(x/sqrt 2)
    would cancel to 0 below about -8.3)."""
    x = np.array([[-10.0, -8.5]])
    y, _ = fnn.GELU().forward((), (), x)
    np.testing.assert_allclose(y, x * 0.5 * scipy.special.erfc(-x / math.sqrt(2)), rtol=1e-12)
    assert np.all(y < 0)


def test_identity_copies():
    x = np.ones((2, 3))
    y, cache = fnn.Identity().forward((), (), x)
    dx, _ = fnn.Identity().backward((), cache, x)
    assert not np.shares_memory(y, x) and not np.shares_memory(dx, x)


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


# --- Residual ---------------------------------------------------------------------------------

@given(data=st.data())
def test_residual_adds_the_inner_output_and_threads_its_state(data):
    inner = fnn.Sequential([fnn.Linear(3, 3), fnn.BatchNormalization(3, alpha=0.5)])
    layer = fnn.Residual(inner)
    params, state = layer.init(7)
    tree.map(np.testing.assert_array_equal, (params, state), inner.init(7))
    x = input_values(data.draw, (4, 3))
    y, cache = layer.forward(params, state, x)
    fx, inner_cache = inner.forward(params, state, x)
    np.testing.assert_array_equal(y, x + fx)
    assert cache.state is cache.inner.state
    np.testing.assert_array_equal(cache.state[1].moving_mean, inner_cache.state[1].moving_mean)
    dy = input_values(data.draw, (4, 3))
    dx, dparams = layer.backward(params, cache, dy)
    dx_inner, dparams_inner = inner.backward(params, inner_cache, dy)
    np.testing.assert_array_equal(dx, dy + dx_inner)
    tree.map(np.testing.assert_array_equal, dparams, dparams_inner)
    # in a Sequential, with eval mode reaching the inner BatchNormalization
    net = fnn.Sequential([layer, fnn.Tanh()])
    net_params, net_state = net.init(7)
    eval_state = fnn.eval_mode(net_state)
    _, eval_cache = net.forward(net_params, eval_state, x)
    assert eval_cache.state[0][1] is eval_state[0][1]  # the inner BatchNormalization's state


def test_residual_shape_mismatch_names_both_layers():
    layer = fnn.Residual(fnn.Linear(3, 2))
    params, state = layer.init(0)
    with pytest.raises(ValueError) as info:
        layer.forward(params, state, np.ones((4, 3)))
    message = str(info.value)
    assert repr(layer) in message and repr(layer.layer) in message
    assert "(4, 3)" in message and "(4, 2)" in message


# --- initializer and dtype options ------------------------------------------------------------

def test_linear_default_init_is_classic_from_split_keys():
    params, _ = fnn.Linear(4, 3).init(5)
    kw, kb = split_key(5, 2)
    np.testing.assert_array_equal(params.W, fnn.init.classic_uniform(kw, (3, 4), fan=4))
    np.testing.assert_array_equal(params.b, fnn.init.classic_uniform(kb, (3,), fan=4))
    assert np.abs(params.W).max() <= 0.5 and params.W.dtype == np.float64


def test_linear_and_scaling_initializers_and_dtype():
    w_init = functools.partial(fnn.init.kaiming_normal, nonlinearity="relu")
    layer = fnn.Linear(4, 3, w_init=w_init, b_init=fnn.init.zeros, dtype=np.float32)
    params, _ = layer.init(5)
    kw, _ = split_key(5, 2)
    np.testing.assert_array_equal(params.W, w_init(kw, (3, 4), np.float32))
    assert params.W.dtype == params.b.dtype == np.float32 and not params.b.any()
    scaling = fnn.ChannelwiseScaling(3, gamma_init=fnn.init.ones, dtype="float32")
    params, _ = scaling.init(1)
    np.testing.assert_array_equal(params.gamma, np.ones(3))
    assert params.beta.dtype == np.float32 and np.abs(params.beta).max() <= 1 / math.sqrt(3)


def test_initializer_returning_the_wrong_shape_raises():
    with pytest.raises(ValueError, match=r"returned shape \(2,\), expected \(3, 4\)"):
        fnn.Linear(4, 3, w_init=lambda key, shape, dtype: np.zeros(2)).init(0)


def test_float32_end_to_end():
    """Layers created with dtype float32 give float32 params and state, and a training step on
    float32 data keeps everything float32."""
    net = fnn.Sequential([
        fnn.Residual(fnn.Sequential([fnn.Conv2d(2, 2, 3, dtype="float32"),
                                     fnn.BatchNorm2d(2, affine=True, dtype="float32")])),
        fnn.Flatten(), fnn.BatchNormalization(18, alpha=0.5, dtype="float32"),
        fnn.Dropout(0.2), fnn.LayerNorm(2 * 3 * 3, dtype="float32"),
        fnn.Linear(18, 4, dtype="float32"), fnn.GELU(), fnn.ChannelwiseScaling(4,
                                                                               dtype="float32"),
        fnn.LogSoftMax()])
    params, state = net.init(0)
    assert all(a.dtype == np.float32 for a in tree.leaves((params, state))
               if isinstance(a, np.ndarray))
    x = fnn.generator(0).standard_normal((5, 2, 3, 3)).astype(np.float32)
    t = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]]
    opt = fnn.Adam(1e-2)
    params, state, opt_state, loss, y = fnn.train.train_step(
        net, fnn.ClassNLLCriterion(), opt, params, state, opt.init(params), x, t)
    arrays = [a for a in tree.leaves((params, state, opt_state, y)) if isinstance(a, np.ndarray)]
    assert len(arrays) > 20 and all(a.dtype == np.float32 for a in arrays)
    assert loss.dtype == np.float32


# --- repr and hyperparameter validation -------------------------------------------------------

def test_repr_shows_required_and_changed_options_only():
    assert repr(fnn.Linear(3, 4)) == "Linear(n_in=3, n_out=4)"
    assert (repr(fnn.Linear(3, 4, w_init=fnn.init.xavier_uniform, dtype=np.float32))
            == "Linear(n_in=3, n_out=4, w_init=fnn.init.xavier_uniform, dtype='float32')")
    assert (repr(fnn.Linear(3, 4, b_init=functools.partial(fnn.init.uniform, high=0.1)))
            == "Linear(n_in=3, n_out=4, b_init=partial(fnn.init.uniform, high=0.1))")
    assert repr(fnn.BatchNormalization(3)) == "BatchNormalization(n_features=3)"
    assert (repr(fnn.BatchNorm2d(3, alpha=0.9, affine=True))
            == "BatchNorm2d(n_channels=3, alpha=0.9, affine=True)")
    assert repr(fnn.LayerNorm(5, eps=1e-3)) == "LayerNorm(normalized_shape=(5,), eps=0.001)"
    # one policy for every spec: defaults hidden everywhere
    assert repr(fnn.GELU()) == "GELU()"
    assert repr(fnn.GELU("tanh")) == "GELU(approximate='tanh')"
    assert repr(fnn.LeakyReLU()) == "LeakyReLU()" and repr(fnn.Dropout(0.2)) == "Dropout(p=0.2)"
    assert repr(fnn.Residual(fnn.Tanh())) == "Residual(layer=Tanh())"


def test_specs_compare_and_evolve_with_options():
    assert fnn.Linear(3, 4, dtype=np.float32) == fnn.Linear(3, 4, dtype="float32")
    assert fnn.Linear(3, 4) != fnn.Linear(3, 4, dtype="float32")
    assert attrs.evolve(fnn.BatchNorm2d(2), affine=True).affine is True


BAD_HYPER = [
    ("GELU", lambda: fnn.GELU("erf")),
    ("BatchNormalization", lambda: fnn.BatchNormalization(3, eps=-1e-5)),
    ("BatchNormalization", lambda: fnn.BatchNormalization(3, eps=float("nan"))),
    ("BatchNormalization", lambda: fnn.BatchNormalization(3, eps=0.0)),
    ("BatchNorm2d", lambda: fnn.BatchNorm2d(2, eps=0)),
    ("LayerNorm", lambda: fnn.LayerNorm(2, eps=0.0)),
    ("BatchNorm2d", lambda: fnn.BatchNorm2d(0)),
    ("BatchNorm2d", lambda: fnn.BatchNorm2d(2, alpha=1.5)),
    ("BatchNorm2d", lambda: fnn.BatchNorm2d(2, affine=1)),
    ("BatchNorm2d", lambda: fnn.BatchNorm2d(2, dtype="int32")),
    ("LayerNorm", lambda: fnn.LayerNorm(0)),
    ("LayerNorm", lambda: fnn.LayerNorm(())),
    ("LayerNorm", lambda: fnn.LayerNorm((2, True))),
    ("LayerNorm", lambda: fnn.LayerNorm(2.0)),
    ("LayerNorm", lambda: fnn.LayerNorm(3, eps=-1.0)),
    ("LayerNorm", lambda: fnn.LayerNorm(3, elementwise_affine="yes")),
    ("Linear", lambda: fnn.Linear(3, 4, dtype="int64")),
    ("Linear", lambda: fnn.Linear(3, 4, dtype=None)),
    ("Linear", lambda: fnn.Linear(3, 4, dtype="complex128")),
    ("Linear", lambda: fnn.Linear(3, 4, dtype="no-such-dtype")),
    ("Linear", lambda: fnn.Linear(3, 4, w_init="kaiming")),
    ("ChannelwiseScaling", lambda: fnn.ChannelwiseScaling(3, beta_init=0.0)),
]


@pytest.mark.parametrize("name, make", BAD_HYPER, ids=[f"{n}-{i}" for i, (n, _) in
                                                       enumerate(BAD_HYPER)])
def test_invalid_hyperparameters_raise_at_construction(name, make):
    with pytest.raises(ValueError, match=rf"^{name}: "):
        make()


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        fnn.Linear(3, 4, None)  # type: ignore[misc]
