"""The activations: formulas and derivatives (ReLU, LeakyReLU, ELU, Tanh, Sigmoid, GELU,
Identity), SoftMax and LogSoftMax on large inputs, SoftPlus up to 1e4, the saturating ones finite
and warning-free at ±1e4, GELU's lower tail."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.signal
import scipy.special
from cases import input_values
from helpers import CLOSE
from hypothesis import given
from hypothesis import strategies as st

import fnn

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
def test_classic_activation_formulas(layer, f):
    x = np.linspace(-3, 3, 13).reshape(1, 13)
    np.testing.assert_allclose(layer.forward((), (), x)[0], f(x), rtol=1e-15)



# --- beyond the classic set ------------------------------------------------------------------

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
