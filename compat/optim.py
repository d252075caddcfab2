"""The classic optimizers: ``opt(variables, gradients, config, state)`` on lists of lists.

Each updates ``variables`` in place through fnn's classic leaf kernels (the formulas of
fnn.SGDMomentum / fnn.Adam, writing into the live arrays with ``out=``) and keeps its state
keyed by the flat index i of each variable: ``state['accumulated_grads'][i]``, or
``state['m'][i]``, ``state['v'][i]`` and ``state['t']``.
The state arrays are created like the gradient (``np.zeros_like``) and updated in place, so the
same array objects persist across steps.

Everything is checked before anything changes: the nesting and shapes of ``gradients`` against
``variables``, the state's entries, and the config's values; a ValueError (TypeError for a wrong
type) names the function and the offending variable or key, and leaves the variables and the
state untouched.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from fnn._optim_kernels import adam_leaf, adam_step_size, sgd_momentum_leaf
from fnn.core import FLOAT_DTYPES

__all__ = ["sgd_momentum", "adam_optimizer"]

# the config keys and the range each must lie in: (low, high, high included)
_RANGES = {"learning_rate": (0.0, math.inf, False), "momentum": (0.0, 1.0, False),
           "beta1": (0.0, 1.0, False), "beta2": (0.0, 1.0, False),
           "epsilon": (0.0, math.inf, False)}


def _config(fn: str, config: dict, keys: tuple[str, ...]) -> list:
    """The config values for ``keys``, each a real number in its range (epsilon > 0)."""
    if not isinstance(config, dict):
        raise TypeError(f"{fn}: config must be a dict, got {type(config).__name__}")
    missing = [k for k in keys if k not in config]
    if missing:
        raise KeyError(f"{fn}: optimizer config lacks {missing}; it needs {list(keys)}")
    values = []
    for k in keys:
        value, (low, high, _) = config[k], _RANGES[k]
        ok = not isinstance(value, bool) and isinstance(value, numbers.Real) \
            and low <= value < high and (k != "epsilon" or value > 0)
        if not ok:
            bounds = "a finite number > 0" if k == "epsilon" else f"in [{low}, {high})"
            raise ValueError(f"{fn}: config[{k!r}] must be {bounds}, got {value!r}")
        values.append(value)
    return values


def _pairs(fn: str, variables: Any, gradients: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (variable, gradient) pairs in flat order, after checking that both are lists of
    lists of the same lengths, every variable a writable floating-point array and every
    gradient a floating-point array of its variable's shape."""
    for name, outer in (("variables", variables), ("gradients", gradients)):
        if not isinstance(outer, (list, tuple)) or not all(isinstance(inner, (list, tuple))
                                                           for inner in outer):
            raise TypeError(f"{fn}: {name} must be a list of lists of arrays")
    if len(variables) != len(gradients):
        raise ValueError(f"{fn}: {len(variables)} groups of variables but {len(gradients)} of "
                         f"gradients")
    pairs = []
    for k, (ws, gs) in enumerate(zip(variables, gradients)):
        if len(ws) != len(gs):
            raise ValueError(f"{fn}: variables[{k}] has {len(ws)} arrays but gradients[{k}] "
                             f"has {len(gs)}")
        for j, (w, g) in enumerate(zip(ws, gs)):
            where = f"[{k}][{j}]"
            if not (isinstance(w, np.ndarray) and w.dtype in FLOAT_DTYPES and w.flags.writeable):
                raise TypeError(f"{fn}: variables{where} must be a writable float32 or float64 "
                                f"array, got {type(w).__name__} {getattr(w, 'dtype', '')}")
            if not isinstance(g, np.ndarray) or g.dtype.kind != "f":
                raise TypeError(f"{fn}: gradients{where} must be a floating-point array, got "
                                f"{type(g).__name__} {getattr(g, 'dtype', '')}")
            if g.shape != w.shape:
                raise ValueError(f"{fn}: gradients{where} has shape {g.shape}, the variable "
                                 f"has shape {w.shape}")
            pairs.append((w, g))
    return pairs


def _slots(fn: str, state: dict, names: tuple[str, ...], pairs: list) -> list[list]:
    """For each name, the state's array per variable (new zeros like the gradient where
    missing), after checking that existing entries are writable arrays of the right shape.
    Nothing is stored in ``state`` here."""
    if not isinstance(state, dict):
        raise TypeError(f"{fn}: state must be a dict, got {type(state).__name__}")
    out = []
    for name in names:
        store = state.get(name, {})
        if not isinstance(store, dict):
            raise TypeError(f"{fn}: state[{name!r}] must be a dict, got {type(store).__name__}")
        column = []
        for i, (w, g) in enumerate(pairs):
            slot = store.get(i)
            if slot is None:
                slot = np.zeros_like(g)
            elif not isinstance(slot, np.ndarray) or slot.shape != w.shape \
                    or slot.dtype.kind != "f" or not slot.flags.writeable:
                raise ValueError(f"{fn}: state[{name!r}][{i}] must be a writable floating-point "
                                 f"array of shape {w.shape} (variable {i}), got "
                                 f"{getattr(slot, 'shape', type(slot).__name__)}")
            column.append(slot)
        out.append(column)
    return out


def _store(state: dict, names: tuple[str, ...], columns: list[list]) -> None:
    for name, column in zip(names, columns):
        store = state.setdefault(name, {})
        for i, slot in enumerate(column):
            store.setdefault(i, slot)


def sgd_momentum(variables: list, gradients: list, config: dict, state: dict) -> None:
    """v = momentum * v + learning_rate * g; w -= v. config: learning_rate, momentum."""
    fn = "sgd_momentum"
    learning_rate, momentum = _config(fn, config, ("learning_rate", "momentum"))
    pairs = _pairs(fn, variables, gradients)
    names = ("accumulated_grads",)
    (vs,) = columns = _slots(fn, state, names, pairs)
    _store(state, names, columns)
    for (w, g), v in zip(pairs, vs):
        sgd_momentum_leaf(w, g, v, learning_rate, momentum, out=(w, v))


def adam_optimizer(variables: list, gradients: list, config: dict, state: dict) -> None:
    """t += 1; m = beta1*m + (1-beta1)*g; v = beta2*v + (1-beta2)*g*g;
    w -= lr_t * m / (sqrt(v) + epsilon), lr_t = learning_rate * sqrt(1-beta2^t) / (1-beta1^t).
    config: learning_rate, beta1, beta2, epsilon."""
    fn = "adam_optimizer"
    learning_rate, beta1, beta2, epsilon = _config(
        fn, config, ("learning_rate", "beta1", "beta2", "epsilon"))
    pairs = _pairs(fn, variables, gradients)
    names = ("m", "v")
    ms, vs = columns = _slots(fn, state, names, pairs)
    t = state.get("t", 0)
    if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 0:
        raise ValueError(f"{fn}: state['t'] must be a non-negative integer, got {t!r}")
    _store(state, names, columns)
    state["t"] = t + 1
    lr_t = adam_step_size(learning_rate, beta1, beta2, state["t"])
    for (w, g), m, v in zip(pairs, ms, vs):
        adam_leaf(w, g, m, v, lr_t, beta1, beta2, epsilon, out=(w, m, v))
