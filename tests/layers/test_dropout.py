"""Dropout: keys advance and draw new masks, one seed reproduces the run, evaluation and p = 0
are the identity."""

from __future__ import annotations

import numpy as np
from cases import input_values
from hypothesis import given
from hypothesis import strategies as st

import fnn

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
