"""Semantics of the recurrent layers beyond the generic table (tests/cases/) and the PyTorch
references (tests/torch_reference/test_torch_recurrent.py): the first step from a zero state,
reverse as the time-flip of the forward layer, Bidirectional's halves and params, LastStep, init,
param_shapes and output_shape, dtypes, saving, and errors."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from cases import input_values
from helpers import CLOSE
from hypothesis import given
from hypothesis import strategies as st

import fnn
from fnn import tree
from fnn.core import ShapeDtype
from fnn.recurrent import RecurrentParams
from fnn.sequence import BidirectionalParams

CELLS = [lambda f, h, **kw: fnn.RNN(f, h, **kw),
         lambda f, h, **kw: fnn.RNN(f, h, "relu", **kw), fnn.LSTM, fnn.GRU]
CELL_IDS = ["rnn-tanh", "rnn-relu", "lstm", "gru"]
GATES = {"rnn-tanh": 1, "rnn-relu": 1, "lstm": 4, "gru": 3}


def sequences(data: st.DataObject, f: int) -> np.ndarray:
    n, t = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 5))
    return input_values(data.draw, (n, t, f))


@pytest.mark.parametrize("make", CELLS, ids=CELL_IDS)
@given(data=st.data())
def test_reverse_is_the_forward_layer_on_the_time_flipped_input(make, data):
    """reverse=True: y(x) = flip(y_forward(flip(x))), and likewise dx and equal dparams."""
    fwd, rev = make(3, 2), make(3, 2, reverse=True)
    params, _ = fwd.init(data.draw(st.integers(0, 2**32 - 1)))
    assert rev.init(0)[0].W_ih.shape == params.W_ih.shape
    x = sequences(data, 3)
    dy = input_values(data.draw, (*x.shape[:2], 2))
    y_rev, c_rev = rev.forward(params, (), x)
    y_fwd, c_fwd = fwd.forward(params, (), x[:, ::-1])
    np.testing.assert_allclose(y_rev, y_fwd[:, ::-1], **CLOSE)
    dx_rev, g_rev = rev.backward(params, c_rev, dy)
    dx_fwd, g_fwd = fwd.backward(params, c_fwd, dy[:, ::-1])
    np.testing.assert_allclose(dx_rev, dx_fwd[:, ::-1], **CLOSE)
    tree.map(lambda a, b: np.testing.assert_allclose(a, b, **CLOSE), g_rev, g_fwd)
    assert y_rev.flags.c_contiguous and dx_rev.flags.c_contiguous


@pytest.mark.parametrize("make", CELLS, ids=CELL_IDS)
def test_first_steps_start_from_a_zero_state(make):
    """h_1 depends on x_1 alone; h_2 on x_1 and x_2 (a change of x_2 leaves h_1 alone)."""
    layer = make(2, 3)
    params, _ = layer.init(4)
    x = fnn.generator(0).standard_normal((2, 3, 2))
    y, _ = layer.forward(params, (), x)
    y1, _ = layer.forward(params, (), x[:, :1])
    np.testing.assert_array_equal(y[:, :1], y1)
    x2 = x.copy()
    x2[:, 1] += 1.0
    y2, _ = layer.forward(params, (), x2)
    np.testing.assert_array_equal(y2[:, 0], y[:, 0])
    assert not np.allclose(y2[:, 1], y[:, 1])


def test_rnn_first_step_formula():
    layer = fnn.RNN(2, 3)
    p, _ = layer.init(1)
    x = fnn.generator(2).standard_normal((4, 1, 2))
    y, _ = layer.forward(p, (), x)
    np.testing.assert_allclose(y[:, 0], np.tanh(x[:, 0] @ p.W_ih.T + p.b_ih + p.b_hh), **CLOSE)


def test_lstm_first_step_formula():
    layer = fnn.LSTM(2, 3)
    p, _ = layer.init(1)
    x = fnn.generator(2).standard_normal((4, 1, 2))
    y, _ = layer.forward(p, (), x)
    i, f, g, o = np.split(x[:, 0] @ p.W_ih.T + p.b_ih + p.b_hh, 4, axis=1)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    np.testing.assert_allclose(y[:, 0], sig(o) * np.tanh(sig(i) * np.tanh(g)), **CLOSE)
    assert not np.allclose(f, 0)  # f multiplies c_0 = 0: it must not matter


@pytest.mark.parametrize("make", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("shape", [(2, 0, 3), (0, 4, 3)], ids=["no-steps", "no-samples"])
def test_empty_sequences_and_batches(make, shape):
    """T = 0 or N = 0: empty outputs and dx, zero gradients (as sums over nothing)."""
    layer = fnn.Bidirectional(make(3, 2, reverse=True))
    params, state = layer.init(0)
    y, cache = layer.forward(params, state, np.zeros(shape, np.float32))
    assert y.shape == (*shape[:2], 4) and y.dtype == np.float32
    dx, grads = layer.backward(params, cache, np.zeros(y.shape, np.float32))
    assert dx.shape == shape
    assert all(not g.any() for g in tree.leaves(grads))


# --- Bidirectional ----------------------------------------------------------------------------

@pytest.mark.parametrize("make", CELLS, ids=CELL_IDS)
@given(data=st.data())
def test_bidirectional_halves_are_the_two_directions(make, data):
    inner = make(3, 2)
    layer = fnn.Bidirectional(inner)
    params, state = layer.init(data.draw(st.integers(0, 2**32 - 1)))
    assert isinstance(params, BidirectionalParams) and state == ((), ())
    x = sequences(data, 3)
    y, cache = layer.forward(params, state, x)
    assert y.shape == (*x.shape[:2], 4) == layer.output_shape(x.shape)
    np.testing.assert_array_equal(y[..., :2], inner.forward(params.forward, (), x)[0])
    reversed_inner = make(3, 2, reverse=True)
    np.testing.assert_array_equal(y[..., 2:], reversed_inner.forward(params.backward, (), x)[0])
    assert layer.layers == (inner, reversed_inner)
    dy = input_values(data.draw, y.shape)
    dx, grads = layer.backward(params, cache, dy)
    dxf, gf = inner.backward(params.forward, inner.forward(params.forward, (), x)[1],
                             dy[..., :2])
    dxb, gb = reversed_inner.backward(params.backward,
                                      reversed_inner.forward(params.backward, (), x)[1],
                                      dy[..., 2:])
    np.testing.assert_allclose(dx, dxf + dxb, **CLOSE)
    tree.map(lambda a, b: np.testing.assert_array_equal(a, b), grads, BidirectionalParams(gf, gb))


def test_bidirectional_draws_two_sets_of_params_and_wraps_a_reversed_layer():
    layer = fnn.Bidirectional(fnn.GRU(3, 4))
    params, _ = layer.init(0)
    assert not np.array_equal(params.forward.W_ih, params.backward.W_ih)
    tree.map(np.testing.assert_array_equal, params, layer.init(0)[0])
    # wrapping a reversed layer swaps the roles: the halves are (right to left, left to right)
    flipped = fnn.Bidirectional(fnn.GRU(3, 4, reverse=True))
    assert flipped.layers == (fnn.GRU(3, 4, reverse=True), fnn.GRU(3, 4))
    assert layer.param_shapes() == BidirectionalParams(*[fnn.GRU(3, 4).param_shapes()] * 2)


@pytest.mark.parametrize("inner", [fnn.Linear(3, 4), fnn.ReLU(), "LSTM", None])
def test_bidirectional_needs_a_reversible_layer(inner):
    with pytest.raises(ValueError, match=r"Bidirectional: layer must be a layer with a reverse"):
        fnn.Bidirectional(inner)


# --- LastStep -----------------------------------------------------------------------------------

@given(data=st.data())
def test_laststep_selects_the_last_step_and_routes_the_gradient_there(data):
    shape = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4)),
             *data.draw(st.lists(st.integers(1, 3), max_size=2)))
    x = input_values(data.draw, shape)
    layer = fnn.LastStep()
    y, cache = layer.forward((), (), x)
    np.testing.assert_array_equal(y, x[:, -1])
    assert layer.output_shape(x.shape) == y.shape
    dy = input_values(data.draw, y.shape)
    dx, grads = layer.backward((), cache, dy)
    assert grads == () and dx.shape == x.shape
    np.testing.assert_array_equal(dx[:, -1], dy)
    np.testing.assert_array_equal(dx[:, :-1], 0)


@pytest.mark.parametrize("shape", [(3,), (2, 0, 4)])
def test_laststep_needs_a_step(shape):
    with pytest.raises(ValueError, match=r"LastStep\(\): expected input of shape \(N, T, \.\.\.\) "
                                         r"with T >= 1"):
        fnn.LastStep().forward((), (), np.zeros(shape))


# --- init, shapes, dtypes ---------------------------------------------------------------------

@pytest.mark.parametrize("make, name", list(zip(CELLS, CELL_IDS)), ids=CELL_IDS)
def test_init_is_pytorchs_uniform_and_param_shapes_match(make, name):
    h, f = 25, 7
    layer = make(f, h)
    params, state = layer.init(0)
    assert state == ()
    g = GATES[name]
    shapes = layer.param_shapes()
    assert shapes == RecurrentParams(ShapeDtype((g * h, f), "float64"),
                                     ShapeDtype((g * h, h), "float64"),
                                     ShapeDtype((g * h,), "float64"),
                                     ShapeDtype((g * h,), "float64"))
    bound = 1 / math.sqrt(h)
    for name in ("W_ih", "W_hh", "b_ih", "b_hh"):
        p, s = getattr(params, name), getattr(shapes, name)
        assert p.shape == s.shape and p.dtype == s.dtype
        assert np.abs(p).max() <= bound and np.abs(p).max() > 0.9 * bound
    leaves = [p.ravel() for p in tree.leaves(params)]
    assert len({a[:3].tobytes() for a in leaves}) == 4  # four keys, four draws


def test_init_options_and_dtype():
    layer = fnn.LSTM(3, 2, w_init=fnn.init.orthogonal, b_init=fnn.init.zeros, dtype=np.float32)
    params, _ = layer.init(0)
    assert all(p.dtype == np.float32 for p in tree.leaves(params))
    np.testing.assert_array_equal(params.b_ih, 0)
    np.testing.assert_allclose(params.W_hh.T @ params.W_hh, np.eye(2), atol=1e-6)
    assert layer.param_shapes().W_hh == ShapeDtype((8, 2), "float32")
    assert repr(layer) == ("LSTM(input_size=3, hidden_size=2, w_init=fnn.init.orthogonal, "
                           "b_init=fnn.init.zeros, dtype='float32')")
    assert repr(fnn.RNN(3, 2, "relu", reverse=True)) == (
        "RNN(input_size=3, hidden_size=2, reverse=True, nonlinearity='relu')")


def test_float32_batch_with_float64_params():
    """Computation in x's dtype; dparams in the params' dtype."""
    layer = fnn.Bidirectional(fnn.GRU(3, 2))
    params, state = layer.init(0)
    x = fnn.generator(1).standard_normal((2, 4, 3)).astype(np.float32)
    y, cache = layer.forward(params, state, x)
    dx, grads = layer.backward(params, cache, np.ones_like(y))
    assert y.dtype == dx.dtype == np.float32
    assert all(g.dtype == np.float64 for g in tree.leaves(grads))
    y64, _ = layer.forward(params, state, x.astype(np.float64))
    np.testing.assert_allclose(y, y64, atol=1e-6)


def test_a_sequence_classifier_saves_and_loads(tmp_path):
    net = fnn.Sequential([fnn.Bidirectional(fnn.LSTM(3, 4)), fnn.LastStep(),
                          fnn.Linear(8, 2), fnn.LogSoftMax()])
    params, state = net.init(0)
    ckpt = fnn.load(fnn.save(tmp_path / "m.npz", params, state, model=net))
    assert ckpt.model == net
    x = fnn.generator(0).standard_normal((2, 5, 3))
    np.testing.assert_array_equal(ckpt.model.forward(ckpt.params, ckpt.state, x)[0],
                                  net.forward(params, state, x)[0])


# --- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 5), (2, 5, 4), (2, 5, 3, 1)])
def test_wrong_input_shape_names_the_layer(shape):
    layer = fnn.LSTM(3, 2)
    params, _ = layer.init(0)
    with pytest.raises(ValueError, match=r"LSTM\(input_size=3, hidden_size=2\): expected input "
                                         r"of shape \(N, T, 3\), got shape"):
        layer.forward(params, (), np.zeros(shape))
    with pytest.raises(ValueError, match=r"LSTM\(input_size=3, hidden_size=2\)"):
        layer.output_shape(shape)


def test_wrong_gradient_params_and_dtype_raise():
    layer = fnn.GRU(3, 2)
    params, _ = layer.init(0)
    x = np.zeros((2, 4, 3))
    _, cache = layer.forward(params, (), x)
    with pytest.raises(ValueError, match=r"expected gradient of shape \(2, 4, 2\), got shape "
                                         r"\(2, 4, 3\)"):
        layer.backward(params, cache, np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match=r"GRU\(input_size=3, hidden_size=2\): params.W_ih "
                                         r"must have shape \(6, 3\), got \(8, 3\)"):
        fnn.GRU(3, 2).forward(fnn.LSTM(3, 2).init(0)[0], (), x)
    with pytest.raises(TypeError, match="params must be a RecurrentParams, got tuple"):
        layer.forward((), (), x)
    with pytest.raises(TypeError, match="expected a floating-point input, got dtype int64"):
        layer.forward(params, (), np.zeros((2, 4, 3), np.int64))
    bi = fnn.Bidirectional(layer)
    bp, bs = bi.init(0)
    _, bcache = bi.forward(bp, bs, x)
    with pytest.raises(ValueError, match=r"Bidirectional.*expected gradient of shape "
                                         r"\(2, 4, 4\), got shape \(2, 4, 2\)"):
        bi.backward(bp, bcache, np.zeros((2, 4, 2)))


@pytest.mark.parametrize("make, message", [
    (lambda: fnn.LSTM(0, 2), "LSTM: input_size must be a positive integer, got 0"),
    (lambda: fnn.GRU(3, 2.5), "GRU: hidden_size must be a positive integer, got 2.5"),
    (lambda: fnn.RNN(3, 2, "sigmoid"),
     "RNN: nonlinearity must be one of 'tanh', 'relu', got 'sigmoid'"),
    (lambda: fnn.RNN(3, 2, reverse=1), "RNN: reverse must be True or False, got 1"),
    (lambda: fnn.LSTM(3, 2, dtype="int32"), "LSTM: dtype must be a floating-point dtype"),
    (lambda: fnn.GRU(3, 2, w_init="orthogonal"), "GRU: w_init must be an initializer"),
])
def test_invalid_hyperparameters_raise_at_construction(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        fnn.LSTM(3, 2, True)
    assert functools.partial(fnn.RNN, 3, 2, "relu")().nonlinearity == "relu"


# --- the sequence view of images (fnn.data.as_sequences) -----------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_as_sequences_gives_the_rows_as_steps(dtype):
    x = np.arange(2 * 16, dtype=dtype).reshape(2, 16)
    seq = fnn.data.as_sequences(x)
    assert seq.shape == (2, 4, 4) and seq.dtype == dtype
    np.testing.assert_array_equal(seq[1, 2], x[1, 8:12])  # step 2 of image 1 = its row 2
    np.testing.assert_array_equal(fnn.data.as_sequences(x.reshape(2, 1, 4, 4)), seq)
    assert not np.shares_memory(seq, x)


@pytest.mark.parametrize("shape", [(2, 15), (2, 3, 4, 4), (16,), (2, 4, 4)])
def test_as_sequences_rejects_other_shapes(shape):
    with pytest.raises(ValueError, match=r"as_sequences: expected one-channel images"):
        fnn.data.as_sequences(np.zeros(shape))
