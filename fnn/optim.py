"""Optimizers: frozen specs with ``init(params)`` and ``update(params, grads, state)``.

Both work leafwise over any tree (see :mod:`fnn.tree`) and reproduce the classic homework
formulas operation for operation, so results agree bit for bit with the classic
``sgd_momentum`` / ``adam_optimizer``. Each leaf's update keeps the param's dtype.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from . import tree
from .core import in_range, real_float

__all__ = ["SGDMomentum", "SGDState", "Adam", "AdamState", "sgd_momentum_leaf", "adam_leaf",
           "adam_step_size"]


def _nonneg(low: float = 0.0):
    return in_range(low, np.inf)


def sgd_momentum_leaf(w: np.ndarray, g: np.ndarray, v: np.ndarray, learning_rate: float,
                      momentum: float, *, out: tuple | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """One SGD-momentum step for one array: v' = momentum*v + learning_rate*g; w' = w - v'.

    New arrays, or with ``out=(w_out, v_out)`` (which may be w and v themselves, as in the
    classic in-place API) the same values written there.
    """
    w_out, v_out = (None, None) if out is None else out
    g = g.astype(w.dtype, copy=False)
    v_new = np.multiply(momentum, v, out=v_out)
    v_new += learning_rate * g
    return np.subtract(w, v_new, out=w_out), v_new


def adam_step_size(learning_rate: float, beta1: float, beta2: float, t: int) -> float:
    """lr_t = learning_rate * sqrt(1 - beta2^t) / (1 - beta1^t) (a Python float)."""
    return float(learning_rate * np.sqrt(1 - beta2 ** t) / (1 - beta1 ** t))


def adam_leaf(w: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, lr_t: float,
              beta1: float, beta2: float, epsilon: float, *, out: tuple | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Adam step for one array: m' = beta1*m + (1-beta1)*g; v' = beta2*v + (1-beta2)*g*g;
    w' = w - lr_t * m' / (sqrt(v') + epsilon).

    New arrays, or with ``out=(w_out, m_out, v_out)`` (which may be w, m and v themselves) the
    same values written there.
    """
    w_out, m_out, v_out = (None, None, None) if out is None else out
    g = g.astype(w.dtype, copy=False)
    m_new = np.multiply(beta1, m, out=m_out)
    m_new += (1 - beta1) * g
    v_new = np.multiply(beta2, v, out=v_out)
    v_new += (1 - beta2) * g * g
    denom = np.sqrt(v_new)
    denom += epsilon
    step = lr_t * m_new
    step /= denom
    return np.subtract(w, step, out=w_out), m_new, v_new


@attrs.frozen
class SGDState:
    accumulated_grads: Any  # a tree like params


@attrs.frozen
class SGDMomentum:
    """SGD with momentum (classic form): v = momentum * v + learning_rate * g; w -= v."""

    learning_rate: float = attrs.field(converter=real_float, validator=_nonneg())
    momentum: float = attrs.field(default=0.0, converter=real_float,
                                  validator=in_range(0.0, 1.0))

    def init(self, params: Any) -> SGDState:
        return SGDState(accumulated_grads=tree.map(np.zeros_like, params))

    def update(self, params: Any, grads: Any, state: SGDState) -> tuple[Any, SGDState]:
        new_params, acc = tree.map_multi(
            lambda w, g, v: sgd_momentum_leaf(w, g, v, self.learning_rate, self.momentum),
            2, params, grads, state.accumulated_grads)
        return new_params, SGDState(accumulated_grads=acc)


@attrs.frozen
class AdamState:
    t: int  # number of steps taken
    m: Any  # first moments, a tree like params
    v: Any  # second moments, a tree like params


@attrs.frozen
class Adam:
    """Adam (classic form): m, v moving moments of g and g*g; with
    lr_t = learning_rate * sqrt(1 - beta2^t) / (1 - beta1^t), w -= lr_t * m / (sqrt(v) + epsilon).
    """

    learning_rate: float = attrs.field(default=1e-3, converter=real_float,
                                       validator=_nonneg())
    beta1: float = attrs.field(default=0.9, converter=real_float,
                               validator=in_range(0.0, 1.0))
    beta2: float = attrs.field(default=0.999, converter=real_float,
                               validator=in_range(0.0, 1.0))
    epsilon: float = attrs.field(default=1e-8, converter=real_float,
                                 validator=_nonneg())

    def init(self, params: Any) -> AdamState:
        return AdamState(t=0, m=tree.map(np.zeros_like, params),
                         v=tree.map(np.zeros_like, params))

    def update(self, params: Any, grads: Any, state: AdamState) -> tuple[Any, AdamState]:
        t = state.t + 1
        lr_t = adam_step_size(self.learning_rate, self.beta1, self.beta2, t)
        new_params, m, v = tree.map_multi(
            lambda w, g, m, v: adam_leaf(w, g, m, v, lr_t, self.beta1, self.beta2, self.epsilon),
            3, params, grads, state.m, state.v)
        return new_params, AdamState(t=t, m=m, v=v)
