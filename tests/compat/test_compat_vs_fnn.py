"""compat results equal fnn results for the same parameters, bit for bit: every layer (output,
gradInput, accumulated gradients, new statistics), Sequential, the criteria and the optimizers,
in float32 and float64. Hypothesis draws the sizes and the values."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import compat
import fnn
from fnn import tree
from fnn.dropout import DropoutState
from fnn.normalization import BatchNormState

DTYPES = [np.float32, np.float64]


def params_of(module: compat.Module, layer: Any) -> Any:
    """``layer``'s params record holding the compat module's parameter attributes (the record's
    field names are the attribute names)."""
    params = layer.init(0)[0]
    if params == ():
        return ()
    return attrs.evolve(params, **{f.name: getattr(module, f.name)
                                   for f in attrs.fields(type(params))})


# (compat module, its fnn layer, input shape) from sizes (n, a, b) drawn per example.
LAYERS: dict[str, Callable[[int, int, int], tuple[compat.Module, Any, tuple]]] = {
    "Linear": lambda n, a, b: (compat.Linear(a, b), fnn.Linear(a, b), (n, a)),
    "ChannelwiseScaling": lambda n, a, b: (compat.ChannelwiseScaling(a),
                                           fnn.ChannelwiseScaling(a), (n, a)),
    "SoftMax": lambda n, a, b: (compat.SoftMax(), fnn.SoftMax(), (n, a)),
    "LogSoftMax": lambda n, a, b: (compat.LogSoftMax(), fnn.LogSoftMax(), (n, a)),
    "ReLU": lambda n, a, b: (compat.ReLU(), fnn.ReLU(), (n, a, b)),
    "LeakyReLU": lambda n, a, b: (compat.LeakyReLU(0.1), fnn.LeakyReLU(0.1), (n, a)),
    "ELU": lambda n, a, b: (compat.ELU(0.5), fnn.ELU(0.5), (n, a)),
    "SoftPlus": lambda n, a, b: (compat.SoftPlus(), fnn.SoftPlus(), (n, a)),
    "Conv2d": lambda n, a, b: (compat.Conv2d(a, b, 3), fnn.Conv2d(a, b, 3), (n, a, 4, 5)),
    "MaxPool2d": lambda n, a, b: (compat.MaxPool2d(2), fnn.MaxPool2d(2), (n, a, 4, 2 * b)),
    "Flatten": lambda n, a, b: (compat.Flatten(), fnn.Flatten(), (n, a, b)),
}

sizes = st.tuples(st.integers(1, 6), st.integers(1, 5), st.integers(1, 5))


def assert_same(ours: Any, ref: Any) -> None:
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", LAYERS)
@given(size=sizes, seed=st.integers(0, 2**32 - 1))
def test_layer_equals_fnn(name, dtype, size, seed):
    rng = np.random.default_rng(seed)
    module, layer, shape = LAYERS[name](*size)
    params = params_of(module, layer)
    if params != ():  # new parameters in dtype; the float64 gradients accumulate onto noise
        params = tree.map(lambda p: rng.uniform(-1, 1, p.shape).astype(dtype), params)
        for f in attrs.fields(type(params)):
            setattr(module, f.name, getattr(params, f.name))
        for g in module.getGradParameters():
            g[...] = rng.uniform(-1, 1, g.shape)
    x = rng.standard_normal(shape).astype(dtype)
    old_grads = [g.copy() for g in module.getGradParameters()]
    y, cache = layer.forward(params, layer.init(0)[1], x)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dparams = layer.backward(params, cache, dy)
    assert_same(module.forward(x), y)
    assert_same(module.backward(x, dy), dx)
    for g, old, d in zip(module.getGradParameters(), old_grads, tree.leaves(dparams)):
        assert_same(g, old + d)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
@given(size=sizes, alpha=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_batchnorm_equals_fnn(dtype, training, size, alpha, seed):
    rng = np.random.default_rng(seed)
    n, f, _ = size
    n += 1  # training normalizes over at least two samples
    bn = compat.BatchNormalization(alpha)
    mean, var = rng.standard_normal(f).astype(dtype), rng.uniform(0.5, 2, f).astype(dtype)
    bn.moving_mean, bn.moving_variance = mean, var
    if not training:
        bn.evaluate()
    layer = fnn.BatchNormalization(f, alpha)
    x = rng.standard_normal((n, f)).astype(dtype)
    y, cache = layer.forward((), BatchNormState(training, mean, var), x)
    dy = rng.standard_normal((n, f)).astype(dtype)
    assert_same(bn.forward(x), y)
    assert_same(bn.backward(x, dy), layer.backward((), cache, dy)[0])
    assert_same(bn.moving_mean, cache.state.moving_mean)
    assert_same(bn.moving_variance, cache.state.moving_variance)


@given(p=st.floats(0, 0.9), global_seed=st.integers(0, 2**32 - 1))
def test_dropout_equals_fnn_with_the_key_drawn_from_the_global_rng(p, global_seed):
    x = np.random.default_rng(global_seed).standard_normal((7, 5))
    np.random.seed(global_seed)
    key = fnn.Key(int(np.random.randint(2**63)))
    y, cache = fnn.Dropout(p).forward((), DropoutState(True, key), x)
    np.random.seed(global_seed)
    drop = compat.Dropout(p)
    assert_same(drop.forward(x), y)
    assert_same(drop.backward(x, 3 * x), fnn.Dropout(p).backward((), cache, 3 * x)[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_sequential_equals_fnn_sequential(dtype):
    np.random.seed(0)
    children = [compat.Linear(4, 6), compat.BatchNormalization(0.9),
                compat.ChannelwiseScaling(6), compat.ELU(), compat.Linear(6, 3),
                compat.LogSoftMax()]
    net = compat.Sequential()
    for child in children:
        net.add(child)
    ref = fnn.Sequential([fnn.Linear(4, 6), fnn.BatchNormalization(6, 0.9),
                          fnn.ChannelwiseScaling(6), fnn.ELU(), fnn.Linear(6, 3),
                          fnn.LogSoftMax()])
    params = tuple(params_of(child, layer) for child, layer in zip(children, ref.layers))
    _, state = ref.init(0)
    rng = np.random.default_rng(1)
    for _ in range(3):  # the statistics thread through the steps alike
        x = rng.standard_normal((8, 4)).astype(dtype)
        dy = rng.standard_normal((8, 3)).astype(dtype)
        y, cache = ref.forward(params, state, x)
        dx, grads = ref.backward(params, cache, dy)
        state = cache.state
        net.zeroGradParameters()
        assert_same(net.forward(x), y)
        assert_same(net.backward(x, dy), dx)
        for ours, theirs in zip(tree.leaves(net.getGradParameters()), tree.leaves(grads)):
            assert_same(ours, theirs)
        assert_same(children[1].moving_mean, state[1].moving_mean)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["MSECriterion", "ClassNLLCriterion",
                                  "ClassNLLCriterionUnstable"])
def test_criteria_equal_fnn(name, dtype):
    rng = np.random.default_rng(2)
    y = rng.uniform(0, 1, (6, 4)).astype(dtype)
    t = np.eye(4, dtype=dtype)[rng.integers(0, 4, 6)]
    loss, cache = getattr(fnn, name)().forward(y, t)
    crit = getattr(compat, name)()
    assert_same(crit.forward(y, t), loss)
    assert_same(crit.backward(y, t), getattr(fnn, name)().backward(cache))
    assert_same(crit.backward(y.copy(), t.copy()), crit.gradInput)  # recomputed: the same


def test_optimizers_equal_fnn_over_steps():
    rng = np.random.default_rng(3)
    shapes = [[(3, 2), (3,)], [], [(4,)]]
    variables = [[rng.standard_normal(s) for s in layer] for layer in shapes]
    grads = [[[rng.standard_normal(s) for s in layer] for layer in shapes] for _ in range(3)]
    for classic, spec, config in [
            (compat.sgd_momentum, fnn.SGDMomentum(0.1, 0.9),
             {"learning_rate": 0.1, "momentum": 0.9}),
            (compat.adam_optimizer, fnn.Adam(0.01, 0.8, 0.99, 1e-7),
             {"learning_rate": 0.01, "beta1": 0.8, "beta2": 0.99, "epsilon": 1e-7})]:
        ours = [[w.copy() for w in layer] for layer in variables]
        params = [[w.copy() for w in layer] for layer in variables]
        opt_state, state = spec.init(variables), {}
        for g in grads:
            classic(ours, g, config, state)
            params, opt_state = spec.update(params, g, opt_state)
        for a, b in zip(tree.leaves(ours), tree.leaves(params)):
            assert_same(a, b)
