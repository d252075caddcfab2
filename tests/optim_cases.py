"""The optimizer case table (one for every generic optimizer test) and its helpers: ``run``
(init, then one update per gradient tree) and ``a_tree`` (a params-like tree of tuples, lists,
attrs records and an empty entry)."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

import fnn
from fnn import schedules
from fnn.linear import LinearParams
from fnn.optim import chain, rank_at_least_2
from fnn.transforms import AddDecayedWeights, ClipByGlobalNorm, DecoupledWeightDecay


def run(opt: Any, params: Any, grads: list) -> tuple[Any, Any]:
    state = opt.init(params)
    for g in grads:
        params, state = opt.update(params, g, state)
    return params, state


@attrs.frozen
class Block:
    w: np.ndarray
    rest: list


def a_tree(dtype: Any = np.float64, seed: int = 3) -> tuple:
    """A params-like tree of tuples, lists and attrs records (and an empty entry)."""
    r = fnn.generator(seed)
    a = lambda *shape: r.standard_normal(shape).astype(dtype)  # noqa: E731
    return (LinearParams(W=a(2, 3), b=a(2)), (), [a(4), Block(w=a(1, 2), rest=[a(3)])])


# leafwise: each leaf's update depends on that leaf only (no global clipping)
CLASSIC = {"sgd-momentum": fnn.SGDMomentum(learning_rate=0.1, momentum=0.9),
           "adam": fnn.Adam(learning_rate=0.01)}
NUMPY_SCALARS = {
    "sgd-momentum-numpy-scalars": fnn.SGDMomentum(learning_rate=np.float64(0.1),
                                                  momentum=np.float64(0.9)),
    "adam-numpy-scalars": fnn.Adam(*map(np.float64, (0.01, 0.9, 0.999, 1e-8)))}
TORCH = {
    "sgd": fnn.SGD(0.1),
    "sgd-nesterov-decay": fnn.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
    "sgd-dampening": fnn.SGD(0.1, momentum=0.5, dampening=0.5),
    "adamw": fnn.AdamW(0.01),
    "adamw-masked": fnn.AdamW(0.01, weight_decay=0.5, weight_decay_mask=rank_at_least_2),
    "rmsprop": fnn.RMSprop(),
    "rmsprop-all": fnn.RMSprop(momentum=0.9, centered=True, weight_decay=0.1),
    "scheduled": fnn.AdamW(schedules.WarmupCosineDecay(0.1, total_steps=5, warmup_steps=2)),
}
LION = {"lion": fnn.Lion(0.01),
        "lion-decay-masked": fnn.Lion(0.01, weight_decay=0.5, weight_decay_mask=rank_at_least_2)}
LEAFWISE = {**CLASSIC, **TORCH, **LION}
# not leafwise: clipping by the global norm couples the leaves
CLIPPED = {f"{k}-clipped": attrs.evolve(o, max_grad_norm=0.5) for k, o in {**TORCH,
                                                                          **LION}.items()}
CHAINED = {
    "chain-clip-decay-sgd": chain(ClipByGlobalNorm(0.5), AddDecayedWeights(0.1),
                                  fnn.SGD(0.1, momentum=0.9)),
    "chain-decay-adam": chain(DecoupledWeightDecay(0.1, rank_at_least_2), fnn.Adam(0.01)),
}
ALL = {**LEAFWISE, **NUMPY_SCALARS, **CLIPPED, **CHAINED}


def inner(opt: Any) -> Any:
    """The optimizer itself, or a Chain's optimizer."""
    return opt.optimizer if isinstance(opt, fnn.optim.Chain) else opt
