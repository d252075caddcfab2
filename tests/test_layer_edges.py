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
