"""Sequential: tuples of the children's params/state/caches, state threading, modes, error notes;
Residual: the inner output added, params and state threaded, shape errors.

(Shapes, purity, dtypes, gradients and batch consistency of Sequentials are rows of the layer
table in tests/cases/.)"""

from __future__ import annotations

import numpy as np
import pytest
from cases import input_values, training_flags
from hypothesis import given
from hypothesis import strategies as st

import fnn
from fnn import tree
from fnn.dropout import DropoutState
from fnn.linear import LinearParams
from fnn.normalization import BatchNormState


def small_net(alpha: float = 0.5) -> fnn.Sequential:
    return fnn.Sequential([fnn.Linear(3, 4), fnn.ReLU(),
                           fnn.Sequential([fnn.BatchNormalization(4, alpha=alpha),
                                           fnn.Dropout(p=0.5)]),
                           fnn.Linear(4, 2)])


def test_params_and_state_are_tuples_of_the_childrens():
    net = small_net()
    params, state = net.init(11)
    assert len(net) == 4 and net[1] == fnn.ReLU()
    assert isinstance(params, tuple) and isinstance(state, tuple)
    assert isinstance(params[0], LinearParams) and params[1] == () and params[2] == ((), ())
    assert isinstance(state[2][0], BatchNormState) and isinstance(state[2][1], DropoutState)
    # every child gets its own key split off the Sequential's key
    for child, key, p in zip(net.layers, fnn.split_key(11, 4), params):
        np.testing.assert_equal(fnn.tree.leaves(child.init(key)[0]), fnn.tree.leaves(p))


@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_forward_backward_chain_the_children(seed, data):
    net = small_net()
    params, state = net.init(seed)
    x = input_values(data.draw, (data.draw(st.integers(1, 4)), 3))
    y, cache = net.forward(params, state, x)
    assert isinstance(cache.caches, tuple) and len(cache.caches) == 4
    assert cache.state == tuple(c.state for c in cache.caches)
    # by hand, child after child
    h, caches = x, []
    for layer, p, s in zip(net.layers, params, state):
        h, c = layer.forward(p, s, h)
        caches.append(c)
    np.testing.assert_array_equal(y, h)
    dy = np.ones_like(y)
    dx, grads = net.backward(params, cache, dy)
    assert isinstance(grads, tuple) and len(grads) == 4
    d = dy
    for i in reversed(range(4)):
        d, g = net.layers[i].backward(params[i], caches[i], d)
        np.testing.assert_equal(fnn.tree.leaves(grads[i]), fnn.tree.leaves(g))
    np.testing.assert_array_equal(dx, d)


def test_cache_state_threads_batchnorm_stats_and_dropout_keys():
    alpha = 0.25
    net = small_net(alpha)
    params, state0 = net.init(0)
    xs = [np.linspace(-1, 2, 15).reshape(5, 3), np.linspace(3, -2, 15).reshape(5, 3)]
    state, means, keys = state0, [], []
    for x in xs:
        h, _ = net[1].forward((), (), net[0].forward(params[0], (), x)[0])
        means.append(h.mean(axis=0))
        _, cache = net.forward(params, state, x)
        state = cache.state
        keys.append(state[2][1].key)
    expected = alpha * (alpha * 0.0 + (1 - alpha) * means[0]) + (1 - alpha) * means[1]
    np.testing.assert_allclose(state[2][0].moving_mean, expected, rtol=1e-13)
    assert len({state0[2][1].key, *keys}) == 3  # a new Dropout key each training call


def test_train_and_eval_mode_reach_nested_states():
    net = small_net()
    params, state = net.init(0)
    assert training_flags(state) == [True, True]
    ev = fnn.eval_mode(state)
    assert training_flags(ev) == [False, False]
    assert training_flags(fnn.train_mode(ev)) == [True, True]
    x = np.linspace(-1, 1, 6).reshape(2, 3)
    y, cache = net.forward(params, ev, x)
    assert cache.state == ev  # eval mode: BatchNorm and Dropout keep their state
    y2, _ = net.forward(params, ev, x)
    np.testing.assert_array_equal(y, y2)


def test_child_error_carries_index_and_repr():
    inner = fnn.Sequential([fnn.ReLU(), fnn.Linear(5, 2)])
    net = fnn.Sequential([fnn.Linear(3, 4), inner])
    params, state = net.init(0)
    with pytest.raises(ValueError, match=r"Linear\(n_in=5, n_out=2\)") as info:
        net.forward(params, state, np.ones((2, 3)))
    notes = info.value.__notes__
    assert any("layer 1" in n and "forward" in n and "Linear(n_in=5, n_out=2)" in n
               for n in notes)
    assert any("layer 1" in n and repr(inner) in n for n in notes)


def test_child_error_in_backward_carries_index_and_repr():
    net = fnn.Sequential([fnn.Linear(3, 4), fnn.Linear(4, 2)])
    params, state = net.init(0)
    _, cache = net.forward(params, state, np.ones((2, 3)))
    with pytest.raises(ValueError, match="gradient") as info:
        net.backward(params, cache, np.ones((2, 3)))
    assert any("layer 1" in n and "backward" in n and "Linear(n_in=4, n_out=2)" in n
               for n in info.value.__notes__)


@pytest.mark.parametrize("params, state", [
    ([(), ()], ((), ())), (((),), ((), ())), (((), ()), ((), (), ()))])
def test_params_and_state_must_be_tuples_one_per_layer(params, state):
    net = fnn.Sequential([fnn.ReLU(), fnn.ReLU()])
    with pytest.raises(ValueError, match="one per layer"):
        net.forward(params, state, np.ones((1, 2)))


# --- shapes without arrays: output_shape, param_shapes, init(input_shape), summary, repr ------

def _net() -> fnn.Sequential:
    return fnn.Sequential([fnn.Linear(6, 8), fnn.BatchNormalization(8), fnn.ReLU(),
                           fnn.Sequential([fnn.Dropout(0.1), fnn.Linear(8, 3)]),
                           fnn.Residual(fnn.Linear(3, 3)), fnn.LogSoftMax()])


def test_output_and_param_shapes_match_init_and_forward():
    net = _net()
    params, state = net.init(0)
    assert net.output_shape((5, 6)) == net.forward(params, state, np.ones((5, 6)))[0].shape
    shapes = net.param_shapes()
    assert [(s.shape, s.dtype) for s in tree.leaves(shapes)] == \
        [(p.shape, p.dtype.name) for p in tree.leaves(params)]
    state_arrays = [s for s in tree.leaves(state) if isinstance(s, np.ndarray)]
    assert [(s.shape, s.dtype) for s in tree.leaves(net.state_shapes())
            if isinstance(s, fnn.core.ShapeDtype)] == \
        [(a.shape, a.dtype.name) for a in state_arrays]
    assert repr(shapes[0]) == "LinearParams(W=float64[8, 6], b=float64[8])"


def test_init_checks_the_chain_against_an_input_shape():
    net = _net()
    assert net.init(0, input_shape=(2, 6))[0] is not None
    with pytest.raises(ValueError, match=r"Linear\(n_in=6, n_out=8\): expected input of shape "
                                         r"\(N, \.\.\., 6\), got shape \(2, 7\)") as info:
        net.init(0, input_shape=(2, 7))
    assert "Sequential layer 0" in info.value.__notes__[0]
    bad = fnn.Sequential([fnn.Linear(6, 8), fnn.ReLU(), fnn.Linear(9, 2)])
    with pytest.raises(ValueError, match=r"Linear\(n_in=9, n_out=2\)") as info:
        bad.init(0, input_shape=(None, 6))
    assert "Sequential layer 2" in info.value.__notes__[0]


def test_multi_line_repr_one_child_per_line():
    assert repr(fnn.Sequential([fnn.Linear(2, 3), fnn.Sequential([fnn.ReLU()])])) == (
        "Sequential([\n  Linear(n_in=2, n_out=3),\n  Sequential([\n    ReLU(),\n  ]),\n])")
    assert repr(fnn.Sequential([])) == "Sequential([])"


def test_summary_table():
    text = fnn.summary(_net(), (None, 6), print_fn=None)
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "output", "shape", "params", "state"]
    assert any(line.split()[:1] == ["Linear(n_in=6,"] and line.endswith("56      0")
               for line in lines)
    assert "BatchNormalization(n_features=8)" in text and "(None, 8)" in text
    assert lines[-1] == "total params: 95   state values: 16"  # 6*8+8 + 8*3+3 + 3*3+3
    printed = []
    assert fnn.summary(_net(), (1, 6), print_fn=printed.append) == printed[0]
    with pytest.raises(ValueError, match="expected input of shape"):
        fnn.summary(_net(), (1, 5), print_fn=None)


def test_residual_errors_name_the_residual_and_the_inner_layer():
    res = fnn.Residual(fnn.Linear(3, 4))
    params, state = res.init(0)
    with pytest.raises(ValueError, match=r"Residual\(layer=Linear\(n_in=3, n_out=4\)\).*"
                                         r"maps input of shape \(2, 3\) to shape \(2, 4\)"):
        res.forward(params, state, np.ones((2, 3)))
    with pytest.raises(ValueError, match="Residual"):
        res.output_shape((2, 3))
    with pytest.raises(ValueError, match=r"Linear\(n_in=3, n_out=4\): expected input") as info:
        res.forward(params, state, np.ones((2, 5)))
    assert "Residual" in info.value.__notes__[0]


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
