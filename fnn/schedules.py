"""Learning-rate schedules: pure functions of the step.

A schedule is any callable ``schedule(step) -> float``, where ``step`` is the number of updates
already taken: the first update uses ``schedule(0)``. The optimizers SGD, AdamW and RMSprop of
:mod:`fnn.optim` accept one in place of a float ``learning_rate`` and evaluate it at their
state's step count ``t``. The schedules here are frozen records (inspectable, comparable, saved
with an optimizer spec by :func:`fnn.save`); each matches a ``torch.optim.lr_scheduler`` stepped
once per optimizer step:

- ``Constant(value)``: value (no scheduler);
- ``StepDecay(init_value, step_size, gamma=0.1)``: init_value·gamma^(step // step_size)
  (``StepLR``);
- ``ExponentialDecay(init_value, gamma)``: init_value·gamma^step (``ExponentialLR``);
- ``WarmupCosineDecay(peak_value, total_steps, warmup_steps=0, init_value=0.0,
  end_value=0.0)``: linear from init_value to peak_value over warmup_steps, then a half cosine
  down to end_value at total_steps, end_value after (``LinearLR`` then ``CosineAnnealingLR``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np

from .core import in_range, positive_int, real_float, spec

__all__ = ["Schedule", "Constant", "StepDecay", "ExponentialDecay", "WarmupCosineDecay"]

Schedule = Callable[[int], float]  # step (updates already taken) -> learning rate

_nonneg = in_range(0.0, np.inf)


def _is_count(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= 0


def _steps(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not _is_count(value):
        raise ValueError(f"{type(instance).__name__}: {attribute.name} must be a non-negative "
                         f"integer, got {value!r}")


def _checked(schedule: Any, step: Any) -> int:
    """``step`` as an int, or a ValueError naming the schedule."""
    if not _is_count(step):
        raise ValueError(f"{schedule!r}: step must be a non-negative integer, got {step!r}")
    return int(step)


def _scaled_power(scale: float, base: float, exponent: int) -> float:
    """scale · base^exponent, inf where it overflows a float (a gamma > 1 after many steps;
    the optimizer then refuses the rate) instead of Python's OverflowError."""
    try:
        return scale * base ** exponent
    except OverflowError:
        return math.inf if scale else 0.0


@spec
class Constant:
    """lr = value at every step."""

    value: float = attrs.field(converter=real_float, validator=_nonneg)

    def __call__(self, step: int) -> float:
        _checked(self, step)
        return self.value


@spec
class StepDecay:
    """lr = init_value · gamma^(step // step_size), as torch's StepLR."""

    init_value: float = attrs.field(converter=real_float, validator=_nonneg)
    step_size: int = attrs.field(validator=positive_int)
    gamma: float = attrs.field(default=0.1, converter=real_float, validator=_nonneg)

    def __call__(self, step: int) -> float:
        return _scaled_power(self.init_value, self.gamma, _checked(self, step) // self.step_size)


@spec
class ExponentialDecay:
    """lr = init_value · gamma^step, as torch's ExponentialLR."""

    init_value: float = attrs.field(converter=real_float, validator=_nonneg)
    gamma: float = attrs.field(converter=real_float, validator=_nonneg)

    def __call__(self, step: int) -> float:
        return _scaled_power(self.init_value, self.gamma, _checked(self, step))


@spec
class WarmupCosineDecay:
    """Linear warmup, then cosine decay:

    - step < warmup_steps: lr = init_value + (peak_value − init_value) · step / warmup_steps;
    - else, with k = min(step − warmup_steps, D) and D = total_steps − warmup_steps:
      lr = end_value + (peak_value − end_value) · (1 + cos(π k / D)) / 2.

    So lr = peak_value at step warmup_steps and end_value from step total_steps on. As torch's
    ``SequentialLR([LinearLR(start_factor=init/peak, total_iters=warmup_steps),
    CosineAnnealingLR(T_max=D, eta_min=end_value)], milestones=[warmup_steps])``.
    """

    peak_value: float = attrs.field(converter=real_float, validator=_nonneg)
    total_steps: int = attrs.field(validator=positive_int)
    warmup_steps: int = attrs.field(default=0, validator=_steps)
    init_value: float = attrs.field(default=0.0, converter=real_float, validator=_nonneg)
    end_value: float = attrs.field(default=0.0, converter=real_float, validator=_nonneg)

    def __attrs_post_init__(self) -> None:
        if self.warmup_steps >= self.total_steps:
            raise ValueError(f"WarmupCosineDecay: warmup_steps ({self.warmup_steps}) must be "
                             f"less than total_steps ({self.total_steps})")

    def __call__(self, step: int) -> float:
        step = _checked(self, step)
        if step < self.warmup_steps:
            return self.init_value + (self.peak_value - self.init_value) * step / self.warmup_steps
        decay = self.total_steps - self.warmup_steps
        k = min(step - self.warmup_steps, decay)
        return self.end_value + (self.peak_value - self.end_value) * (
            1 + math.cos(math.pi * k / decay)) / 2


def learning_rate_validator(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Validator: a finite learning rate >= 0, or a schedule (any callable of the step)."""
    if not callable(value):
        _nonneg(instance, attribute, value)
