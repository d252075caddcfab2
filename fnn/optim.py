"""Optimizers: frozen specs with ``init(params)`` and ``update(params, grads, state)``.

All are members of one base, :class:`Optimizer`: a subclass declares its hyperparameters, its
state record and one per-leaf rule; the base walks the trees, checks them, applies the gradient
transformations (clipping, weight decay: :mod:`fnn.transforms`) and evaluates the learning rate
or schedule (:mod:`fnn.schedules`). SGDMomentum and Adam reproduce the classic homework formulas
operation for operation (bit for bit the classic ``sgd_momentum`` / ``adam_optimizer``); SGD,
AdamW and RMSprop follow torch.optim; Lion follows Chen et al. 2023. Each leaf's update keeps
the param's dtype.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import attrs
import numpy as np

from ._optim_kernels import adam_leaf, adam_step_size, sgd_momentum_leaf
from .core import boolean, in_range, positive_real, real_float, spec
from .schedules import learning_rate_validator
from .transforms import (
    AddDecayedWeights,
    Chain,
    ClipByGlobalNorm,
    DecoupledWeightDecay,
    Optimizer,
    chain,
    clip_by_global_norm,
    decay_mask,
    mask_field,
    nonneg_field,
    rank_at_least_2,
)

__all__ = ["Optimizer", "chain", "Chain", "SGDMomentum", "SGDState", "Adam", "AdamState", "SGD",
           "SGDBufferState", "AdamW", "AdamWState", "RMSprop", "RMSpropState", "Lion",
           "LionState", "clip_by_global_norm", "decay_mask", "rank_at_least_2"]


# --- the fields the optimizers share, declared once --------------------------------------------

def _unit(default: float, closed: bool = False) -> Any:
    """A field in [0, 1) (or [0, 1] when ``closed``)."""
    return attrs.field(default=default, converter=real_float,
                       validator=in_range(0.0, 1.0, high_open=not closed))


def _rate(default: float) -> Any:
    """learning_rate: a float >= 0 or a schedule of the step."""
    return attrs.field(default=default, converter=real_float, validator=learning_rate_validator)


def _mask_field() -> Any:
    return mask_field(kw_only=True)


def _clip_field() -> Any:
    return attrs.field(default=None, kw_only=True, converter=real_float,
                       validator=attrs.validators.optional(positive_real))


def _flag() -> Any:
    return attrs.field(default=False, validator=boolean)


class _Shorthands:
    """The keyword shorthands ``max_grad_norm`` and ``weight_decay`` (with
    ``weight_decay_mask``) as transformations; ``_decay`` is the weight-decay transformation
    class (AddDecayedWeights or DecoupledWeightDecay)."""

    _decay: ClassVar[type]

    def transforms(self) -> tuple:
        clip = () if self.max_grad_norm is None else (ClipByGlobalNorm(self.max_grad_norm),)
        decay = (self._decay(self.weight_decay, self.weight_decay_mask),) \
            if self.weight_decay else ()
        return clip + decay


# --- the classic forms: SGDMomentum, Adam ------------------------------------------------------

@attrs.frozen
class SGDState:
    """The state of :class:`SGDMomentum`: v, a tree like params."""

    accumulated_grads: Any  # a tree like params


@spec
class SGDMomentum(Optimizer):
    """SGD with momentum (classic form): v = momentum * v + learning_rate * g; w -= v."""

    learning_rate: float = nonneg_field()
    momentum: float = _unit(0.0)

    State = SGDState

    def slots(self) -> tuple[str, ...]:
        return ("accumulated_grads",)

    def rule(self, w: np.ndarray, g: np.ndarray, slots: tuple, lr: float, t: int,
             out: np.ndarray | None = None) -> tuple:
        return sgd_momentum_leaf(w, g, slots[0], lr, self.momentum, out=(out, None))


@attrs.frozen
class AdamState:
    """The state of :class:`Adam`: the step count and the two moment trees."""

    t: int  # number of steps taken
    m: Any  # first moments, a tree like params
    v: Any  # second moments, a tree like params


@spec
class Adam(Optimizer):
    """Adam (classic form): m, v moving moments of g and g*g; with
    lr_t = learning_rate * sqrt(1 - beta2^t) / (1 - beta1^t), w -= lr_t * m / (sqrt(v) + epsilon).
    """

    learning_rate: float = nonneg_field(1e-3)
    beta1: float = _unit(0.9)
    beta2: float = _unit(0.999)
    epsilon: float = nonneg_field(1e-8)

    State = AdamState

    def slots(self) -> tuple[str, ...]:
        return ("m", "v")

    def rule(self, w: np.ndarray, g: np.ndarray, slots: tuple, lr: float, t: int,
             out: np.ndarray | None = None) -> tuple:
        lr_t = adam_step_size(lr, self.beta1, self.beta2, t)
        return adam_leaf(w, g, *slots, lr_t, self.beta1, self.beta2, self.epsilon,
                         out=(out, None, None))


# --- PyTorch's forms: SGD, AdamW, RMSprop; and Lion ---------------------------------------------
#
# They follow torch.optim's update rules (single-tensor path) rather than the classic homework
# forms above, and share: a learning rate that is a float or a schedule of the step (see
# fnn.schedules), the step count t and the next update's learning rate in the state, and the
# shorthands weight_decay / weight_decay_mask / max_grad_norm for the transformations of
# fnn.transforms.

@attrs.frozen
class SGDBufferState:
    """The state of :class:`SGD` (the buffer is None without momentum)."""

    t: int  # number of updates taken
    learning_rate: float  # the next update's learning rate
    momentum_buffer: Any = None  # a tree like params (None without momentum)


@spec
class SGD(_Shorthands, Optimizer):
    """SGD as torch.optim.SGD. With g the gradient (clipped if max_grad_norm is set):

    g ← g + weight_decay·w (where the mask allows);
    with momentum: b ← g at the first update, else b ← momentum·b + (1 − dampening)·g, and
    g ← g + momentum·b (nesterov) or g ← b; then w ← w − lr·g.

    For a constant lr, dampening 0 and no decay this gives the parameters of the classic
    SGDMomentum (whose buffer is lr·b), up to rounding.
    """

    learning_rate: Any = _rate(1e-3)
    momentum: float = nonneg_field(0.0)
    dampening: float = _unit(0.0, closed=True)
    weight_decay: float = nonneg_field(0.0)
    nesterov: bool = _flag()
    weight_decay_mask: Any = _mask_field()
    max_grad_norm: float | None = _clip_field()

    State = SGDBufferState
    _decay = AddDecayedWeights

    def __attrs_post_init__(self) -> None:
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening = 0, got "
                             f"momentum={self.momentum!r}, dampening={self.dampening!r}")

    def slots(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum else ()

    def rule(self, w: np.ndarray, g: np.ndarray, slots: tuple, lr: float, t: int,
             out: np.ndarray | None = None) -> tuple:
        if not self.momentum:
            return (np.subtract(w, lr * g, out=out),)
        (b,) = slots
        b = g.copy() if t == 1 else self.momentum * b + (1 - self.dampening) * g
        step = g + self.momentum * b if self.nesterov else b
        return np.subtract(w, lr * step, out=out), b


@attrs.frozen
class AdamWState:
    """The state of :class:`AdamW`."""

    t: int  # number of updates taken
    learning_rate: float  # the next update's learning rate
    m: Any  # first moments, a tree like params
    v: Any  # second moments, a tree like params


@spec
class AdamW(_Shorthands, Optimizer):
    """AdamW (decoupled weight decay) as torch.optim.AdamW. At update t with learning rate lr:

    w ← w·(1 − lr·weight_decay) (where the mask allows);
    m ← m + (1 − beta1)·(g − m); v ← beta2·v + (1 − beta2)·g²;
    w ← w − lr/(1 − beta1ᵗ) · m / (sqrt(v)/sqrt(1 − beta2ᵗ) + epsilon).

    epsilon is added after the bias correction of v (torch's form; the classic Adam adds it
    before). With weight_decay = 0 this is torch.optim.Adam.
    """

    learning_rate: Any = _rate(1e-3)
    beta1: float = _unit(0.9)
    beta2: float = _unit(0.999)
    epsilon: float = nonneg_field(1e-8)
    weight_decay: float = nonneg_field(1e-2)
    weight_decay_mask: Any = _mask_field()
    max_grad_norm: float | None = _clip_field()

    State = AdamWState
    _decay = DecoupledWeightDecay

    def slots(self) -> tuple[str, ...]:
        return ("m", "v")

    def rule(self, w: np.ndarray, g: np.ndarray, slots: tuple, lr: float, t: int,
             out: np.ndarray | None = None) -> tuple:
        m, v = slots
        m = m + (1 - self.beta1) * (g - m)
        v = self.beta2 * v + (1 - self.beta2) * (g * g)
        denom = np.sqrt(v)
        denom /= math.sqrt(1 - self.beta2 ** t)
        denom += self.epsilon
        return np.subtract(w, (lr / (1 - self.beta1 ** t)) * (m / denom), out=out), m, v


@attrs.frozen
class RMSpropState:
    """The state of :class:`RMSprop` (unused buffers are None)."""

    t: int  # number of updates taken
    learning_rate: float  # the next update's learning rate
    square_avg: Any  # moving average of g², a tree like params
    momentum_buffer: Any = None  # a tree like params (None without momentum)
    grad_avg: Any = None  # moving average of g, a tree like params (None unless centered)


@spec
class RMSprop(_Shorthands, Optimizer):
    """RMSprop as torch.optim.RMSprop:

    g ← g + weight_decay·w (where the mask allows); s ← alpha·s + (1 − alpha)·g²;
    centered: a ← a + (1 − alpha)·(g − a), d = sqrt(s − a²) + epsilon; else d = sqrt(s) + epsilon;
    with momentum: b ← momentum·b + g/d, w ← w − lr·b; else w ← w − lr·g/d.
    """

    learning_rate: Any = _rate(1e-2)
    alpha: float = _unit(0.99, closed=True)
    epsilon: float = nonneg_field(1e-8)
    weight_decay: float = nonneg_field(0.0)
    momentum: float = nonneg_field(0.0)
    centered: bool = _flag()
    weight_decay_mask: Any = _mask_field()
    max_grad_norm: float | None = _clip_field()

    State = RMSpropState
    _decay = AddDecayedWeights

    def slots(self) -> tuple[str, ...]:
        return ("square_avg",) + (("momentum_buffer",) if self.momentum else ()) \
            + (("grad_avg",) if self.centered else ())

    def rule(self, w: np.ndarray, g: np.ndarray, slots: tuple, lr: float, t: int,
             out: np.ndarray | None = None) -> tuple:
        old = dict(zip(self.slots(), slots))
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
        return (np.subtract(w, lr * step, out=out), *(new[name] for name in self.slots()))


@attrs.frozen
class LionState:
    """The state of :class:`Lion`."""

    t: int  # number of updates taken
    learning_rate: float  # the next update's learning rate
    m: Any  # moving average of g, a tree like params


@spec
class Lion(_Shorthands, Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), as
    lion-pytorch (whose defaults these are). At each update, with learning rate lr:

    w ← w·(1 − lr·weight_decay) (where the mask allows);
    w ← w − lr·sign(beta1·m + (1 − beta1)·g); m ← beta2·m + (1 − beta2)·g.
    """

    learning_rate: Any = _rate(1e-4)
    beta1: float = _unit(0.9)
    beta2: float = _unit(0.99)
    weight_decay: float = nonneg_field(0.0)
    weight_decay_mask: Any = _mask_field()
    max_grad_norm: float | None = _clip_field()

    State = LionState
    _decay = DecoupledWeightDecay

    def slots(self) -> tuple[str, ...]:
        return ("m",)

    def rule(self, w: np.ndarray, g: np.ndarray, slots: tuple, lr: float, t: int,
             out: np.ndarray | None = None) -> tuple:
        (m,) = slots
        direction = np.sign(self.beta1 * m + (1 - self.beta1) * g)
        new_m = self.beta2 * m + (1 - self.beta2) * g  # before out (maybe g) is written
        return np.subtract(w, lr * direction, out=out), new_m
