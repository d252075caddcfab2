"""The classic optimizers: ``opt(variables, gradients, config, state)`` on lists of lists.

Each updates ``variables`` in place through the fnn leaf functions (the formulas of
fnn.SGDMomentum / fnn.Adam, writing into the live arrays with ``out=``) and keeps its state
keyed by the flat index i of each variable: ``state['accumulated_grads'][i]``, or
``state['m'][i]``, ``state['v'][i]`` and ``state['t']``.
The state arrays are created like the gradient (``np.zeros_like``) and updated in place, so the
same array objects persist across steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from fnn._optim_kernels import adam_leaf, adam_step_size, sgd_momentum_leaf

__all__ = ["sgd_momentum", "adam_optimizer"]


def _pairs(variables: list, gradients: list) -> Iterator[tuple[int, Any, Any]]:
    """(i, variable, gradient) over the nested lists, i the flat index."""
    flat = ((w, g) for ws, gs in zip(variables, gradients) for w, g in zip(ws, gs))
    for i, (w, g) in enumerate(flat):
        yield i, w, g


def _slot(store: dict, i: int, like: np.ndarray) -> np.ndarray:
    slot = store.get(i)
    if slot is None:
        slot = store[i] = np.zeros_like(like)
    return slot


def _config(config: dict, keys: tuple[str, ...]) -> list:
    missing = [k for k in keys if k not in config]
    if missing:
        raise KeyError(f"optimizer config lacks {missing}; it needs {list(keys)}")
    return [config[k] for k in keys]


def sgd_momentum(variables: list, gradients: list, config: dict, state: dict) -> None:
    """v = momentum * v + learning_rate * g; w -= v. config: learning_rate, momentum."""
    learning_rate, momentum = _config(config, ("learning_rate", "momentum"))
    accumulated = state.setdefault("accumulated_grads", {})
    for i, w, g in _pairs(variables, gradients):
        v = _slot(accumulated, i, g)
        sgd_momentum_leaf(w, g, v, learning_rate, momentum, out=(w, v))


def adam_optimizer(variables: list, gradients: list, config: dict, state: dict) -> None:
    """t += 1; m = beta1*m + (1-beta1)*g; v = beta2*v + (1-beta2)*g*g;
    w -= lr_t * m / (sqrt(v) + epsilon), lr_t = learning_rate * sqrt(1-beta2^t) / (1-beta1^t).
    config: learning_rate, beta1, beta2, epsilon."""
    learning_rate, beta1, beta2, epsilon = _config(
        config, ("learning_rate", "beta1", "beta2", "epsilon"))
    ms, vs = state.setdefault("m", {}), state.setdefault("v", {})
    state["t"] = state.get("t", 0) + 1
    lr_t = adam_step_size(learning_rate, beta1, beta2, state["t"])
    for i, w, g in _pairs(variables, gradients):
        m, v = _slot(ms, i, g), _slot(vs, i, g)
        adam_leaf(w, g, m, v, lr_t, beta1, beta2, epsilon, out=(w, m, v))
