"""The individual checks of :func:`fnn.testing.check_layer`, each on one given input.

Each raises ``AssertionError`` saying what is wrong (naming the layer) and returns a small
report or None on success. The project's table tests (tests/layers/test_layers.py) call
exactly these functions on every row of its layer table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import numpy as np

from .. import tree
from ..core import Key, ShapeDtype, backward_params, generator
from ..tree import check_tree

__all__ = ["check_gradients", "check_loss_gradients", "check_purity", "check_shapes",
           "check_init_shapes", "check_dtypes", "check_batch_consistency", "check_modes",
           "check_backward_params",
           "training_flags", "numeric_gradient", "read_only"]


def read_only(t: Any) -> Any:
    """A copy of tree ``t`` whose array leaves are read-only (writes raise ValueError)."""

    def leaf(a: Any) -> Any:
        if isinstance(a, np.ndarray):
            a = a.copy()
            a.flags.writeable = False
        return a

    return tree.map(leaf, t)


def draw_dy(y: Any, key: int | Key) -> np.ndarray:
    """A standard normal draw from ``key`` of y's shape, in y's dtype: the default ``dy``."""
    return generator(key).standard_normal(np.shape(y)).astype(np.asarray(y).dtype)


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
    dy = draw_dy(y, key) if dy is None else np.array(dy, np.float64)
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
    dy = read_only(draw_dy(y1, key) if dy is None else np.asarray(dy))
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


def _structure(layer: Any, what: str, like: Any, other: Any) -> None:
    """AssertionError naming the layer unless ``other`` has ``like``'s tree structure, record
    types all the way down."""
    try:
        tree.map(lambda a, b: a, like, other)
    except ValueError as err:
        raise AssertionError(f"{layer!r}: {what} ({err})") from err


def _integer(x: Any) -> bool:
    """Integer inputs (indices, as Embedding's) have no gradient: backward gives dx = None."""
    return np.issubdtype(np.asarray(x).dtype, np.integer)


def _run(layer: Any, params: Any, state: Any, x: np.ndarray, key: int | Key = 1) -> tuple:
    """Forward, then backward with the default dy of ``key``: (y, cache, dy, dx, dparams)."""
    y, cache = layer.forward(params, state, x)
    dy = draw_dy(y, key)
    dx, dparams = layer.backward(params, cache, dy)
    return y, cache, dy, dx, dparams


def check_shapes(layer: Any, params: Any, state: Any, x: np.ndarray, *,
                 output_shape: tuple[int, ...] | None = None) -> None:
    """Check the shapes and records one forward and backward return.

    - y has ``output_shape`` (default ``layer.output_shape(x.shape)``), dx has x's shape
      (None for integer x: indices have no gradient);
    - dparams has params' record types all the way down, leaf for leaf of the same shape;
    - the cache has a ``state`` field with state's tree structure.
    """
    expected = layer.output_shape(x.shape) if output_shape is None else tuple(output_shape)
    y, cache, _, dx, dparams = _run(layer, params, state, x)
    if np.shape(y) != expected:
        raise AssertionError(f"{layer!r}: forward gives shape {np.shape(y)} for input shape "
                             f"{x.shape}, output_shape says {expected}")
    if _integer(x):
        if dx is not None:
            raise AssertionError(f"{layer!r}: integer input, expected dx = None, got "
                                 f"{type(dx).__name__}")
    elif np.shape(dx) != x.shape:
        raise AssertionError(f"{layer!r}: dx has shape {np.shape(dx)}, x has {x.shape}")
    _structure(layer, "dparams does not have the structure of params", params, dparams)
    shapes = [[np.shape(a) for a in tree.leaves(t)] for t in (params, dparams)]
    if shapes[0] != shapes[1]:
        raise AssertionError(f"{layer!r}: dparams leaf shapes {shapes[1]}, params {shapes[0]}")
    if not hasattr(cache, "state"):
        raise AssertionError(f"{layer!r}: the cache {type(cache).__name__} has no state field")
    _structure(layer, "cache.state does not have the structure of state", state, cache.state)


def check_init_shapes(layer: Any, params: Any, state: Any) -> None:
    """Check that ``layer.param_shapes()`` and ``layer.state_shapes()`` describe ``params`` and
    ``state`` as ``init`` returned them: the same records (``fnn.tree.check_tree``), and at
    each :class:`~fnn.core.ShapeDtype` an array of that shape AND dtype."""
    for name, value, method in (("params", params, "param_shapes"),
                                ("state", state, "state_shapes")):
        expected = getattr(layer, method)()
        try:
            check_tree(layer, name, value, expected)
        except (TypeError, ValueError) as err:
            raise AssertionError(f"{method}() does not describe init's {name}: {err}") from err
        for spec, a in zip(tree.leaves(expected), tree.leaves(value)):
            if isinstance(spec, ShapeDtype) and spec.dtype != a.dtype:
                raise AssertionError(f"{layer!r}: {method}() says {spec!r}, init gave "
                                     f"{a.dtype.name}{list(a.shape)}")


def _float_leaves(t: Any) -> list[np.ndarray]:
    return [a for a in _arrays(t) if np.issubdtype(a.dtype, np.floating)]


def check_dtypes(layer: Any, params: Any, state: Any, x: np.ndarray) -> None:
    """float32 in (x, params, state) gives float32 y, dx, dparams and new state; float64
    likewise (everything is cast to each dtype first; integer x stays integer, and y and
    dparams follow the params)."""
    integer = _integer(x)
    for dtype in (np.float32, np.float64):
        y, cache, _, dx, dparams = _run(layer, tree.cast(params, dtype),
                                        tree.cast(state, dtype),
                                        x if integer else x.astype(dtype))
        outputs = (y,) if integer else (y, dx)
        got = [np.asarray(a).dtype for a in (*outputs, *_float_leaves((dparams, cache.state)))]
        if any(d != dtype for d in got):
            raise AssertionError(f"{layer!r}: {np.dtype(dtype).name} in gives dtypes "
                                 f"{[d.name for d in got]} (y, dx, dparams, new state)")


def check_batch_consistency(layer: Any, params: Any, state: Any, x: np.ndarray,
                            cut: int | None = None, *, rtol: float = 1e-12,
                            atol: float = 1e-12) -> None:
    """For a layer whose samples do not affect each other: forward of a batch == the
    concatenation of the forwards of ``x[:cut]`` and ``x[cut:]`` (default cut N // 2, N >= 2
    needed), and the same for dx; dparams == the sum of the parts' dparams."""
    n = x.shape[0]
    cut = n // 2 if cut is None else cut
    if not 0 < cut < n:
        raise ValueError(f"check_batch_consistency: cut must be in [1, N - 1] for a batch of "
                         f"N = {n}, got {cut}")
    y, _, dy, dx, dparams = _run(layer, params, state, x)
    parts = []
    for rows in (slice(None, cut), slice(cut, None)):
        y_part, cache = layer.forward(params, state, x[rows])
        parts.append((y_part, *layer.backward(params, cache, dy[rows])))
    try:
        np.testing.assert_allclose(y, np.concatenate([p[0] for p in parts]), rtol, atol,
                                   err_msg="y")
        if not _integer(x):
            np.testing.assert_allclose(dx, np.concatenate([p[1] for p in parts]), rtol, atol,
                                       err_msg="dx")
        tree.map(lambda g, a, b: np.testing.assert_allclose(g, a + b, rtol, atol,
                                                            err_msg="dparams"),
                 dparams, parts[0][2], parts[1][2])
    except AssertionError as err:
        raise AssertionError(f"{layer!r}: the batch and its two parts (cut at {cut}) disagree; "
                             f"pass batch_coupled=True if its samples affect each other\n"
                             f"{err}") from err


def check_backward_params(layer: Any, params: Any, state: Any, x: np.ndarray) -> None:
    """``fnn.core.backward_params`` (what a training step calls on its first layer: dparams
    without dx) gives the same bits, dtypes and records as ``backward``'s dparams."""
    _, cache, dy, _, dparams = _run(layer, params, state, x)
    only = backward_params(layer, params, cache, dy)
    try:
        tree.map(lambda a, b: np.testing.assert_array_equal(a, b, strict=True), dparams, only)
    except (AssertionError, ValueError) as err:
        raise AssertionError(f"{layer!r}: backward_params differs from backward's dparams\n"
                             f"{err}") from err


def training_flags(state: Any) -> list[bool]:
    """The ``training`` field of every record in a state tree, depth first (its own walk, not
    ``fnn.tree.set_training``'s: it checks that one)."""
    if tree.is_leaf(state):
        return []
    own = [state.training] if attrs.has(type(state)) and hasattr(state, "training") else []
    children = (list(state) if isinstance(state, (tuple, list))
                else [getattr(state, f.name) for f in attrs.fields(type(state))])
    return own + [flag for child in children for flag in training_flags(child)]


def check_modes(layer: Any, key: int | Key = 0) -> None:
    """``init`` returns training mode (every ``training`` field True); ``fnn.eval_mode`` turns
    every one off and ``fnn.train_mode`` back on."""
    _, state = layer.init(key)
    for name, s, want in (("init", state, True), ("eval_mode", tree.eval_mode(state), False),
                          ("train_mode", tree.train_mode(tree.eval_mode(state)), True)):
        flags = training_flags(s)
        if any(flag != want for flag in flags):
            raise AssertionError(f"{layer!r}: training flags after {name}: {flags}")
