"""Checks for layers, yours included: finite-difference gradients and purity.

    from fnn.testing import check_gradients, check_purity
    params, state = layer.init(0)
    check_gradients(layer, params, state, x)   # float64 central differences
    check_purity(layer, params, state, x)      # read-only inputs, no mutation/aliasing, determinism

Both raise ``AssertionError`` with the offending array and error on failure and return a
small report on success. The project's own tests use exactly these functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import tree
from .core import Key, generator

__all__ = ["check_gradients", "check_loss_gradients", "check_purity", "numeric_gradient",
           "read_only"]


def read_only(t: Any) -> Any:
    """A copy of tree ``t`` whose array leaves are read-only (writes raise ValueError)."""

    def leaf(a: Any) -> Any:
        if isinstance(a, np.ndarray):
            a = a.copy()
            a.flags.writeable = False
        return a

    return tree.map(leaf, t)


def numeric_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, eps: float = 1e-6
                     ) -> np.ndarray:
    """Central differences of scalar ``f`` at float64 ``x``:
    (f(x + eps e_i) - f(x - eps e_i)) / (2 eps) for every element i."""
    x = np.array(x, dtype=np.float64)
    grad = np.empty_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = f(x)
        flat[i] = old - eps
        minus = f(x)
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def _compare(name: str, analytic: Any, numeric: np.ndarray, rtol: float, atol: float) -> float:
    analytic = np.asarray(analytic)
    if analytic.shape != numeric.shape:
        raise AssertionError(f"{name}: analytic gradient has shape {analytic.shape}, "
                             f"expected {numeric.shape}")
    err = np.abs(analytic - numeric)
    if not np.all(err <= atol + rtol * np.abs(numeric)):
        i = np.unravel_index(np.argmax(err - rtol * np.abs(numeric)), err.shape)
        raise AssertionError(f"{name}: analytic and finite-difference gradients differ at "
                             f"{tuple(int(j) for j in i)}: {analytic[i]!r} vs {numeric[i]!r} "
                             f"(max abs error {err.max():.3g}, rtol={rtol}, atol={atol})")
    return float(err.max(initial=0.0))


def check_gradients(layer: Any, params: Any, state: Any, x: np.ndarray, dy: Any = None, *,
                    key: int | Key = 0, eps: float = 1e-6, rtol: float = 1e-5,
                    atol: float = 1e-7) -> dict[str, float]:
    """Check ``layer.backward`` against float64 central differences of the scalar
    L = sum(forward(params, state, x)[0] * dy), for dx and every float array leaf of params.

    Everything is cast to float64 first, except integer x (indices, as Embedding's), which has
    no gradient: dx must then be None. ``dy`` defaults to a standard normal draw from ``key``.
    The state is held fixed (the same Dropout key, the same BatchNorm mode). Returns the largest
    absolute error per checked array (``"dx"``, ``"params[i]"`` in leaf order).
    """
    params, state = tree.cast(params, np.float64), tree.cast(state, np.float64)
    integer = np.issubdtype(np.asarray(x).dtype, np.integer)
    x = np.array(x, dtype=None if integer else np.float64)
    y, cache = layer.forward(params, state, x)
    dy = generator(key).standard_normal(y.shape) if dy is None else np.array(dy, np.float64)
    dx, dparams = layer.backward(params, cache, dy)

    def loss(p: Any, xx: np.ndarray) -> float:
        return float(np.sum(layer.forward(p, state, xx)[0] * dy))

    if integer:  # indices (Embedding): no gradient, and dx must say so
        if dx is not None:
            raise AssertionError(f"{layer!r}: integer input, expected dx = None, got "
                                 f"{type(dx).__name__}")
        report = {}
    else:
        report = {"dx": _compare("dx", dx, numeric_gradient(lambda xx: loss(params, xx), x,
                                                            eps), rtol, atol)}
    leaves = tree.leaves(params)
    grads = tree.leaves(dparams)
    if len(grads) != len(leaves):
        raise AssertionError(f"dparams has {len(grads)} leaves, params has {len(leaves)}")
    for i, leaf in enumerate(leaves):
        if not (isinstance(leaf, np.ndarray) and np.issubdtype(leaf.dtype, np.floating)):
            continue

        def loss_leaf(value: np.ndarray, i: int = i) -> float:
            return loss(tree.unflatten(params, leaves[:i] + [value] + leaves[i + 1:]), x)

        report[f"params[{i}]"] = _compare(f"params leaf {i}", grads[i],
                                          numeric_gradient(loss_leaf, leaf, eps), rtol, atol)
    return report


def check_loss_gradients(criterion: Any, y: np.ndarray, target: np.ndarray, *,
                         eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-7) -> float:
    """Check ``criterion.backward`` against float64 central differences of the loss in y."""
    y = np.array(y, dtype=np.float64)
    _, cache = criterion.forward(y, target)
    numeric = numeric_gradient(lambda yy: float(criterion.forward(yy, target)[0]), y, eps)
    return _compare("dy", criterion.backward(cache), numeric, rtol, atol)


def _arrays(t: Any) -> list[np.ndarray]:
    return [a for a in tree.leaves(t) if isinstance(a, np.ndarray)]


def _same(a: Any, b: Any) -> bool:
    """Bit-identical trees: same structure, same leaf values and dtypes (NaNs compare equal)."""
    la, lb = tree.leaves(a), tree.leaves(b)
    if len(la) != len(lb):
        return False
    for u, v in zip(la, lb):
        if isinstance(u, np.ndarray) or isinstance(v, np.ndarray):
            u, v = np.asarray(u), np.asarray(v)
            if u.dtype != v.dtype or u.shape != v.shape or u.tobytes() != v.tobytes():
                return False
        elif type(u) is not type(v) or u != v:
            return False
    return True


def _no_writes(layer: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on read-only arguments; numpy's error for a write into one of them becomes
    an AssertionError naming the layer."""
    try:
        return fn(*args)
    except ValueError as err:
        if "read-only" not in str(err):
            raise
        raise AssertionError(f"{layer!r}: wrote into a read-only argument ({err})") from err


def check_purity(layer: Any, params: Any, state: Any, x: np.ndarray, dy: Any = None, *,
                 key: int | Key = 0) -> None:
    """Check the purity rules of the layer contract on one input.

    - forward and backward run on read-only copies of x, params, state, dy (no in-place writes);
    - the arguments are unchanged afterwards;
    - two forwards give bit-identical outputs and new states; backward twice on one cache, and
      on the second forward's cache, gives bit-identical dx and dparams;
    - y, dx and dparams share no memory with x, params, state or dy.
    """
    originals = tree.map(lambda a: a.copy() if isinstance(a, np.ndarray) else a,
                         (params, state, x))
    params, state, x = read_only((params, state, x))
    y1, c1 = _no_writes(layer, layer.forward, params, state, x)
    y2, c2 = _no_writes(layer, layer.forward, params, state, x)
    if not _same((y1, c1.state), (y2, c2.state)):
        raise AssertionError(f"{layer!r}: two forwards on equal arguments differ")
    if dy is None:
        dy = generator(key).standard_normal(np.shape(y1)).astype(np.asarray(y1).dtype)
    dy = read_only(np.asarray(dy))
    g1, g2, g3 = (_no_writes(layer, layer.backward, params, c, dy) for c in (c1, c1, c2))
    if not (_same(g1, g2) and _same(g1, g3)):
        raise AssertionError(f"{layer!r}: backward is not deterministic")
    if not _same(originals, (params, state, x)):
        raise AssertionError(f"{layer!r}: an argument was changed")
    inputs = _arrays((params, state, x, dy))
    for name, out in (("y", y1), ("dx", g1[0]), ("dparams", g1[1])):
        for a in _arrays(out):
            if any(np.may_share_memory(a, b) for b in inputs):
                raise AssertionError(f"{layer!r}: {name} shares memory with an argument")
