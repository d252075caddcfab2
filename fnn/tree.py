"""Trees of tuples, lists and attrs records with arrays (or other values) at the leaves.

params, state, grads and optimizer states are all such trees. Containers are tuples, lists and
attrs instances other than :class:`fnn.Key`; everything else (arrays, numbers, bools, None, keys)
is a leaf. Functions here never mutate: they build new containers.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np

from .core import Key, ShapeDtype

__all__ = ["is_leaf", "leaves", "unflatten", "map", "map_multi", "cast", "set_training",
           "train_mode", "eval_mode"]


def is_leaf(tree: Any) -> bool:
    """True unless ``tree`` is a tuple, a list or an attrs instance; a random :class:`Key` and
    a :class:`~fnn.core.ShapeDtype` are attrs instances but leaves (one atomic value each)."""
    if isinstance(tree, (Key, ShapeDtype)):
        return True
    return not (isinstance(tree, (tuple, list)) or attrs.has(type(tree)))


def _children(tree: Any) -> list:
    if isinstance(tree, (tuple, list)):
        return list(tree)
    return [getattr(tree, f.name) for f in attrs.fields(type(tree))]


def _rebuild(tree: Any, children: list) -> Any:
    if isinstance(tree, list):
        return children
    if isinstance(tree, tuple):
        return type(tree)(children) if type(tree) is tuple else type(tree)(*children)
    names = [f.name for f in attrs.fields(type(tree))]
    return attrs.evolve(tree, **dict(zip(names, children)))


def leaves(tree: Any) -> list:
    """The leaves of ``tree`` in depth-first order (attrs fields in declaration order)."""
    if is_leaf(tree):
        return [tree]
    return [leaf for child in _children(tree) for leaf in leaves(child)]


def map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:  # noqa: A001 - like jax.tree.map
    """Apply ``fn`` leafwise over ``tree`` and trees of the same structure in ``rest``."""
    if is_leaf(tree):
        if not all(is_leaf(other) for other in rest):
            raise ValueError(f"tree structures differ: a leaf ({type(tree).__name__}) where "
                             f"another tree has a container")
        return fn(tree, *rest)
    for other in rest:
        if type(other) is not type(tree) or len(_children(other)) != len(_children(tree)):
            raise ValueError(f"tree structures differ: {type(tree).__name__} with "
                             f"{len(_children(tree))} children vs {type(other).__name__}")
    kids = [map(fn, *group) for group in zip(_children(tree), *builtins.map(_children, rest))]
    return _rebuild(tree, kids)


def unflatten(like: Any, new_leaves: list) -> Any:
    """A tree of ``like``'s structure whose leaves are ``new_leaves`` (in ``leaves`` order)."""
    it = iter(new_leaves)
    return map(lambda _: next(it), like)


def map_multi(fn: Callable[..., tuple], n_outputs: int, tree: Any, *rest: Any) -> tuple:
    """Like :func:`map` for an ``fn`` returning ``n_outputs`` values per leaf: returns
    ``n_outputs`` trees of ``tree``'s structure."""
    results: list = []
    map(lambda *args: results.append(fn(*args)), tree, *rest)
    return tuple(unflatten(tree, [r[i] for r in results]) for i in range(n_outputs))


def cast(tree: Any, dtype: Any) -> Any:
    """A copy of ``tree`` with every floating-point array leaf cast to ``dtype``."""

    def leaf(x: Any) -> Any:
        if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating):
            return x.astype(dtype)
        return x

    return map(leaf, tree)


def set_training(tree: Any, training: bool) -> Any:
    """The same tree with the ``training`` field of every record in it set to ``training``."""
    if is_leaf(tree):
        return tree
    new = _rebuild(tree, [set_training(child, training) for child in _children(tree)])
    if attrs.has(type(new)) and "training" in attrs.fields_dict(type(new)):
        new = attrs.evolve(new, training=bool(training))
    return new


def train_mode(state: Any) -> Any:
    """``state`` with every layer in training mode (how ``init`` returns it)."""
    return set_training(state, True)


def eval_mode(state: Any) -> Any:
    """``state`` with every layer in evaluation mode (BatchNorm uses its moving statistics,
    Dropout is the identity)."""
    return set_training(state, False)
