"""Optimizers: frozen specs with ``init(params)`` and ``update(params, grads, state)``.

Both work leafwise over any tree (see :mod:`fnn.tree`) and reproduce the classic homework
formulas operation for operation, so results agree bit for bit with the classic
``sgd_momentum`` / ``adam_optimizer``. Each leaf's update keeps the param's dtype.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import attrs
import numpy as np

from . import tree
from .core import finite_real, in_range, real_float
from .schedules import learning_rate_validator

__all__ = ["SGDMomentum", "SGDState", "Adam", "AdamState", "sgd_momentum_leaf", "adam_leaf",
           "adam_step_size", "SGD", "SGDBufferState", "AdamW", "AdamWState", "RMSprop",
           "RMSpropState", "clip_by_global_norm", "decay_mask", "leaf_paths", "rank_at_least_2"]


def _nonneg(low: float = 0.0):
    return in_range(low, np.inf)


# Leaves larger than this many elements are updated block by block, so that the block of every
# operand, result and temporary stays in cache between the few passes of the formula (whole
# arrays would make each pass a trip to memory, and fresh temporaries of whole-array size).
BLOCK = 1 << 15


def _blockwise(kernel: Any, ins: tuple, outs: tuple, tmp_dtypes: tuple) -> None:
    """Run ``kernel(*ins, *outs, *tmps)`` (elementwise; writes ``outs``) on matching blocks of
    flat views, or once on the whole arrays when they are small, of different shapes or not
    contiguous. Both ways apply the same operations to every element: equal results."""
    shape = outs[0].shape
    arrays = ins + outs
    if outs[0].size <= BLOCK or not all(isinstance(a, np.ndarray) and a.shape == shape
                                        and a.flags.c_contiguous for a in arrays):
        kernel(*ins, *outs, *(np.empty(shape, dt) for dt in tmp_dtypes))
        return
    flat = [a.reshape(-1) for a in arrays]
    tmps = [np.empty(BLOCK, dt) for dt in tmp_dtypes]
    for s in range(0, outs[0].size, BLOCK):
        e = min(s + BLOCK, outs[0].size)
        kernel(*(a[s:e] for a in flat), *(t[:e - s] for t in tmps))


def sgd_momentum_leaf(w: np.ndarray, g: np.ndarray, v: np.ndarray, learning_rate: float,
                      momentum: float, *, out: tuple | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """One SGD-momentum step for one array: v' = momentum*v + learning_rate*g; w' = w - v'.

    New arrays, or with ``out=(w_out, v_out)`` (which may be w and v themselves, as in the
    classic in-place API) the same values written there.
    """
    g = g.astype(w.dtype, copy=False)
    w_out, v_out = (None, None) if out is None else out
    if v_out is None:
        v_out = np.empty(np.shape(v), np.result_type(momentum, v))
    if w_out is None:
        w_out = np.empty(np.broadcast_shapes(np.shape(w), v_out.shape),
                         np.result_type(w, v_out))

    def kernel(w, g, v, w_out, v_out, lr_g):
        np.multiply(momentum, v, out=v_out)
        v_out += np.multiply(learning_rate, g, out=lr_g)
        np.subtract(w, v_out, out=w_out)

    _blockwise(kernel, (w, g, v), (w_out, v_out), (np.result_type(learning_rate, g),))
    return w_out, v_out


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
    g = g.astype(w.dtype, copy=False)
    w_out, m_out, v_out = (None, None, None) if out is None else out
    if m_out is None:
        m_out = np.empty(np.shape(m), np.result_type(beta1, m))
    if v_out is None:
        v_out = np.empty(np.shape(v), np.result_type(beta2, v))
    step_dtype = np.result_type(lr_t, m_out)
    if w_out is None:
        w_out = np.empty(np.broadcast_shapes(np.shape(w), m_out.shape, v_out.shape),
                         np.result_type(w, step_dtype))

    def kernel(w, g, m, v, w_out, m_out, v_out, g1, g2, denom, step):
        np.multiply(beta1, m, out=m_out)
        m_out += np.multiply(1 - beta1, g, out=g1)
        np.multiply(beta2, v, out=v_out)
        g2 = np.multiply(1 - beta2, g, out=g2)
        g2 *= g
        v_out += g2
        np.sqrt(v_out, out=denom)
        denom += epsilon
        np.multiply(lr_t, m_out, out=step)
        step /= denom
        np.subtract(w, step, out=w_out)

    _blockwise(kernel, (w, g, m, v), (w_out, m_out, v_out),
               (np.result_type(1 - beta1, g), np.result_type(1 - beta2, g), v_out.dtype,
                step_dtype))
    return w_out, m_out, v_out


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


# --- PyTorch-style optimizers: SGD, AdamW, RMSprop --------------------------------------------
#
# They follow torch.optim's update rules (single-tensor path) rather than the classic homework
# forms above, and share: a learning rate that is a float or a schedule of the step (see
# fnn.schedules), the step count t and the next update's learning rate in the state, a
# weight-decay mask, and optional clipping of the gradients by their global norm.

def clip_by_global_norm(grads: Any, max_norm: float) -> tuple[Any, float]:
    """Scale a gradient tree so that its global 2-norm is at most ``max_norm``, as
    torch.nn.utils.clip_grad_norm_: norm = sqrt(Σ over all array leaves of Σ g²);
    every leaf times min(1, max_norm / (norm + 1e-6)).

    Returns the new tree (new arrays, each in its own dtype) and the norm before clipping
    (a Python float; nan or inf if a gradient is not finite, and then so are the results).
    """
    if isinstance(max_norm, bool) or not isinstance(max_norm, numbers.Real) \
            or not 0 < max_norm < np.inf:
        raise ValueError(f"clip_by_global_norm: max_norm must be a positive finite number, "
                         f"got {max_norm!r}")
    norm = math.hypot(*(float(np.linalg.norm(g.reshape(-1))) for g in tree.leaves(grads)
                        if isinstance(g, np.ndarray)))
    coef = min(float(max_norm) / (norm + 1e-6), 1.0)
    return tree.map(lambda g: g * coef if isinstance(g, np.ndarray) else g, grads), norm


def leaf_paths(t: Any) -> list[tuple]:
    """The path of every leaf of tree ``t`` (in :func:`fnn.tree.leaves` order): a tuple of
    indices (tuples, lists) and field names (attrs records), e.g. ``(0, "W")`` for the weight
    of the first layer of a Sequential's params."""
    if tree.is_leaf(t):
        return [()]
    if isinstance(t, (tuple, list)):
        keys, kids = range(len(t)), list(t)
    else:
        keys = [f.name for f in attrs.fields(type(t))]
        kids = [getattr(t, k) for k in keys]
    return [(k, *path) for k, kid in zip(keys, kids) for path in leaf_paths(kid)]


def rank_at_least_2(path: tuple, leaf: Any) -> bool:
    """A weight-decay mask predicate: decay weight matrices and kernels (rank >= 2), not biases
    or normalisation parameters (rank 1)."""
    return np.ndim(leaf) >= 2


def decay_mask(mask: Any, params: Any) -> Any:
    """The weight-decay mask as a tree of bools like ``params``: all True for None; for a
    callable, ``mask(path, leaf)`` at every leaf (see :func:`leaf_paths`); a tree of bools is
    checked against params' structure and returned."""
    if mask is None:
        return tree.map(lambda _: True, params)
    if callable(mask):
        return tree.unflatten(params, [bool(mask(path, leaf)) for path, leaf in
                                       zip(leaf_paths(params), tree.leaves(params))])
    try:
        return tree.map(lambda m, _: bool(m), mask, params)
    except ValueError as err:
        raise ValueError(f"weight_decay_mask: a tree of bools must have the structure of the "
                         f"params ({err})") from err


def _max_grad_norm(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None:
        finite_real(instance, attribute, value)
        if value <= 0:
            raise ValueError(f"{type(instance).__name__}: {attribute.name} must be None or "
                             f"positive, got {value!r}")


def _mask_field() -> Any:
    return attrs.field(default=None, kw_only=True)


def _clip_field() -> Any:
    return attrs.field(default=None, kw_only=True, converter=real_float,
                       validator=_max_grad_norm)


class _Stepwise:
    """Shared by SGD, AdamW and RMSprop. A subclass has the fields learning_rate,
    weight_decay_mask and max_grad_norm and defines ``_State`` (a record with fields t,
    learning_rate and one tree per slot), ``_slots()`` (the slot names in use) and
    ``_leaf(w, g, slots, learning_rate, t, decay)`` -> (new w, *new slots) for one array."""

    def learning_rate_at(self, step: int) -> float:
        """The learning rate of the update after ``step`` updates (a float, or the schedule's
        value at ``step``)."""
        lr = self.learning_rate
        return float(lr(step)) if callable(lr) else lr

    def init(self, params: Any) -> Any:
        slots = {name: tree.map(np.zeros_like, params) for name in self._slots()}
        return self._State(t=0, learning_rate=self.learning_rate_at(0), **slots)

    def update(self, params: Any, grads: Any, state: Any) -> tuple[Any, Any]:
        if self.max_grad_norm is not None:
            grads, _ = clip_by_global_norm(grads, self.max_grad_norm)
        lr, t, names = self.learning_rate_at(state.t), state.t + 1, self._slots()

        def leaf(w: np.ndarray, g: np.ndarray, decay: bool, *slots: np.ndarray) -> tuple:
            return self._leaf(w, g.astype(w.dtype, copy=False), slots, lr, t, decay)

        new_params, *slots = tree.map_multi(leaf, 1 + len(names), params, grads,
                                            decay_mask(self.weight_decay_mask, params),
                                            *(getattr(state, n) for n in names))
        return new_params, self._State(t=t, learning_rate=self.learning_rate_at(t),
                                       **dict(zip(names, slots)))


@attrs.frozen
class SGDBufferState:
    t: int  # number of updates taken
    learning_rate: float  # the next update's learning rate
    momentum_buffer: Any = None  # a tree like params (None without momentum)


@attrs.frozen
class SGD(_Stepwise):
    """SGD as torch.optim.SGD. With g the gradient (clipped if max_grad_norm is set):

    g ← g + weight_decay·w (where the mask allows);
    with momentum: b ← g at the first update, else b ← momentum·b + (1 − dampening)·g, and
    g ← g + momentum·b (nesterov) or g ← b; then w ← w − lr·g.

    For a constant lr, dampening 0 and no decay this gives the parameters of the classic
    SGDMomentum (whose buffer is lr·b), up to rounding.
    """

    learning_rate: Any = attrs.field(default=1e-3, converter=real_float,
                                     validator=learning_rate_validator)
    momentum: float = attrs.field(default=0.0, converter=real_float, validator=_nonneg())
    dampening: float = attrs.field(default=0.0, converter=real_float,
                                   validator=in_range(0.0, 1.0, high_open=False))
    weight_decay: float = attrs.field(default=0.0, converter=real_float, validator=_nonneg())
    nesterov: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    weight_decay_mask: Any = _mask_field()
    max_grad_norm: float | None = _clip_field()

    _State = SGDBufferState

    def __attrs_post_init__(self) -> None:
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening = 0, got "
                             f"momentum={self.momentum!r}, dampening={self.dampening!r}")

    def _slots(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum else ()

    def _leaf(self, w: np.ndarray, g: np.ndarray, slots: tuple, lr: float, t: int,
              decay: bool) -> tuple:
        if decay and self.weight_decay:
            g = g + self.weight_decay * w
        if not self.momentum:
            return (w - lr * g,)
        (b,) = slots
        b = g.copy() if t == 1 else self.momentum * b + (1 - self.dampening) * g
        step = g + self.momentum * b if self.nesterov else b
        return w - lr * step, b


@attrs.frozen
class AdamWState:
    t: int  # number of updates taken
    learning_rate: float  # the next update's learning rate
    m: Any  # first moments, a tree like params
    v: Any  # second moments, a tree like params


@attrs.frozen
class AdamW(_Stepwise):
    """AdamW (decoupled weight decay) as torch.optim.AdamW. At update t with learning rate lr:

    w ← w·(1 − lr·weight_decay) (where the mask allows);
    m ← m + (1 − beta1)·(g − m); v ← beta2·v + (1 − beta2)·g²;
    w ← w − lr/(1 − beta1ᵗ) · m / (sqrt(v)/sqrt(1 − beta2ᵗ) + epsilon).

    epsilon is added after the bias correction of v (torch's form; the classic Adam adds it
    before). With weight_decay = 0 this is torch.optim.Adam.
    """

    learning_rate: Any = attrs.field(default=1e-3, converter=real_float,
                                     validator=learning_rate_validator)
    beta1: float = attrs.field(default=0.9, converter=real_float, validator=in_range(0.0, 1.0))
    beta2: float = attrs.field(default=0.999, converter=real_float,
                               validator=in_range(0.0, 1.0))
    epsilon: float = attrs.field(default=1e-8, converter=real_float, validator=_nonneg())
    weight_decay: float = attrs.field(default=1e-2, converter=real_float, validator=_nonneg())
    weight_decay_mask: Any = _mask_field()
    max_grad_norm: float | None = _clip_field()

    _State = AdamWState

    def _slots(self) -> tuple[str, ...]:
        return ("m", "v")

    def _leaf(self, w: np.ndarray, g: np.ndarray, slots: tuple, lr: float, t: int,
              decay: bool) -> tuple:
        m, v = slots
        if decay and self.weight_decay:
            w = w * (1 - lr * self.weight_decay)
        m = m + (1 - self.beta1) * (g - m)
        v = self.beta2 * v + (1 - self.beta2) * (g * g)
        denom = np.sqrt(v)
        denom /= math.sqrt(1 - self.beta2 ** t)
        denom += self.epsilon
        return w - (lr / (1 - self.beta1 ** t)) * (m / denom), m, v


@attrs.frozen
class RMSpropState:
    t: int  # number of updates taken
    learning_rate: float  # the next update's learning rate
    square_avg: Any  # moving average of g², a tree like params
    momentum_buffer: Any = None  # a tree like params (None without momentum)
    grad_avg: Any = None  # moving average of g, a tree like params (None unless centered)


@attrs.frozen
class RMSprop(_Stepwise):
    """RMSprop as torch.optim.RMSprop:

    g ← g + weight_decay·w (where the mask allows); s ← alpha·s + (1 − alpha)·g²;
    centered: a ← a + (1 − alpha)·(g − a), d = sqrt(s − a²) + epsilon; else d = sqrt(s) + epsilon;
    with momentum: b ← momentum·b + g/d, w ← w − lr·b; else w ← w − lr·g/d.
    """

    learning_rate: Any = attrs.field(default=1e-2, converter=real_float,
                                     validator=learning_rate_validator)
    alpha: float = attrs.field(default=0.99, converter=real_float,
                               validator=in_range(0.0, 1.0, high_open=False))
    epsilon: float = attrs.field(default=1e-8, converter=real_float, validator=_nonneg())
    weight_decay: float = attrs.field(default=0.0, converter=real_float, validator=_nonneg())
    momentum: float = attrs.field(default=0.0, converter=real_float, validator=_nonneg())
    centered: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    weight_decay_mask: Any = _mask_field()
    max_grad_norm: float | None = _clip_field()

    _State = RMSpropState

    def _slots(self) -> tuple[str, ...]:
        return ("square_avg",) + (("momentum_buffer",) if self.momentum else ()) \
            + (("grad_avg",) if self.centered else ())

    def _leaf(self, w: np.ndarray, g: np.ndarray, slots: tuple, lr: float, t: int,
              decay: bool) -> tuple:
        old = dict(zip(self._slots(), slots))
        if decay and self.weight_decay:
            g = g + self.weight_decay * w
        new = {"square_avg": self.alpha * old["square_avg"] + (1 - self.alpha) * (g * g)}
        d = new["square_avg"]
        if self.centered:
            a = new["grad_avg"] = old["grad_avg"] + (1 - self.alpha) * (g - old["grad_avg"])
            d = d - a * a
        d = np.sqrt(d)
        d += self.epsilon
        step = g / d
        if self.momentum:
            step = new["momentum_buffer"] = self.momentum * old["momentum_buffer"] + step
        return (w - lr * step, *(new[name] for name in self._slots()))
