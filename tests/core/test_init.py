"""fnn.init: fans, gains, and each initializer's distribution, determinism and dtype."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

import fnn
from fnn import init

SHAPES = [(64, 32), (16, 8, 3, 3)]
INITS = [init.kaiming_uniform, init.kaiming_normal, init.xavier_uniform, init.xavier_normal,
         init.orthogonal, init.zeros, init.ones,
         functools.partial(init.classic_uniform, fan=7), init.uniform]


def test_fans_follow_pytorch():
    assert init.fans((10, 3)) == (3, 10)
    assert init.fans((8, 4, 3, 5)) == (4 * 15, 8 * 15)
    with pytest.raises(ValueError, match="at least 2"):
        init.fans((5,))


def test_gains():
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / 1.0001))
    with pytest.raises(ValueError, match="unknown nonlinearity"):
        init.calculate_gain("swish")


@pytest.mark.parametrize("fn", INITS)
@pytest.mark.parametrize("shape", SHAPES)
def test_deterministic_shape_and_dtype(fn, shape):
    a = fn(3, shape)
    assert a.shape == shape and a.dtype == np.float64
    np.testing.assert_array_equal(a, fn(fnn.Key(3), shape))
    b = fn(3, shape, np.float32)
    assert b.dtype == np.float32
    np.testing.assert_array_equal(b, a.astype(np.float32))  # float32 = cast of float64


@pytest.mark.parametrize("shape", SHAPES)
def test_uniform_bounds_and_normal_stds(shape):
    fan_in, fan_out = init.fans(shape)
    b = math.sqrt(2) * math.sqrt(3 / fan_in)
    a = init.kaiming_uniform(0, shape, nonlinearity="relu")
    assert np.abs(a).max() <= b and np.abs(a).max() > 0.95 * b
    a = init.xavier_uniform(0, shape, gain=2.0)
    b = 2.0 * math.sqrt(6 / (fan_in + fan_out))
    assert np.abs(a).max() <= b and np.abs(a).max() > 0.95 * b
    big = (400, 300)
    std = init.kaiming_normal(1, big, mode="fan_out", nonlinearity="relu").std()
    assert std == pytest.approx(math.sqrt(2 / 400), rel=0.02)
    std = init.xavier_normal(1, big).std()
    assert std == pytest.approx(math.sqrt(2 / 700), rel=0.02)


@pytest.mark.parametrize("shape", [(5, 9), (9, 5), (4, 2, 3, 3)])
def test_orthogonal(shape):
    q = init.orthogonal(2, shape, gain=1.5).reshape(shape[0], -1)
    small = min(q.shape)
    gram = q @ q.T if q.shape[0] == small else q.T @ q
    np.testing.assert_allclose(gram, 2.25 * np.eye(small), atol=1e-12)


def test_different_keys_differ_and_bad_arguments_fail():
    assert not np.array_equal(init.kaiming_uniform(0, (4, 4)), init.kaiming_uniform(1, (4, 4)))
    with pytest.raises(ValueError, match="fan_in"):
        init.kaiming_uniform(0, (4, 4), mode="fan_avg")
    with pytest.raises(ValueError, match="2 dimensions"):
        init.orthogonal(0, (4,))


def test_init_param_checks_the_shape():
    np.testing.assert_array_equal(init.init_param(None, 0, (3, 2), np.float64, fan=2),
                                  init.classic_uniform(0, (3, 2), fan=2))
    with pytest.raises(ValueError, match="returned shape"):
        init.init_param(lambda key, shape, dtype: np.zeros(3), 0, (3, 2), np.float64, fan=2)
