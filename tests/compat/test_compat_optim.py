"""compat.sgd_momentum and compat.adam_optimizer: the classic call, state layout and in-place
updates; the known two-step Adam values; SGD by hand; missing config keys; everything (nesting,
shapes, dtypes, state entries, config values) checked before any variable or state entry
changes."""

from __future__ import annotations

import numpy as np
import pytest

from compat import adam_optimizer, sgd_momentum

ADAM = {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}


def layers():
    """Variables and gradients as nested lists: two layers with parameters, one without."""
    rng = np.random.default_rng(0)
    variables = [[rng.standard_normal((3, 2)), rng.standard_normal(3)], [],
                 [rng.standard_normal(4)]]
    gradients = [[rng.standard_normal(w.shape) for w in layer] for layer in variables]
    return variables, gradients


def test_sgd_state_is_keyed_by_flat_index_and_updated_in_place():
    variables, gradients = layers()
    arrays = [w for layer in variables for w in layer]
    state: dict = {}
    sgd_momentum(variables, gradients, {"learning_rate": 0.1, "momentum": 0.9}, state)
    acc = state["accumulated_grads"]
    assert sorted(acc) == [0, 1, 2]
    flat_grads = [g for layer in gradients for g in layer]
    assert [a.shape for a in acc.values()] == [g.shape for g in flat_grads]
    kept = dict(acc)
    sgd_momentum(variables, gradients, {"learning_rate": 0.1, "momentum": 0.9}, state)
    assert all(state["accumulated_grads"][i] is kept[i] for i in kept)
    assert all(w is a for w, a in zip((w for layer in variables for w in layer), arrays))
    np.testing.assert_allclose(acc[2], 0.9 * 0.1 * flat_grads[2] + 0.1 * flat_grads[2])


def test_sgd_momentum_three_steps_by_hand():
    w = np.array([1.0, -2.0])
    gs = [np.array([1.0, 2.0]), np.array([-1.0, 0.5]), np.array([0.0, 4.0])]
    v1 = np.array([0.1, 0.2])
    v2 = np.array([0.09 - 0.1, 0.18 + 0.05])
    v3 = np.array([0.9 * -0.01, 0.9 * 0.23 + 0.4])
    w0, state = w.copy(), {}
    for g in gs:
        sgd_momentum([[w]], [[g]], {"learning_rate": 0.1, "momentum": 0.9}, state)
    np.testing.assert_allclose(state["accumulated_grads"][0], v3, rtol=1e-14)
    np.testing.assert_allclose(w, w0 - v1 - v2 - v3, rtol=1e-14)


def test_adam_two_steps_known_values():
    w, g = np.arange(10.0), np.arange(10.0)
    w0, state = w.copy(), {}
    adam_optimizer([[w]], [[g]], ADAM, state)
    m, v = state["m"][0], state["v"][0]
    assert state["t"] == 1
    np.testing.assert_allclose(m, 0.1 * g, rtol=1e-15)
    np.testing.assert_allclose(v, 0.001 * g**2, rtol=1e-12)
    np.testing.assert_allclose(w0 - w, np.r_[0.0, np.full(9, 0.001)], rtol=0, atol=1e-9)
    adam_optimizer([[w]], [[g]], ADAM, state)
    assert state["t"] == 2 and state["m"][0] is m and state["v"][0] is v
    np.testing.assert_allclose(m, 0.19 * g, rtol=1e-15)
    np.testing.assert_allclose(v, 0.001999 * g**2, rtol=1e-12)
    np.testing.assert_allclose(w0 - w, np.r_[0.0, np.full(9, 0.002)], rtol=0, atol=2e-9)


def test_adam_matches_the_classic_code_bitwise():
    variables, gradients = layers()
    classic_vars = [[w.copy() for w in layer] for layer in variables]
    state, classic_state = {}, {"m": {}, "v": {}, "t": 0}
    for _ in range(3):
        adam_optimizer(variables, gradients, ADAM, state)
        # the classic adam_optimizer, operation for operation
        classic_state["t"] += 1
        t = classic_state["t"]
        lr_t = ADAM["learning_rate"] * np.sqrt(1 - ADAM["beta2"]**t) / (1 - ADAM["beta1"]**t)
        flat = [(w, g) for ws, gs in zip(classic_vars, gradients) for w, g in zip(ws, gs)]
        for i, (w, g) in enumerate(flat):
            m = classic_state["m"].setdefault(i, np.zeros_like(g))
            v = classic_state["v"].setdefault(i, np.zeros_like(g))
            np.add(ADAM["beta1"] * m, (1 - ADAM["beta1"]) * g, out=m)
            np.add(ADAM["beta2"] * v, (1 - ADAM["beta2"]) * g * g, out=v)
            w -= lr_t * m / (np.sqrt(v) + ADAM["epsilon"])
    for ours, theirs in zip(variables, classic_vars):
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a, b)
    assert sorted(state["m"]) == sorted(state["v"]) == [0, 1, 2]


def test_float32_variables_stay_float32_arrays():
    w = np.ones(3, np.float32)
    sgd_momentum([[w]], [[np.ones(3)]], {"learning_rate": 0.5, "momentum": 0.0}, {})
    assert w.dtype == np.float32
    np.testing.assert_array_equal(w, np.full(3, 0.5, np.float32))


@pytest.mark.parametrize("opt, config", [(sgd_momentum, {"learning_rate": 0.1}),
                                         (adam_optimizer, {"learning_rate": 0.1, "beta1": 0.9})])
def test_missing_config_keys_are_named(opt, config):
    variables, gradients = layers()
    before = [w.copy() for layer in variables for w in layer]
    with pytest.raises(KeyError, match="momentum|beta2"):
        opt(variables, gradients, config, {})
    for a, b in zip((w for layer in variables for w in layer), before):
        np.testing.assert_array_equal(a, b)


# --- everything checked before anything changes ------------------------------------------------

SGD_CONFIG = {"learning_rate": 0.1, "momentum": 0.9}


def snapshot(variables, state):
    return ([[w.copy() for w in layer] for layer in variables],
            {k: ({i: a.copy() for i, a in v.items()} if isinstance(v, dict) else v)
             for k, v in state.items()})


def assert_unchanged(variables, state, before):
    old_vars, old_state = before
    for layer, old in zip(variables, old_vars):
        for w, o in zip(layer, old):
            np.testing.assert_array_equal(w, o)
    assert sorted(state) == sorted(old_state)
    for k, v in state.items():
        if isinstance(v, dict):
            assert sorted(v) == sorted(old_state[k])
            for i, a in v.items():
                np.testing.assert_array_equal(a, old_state[k][i])
        else:
            assert v == old_state[k]


def test_a_variable_without_gradient_is_refused_not_skipped():
    """The issue's example: [[W1], [W2]] with [[g1]] used to update W1 and never W2."""
    w1, w2 = np.ones(3), np.ones(2)
    state: dict = {}
    with pytest.raises(ValueError, match="sgd_momentum: 2 groups of variables but 1 of "
                                         "gradients"):
        sgd_momentum([[w1], [w2]], [[np.ones(3)]], SGD_CONFIG, state)
    assert state == {} and np.all(w1 == 1) and np.all(w2 == 1)
    with pytest.raises(ValueError, match=r"variables\[0\] has 2 arrays but gradients\[0\] has 1"):
        sgd_momentum([[w1, w2]], [[np.ones(3)]], SGD_CONFIG, state)


@pytest.mark.parametrize("opt, config", [(sgd_momentum, SGD_CONFIG), (adam_optimizer, ADAM)],
                         ids=["sgd", "adam"])
@pytest.mark.parametrize("bad, error, match", [
    (np.ones((1, 4)), ValueError, r"gradients\[2\]\[0\] has shape \(1, 4\), the variable has "
                                  r"shape \(4,\)"),
    (np.ones(5), ValueError, r"gradients\[2\]\[0\] has shape \(5,\)"),
    ([1.0, 2.0, 3.0, 4.0], TypeError, r"gradients\[2\]\[0\] must be a floating-point array"),
    (np.ones(4, int), TypeError, r"gradients\[2\]\[0\] must be a floating-point array"),
], ids=["broadcastable", "other-shape", "list", "int"])
def test_a_bad_gradient_at_the_last_variable_changes_nothing(opt, config, bad, error, match):
    variables, gradients = layers()
    state: dict = {}
    opt(variables, gradients, config, state)  # a first good step: the state has entries
    before = snapshot(variables, state)
    gradients[2][0] = bad
    with pytest.raises(error, match=match):
        opt(variables, gradients, config, state)
    assert_unchanged(variables, state, before)


@pytest.mark.parametrize("opt, config", [(sgd_momentum, SGD_CONFIG), (adam_optimizer, ADAM)],
                         ids=["sgd", "adam"])
def test_bad_variables_and_state_entries_change_nothing(opt, config):
    variables, gradients = layers()
    state: dict = {}
    opt(variables, gradients, config, state)
    before = snapshot(variables, state)
    frozen = [[w.copy() for w in layer] for layer in variables]
    frozen[2][0].flags.writeable = False
    with pytest.raises(TypeError, match=r"variables\[2\]\[0\] must be a writable"):
        opt(frozen, gradients, config, state)
    with pytest.raises(TypeError, match=r"variables\[0\]\[1\] must be a writable float32"):
        opt([[variables[0][0], variables[0][1].astype(np.float16)], [], variables[2]],
            gradients, config, state)
    slot = "accumulated_grads" if opt is sgd_momentum else "v"
    good = state[slot][2]
    state[slot][2] = np.zeros(7)
    with pytest.raises(ValueError, match=rf"state\['{slot}'\]\[2\] must be a writable "
                                         rf"floating-point array of shape \(4,\)"):
        opt(variables, gradients, config, state)
    state[slot][2] = good
    assert_unchanged(variables, state, before)
    with pytest.raises(TypeError, match="must be a list of lists"):
        opt(variables[0], gradients[0], config, state)
    with pytest.raises(TypeError, match="state must be a dict"):
        opt(variables, gradients, config, [])
    assert_unchanged(variables, state, before)


def test_adam_state_t_is_checked_and_only_counted_after_the_checks():
    variables, gradients = layers()
    state = {"t": -1}
    with pytest.raises(ValueError, match=r"state\['t'\] must be a non-negative integer"):
        adam_optimizer(variables, gradients, ADAM, state)
    state = {}
    gradients[1] = [np.ones(2)]
    with pytest.raises(ValueError):
        adam_optimizer(variables, gradients, ADAM, state)
    assert state == {}


@pytest.mark.parametrize("key, value", [
    ("learning_rate", "0.1"), ("learning_rate", -0.1), ("learning_rate", np.nan),
    ("learning_rate", np.inf), ("learning_rate", True), ("learning_rate", None),
    ("momentum", 1.0), ("momentum", -0.1), ("momentum", np.nan),
    ("beta1", 1.0), ("beta1", -0.5), ("beta2", 1.5), ("beta2", np.nan),
    ("epsilon", 0.0), ("epsilon", -1e-8), ("epsilon", np.nan), ("epsilon", "1e-8"),
])
def test_bad_config_values_are_named(key, value):
    users = [(opt, config) for opt, config in ((sgd_momentum, SGD_CONFIG), (adam_optimizer, ADAM))
             if key in config]
    for opt, config in users:
        variables, gradients = layers()
        state: dict = {}
        before = snapshot(variables, state)
        with pytest.raises(ValueError, match=rf"{opt.__name__}: config\['{key}'\] must be"):
            opt(variables, gradients, {**config, key: value}, state)
        assert_unchanged(variables, state, before)


def test_numpy_scalars_and_zero_rates_are_accepted():
    variables, gradients = layers()
    sgd_momentum(variables, gradients, {"learning_rate": np.float32(0.0), "momentum": 0}, {})
    adam_optimizer(variables, gradients, {**ADAM, "beta1": np.float64(0.0)}, {})
