"""Optimizers: known answers (Adam two steps, SGD momentum by hand), the classic formulas to the
bit, trees of tuples/lists/attrs records, dtypes, purity, hyperparameter checks."""

from __future__ import annotations

from typing import Any

import attrs
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from cases import input_values
from hypothesis import given
from hypothesis import strategies as st

import fnn
from fnn import tree
from fnn.linear import LinearParams
from fnn.testing import read_only


def run(opt: Any, params: Any, grads: list) -> tuple[Any, Any]:
    state = opt.init(params)
    for g in grads:
        params, state = opt.update(params, g, state)
    return params, state


def test_adam_two_steps_known_values():
    w = np.arange(10.0)
    g = np.arange(10.0)
    opt = fnn.Adam(learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8)
    state = opt.init([w])
    (w1,), state = opt.update([w], [g], state)
    assert state.t == 1
    np.testing.assert_allclose(state.m[0], 0.1 * g, rtol=1e-15)
    np.testing.assert_allclose(state.v[0], 0.001 * g**2, rtol=1e-12)
    # |step| = 0.001 * |g| / (|g| + epsilon / sqrt(0.001)): 0.001 up to ~3e-10 for g >= 1
    np.testing.assert_allclose(w - w1, np.r_[0.0, np.full(9, 0.001)], rtol=0, atol=1e-9)
    (w2,), state = opt.update([w1], [g], state)
    assert state.t == 2
    np.testing.assert_allclose(state.m[0], 0.19 * g, rtol=1e-15)
    np.testing.assert_allclose(state.v[0], 0.001999 * g**2, rtol=1e-12)
    np.testing.assert_allclose(w - w2, np.r_[0.0, np.full(9, 0.002)], rtol=0, atol=2e-9)


def test_sgd_momentum_three_steps_by_hand():
    opt = fnn.SGDMomentum(learning_rate=0.1, momentum=0.9)
    w0 = np.array([1.0, -2.0])
    gs = [np.array([1.0, 2.0]), np.array([-1.0, 0.5]), np.array([0.0, 4.0])]
    # v1 = 0.1 g1; v2 = 0.9 v1 + 0.1 g2; v3 = 0.9 v2 + 0.1 g3; w3 = w0 - v1 - v2 - v3
    v1 = np.array([0.1, 0.2])
    v2 = np.array([0.09 - 0.1, 0.18 + 0.05])
    v3 = np.array([0.9 * -0.01, 0.9 * 0.23 + 0.4])
    (w3,), state = run(opt, (w0,), [(g,) for g in gs])
    np.testing.assert_allclose(state.accumulated_grads[0], v3, rtol=1e-14)
    np.testing.assert_allclose(w3, w0 - v1 - v2 - v3, rtol=1e-14)


# --- the classic formulas, to the bit ------------------------------------------------------

def classic_sgd(w, g, v, lr, momentum):
    v = momentum * v + lr * g
    return w - v, v


def classic_adam(w, g, m, v, t, lr, beta1, beta2, eps):
    lr_t = lr * np.sqrt(1 - beta2**t) / (1 - beta1**t)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    return w - lr_t * m / (np.sqrt(v) + eps), m, v


unit = st.floats(0.0, 0.999)


@given(data=st.data(), lr=st.floats(1e-4, 1.0), momentum=unit, steps=st.integers(1, 4))
def test_sgd_matches_classic_formula_bitwise(data, lr, momentum, steps):
    shape = data.draw(hnp.array_shapes(max_dims=2, max_side=4))
    w = input_values(data.draw, shape)
    grads = [input_values(data.draw, shape) for _ in range(steps)]
    (got,), state = run(fnn.SGDMomentum(learning_rate=lr, momentum=momentum), (w,),
                        [(g,) for g in grads])
    v = np.zeros_like(w)
    for g in grads:
        w, v = classic_sgd(w, g, v, lr, momentum)
    np.testing.assert_array_equal(got, w)
    np.testing.assert_array_equal(state.accumulated_grads[0], v)


@given(data=st.data(), lr=st.floats(1e-4, 1.0), beta1=unit, beta2=unit,
       eps=st.floats(1e-10, 1e-3), steps=st.integers(1, 4))
def test_adam_matches_classic_formula_bitwise(data, lr, beta1, beta2, eps, steps):
    shape = data.draw(hnp.array_shapes(max_dims=2, max_side=4))
    w = input_values(data.draw, shape)
    grads = [input_values(data.draw, shape) for _ in range(steps)]
    opt = fnn.Adam(learning_rate=lr, beta1=beta1, beta2=beta2, epsilon=eps)
    (got,), state = run(opt, (w,), [(g,) for g in grads])
    m = v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        w, m, v = classic_adam(w, g, m, v, t, lr, beta1, beta2, eps)
    np.testing.assert_array_equal(got, w)
    np.testing.assert_array_equal(state.m[0], m)
    np.testing.assert_array_equal(state.v[0], v)
    assert state.t == steps


# --- trees, dtypes, purity ---------------------------------------------------------------

@attrs.frozen
class Block:
    w: np.ndarray
    rest: list


OPTIMIZERS = [fnn.SGDMomentum(learning_rate=0.1, momentum=0.9), fnn.Adam(learning_rate=0.01)]
OPT_IDS = ["sgd", "adam"]


def a_tree(dtype: Any = np.float64) -> tuple:
    """A params-like tree of tuples, lists and attrs records (and an empty entry)."""
    r = fnn.generator(3)
    a = lambda *shape: r.standard_normal(shape).astype(dtype)  # noqa: E731
    return (LinearParams(W=a(2, 3), b=a(2)), (), [a(4), Block(w=a(1, 2), rest=[a(3)])])


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=OPT_IDS)
def test_update_over_trees_equals_update_of_each_leaf(opt):
    params, grads = a_tree(), tree.map(lambda p: -p, a_tree())
    new, state = run(opt, params, [grads, grads])
    tree.map(lambda u, v: u, params, new)  # the same structure (tuples, lists, records)
    assert isinstance(new[0], LinearParams) and isinstance(new[2], list)
    assert isinstance(new[2][1], Block)
    for p, g, got in zip(tree.leaves(params), tree.leaves(grads), tree.leaves(new)):
        (alone,), _ = run(opt, (p,), [(g,), (g,)])
        np.testing.assert_array_equal(got, alone)


@pytest.mark.parametrize("opt", OPTIMIZERS + [
    fnn.SGDMomentum(learning_rate=np.float64(0.1), momentum=np.float64(0.9)),
    fnn.Adam(*map(np.float64, (0.01, 0.9, 0.999, 1e-8)))],
    ids=OPT_IDS + ["sgd-numpy-scalars", "adam-numpy-scalars"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("grad_dtype", [np.float32, np.float64])
def test_update_keeps_param_dtype(opt, dtype, grad_dtype):
    params, grads = a_tree(dtype), a_tree(grad_dtype)
    new, state = run(opt, params, [grads, grads])
    arrays = [a for a in tree.leaves((new, state)) if isinstance(a, np.ndarray)]
    assert len(arrays) == len(tree.leaves(params)) * (2 if isinstance(opt, fnn.SGDMomentum) else 3)
    assert all(a.dtype == dtype for a in arrays)


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=OPT_IDS)
def test_update_is_pure(opt):
    params, grads = a_tree(), a_tree()
    state = opt.init(params)
    state1 = opt.update(params, grads, state)[1]
    originals = tree.map(np.copy, (params, grads, state1))
    frozen = read_only((params, grads, state1))
    out = opt.update(*frozen)
    again = opt.update(*frozen)
    for u, v in zip(tree.leaves((originals, out)), tree.leaves((frozen, again))):
        np.testing.assert_array_equal(u, v)
    inputs = tree.leaves(frozen)
    for a in tree.leaves(out):
        if isinstance(a, np.ndarray):
            assert not any(np.may_share_memory(a, b) for b in inputs if isinstance(b, np.ndarray))


def test_hyperparameters_are_inspectable_and_named_as_in_the_homework():
    assert attrs.asdict(fnn.SGDMomentum(learning_rate=0.1, momentum=0.9)) == {
        "learning_rate": 0.1, "momentum": 0.9}
    assert attrs.asdict(fnn.Adam()) == {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999,
                                        "epsilon": 1e-8}
