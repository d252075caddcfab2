"""Edge inputs of the elementwise and wrapper layers found by an adversarial pass."""

from __future__ import annotations

import numpy as np
import pytest

import fnn


@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_zero_d_input_in_training_mode(p, dtype):
    """A 0-d x in training mode gave a numpy scalar (not an ndarray) for y and dx."""
    layer = fnn.Dropout(p)
    params, state = layer.init(0)
    x = np.array(1.5, dtype)
    y, cache = layer.forward(params, state, x)
    assert isinstance(y, np.ndarray) and y.shape == () and y.dtype == dtype
    dx, _ = layer.backward(params, cache, np.array(1.0, dtype))
    assert isinstance(dx, np.ndarray) and dx.shape == () and dx.dtype == dtype


@pytest.mark.parametrize("n", [-1, 2.5, True, "3", None], ids=repr)
def test_split_key_refuses_a_bad_count(n):
    """-1 gave numpy's "negative dimensions are not allowed", 2.5 a TypeError about '5.0',
    True one key."""
    with pytest.raises(ValueError, match="split_key: n must be a non-negative int"):
        fnn.split_key(0, n)


def test_split_key_counts():
    assert fnn.split_key(0, 0) == ()
    assert len(fnn.split_key(0, np.int64(3))) == 3


@pytest.mark.parametrize("make", [
    lambda: fnn.Sequential([3]), lambda: fnn.Sequential([fnn.MSECriterion()]),
    lambda: fnn.Sequential([fnn.Linear(2, 3), fnn.SGD(0.1)]), lambda: fnn.Residual(3),
    lambda: fnn.Residual(fnn.MSECriterion()),
])
def test_containers_refuse_what_is_not_a_layer(make):
    """Accepted at construction; the first init then failed with a bare AttributeError
    ("'int' object has no attribute 'init'")."""
    with pytest.raises(TypeError, match=r"(Sequential: layers\[\d\]|Residual: layer) must be an "
                                        r"fnn layer"):
        make()


@pytest.mark.parametrize("dtype", ["float16", np.float16, "longdouble"])
@pytest.mark.parametrize("cls", [lambda dtype: fnn.Linear(2, 3, dtype=dtype),
                                 lambda dtype: fnn.Embedding(3, 2, dtype=dtype),
                                 lambda dtype: fnn.LSTM(2, 3, dtype=dtype)])
def test_dtype_hyperparameter_refuses_float16_and_longdouble(cls, dtype):
    """dtype="float16" was accepted and init drew float16 params that every forward refuses."""
    with pytest.raises(ValueError, match="dtype must be a floating-point dtype, float32 or "
                                         "float64"):
        cls(dtype)
