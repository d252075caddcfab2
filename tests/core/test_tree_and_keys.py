"""fnn.tree (map, leaves, children, items/paths, first_difference, unflatten, map_multi, cast,
modes, describe) and random keys."""

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


def assert_same_tree(u: Any, v: Any) -> None:
    """Same container types all the way down and equal leaves (arrays: same dtype and values)."""
    assert type(u) is type(v)
    if not tree.is_leaf(u):
        assert [k for k, _ in tree.children(u)] == [k for k, _ in tree.children(v)]
        for (_, cu), (_, cv) in zip(tree.children(u), tree.children(v)):
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


@given(t=trees)
def test_items_paths_and_children_agree_with_leaves(t):
    found = tree.items(t)
    assert [leaf for _, leaf in found] == tree.leaves(t) or all(
        a is b for (_, a), b in zip(found, tree.leaves(t)))
    assert tree.paths(t) == [p for p, _ in found]
    for path, leaf in found:  # each path leads to its leaf
        node = t
        for key in path:
            node = dict(tree.children(node))[key]
        assert node is leaf
    assert tree.first_difference(t, t) is None


def test_paths_children_and_path_str():
    t = (Pair(a=np.zeros(2), b=[1, None]), (), [3])
    assert tree.paths(t) == [(0, "a"), (0, "b", 0), (0, "b", 1), (2, 0)]
    assert [k for k, _ in tree.children(t[0])] == ["a", "b"]
    assert tree.children(np.zeros(2)) == [] and tree.children(fnn.Key(1)) == []
    assert tree.path_str((0, "b", 1)) == "[0].b[1]" and tree.path_str(()) == ""
    assert tree.items(5) == [((), 5)]


def test_first_difference_names_the_path():
    like = (Pair(a=np.zeros(2), b=[np.zeros(3)]), ())
    same_shape = lambda g, k: np.shape(g) == np.shape(k)  # noqa: E731
    got = (Pair(a=np.zeros(2), b=[np.zeros(4)]), ())
    path, g, k = tree.first_difference(got, like, same_shape)
    assert path == (0, "b", 0) and g.shape == (4,) and k.shape == (3,)
    assert tree.first_difference(got, like) is None  # structure only by default
    assert tree.first_difference((Pair(1, (2,)), ()), like)[0] == (0, "b")  # tuple vs list
    assert tree.first_difference((like[0],), like)[0] == ()  # lengths differ
    assert tree.first_difference((like[0], None), like)[:2] == ((1,), None)  # leaf vs container


@pytest.mark.parametrize("n", [0, 2, 4, 10])
def test_unflatten_needs_exactly_one_leaf_per_leaf(n):
    like = (np.zeros(1), [np.zeros(2), Pair(1, 2)])  # 4 leaves
    if n == 4:
        assert tree.leaves(tree.unflatten(like, list(range(4)))) == [0, 1, 2, 3]
        return
    with pytest.raises(ValueError, match=f"the tree has 4 leaves, got {n} new leaves"):
        tree.unflatten(like, list(range(n)))


def test_describe_shapes_only():
    from fnn.core import ShapeDtype
    from fnn.linear import LinearParams

    p = LinearParams(W=np.zeros((128, 64), np.float32), b=np.zeros(128, np.float32))
    assert tree.describe(p) == "LinearParams(W=float32[128, 64], b=float32[128])"
    shapes = LinearParams(W=ShapeDtype((128, 64), "float32"), b=ShapeDtype((128,), np.float32))
    assert tree.describe(shapes) == tree.describe(p)
    assert tree.describe((np.zeros(3),)) == "(float64[3],)"
    assert tree.describe([(), fnn.Key(3), 1.5, None, np.float64(2)]) == \
        "[(), Key(seed=3), 1.5, None, np.float64(2.0)]"
    assert tree.describe(np.zeros(())) == "float64[]"
    big = fnn.Sequential([fnn.Linear(784, 512), fnn.ReLU(), fnn.Linear(512, 10)]).init(0)[0]
    text = tree.describe(fnn.Adam().init(big))
    assert text == """AdamState(
  t=0,
  m=(
    LinearParams(W=float64[512, 784], b=float64[512]),
    (),
    LinearParams(W=float64[10, 512], b=float64[10]),
  ),
  v=(
    LinearParams(W=float64[512, 784], b=float64[512]),
    (),
    LinearParams(W=float64[10, 512], b=float64[10]),
  ),
)"""
    assert all(len(line) <= 88 for line in text.splitlines())
    assert len(tree.describe(big, width=200).splitlines()) == 1


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
