"""What the optimizers share beyond their rules: state records, the learning rate (floats and
schedules, checked at update), weight-decay masks, clipping, the transformations and chain,
hyperparameter checks, save/load. The generic tests of every optimizer are in test_optim.py."""

from __future__ import annotations

import math

import attrs
import numpy as np
import pytest
from optim_cases import Block, a_tree, run

import fnn
from fnn import schedules, tree
from fnn.linear import LinearParams
from fnn.optim import decay_mask, rank_at_least_2
from fnn.transforms import AddDecayedWeights, ClipByGlobalNorm, DecoupledWeightDecay


def test_state_records():
    params = a_tree()
    assert fnn.SGD(0.1).init(params) == fnn.optim.SGDBufferState(t=0, learning_rate=0.1)
    state = fnn.RMSprop(momentum=0.5).init(params)
    assert state.grad_avg is None and state.momentum_buffer is not None
    assert isinstance(fnn.AdamW().init(params), fnn.optim.AdamWState)
    state = fnn.Lion().init(params)
    assert isinstance(state, fnn.optim.LionState) and (state.t, state.learning_rate) == (0, 1e-4)
    assert all(not m.any() for m in tree.leaves(state.m))


@pytest.mark.parametrize("rate", [-0.1, np.nan, np.inf, "0.1", None, True])
def test_a_schedule_giving_a_bad_rate_raises(rate):
    """At init for step 0; at update for a later step (the state keeps the next rate)."""
    params = a_tree()
    with pytest.raises(ValueError, match=r"AdamW: the learning-rate schedule .* gave .* at "
                                         r"step 0"):
        fnn.AdamW(lambda step: rate).init(params)
    opt = fnn.SGD(lambda step: 0.1 if step < 2 else rate, momentum=0.9)
    params, state = run(opt, params, [params])
    with pytest.raises(ValueError, match="at step 2; a rate must be a finite number >= 0"):
        opt.update(params, params, state)
    with pytest.raises(ValueError, match="at step 2"):
        fnn.optim.chain(ClipByGlobalNorm(1.0), opt).update(
            params, params, attrs.evolve(state, t=2))


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
    assert tree.paths(a_tree()) == [(0, "W"), (0, "b"), (2, 0), (2, 1, "w"), (2, 1, "rest", 0)]


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


@pytest.mark.parametrize("make, where", [
    (lambda: fnn.SGD(0.1, nesterov=1), "SGD: nesterov"),
    (lambda: fnn.SGD(0.1, momentum="0.9"), "SGD: momentum"),
    (lambda: fnn.RMSprop(centered="yes"), "RMSprop: centered"),
    (lambda: fnn.RMSprop("fast"), "RMSprop: learning_rate"),
    (lambda: fnn.AdamW(max_grad_norm=-1.0), "AdamW: max_grad_norm"),
    (lambda: fnn.Adam(beta2=np.nan), "Adam: beta2"),
    (lambda: fnn.SGDMomentum(0.1, momentum=1.0), "SGDMomentum: momentum"),
    (lambda: fnn.Lion(beta1=1.0), "Lion: beta1"),
    (lambda: fnn.Lion(weight_decay=-0.1), "Lion: weight_decay"),
    (lambda: fnn.Lion(max_grad_norm=0.0), "Lion: max_grad_norm"),
    (lambda: ClipByGlobalNorm(0.0), "ClipByGlobalNorm: max_norm"),
    (lambda: ClipByGlobalNorm(True), "ClipByGlobalNorm: max_norm"),
    (lambda: AddDecayedWeights(-1.0), "AddDecayedWeights: weight_decay"),
    (lambda: DecoupledWeightDecay(np.inf), "DecoupledWeightDecay: weight_decay"),
])
def test_every_hyperparameter_error_is_a_value_error_naming_class_and_field(make, where):
    with pytest.raises(ValueError, match=where):
        make()


def test_hyperparameters_are_inspectable_and_named_as_in_the_homework():
    assert attrs.asdict(fnn.SGDMomentum(learning_rate=0.1, momentum=0.9)) == {
        "learning_rate": 0.1, "momentum": 0.9}
    assert attrs.asdict(fnn.Adam()) == {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999,
                                        "epsilon": 1e-8}


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


# --- transformations and chain ------------------------------------------------------------------

def assert_same_run(a, b, steps=3):
    params, grads = a_tree(), [a_tree(seed=s) for s in range(20, 20 + steps)]
    (pa, sa), (pb, sb) = run(a, params, grads), run(b, params, grads)
    for x, y in zip(tree.leaves((pa, sa)), tree.leaves((pb, sb)), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("shorthand, chained", [
    (fnn.SGD(0.1, momentum=0.9, max_grad_norm=0.5),
     fnn.optim.chain(ClipByGlobalNorm(0.5), fnn.SGD(0.1, momentum=0.9))),
    (fnn.RMSprop(weight_decay=0.1, weight_decay_mask=rank_at_least_2, max_grad_norm=0.3),
     fnn.optim.chain(ClipByGlobalNorm(0.3), AddDecayedWeights(0.1, rank_at_least_2),
                     fnn.RMSprop())),
    (fnn.AdamW(0.01, weight_decay=0.3),
     fnn.optim.chain(DecoupledWeightDecay(0.3), fnn.AdamW(0.01, weight_decay=0.0))),
    (fnn.Lion(0.01, weight_decay=0.3, weight_decay_mask=rank_at_least_2),
     fnn.optim.chain(DecoupledWeightDecay(0.3, rank_at_least_2), fnn.Lion(0.01))),
], ids=["sgd-clip", "rmsprop-clip-l2", "adamw-decoupled", "lion-decoupled"])
def test_shorthands_are_the_transformations(shorthand, chained):
    assert_same_run(shorthand, chained)
    assert shorthand.transforms() == chained.transforms + chained.optimizer.transforms()


def test_transforms_by_hand_and_in_order():
    w, g = np.array([3.0, -4.0]), np.array([6.0, 8.0])  # |g| = 10
    (got,), _ = run(fnn.optim.chain(ClipByGlobalNorm(1.0), AddDecayedWeights(0.5),
                                    fnn.SGD(0.1)), (w,), [(g,)])
    np.testing.assert_allclose(got, w - 0.1 * (g * (1.0 / (10 + 1e-6)) + 0.5 * w), rtol=1e-15)
    # decay first: the clipped norm is that of g + 0.5 w = (7.5, 6)
    (got,), _ = run(fnn.optim.chain(AddDecayedWeights(0.5), ClipByGlobalNorm(1.0),
                                    fnn.SGD(0.1)), (w,), [(g,)])
    d = g + 0.5 * w
    np.testing.assert_allclose(got, w - 0.1 * d / (np.hypot(*d) + 1e-6), rtol=1e-15)
    # on a classic optimizer too: clipped Adam is Adam of the clipped gradient
    clipped = fnn.optim.chain(ClipByGlobalNorm(1.0), fnn.Adam(0.01))
    (a,), sa = run(clipped, (w,), [(g,)])
    (b,), sb = run(fnn.Adam(0.01), (w,), [(g * (1.0 / (10 + 1e-6)),)])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa.m[0], sb.m[0])


def test_the_shorthands_as_transformations():
    assert fnn.SGD(0.1, weight_decay=0.1, max_grad_norm=1.0).transforms() == (
        ClipByGlobalNorm(1.0), AddDecayedWeights(0.1, None))
    assert fnn.AdamW().transforms() == (DecoupledWeightDecay(0.01, None),)
    assert fnn.Adam().transforms() == fnn.Lion().transforms() == ()


def test_chain_checks_before_transforming():
    opt = fnn.optim.chain(ClipByGlobalNorm(1.0), fnn.SGD(0.1))
    params = (np.zeros(3),)
    with pytest.raises(ValueError, match=r"SGD.update: grads\[0\] has shape \(1, 3\)"):
        opt.update(params, (np.ones((1, 3)),), opt.init(params))
    with pytest.raises(TypeError, match="state must be the SGDBufferState"):
        opt.update(params, params, fnn.Adam().init(params))


@pytest.mark.parametrize("parts", [(), (fnn.SGD(0.1), ClipByGlobalNorm(1.0)),
                                   (ClipByGlobalNorm(1.0), "clip", fnn.SGD(0.1)),
                                   (fnn.Adam(), fnn.SGD(0.1))])
def test_bad_chains_are_refused(parts):
    with pytest.raises(ValueError, match="Chain: "):
        fnn.optim.chain(*parts)
    if parts:
        with pytest.raises(ValueError, match="Chain: "):
            fnn.optim.Chain(parts[:-1], parts[-1])


@pytest.mark.parametrize("mask, error, match", [
    ((np.array([1, 0]),), TypeError, r"flag for params\[0\] must be True or False"),
    ((1,), TypeError, r"flag for params\[0\] must be True or False, got 1"),
    ([True], ValueError, r"at mask it has a list of 1 where params has a tuple of 1"),
    (lambda path, leaf: "yes", TypeError, r"flag for params\[0\] must be True or False"),
])
def test_bad_masks_are_named(mask, error, match):
    params = (np.ones(2),)
    opt = fnn.AdamW(weight_decay_mask=mask)
    with pytest.raises(error, match=match):
        opt.update(params, params, opt.init(params))


@pytest.mark.parametrize("make", [lambda: fnn.AdamW(weight_decay_mask="W"),
                                  lambda: fnn.SGD(0.1, weight_decay_mask=1.0),
                                  lambda: AddDecayedWeights(0.1, mask=True)])
def test_a_mask_that_is_no_mask_is_refused_at_construction(make):
    with pytest.raises(ValueError, match="must be None, a predicate"):
        make()


def test_growing_schedules_overflow_to_inf_and_the_optimizer_refuses_it():
    assert schedules.ExponentialDecay(0.1, gamma=2.0)(2000) == math.inf
    assert schedules.StepDecay(0.1, step_size=1, gamma=10.0)(400) == math.inf
    assert schedules.ExponentialDecay(0.0, gamma=2.0)(2000) == 0.0
    opt, params = fnn.SGD(schedules.ExponentialDecay(0.1, gamma=2.0)), (np.ones(2),)
    state = attrs.evolve(opt.init(params), t=1999)
    with pytest.raises(ValueError, match="gave inf at step 1999"):
        opt.update(params, params, state)


def test_clip_refuses_non_real_gradients():
    with pytest.raises(TypeError, match=r"clip_by_global_norm: grads\[1\] has dtype complex"):
        fnn.clip_by_global_norm([np.ones(2), np.ones(2, complex)], 1.0)


def test_chain_and_lion_round_trip_through_save_and_load(tmp_path):
    opt = fnn.optim.chain(ClipByGlobalNorm(1.0), DecoupledWeightDecay(0.1, (True, False)),
                          fnn.Lion(0.01))
    params = (np.ones((2, 2)), np.zeros(2))
    params, state = run(opt, params, [tree.map(np.ones_like, params)] * 2)
    fnn.save(tmp_path / "m.npz", params, opt_state=state, optimizer=opt)
    loaded = fnn.load(tmp_path / "m.npz")
    assert loaded.optimizer == opt and loaded.opt_state.t == 2
    new, _ = opt.update(params, params, state)
    again, _ = loaded.optimizer.update(loaded.params, loaded.params, loaded.opt_state)
    for a, b in zip(tree.leaves(new), tree.leaves(again)):
        np.testing.assert_array_equal(a, b)
