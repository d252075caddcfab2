"""fnn.tree (map, leaves, unflatten, map_multi, cast, modes) and random keys."""

from __future__ import annotations

from typing import Any

import attrs
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fnn
from fnn import tree


@attrs.frozen
class Pair:
    a: Any
    b: Any


@attrs.frozen
class Flagged:
    training: bool
    inner: Any


arrays = hnp.arrays(st.sampled_from([np.float32, np.float64, np.int64]),
                    hnp.array_shapes(min_dims=0, max_dims=2, max_side=3),
                    elements=st.integers(-5, 5))
trees = st.recursive(
    arrays | st.none() | st.booleans(),
    lambda kids: (st.lists(kids, max_size=3) | st.lists(kids, max_size=3).map(tuple)
                  | st.builds(Pair, kids, kids)),
    max_leaves=8)


def children(t: Any) -> list:
    return list(t) if isinstance(t, (tuple, list)) else [getattr(t, f.name)
                                                         for f in attrs.fields(type(t))]


def assert_same_tree(u: Any, v: Any) -> None:
    """Same container types all the way down and equal leaves (arrays: same dtype and values)."""
    assert type(u) is type(v)
    if not tree.is_leaf(u):
        assert len(children(u)) == len(children(v))
        for cu, cv in zip(children(u), children(v)):
            assert_same_tree(cu, cv)
    elif isinstance(u, np.ndarray):
        assert u.dtype == v.dtype
        np.testing.assert_array_equal(u, v)
    else:
        assert u == v


# --- fnn.tree -----------------------------------------------------------------------------

def test_leaves_order_and_containers():
    w, b, g = np.zeros(2), np.ones(3), np.full(1, 2.0)
    t = (Pair(a=w, b=[b, None]), (), [g])
    assert [id(x) for x in tree.leaves(t)] == [id(w), id(b), id(None), id(g)]
    assert tree.leaves(()) == [] and tree.leaves(w) == [w]
    assert tree.is_leaf({"a": 1}) and not tree.is_leaf(Pair(1, 2))


@given(t=trees)
def test_map_identity_and_unflatten_round_trip(t):
    assert_same_tree(tree.map(lambda x: x, t), t)
    assert_same_tree(tree.unflatten(t, tree.leaves(t)), t)
    doubled = tree.map(lambda x: x * 2 if isinstance(x, np.ndarray) else x, t)
    for new, old in zip(tree.leaves(doubled), tree.leaves(t)):
        if isinstance(old, np.ndarray):
            np.testing.assert_array_equal(new, old * 2)


@given(t=trees)
def test_map_multi_returns_one_tree_per_output(t):
    ids, tags = tree.map_multi(lambda x: (x, "tag"), 2, t)
    assert_same_tree(ids, t)
    assert tree.leaves(tags) == ["tag"] * len(tree.leaves(t))
    tree.map(lambda u, v: u, t, tags)  # same structure


def test_map_over_several_trees_and_new_containers():
    t = [Pair(np.array([1.0]), (np.array([2.0]),))]
    u = tree.map(np.add, t, t)
    assert isinstance(u, list) and isinstance(u[0], Pair) and isinstance(u[0].b, tuple)
    np.testing.assert_array_equal(u[0].b[0], [4.0])
    assert u is not t and u[0] is not t[0]
    np.testing.assert_array_equal(t[0].b[0], [2.0])  # input untouched


@pytest.mark.parametrize("a, b", [
    ((1, 2), [1, 2]),                      # tuple vs list
    ((1, 2), (1, 2, 3)),                   # lengths differ
    (Pair(1, 2), Flagged(True, 2)),        # record types differ
    ((1, (2, 3)), (1, 2)),                 # a container where the first tree has a leaf
    ((1, 2), (1, (2, 3))),                 # a leaf where the first tree has a container
], ids=["tuple-list", "length", "record-type", "container-vs-leaf", "leaf-vs-container"])
def test_structure_mismatch_raises(a, b):
    with pytest.raises(ValueError, match="structure"):
        tree.map(lambda u, v: u, a, b)
    with pytest.raises(ValueError, match="structure"):
        tree.map_multi(lambda u, v: (u, v), 2, a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cast_changes_only_float_arrays(dtype):
    key = fnn.Key(7)
    t = (Pair(np.zeros(2, np.float16), np.arange(3)), [np.ones(1), key, 1.5, True, None])
    c = tree.cast(t, dtype)
    assert c[0].a.dtype == dtype and c[1][0].dtype == dtype
    assert c[0].b.dtype == np.int64 and c[1][1:] == [key, 1.5, True, None]
    assert t[0].a.dtype == np.float16 and t[1][0].dtype == np.float64  # input untouched
    assert not np.may_share_memory(c[1][0], t[1][0])


def test_train_and_eval_mode_over_nested_records():
    state = (Flagged(True, [Flagged(True, None), np.zeros(1)]), (), Pair(True, 1))
    ev = fnn.eval_mode(state)
    assert ev[0].training is False and ev[0].inner[0].training is False
    assert ev[2] == Pair(True, 1)  # a record without a training field is left alone
    assert state[0].training is True  # input untouched
    tr = fnn.train_mode(ev)
    assert tr[0].training is True and tr[0].inner[0].training is True


# --- keys ---------------------------------------------------------------------------------

seeds = st.integers(0, 2**64 - 1)


@given(seed=seeds)
def test_split_key_and_generator_are_deterministic(seed):
    assert fnn.split_key(seed) == fnn.split_key(fnn.Key(seed))
    assert fnn.split_key(seed, 3) == fnn.split_key(seed, 3)
    np.testing.assert_array_equal(fnn.generator(seed).random(5), fnn.generator(seed).random(5))


@given(seed=seeds, n=st.integers(2, 5))
def test_split_key_gives_distinct_children(seed, n):
    children = fnn.split_key(seed, n)
    assert len(children) == n and all(isinstance(k, fnn.Key) for k in children)
    assert len(set(children) | {fnn.Key(seed)}) == n + 1
    draws = [fnn.generator(k).random(4).tobytes() for k in (seed, *children)]
    assert len(set(draws)) == n + 1


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_children_streams_are_uncorrelated(seed):
    """Independence in the sense that matters here: streams of a key and of its children do not
    correlate (|r| < 0.05 over 10^4 draws, i.e. 5 standard errors)."""
    keys = (seed, *fnn.split_key(seed, 3))
    draws = np.array([fnn.generator(k).standard_normal(10_000) for k in keys])
    r = np.corrcoef(draws)
    assert np.all(np.abs(r[np.triu_indices(len(keys), 1)]) < 0.05)


def test_int_seeds_and_keys_agree_in_init():
    layer = fnn.Linear(3, 2)
    for seed in (0, np.int64(5), fnn.Key(5)):
        p_int, _ = layer.init(seed)
        p_key, _ = layer.init(fnn.as_key(seed))
        np.testing.assert_array_equal(p_int.W, p_key.W)
    assert not np.array_equal(layer.init(0)[0].W, layer.init(1)[0].W)
    assert fnn.as_key(np.int32(3)) == fnn.Key(3) and fnn.Key(np.int64(3)).seed == 3


@pytest.mark.parametrize("seed, error", [
    (-1, ValueError), (1.5, TypeError), ("0", TypeError), (True, TypeError), (None, TypeError)])
def test_bad_seed_rejected(seed, error):
    with pytest.raises(error):
        fnn.as_key(seed)
    with pytest.raises(error):
        fnn.Linear(2, 2).init(seed)
    with pytest.raises((ValueError, TypeError)):
        fnn.split_key(seed)


@pytest.mark.parametrize("seed", [-1, 1.5, True, "3"])
def test_key_record_rejects_bad_seed(seed):
    with pytest.raises(ValueError, match="Key"):
        fnn.Key(seed)


def test_a_key_is_one_leaf_of_a_state_tree():
    _, state = fnn.Sequential([fnn.Dropout(0.5), fnn.BatchNormalization(2)]).init(3)
    keys = [leaf for leaf in tree.leaves(state) if isinstance(leaf, fnn.Key)]
    assert len(keys) == 1 and tree.is_leaf(keys[0])
    # a leafwise function sees the key itself, never its integer seed
    seen = []
    tree.map(lambda leaf: seen.append(type(leaf)), state)
    assert fnn.Key in seen and int not in seen
