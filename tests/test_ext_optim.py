"""SGD, AdamW, RMSprop, clip_by_global_norm, weight-decay masks and the learning-rate schedules:
steps by hand, trees, dtypes, purity, the learning rate in the state, masks, agreement with the
classic SGDMomentum and Adam where the formulas meet, save/load, errors."""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fnn
from fnn import schedules, tree
from fnn.linear import LinearParams
from fnn.optim import decay_mask, rank_at_least_2
from fnn.tree import paths as leaf_paths
from fnn.testing import read_only


def run(opt: Any, params: Any, grads: list) -> tuple[Any, Any]:
    state = opt.init(params)
    for g in grads:
        params, state = opt.update(params, g, state)
    return params, state


@attrs.frozen
class Block:
    w: np.ndarray
    rest: list


def a_tree(dtype: Any = np.float64, seed: int = 3) -> tuple:
    """A params-like tree of tuples, lists and attrs records (and an empty entry)."""
    r = fnn.generator(seed)
    a = lambda *shape: r.standard_normal(shape).astype(dtype)  # noqa: E731
    return (LinearParams(W=a(2, 3), b=a(2)), (), [a(4), Block(w=a(1, 2), rest=[a(3)])])


OPTIMIZERS = {
    "sgd": fnn.SGD(0.1),
    "sgd-nesterov-decay": fnn.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
    "sgd-dampening": fnn.SGD(0.1, momentum=0.5, dampening=0.5),
    "adamw": fnn.AdamW(0.01),
    "adamw-masked": fnn.AdamW(0.01, weight_decay=0.5, weight_decay_mask=rank_at_least_2),
    "rmsprop": fnn.RMSprop(),
    "rmsprop-all": fnn.RMSprop(momentum=0.9, centered=True, weight_decay=0.1),
    "scheduled": fnn.AdamW(schedules.WarmupCosineDecay(0.1, total_steps=5, warmup_steps=2)),
}
CLIPPED = {f"{k}-clipped": attrs.evolve(o, max_grad_norm=0.5) for k, o in OPTIMIZERS.items()}
ALL = {**OPTIMIZERS, **CLIPPED}


# --- steps by hand ----------------------------------------------------------------------------

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


# --- where the torch forms meet the classic ones -----------------------------------------------

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


# --- trees, dtypes, purity ----------------------------------------------------------------------

@pytest.mark.parametrize("name", OPTIMIZERS)
def test_update_over_trees_equals_update_of_each_leaf(name):
    opt = OPTIMIZERS[name]
    params, grads = a_tree(), tree.map(lambda p: -p, a_tree())
    new, state = run(opt, params, [grads, grads])
    tree.map(lambda u, v: u, params, new)  # the same structure
    assert isinstance(new[0], LinearParams) and isinstance(new[2][1], Block)
    mask = tree.leaves(decay_mask(opt.weight_decay_mask, params))
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
    assert arrays and all(a.dtype == dtype for a in arrays)
    assert type(state.learning_rate) is float and state.t == 2


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


def test_state_records():
    params = a_tree()
    assert fnn.SGD(0.1).init(params) == fnn.optim.SGDBufferState(t=0, learning_rate=0.1)
    state = fnn.RMSprop(momentum=0.5).init(params)
    assert state.grad_avg is None and state.momentum_buffer is not None
    assert isinstance(fnn.AdamW().init(params), fnn.optim.AdamWState)


# --- the learning rate: floats and schedules --------------------------------------------------

def test_learning_rate_in_the_state_follows_the_schedule():
    sched = schedules.StepDecay(0.1, step_size=2, gamma=0.5)
    opt = fnn.SGD(sched, momentum=0.9)
    params, state = a_tree(), None
    state = opt.init(params)
    seen = [state.learning_rate]
    for _ in range(5):
        params, state = opt.update(params, a_tree(seed=6), state)
        seen.append(state.learning_rate)
    assert seen == [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    assert [opt.learning_rate_at(k) for k in range(6)] == seen


def test_scheduled_step_uses_the_rate_of_its_step():
    """Update k (counting from 0) uses schedule(k): a schedule that is 0 after step 0 moves the
    params once, and a plain callable works as a schedule."""
    params, grads = a_tree(), a_tree(seed=7)
    opt = fnn.SGD(lambda step: 0.1 if step == 0 else 0.0)
    one, state = run(opt, params, [grads])
    three, state3 = run(opt, params, [grads] * 3)
    for a, b in zip(tree.leaves(one), tree.leaves(three)):
        np.testing.assert_array_equal(a, b)
    assert state.learning_rate == 0.0 and state3.t == 3


def test_schedule_values():
    assert schedules.Constant(0.3)(0) == schedules.Constant(0.3)(10**6) == 0.3
    step = schedules.StepDecay(1.0, step_size=3, gamma=0.1)
    assert [step(k) for k in range(7)] == [1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1 ** 2]
    assert schedules.ExponentialDecay(2.0, gamma=0.5)(3) == 0.25
    cos = schedules.WarmupCosineDecay(1.0, total_steps=10, warmup_steps=2, init_value=0.2,
                                      end_value=0.1)
    assert cos(0) == 0.2 and cos(1) == pytest.approx(0.6) and cos(2) == 1.0
    assert cos(6) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 2)) / 2)
    assert cos(10) == cos(11) == pytest.approx(0.1)
    decay = [cos(k) for k in range(2, 11)]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert schedules.WarmupCosineDecay(1.0, total_steps=4)(0) == 1.0


@pytest.mark.parametrize("make", [
    lambda: schedules.Constant(-1.0),
    lambda: schedules.StepDecay(0.1, step_size=0),
    lambda: schedules.StepDecay(0.1, step_size=1.5),
    lambda: schedules.ExponentialDecay(0.1, gamma=np.nan),
    lambda: schedules.WarmupCosineDecay(0.1, total_steps=5, warmup_steps=5),
    lambda: schedules.WarmupCosineDecay(0.1, total_steps=5, warmup_steps=-1),
    lambda: schedules.WarmupCosineDecay(0.1, total_steps=0),
])
def test_bad_schedules_raise(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("step", [-1, 1.5, True])
def test_schedules_check_the_step(step):
    with pytest.raises(ValueError, match="step must be") as info:
        schedules.ExponentialDecay(0.1, gamma=0.9)(step)
    assert "ExponentialDecay" in str(info.value)


# --- weight-decay masks -----------------------------------------------------------------------

def test_leaf_paths():
    assert leaf_paths(a_tree()) == [(0, "W"), (0, "b"), (2, 0), (2, 1, "w"), (2, 1, "rest", 0)]


@pytest.mark.parametrize("opt", [fnn.SGD(0.1, momentum=0.9, weight_decay=0.3),
                                 fnn.AdamW(0.01, weight_decay=0.3),
                                 fnn.RMSprop(weight_decay=0.3, centered=True)],
                         ids=["sgd", "adamw", "rmsprop"])
@pytest.mark.parametrize("mask", [
    rank_at_least_2,
    lambda path, leaf: path[-1] == "W",
    (LinearParams(W=True, b=False), (), [False, Block(w=True, rest=[False])]),
], ids=["rank", "predicate-on-path", "tree"])
def test_masked_leaves_are_not_decayed(opt, mask):
    params, grads = a_tree(), [a_tree(seed=s) for s in (8, 9)]
    masked, _ = run(attrs.evolve(opt, weight_decay_mask=mask), params, grads)
    decayed, _ = run(opt, params, grads)
    plain, _ = run(attrs.evolve(opt, weight_decay=0.0), params, grads)
    flags = tree.leaves(decay_mask(mask, params))
    assert flags == [True, False, False, True, False] or flags == [True, False, False, False,
                                                                   False]
    for got, d, p, flag in zip(tree.leaves(masked), tree.leaves(decayed), tree.leaves(plain),
                               flags):
        np.testing.assert_array_equal(got, d if flag else p)
        assert not np.array_equal(d, p)


def test_mask_tree_of_another_structure_is_rejected():
    with pytest.raises(ValueError, match="weight_decay_mask"):
        fnn.AdamW(weight_decay_mask=(True, False)).update(a_tree(), a_tree(), fnn.AdamW().init(
            a_tree()))


# --- clipping ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_by_global_norm(dtype):
    grads = (np.array([3.0], dtype), [np.array([[4.0]], dtype)], ())
    clipped, norm = fnn.clip_by_global_norm(grads, 1.0)
    assert norm == 5.0 and type(norm) is float
    for got, want in zip(tree.leaves(clipped), [[0.6], [[0.8]]], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert all(a.dtype == dtype for a in tree.leaves(clipped))
    same, _ = fnn.clip_by_global_norm(grads, 10.0)
    for a, b in zip(tree.leaves(same), tree.leaves(grads)):
        np.testing.assert_array_equal(a, b)
        assert not np.may_share_memory(a, b)
    assert tree.leaves(fnn.clip_by_global_norm(((), []), 1.0)[0]) == []


def test_clip_by_global_norm_propagates_non_finite_as_torch():
    with np.errstate(invalid="ignore"):
        clipped, norm = fnn.clip_by_global_norm([np.array([np.inf, 1.0])], 1.0)
    assert math.isinf(norm)
    np.testing.assert_array_equal(clipped[0], [np.nan, 0.0])  # times 1/inf = 0
    with np.errstate(invalid="ignore"):
        clipped, norm = fnn.clip_by_global_norm([np.array([np.nan, 1.0])], 1.0)
    assert math.isnan(norm) and np.all(np.isnan(clipped[0]))


@pytest.mark.parametrize("max_norm", [0.0, -1.0, np.inf, np.nan, "1", True])
def test_clip_by_global_norm_rejects_bad_max_norm(max_norm):
    with pytest.raises(ValueError, match="max_norm"):
        fnn.clip_by_global_norm([np.ones(2)], max_norm)


def test_max_grad_norm_option_clips_before_the_step():
    params, grads = a_tree(), a_tree(seed=10)
    opt = fnn.SGD(0.1, momentum=0.9)
    with_option, _ = run(attrs.evolve(opt, max_grad_norm=0.5), params, [grads])
    by_hand, _ = run(opt, params, [fnn.clip_by_global_norm(grads, 0.5)[0]])
    for a, b in zip(tree.leaves(with_option), tree.leaves(by_hand)):
        np.testing.assert_array_equal(a, b)


# --- specs: validation, save/load -------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: fnn.SGD(-0.1),
    lambda: fnn.SGD(0.1, nesterov=True),
    lambda: fnn.SGD(0.1, momentum=0.9, dampening=0.1, nesterov=True),
    lambda: fnn.SGD(0.1, nesterov=1),
    lambda: fnn.SGD(0.1, weight_decay=-1.0),
    lambda: fnn.AdamW(beta1=1.0),
    lambda: fnn.AdamW(epsilon=np.nan),
    lambda: fnn.AdamW(max_grad_norm=0.0),
    lambda: fnn.RMSprop(alpha=1.5),
    lambda: fnn.RMSprop(momentum=-0.5),
    lambda: fnn.RMSprop(centered="yes"),
    lambda: fnn.RMSprop("fast"),
])
def test_bad_hyperparameters_raise_at_construction(make):
    with pytest.raises((ValueError, TypeError)):
        make()


def test_hyperparameters_are_inspectable():
    assert attrs.asdict(fnn.AdamW()) == {
        "learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8,
        "weight_decay": 1e-2, "weight_decay_mask": None, "max_grad_norm": None}
    assert fnn.SGD(np.float64(0.5)).learning_rate == 0.5
    assert type(fnn.SGD(np.float64(0.5)).learning_rate) is float


def test_spec_and_state_round_trip_through_save_and_load(tmp_path):
    opt = fnn.AdamW(schedules.WarmupCosineDecay(0.1, total_steps=5, warmup_steps=2),
                    weight_decay_mask=(LinearParams(W=True, b=False), ()), max_grad_norm=1.0)
    params = (LinearParams(W=np.ones((2, 2)), b=np.zeros(2)), ())
    params, state = run(opt, params, [tree.map(np.ones_like, params)] * 3)
    fnn.save(tmp_path / "m.npz", params, opt_state=state, optimizer=opt)
    loaded = fnn.load(tmp_path / "m.npz")
    assert loaded.optimizer == opt
    assert loaded.opt_state.t == 3 and loaded.opt_state.learning_rate == state.learning_rate
    new, _ = opt.update(params, params, state)
    again, _ = loaded.optimizer.update(loaded.params, loaded.params, loaded.opt_state)
    for a, b in zip(tree.leaves(new), tree.leaves(again)):
        np.testing.assert_array_equal(a, b)
