"""Optimizers: the generic tests over the one case table (tests/optim_cases.py: trees, dtypes,
purity, the checks of grads and state), steps by hand for every optimizer (Adam, SGDMomentum,
SGD, AdamW, RMSprop, Lion), the classic formulas to the bit, and where the torch forms meet the
classic ones."""

from __future__ import annotations

import attrs
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from cases import input_values
from hypothesis import given
from hypothesis import strategies as st
from optim_cases import ALL, LEAFWISE, Block, a_tree, inner, run

import fnn
from fnn import tree
from fnn.linear import LinearParams
from fnn.optim import decay_mask
from fnn.testing import read_only

# --- generic: every optimizer of the table ------------------------------------------------------


@pytest.mark.parametrize("name", LEAFWISE)
def test_update_over_trees_equals_update_of_each_leaf(name):
    opt = LEAFWISE[name]
    params, grads = a_tree(), tree.map(lambda p: -p, a_tree())
    new, state = run(opt, params, [grads, grads])
    tree.map(lambda u, v: u, params, new)  # the same structure (tuples, lists, records)
    assert isinstance(new[0], LinearParams) and isinstance(new[2], list)
    assert isinstance(new[2][1], Block)
    mask = tree.leaves(decay_mask(getattr(opt, "weight_decay_mask", None), params))
    for p, g, got, decayed in zip(tree.leaves(params), tree.leaves(grads), tree.leaves(new),
                                  mask):
        alone_opt = opt if decayed else attrs.evolve(opt, weight_decay=0.0)
        (alone,), _ = run(alone_opt, (p,), [(g,), (g,)])
        np.testing.assert_array_equal(got, alone)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("grad_dtype", [np.float32, np.float64])
def test_update_keeps_param_dtype(name, dtype, grad_dtype):
    opt = ALL[name]
    params, grads = a_tree(dtype), a_tree(grad_dtype, seed=4)
    new, state = run(opt, params, [grads, grads])
    arrays = [a for a in tree.leaves((new, state)) if isinstance(a, np.ndarray)]
    n_slots = len(inner(opt).slots())
    assert len(arrays) == len(tree.leaves(params)) * (1 + n_slots)
    assert all(a.dtype == dtype for a in arrays)
    if hasattr(state, "learning_rate"):
        assert type(state.learning_rate) is float
    assert getattr(state, "t", 2) == 2


@pytest.mark.parametrize("name", ALL)
def test_update_is_pure(name):
    opt = ALL[name]
    params, grads = a_tree(), a_tree(seed=5)
    state = opt.init(params)
    for _ in range(2):  # past the first step (SGD's buffer starts as a copy of g)
        state1 = opt.update(params, grads, state)[1]
        originals = tree.map(lambda a: a.copy() if isinstance(a, np.ndarray) else a,
                             (params, grads, state1))
        frozen = read_only((params, grads, state1))
        out = opt.update(*frozen)
        again = opt.update(*frozen)
        for u, v in zip(tree.leaves((originals, out)), tree.leaves((frozen, again))):
            np.testing.assert_array_equal(u, v)
        inputs = [b for b in tree.leaves(frozen) if isinstance(b, np.ndarray)]
        for a in tree.leaves(out):
            if isinstance(a, np.ndarray):
                assert not any(np.may_share_memory(a, b) for b in inputs)
        state = state1


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_donated_grads_give_the_same_bits_and_take_the_new_params(name, dtype):
    """update(..., donate=True): the same new params and state, to the bit, over two updates;
    the new params written into the gradient arrays (the caller's own without transformations,
    else maybe the transformed copies); params and state untouched."""
    opt = ALL[name]
    params = a_tree(dtype)
    grads = [a_tree(dtype, seed=5), a_tree(dtype, seed=6)]
    want, want_state = run(opt, params, grads)
    state = opt.init(params)
    new = params
    for g in grads:
        g = tree.map(np.copy, g)
        kept = tree.map(np.copy, (new, state))
        new_next, state_next = opt.update(new, g, state, donate=True)
        for u, v in zip(tree.leaves(kept), tree.leaves((new, state))):
            np.testing.assert_array_equal(u, v)  # the params and state given: untouched
        if not isinstance(opt, fnn.optim.Chain) and not opt.transforms():
            assert all(a is b for a, b in zip(tree.leaves(new_next), tree.leaves(g)))
        new, state = new_next, state_next
    for u, v in zip(tree.leaves((want, want_state)), tree.leaves((new, state))):
        np.testing.assert_array_equal(u, v, strict=True)


@pytest.mark.parametrize("name", ["sgd-momentum", "adam", "adamw", "lion"])
def test_only_safe_grads_are_donated(name):
    """Not donated: a read-only leaf, a view, a leaf twice in the tree, a leaf that is a param
    or shares memory with one; donate=False (the default) never writes into grads."""
    opt = ALL[name]
    rng = np.random.default_rng(0)
    params = [rng.standard_normal((3, 4)) for _ in range(4)]
    state = opt.init(params)
    twice = rng.standard_normal((3, 4))
    frozen = rng.standard_normal((3, 4))
    frozen.flags.writeable = False
    view = rng.standard_normal((3, 8))[:, :4]
    for grads in ([frozen, view, twice, twice], [params[1], params[1], params[2], params[3]]):
        copies = [g.copy() for g in grads]
        before = [p.copy() for p in params]
        new, _ = opt.update(params, grads, state, donate=True)
        for g, c in zip(grads, copies):
            np.testing.assert_array_equal(g, c)  # nothing written into any of them
        for p, b in zip(params, before):
            np.testing.assert_array_equal(p, b)
        want, _ = opt.update(params, copies, state)
        for u, v in zip(new, want):
            np.testing.assert_array_equal(u, v)
    grads = [rng.standard_normal((3, 4)) for _ in range(4)]
    copies = [g.copy() for g in grads]
    opt.update(params, grads, state)
    for g, c in zip(grads, copies):
        np.testing.assert_array_equal(g, c)


def test_train_step_donates_its_own_grads_only_to_fnn_optimizers():
    """train_step's new params live in the step's gradient arrays (no new param arrays); the
    caller's params are untouched; a duck-typed optimizer is called without ``donate``."""
    net = fnn.Sequential([fnn.Linear(4, 3), fnn.LogSoftMax()])
    params, state = net.init(0)
    x = np.random.default_rng(0).standard_normal((5, 4))
    t = np.eye(3)[[0, 1, 2, 0, 1]]
    kept = tree.map(np.copy, params)
    opt = fnn.SGDMomentum(0.1, 0.9)
    new, *_ = fnn.train.train_step(net, fnn.ClassNLLCriterion(), opt, params, state,
                                   opt.init(params), x, t)
    for u, v in zip(tree.leaves(kept), tree.leaves(params)):
        np.testing.assert_array_equal(u, v)
    _, grads, *_ = fnn.train.loss_and_gradients(net, fnn.ClassNLLCriterion(), params, state,
                                                x, t)
    want, _ = opt.update(params, grads, opt.init(params))
    for u, v in zip(tree.leaves(new), tree.leaves(want)):
        np.testing.assert_array_equal(u, v, strict=True)

    class Plain:  # update(params, grads, state) only
        def update(self, params, grads, state):
            return opt.update(params, grads, state)
    new2, *_ = fnn.train.train_step(net, fnn.ClassNLLCriterion(), Plain(), params, state,
                                    opt.init(params), x, t)
    for u, v in zip(tree.leaves(new), tree.leaves(new2)):
        np.testing.assert_array_equal(u, v, strict=True)


def _with_leaf(t, path, value):
    """``t`` with the leaf at ``path`` replaced by ``value``."""
    return tree.unflatten(t, [value if p == path else x for p, x in tree.items(t)])


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad", [(1, 3), (3, 1), (2,), ()], ids=str)
def test_a_grad_of_another_shape_is_refused_before_any_work(name, bad):
    """Where numpy would broadcast (a (1, 3) gradient for a (3,) param gives a (1, 3) param),
    every optimizer raises a ValueError naming itself, the leaf's path and both shapes."""
    opt, params = ALL[name], a_tree()
    state = opt.init(params)
    grads = _with_leaf(a_tree(seed=6), (2, 1, "rest", 0), np.ones(bad))
    with pytest.raises(ValueError) as info:
        opt.update(params, grads, state)
    msg = str(info.value)
    assert type(inner(opt)).__name__ in msg and "grads[2][1].rest[0]" in msg
    assert str(bad) in msg and "(3,)" in msg


@pytest.mark.parametrize("name", ALL)
def test_a_state_slot_of_another_shape_or_dtype_is_refused(name):
    opt, params = ALL[name], a_tree()
    state = opt.init(params)
    for slot in inner(opt).slots():
        bad = attrs.evolve(state, **{slot: _with_leaf(getattr(state, slot), (0, "W"),
                                                      np.zeros((3, 2)))})
        with pytest.raises(ValueError, match=rf"state\.{slot}\[0\]\.W has shape \(3, 2\), "
                                             rf"the param params\[0\]\.W has shape \(2, 3\)"):
            opt.update(params, params, bad)
        bad = attrs.evolve(state, **{slot: tree.cast(getattr(state, slot), np.float32)})
        with pytest.raises(TypeError, match="dtype float32, the param has dtype float64"):
            opt.update(params, params, bad)


@pytest.mark.parametrize("name", ALL)
def test_mismatched_structures_are_refused(name):
    opt, params = ALL[name], a_tree()
    state = opt.init(params)
    with pytest.raises(ValueError, match=r"grads\[2\] is a tuple of 2 where params\[2\] is a "
                                         r"list of 2"):
        opt.update(params, (params[0], params[1], tuple(params[2])), state)
    with pytest.raises(ValueError, match=r"grads\[0\] is an array of shape \(3,\) and dtype "
                                         r"float64 where params\[0\] is a LinearParams of 2"):
        opt.update(params, (np.zeros(3), *params[1:]), state)
    with pytest.raises(ValueError, match="grads is a tuple of 2 where params is a tuple of 3"):
        opt.update(params, params[:2], state)


@pytest.mark.parametrize("name", ALL)
def test_state_of_another_optimizer_is_a_type_error(name):
    opt, params = ALL[name], a_tree()
    other = fnn.SGDMomentum(0.1) if not isinstance(inner(opt), fnn.SGDMomentum) else fnn.Adam()
    with pytest.raises(TypeError, match=f"{type(inner(opt)).__name__}.update: state must be"):
        opt.update(params, params, other.init(params))
    with pytest.raises(TypeError, match="state must be"):
        opt.update(params, params, None)


def test_state_of_another_configuration_is_refused():
    params = a_tree()
    with pytest.raises(ValueError, match="state.momentum_buffer is None where params is a tuple"):
        fnn.SGD(0.1, momentum=0.9).update(params, params, fnn.SGD(0.1).init(params))
    state = attrs.evolve(fnn.Adam().init(params), t=-1)
    with pytest.raises(ValueError, match="state.t must be a non-negative integer"):
        fnn.Adam().update(params, params, state)


@pytest.mark.parametrize("leaf", [np.arange(3), np.ones(3, bool), np.ones(3, np.float16), 1.5,
                                  None])
def test_params_must_be_floating_arrays(leaf):
    params = (np.ones(2), leaf)
    with pytest.raises(TypeError, match=r"Adam.init: params\[1\] is"):
        fnn.Adam().init(params)
    state = fnn.Adam().init((np.ones(2), np.ones(3)))
    with pytest.raises((TypeError, ValueError), match=r"Adam.update: .*\[1\]"):
        fnn.Adam().update(params, (np.ones(2), np.ones(3)), state)


def test_the_issue_examples():
    with pytest.raises(ValueError, match=r"SGD.update: grads\[0\] has shape \(1, 3\)"):
        fnn.SGD(0.1).update((np.zeros(3),), (np.ones((1, 3)),), fnn.SGD(0.1).init(
            (np.zeros(3),)))
    state = fnn.Adam().init((np.zeros(2),))
    state = attrs.evolve(state, m=(np.zeros((3, 2)),), v=(np.zeros((3, 2)),))
    with pytest.raises(ValueError, match=r"Adam.update: state.m\[0\] has shape \(3, 2\)"):
        fnn.Adam().update((np.zeros(2),), (np.ones(2),), state)


# --- steps by hand ------------------------------------------------------------------------------

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


def test_sgd_steps_by_hand():
    w, g1, g2 = np.array([1.0, -2.0]), np.array([1.0, 2.0]), np.array([-1.0, 0.5])
    # plain with weight decay: g + wd*w
    (got,), _ = run(fnn.SGD(0.1, weight_decay=0.5), (w,), [(g1,)])
    np.testing.assert_allclose(got, w - 0.1 * (g1 + 0.5 * w), rtol=1e-15)
    # momentum: b1 = g1 (no dampening at the first step), b2 = 0.9 b1 + 0.75 g2
    (got,), state = run(fnn.SGD(0.1, momentum=0.9, dampening=0.25), (w,), [(g1,), (g2,)])
    b2 = 0.9 * g1 + 0.75 * g2
    np.testing.assert_allclose(state.momentum_buffer[0], b2, rtol=1e-15)
    np.testing.assert_allclose(got, w - 0.1 * g1 - 0.1 * b2, rtol=1e-15)
    # nesterov: step with g + momentum*b
    (got,), _ = run(fnn.SGD(0.1, momentum=0.9, nesterov=True), (w,), [(g1,), (g2,)])
    b2 = 0.9 * g1 + g2
    np.testing.assert_allclose(got, w - 0.1 * (g1 + 0.9 * g1) - 0.1 * (g2 + 0.9 * b2),
                               rtol=1e-15)


def test_adamw_first_step_by_hand():
    """At t = 1 the bias-corrected m/sqrt(v) is g/|g|: the step is lr·sign(g) (up to
    epsilon), after w shrank by (1 - lr·wd)."""
    w, g = np.array([1.0, -2.0, 3.0]), np.array([0.5, -4.0, 0.0])
    with np.errstate(invalid="ignore"):
        (got,), state = run(fnn.AdamW(0.01, weight_decay=0.1, epsilon=0.0), (w,), [(g,)])
    shrunk = w * (1 - 0.01 * 0.1)
    np.testing.assert_allclose(got[:2], shrunk[:2] - 0.01 * np.sign(g[:2]), rtol=1e-15)
    assert np.isnan(got[2])  # 0/0 with epsilon = 0, as torch
    np.testing.assert_allclose(state.m[0], 0.1 * g, rtol=1e-15)
    np.testing.assert_allclose(state.v[0], 0.001 * g * g, rtol=1e-15)


def test_rmsprop_steps_by_hand():
    w, g = np.array([1.0, -2.0]), np.array([0.5, -4.0])
    (got,), state = run(fnn.RMSprop(0.01, alpha=0.9, epsilon=0.0), (w,), [(g,)])
    np.testing.assert_allclose(state.square_avg[0], 0.1 * g * g, rtol=1e-15)
    np.testing.assert_allclose(got, w - 0.01 * g / np.sqrt(0.1 * g * g), rtol=1e-15)
    (got,), state = run(fnn.RMSprop(0.01, alpha=0.9, epsilon=0.0, centered=True), (w,), [(g,)])
    np.testing.assert_allclose(state.grad_avg[0], 0.1 * g, rtol=1e-15)
    np.testing.assert_allclose(got, w - 0.01 * g / np.sqrt(0.1 * g * g - 0.01 * g * g),
                               rtol=1e-14)
    assert state.momentum_buffer is None


def test_lion_two_steps_by_hand():
    """lr 0.1, weight decay 0.5 (w shrinks by 1 - 0.05 each step), betas (0.9, 0.99):
    step 1, m = 0: sign(0.1·g1) = (1, -1, 0); w1 = 0.95·w - 0.1·(1, -1, 0) = (0.85, -1.8, 2.85);
    m1 = 0.01·g1 = (0.005, -0.04, 0).
    step 2: 0.9·m1 + 0.1·g2 = (-0.0955, 0.064, 0.2), sign (-1, 1, 1);
    w2 = 0.95·w1 - 0.1·(-1, 1, 1) = (0.9075, -1.81, 2.6075);
    m2 = 0.99·m1 + 0.01·g2 = (-0.00505, -0.0296, 0.02)."""
    w = np.array([1.0, -2.0, 3.0])
    g1, g2 = np.array([0.5, -4.0, 0.0]), np.array([-1.0, 1.0, 2.0])
    opt = fnn.Lion(0.1, weight_decay=0.5)
    (w1,), state = run(opt, (w,), [(g1,)])
    np.testing.assert_allclose(w1, [0.85, -1.8, 2.85], rtol=1e-15)
    np.testing.assert_allclose(state.m[0], [0.005, -0.04, 0.0], rtol=1e-15)
    (w2,), state = opt.update((w1,), (g2,), state)
    np.testing.assert_allclose(w2, [0.9075, -1.81, 2.6075], rtol=1e-15)
    np.testing.assert_allclose(state.m[0], [-0.00505, -0.0296, 0.02], rtol=1e-14)
    assert state.t == 2 and state.learning_rate == 0.1
    assert fnn.Lion() == fnn.Lion(1e-4, beta1=0.9, beta2=0.99, weight_decay=0.0)


# --- the classic formulas, to the bit -----------------------------------------------------------

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


# --- where the torch forms meet the classic ones ------------------------------------------------

@given(lr=st.floats(1e-3, 0.5), momentum=st.floats(0.0, 0.95))
def test_sgd_equals_classic_sgd_momentum_for_a_constant_rate(lr, momentum):
    params, grads = a_tree(), [a_tree(seed=s) for s in range(5)]
    ours, _ = run(fnn.SGD(lr, momentum=momentum), params, grads)
    classic, _ = run(fnn.SGDMomentum(lr, momentum=momentum), params, grads)
    for a, b in zip(tree.leaves(ours), tree.leaves(classic)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_adamw_without_decay_or_epsilon_equals_classic_adam():
    """The two forms differ only in where epsilon goes (see docs/layers.md)."""
    params, grads = a_tree(), [a_tree(seed=s) for s in range(5)]
    ours, state = run(fnn.AdamW(0.01, weight_decay=0.0, epsilon=0.0), params, grads)
    classic, classic_state = run(fnn.Adam(0.01, epsilon=0.0), params, grads)
    for a, b in zip(tree.leaves((ours, state.m, state.v)),
                    tree.leaves((classic, classic_state.m, classic_state.v))):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
