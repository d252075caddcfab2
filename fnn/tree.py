"""Trees of tuples, lists and attrs records with arrays (or other values) at the leaves.

params, state, grads and optimizer states are all such trees. Containers are tuples, lists and
attrs instances other than :class:`fnn.Key`; everything else (arrays, numbers, bools, None, keys)
is a leaf. Functions here never mutate: they build new containers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import numpy as np

from .core import FLOAT_DTYPES, Key, ShapeDtype

__all__ = ["is_leaf", "children", "leaves", "paths", "items", "path_str", "first_difference",
           "unflatten", "map", "map_multi", "cast", "set_training", "train_mode", "eval_mode",
           "describe", "check_tree"]


def is_leaf(tree: Any) -> bool:
    """True unless ``tree`` is a tuple, a list or an attrs instance; a random :class:`Key` and
    a :class:`~fnn.core.ShapeDtype` are attrs instances but leaves (one atomic value each)."""
    if isinstance(tree, np.ndarray):  # the common case first: every walk asks at every node
        return True
    if isinstance(tree, (tuple, list)):
        return False
    return isinstance(tree, (Key, ShapeDtype)) or not attrs.has(type(tree))


def _keys(tree: Any) -> list:
    """The keys of a container's children: indices for tuples and lists, field names for
    records."""
    if isinstance(tree, (tuple, list)):
        return list(range(len(tree)))
    return [f.name for f in type(tree).__attrs_attrs__]


def _children(tree: Any) -> list:
    if isinstance(tree, (tuple, list)):
        return list(tree)
    # __attrs_attrs__ is what attrs.fields returns, without its checks: this runs at every
    # node of every walk
    return [getattr(tree, f.name) for f in type(tree).__attrs_attrs__]


def children(tree: Any) -> list[tuple[int | str, Any]]:
    """A container's children with their keys: ``(index, child)`` for a tuple or list,
    ``(field name, child)`` for an attrs record (declaration order); ``[]`` for a leaf."""
    if is_leaf(tree):
        return []
    return list(zip(_keys(tree), _children(tree)))


def _rebuild(tree: Any, children: list) -> Any:
    if isinstance(tree, list):
        return children
    if isinstance(tree, tuple):
        return type(tree)(children) if type(tree) is tuple else type(tree)(*children)
    return attrs.evolve(tree, **dict(zip(_keys(tree), children)))


def leaves(tree: Any) -> list:
    """The leaves of ``tree`` in depth-first order (attrs fields in declaration order)."""
    if is_leaf(tree):
        return [tree]
    return [leaf for child in _children(tree) for leaf in leaves(child)]


def items(tree: Any) -> list[tuple[tuple, Any]]:
    """``(path, leaf)`` for every leaf of ``tree`` in :func:`leaves` order. A path is a tuple of
    keys (see :func:`children`), e.g. ``(0, "W")`` for the weight of the first layer of a
    Sequential's params; a leaf's own path is ``()``."""
    if is_leaf(tree):
        return [((), tree)]
    return [((key, *path), leaf) for key, child in children(tree) for path, leaf in items(child)]


def paths(tree: Any) -> list[tuple]:
    """The path of every leaf of ``tree``, in :func:`leaves` order (see :func:`items`)."""
    return [path for path, _ in items(tree)]


def path_str(path: tuple) -> str:
    """A path as an access expression: ``(0, "W")`` -> ``"[0].W"``; ``()`` -> ``""``."""
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path)


def first_difference(got: Any, like: Any,
                     same_leaf: Callable[[Any, Any], bool] = lambda g, k: True
                     ) -> tuple[tuple, Any, Any] | None:
    """Where tree ``got`` first differs from tree ``like`` (depth-first, in :func:`leaves`
    order), as ``(path, got's subtree, like's subtree)``, or None if they agree.

    They differ at a container of another type or number of children, at a leaf facing a
    container, and at two leaves for which ``same_leaf(got_leaf, like_leaf)`` is False (by
    default leaves always agree: only the structure is compared). Nothing is allocated.
    """
    if is_leaf(like):
        return None if is_leaf(got) and same_leaf(got, like) else ((), got, like)
    if type(got) is not type(like):  # a leaf, or a container of another type
        return (), got, like
    kids_got, kids_like = _children(got), _children(like)
    if len(kids_got) != len(kids_like):
        return (), got, like
    for i, (g, k) in enumerate(zip(kids_got, kids_like)):
        found = first_difference(g, k, same_leaf)
        if found is not None:  # the keys are only looked up here
            return ((_keys(like)[i], *found[0]), *found[1:])
    return None


def map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:  # noqa: A001 - like jax.tree.map
    """Apply ``fn`` leafwise over ``tree`` and trees of the same structure in ``rest``."""
    if is_leaf(tree):
        if not all(is_leaf(other) for other in rest):
            raise ValueError(f"tree structures differ: a leaf ({type(tree).__name__}) where "
                             f"another tree has a container")
        return fn(tree, *rest)
    groups = [_children(tree)]
    for other in rest:
        kids = _children(other) if type(other) is type(tree) else None
        if kids is None or len(kids) != len(groups[0]):
            raise ValueError(f"tree structures differ: {type(tree).__name__} with "
                             f"{len(groups[0])} children vs {type(other).__name__}")
        groups.append(kids)
    return _rebuild(tree, [map(fn, *group) for group in zip(*groups)])


def unflatten(like: Any, new_leaves: list) -> Any:
    """A tree of ``like``'s structure whose leaves are ``new_leaves`` (in ``leaves`` order);
    a ValueError with both counts unless there are exactly as many as ``like`` has leaves."""
    new_leaves = list(new_leaves)
    n = len(leaves(like))
    if len(new_leaves) != n:
        raise ValueError(f"fnn.tree.unflatten: the tree has {n} leaves, got {len(new_leaves)} "
                         f"new leaves")
    return _fill(like, new_leaves)


def _fill(like: Any, new_leaves: list) -> Any:
    it = iter(new_leaves)
    return map(lambda _: next(it), like)


def map_multi(fn: Callable[..., tuple], n_outputs: int, tree: Any, *rest: Any) -> tuple:
    """Like :func:`map` for an ``fn`` returning ``n_outputs`` values per leaf: returns
    ``n_outputs`` trees of ``tree``'s structure."""
    results: list = []
    map(lambda *args: results.append(fn(*args)), tree, *rest)
    for r in results[:1]:  # fn's result count is a property of fn: the first leaf tells
        if not isinstance(r, tuple) or len(r) != n_outputs:
            raise ValueError(f"fnn.tree.map_multi: fn must return a tuple of n_outputs = "
                             f"{n_outputs} values per leaf, got {_count(r)}")
    return tuple(_fill(tree, [r[i] for r in results]) for i in range(n_outputs))


def _count(result: Any) -> str:
    return f"{len(result)} values" if isinstance(result, tuple) else type(result).__name__


def cast(tree: Any, dtype: Any) -> Any:
    """A copy of ``tree`` with every floating-point array leaf cast to ``dtype``, a floating
    dtype (an integer or bool one would truncate the params: ValueError)."""
    try:
        floating = np.issubdtype(np.dtype(dtype), np.floating)
    except TypeError as err:
        raise ValueError(f"fnn.tree.cast: dtype must be a floating dtype such as np.float32, "
                         f"got {dtype!r}") from err
    if not floating:
        raise ValueError(f"fnn.tree.cast: dtype must be a floating dtype such as np.float32, "
                         f"got {np.dtype(dtype)} (casting params to it would truncate them)")

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


def describe(tree: Any, width: int = 88) -> str:
    """A shape-only text form of a params / state / cache tree, e.g.
    ``LinearParams(W=float32[128, 64], b=float32[128])``.

    Arrays (and :class:`fnn.core.ShapeDtype` leaves) print as ``dtype[shape]``, other leaves
    (numbers, keys, None) as their repr; records as ``Name(field=...)``, tuples as ``(...)``,
    lists as ``[...]``. A container whose one-line form would pass ``width`` characters is
    written one child per line, indented by two spaces per level.
    """
    return _describe(tree, 0, width)


def _describe(tree: Any, indent: int, width: int) -> str:
    if isinstance(tree, np.ndarray):
        return repr(ShapeDtype(tree.shape, tree.dtype))
    if is_leaf(tree):
        return repr(tree)
    named = attrs.has(type(tree))
    kids = [(f"{k}=" if named else "") + _describe(c, 0, 10**9) for k, c in children(tree)]
    if named:
        open_, close = f"{type(tree).__name__}(", ")"
    elif isinstance(tree, list):
        open_, close = "[", "]"
    else:
        open_, close = ("(", ",)") if len(kids) == 1 else ("(", ")")
    one_line = open_ + ", ".join(kids) + close
    if indent + len(one_line) <= width or not kids:
        return one_line
    pad = " " * (indent + 2)
    lines = [pad + (f"{k}=" if named else "") + _describe(c, indent + 2, width) + ","
             for k, c in children(tree)]
    return "\n".join([open_, *lines, " " * indent + close.lstrip(",")])


def check_tree(owner: Any, name: str, value: Any, expected: Any, path: tuple = ()) -> None:
    """Check ``value`` against ``expected``, a tree whose array leaves are
    :class:`~fnn.core.ShapeDtype`: the same containers (record types, tuple lengths), and at
    each ShapeDtype a float32 or float64 ndarray of that shape (either dtype: compat assigns
    arrays of either).
    Other expected leaves (``training`` flags, keys) need a value of the same type. Raises
    TypeError / ValueError naming ``owner``, the field (e.g. ``params.W``; ``W`` when ``name``
    is empty), expected and actual.
    Shape comparisons only: no per-element work."""
    where = f"{owner!r}: " + (f"{name}{path_str(path)}" if name else path_str(path)[1:])
    if isinstance(expected, ShapeDtype):
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{where} must be a float32 or float64 ndarray of shape "
                            f"{expected.shape}, got {type(value).__name__}")
        if value.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{where} must be float32 or float64, got dtype {value.dtype}")
        if value.shape != expected.shape:
            raise ValueError(f"{where} must have shape {expected.shape}, got {value.shape}")
        return
    if isinstance(expected, tuple) and type(expected) is tuple:
        if not isinstance(value, tuple) or len(value) != len(expected):
            got = type(value).__name__ + (f" of {len(value)}" if isinstance(value, (tuple, list))
                                          else "")
            raise TypeError(f"{where} must be a tuple of {len(expected)} entries, got {got}")
        for i, (v, e) in enumerate(zip(value, expected)):
            check_tree(owner, name, v, e, (*path, i))
        return
    if attrs.has(type(expected)) and not isinstance(expected, Key):
        if type(value) is not type(expected):
            raise TypeError(f"{where} must be a {type(expected).__name__}, got "
                            f"{type(value).__name__}")
        for f in attrs.fields(type(expected)):
            check_tree(owner, name, getattr(value, f.name), getattr(expected, f.name),
                       (*path, f.name))
        return
    if not isinstance(value, type(expected)):
        raise TypeError(f"{where} must be a {type(expected).__name__}, got "
                        f"{type(value).__name__}: {value!r}")
