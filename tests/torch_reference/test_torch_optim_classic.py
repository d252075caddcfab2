"""PyTorch reference for the classic optimizers SGDMomentum and Adam: against their classic
formulas written in torch ops over 20 steps (float64 to 1e-12), and against torch.optim.SGD
and torch.optim.Adam (which places epsilon differently). ``PYTHONPATH=tests python
tests/torch_reference/test_torch_optim_classic.py`` prints the largest absolute difference
per case and dtype."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from optim_cases import run
from torch_kit import (
    DTYPES,
    OPTIMIZER_TOL,
    SIZES,
    Case,
    Compared,
    array_leaves,
    assert_matches,
    leafwise,
    max_abs_diff,
    print_report,
    seeded,
    tensor,
    torch,
)

import fnn
from fnn import tree
from fnn.linear import LinearParams, ScalingParams

# --- optimizers -------------------------------------------------------------------------------

STEPS = 20


def optimizer_problem(dtype: type, rng: np.random.Generator, n: int) -> tuple[Any, list]:
    """A params tree as networks have them (records, and () for a layer with no params) and
    STEPS gradient trees like it."""
    params = (LinearParams(W=rng.standard_normal((3, n)), b=rng.standard_normal(3)), (),
              ScalingParams(gamma=rng.standard_normal(n), beta=rng.standard_normal(n)))
    params = tree.cast(params, dtype)
    grads = [tree.map(lambda p: rng.standard_normal(p.shape).astype(dtype), params)
             for _ in range(STEPS)]
    return params, grads


def case_sgd(dtype: type, rng: np.random.Generator, n: int) -> Compared:
    """SGDMomentum against the classic formula on torch tensors:
    v = momentum * v + learning_rate * g; w = w - v."""
    lr, momentum = 0.05, 0.9
    params, grads = optimizer_problem(dtype, rng, n)
    new, state = run(fnn.SGDMomentum(learning_rate=lr, momentum=momentum), params, grads)
    w = [tensor(p) for p in array_leaves(params)]
    v = [torch.zeros_like(p) for p in w]
    for g in grads:
        for i, gi in enumerate(array_leaves(g)):
            v[i] = momentum * v[i] + lr * tensor(gi)
            w[i] = w[i] - v[i]
    return leafwise("w", new, w) + leafwise("accumulated_grads", state.accumulated_grads, v)


def case_adam(dtype: type, rng: np.random.Generator, n: int) -> Compared:
    """Adam against the classic formula on torch tensors, step t = 1, 2, ...:
    m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g; lr_t = lr*sqrt(1-b2^t)/(1-b1^t);
    w = w - lr_t * m / (sqrt(v) + eps)."""
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    params, grads = optimizer_problem(dtype, rng, n)
    new, state = run(fnn.Adam(learning_rate=lr, beta1=b1, beta2=b2, epsilon=eps), params, grads)
    w = [tensor(p) for p in array_leaves(params)]
    m = [torch.zeros_like(p) for p in w]
    v = [torch.zeros_like(p) for p in w]
    for t, g in enumerate(grads, start=1):
        lr_t = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        for i, gi in enumerate(array_leaves(g)):
            gt = tensor(gi)
            m[i] = b1 * m[i] + (1 - b1) * gt
            v[i] = b2 * v[i] + (1 - b2) * gt * gt
            w[i] = w[i] - lr_t * m[i] / (torch.sqrt(v[i]) + eps)
    assert state.t == STEPS
    return leafwise("w", new, w) + leafwise("m", state.m, m) + leafwise("v", state.v, v)


OPTIMIZER_CASES: dict[str, Case] = {"SGDMomentum": case_sgd, "Adam": case_adam}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name", OPTIMIZER_CASES)
def test_optimizer_matches_classic_formula(name: str, n: int, dtype: type) -> None:
    assert_matches(OPTIMIZER_CASES[name](dtype, seeded(name, dtype, n), n), dtype,
                   OPTIMIZER_TOL)


def torch_optimizer_run(make: Callable, params: Any, grads: list,
                        before_step: Callable[[Any, int], None] = lambda opt, t: None
                        ) -> list[torch.Tensor]:
    """Run a torch.optim optimizer over the leaves of ``params`` for the given gradients."""
    w = [tensor(p, grad=True) for p in array_leaves(params)]
    opt = make(w)
    for t, g in enumerate(grads, start=1):
        for wi, gi in zip(w, array_leaves(g)):
            wi.grad = tensor(gi)
        before_step(opt, t)
        opt.step()
    return w


def test_torch_optim_sgd() -> None:
    """torch.optim.SGD keeps the buffer b = momentum * b + g and steps w -= lr * b; for a fixed
    lr that is our v / lr, so the parameters agree (not bit for bit: other rounding)."""
    lr, momentum = 0.05, 0.9
    params, grads = optimizer_problem(np.float64, np.random.default_rng(1), 4)
    new, _ = run(fnn.SGDMomentum(learning_rate=lr, momentum=momentum), params, grads)
    w = torch_optimizer_run(lambda w: torch.optim.SGD(w, lr=lr, momentum=momentum), params,
                            grads)
    assert_matches(leafwise("w", new, w), np.float64, OPTIMIZER_TOL)


@pytest.mark.parametrize("gradient_scale", [1.0, 1e-8])
def test_torch_optim_adam(gradient_scale: float) -> None:
    """Why torch.optim.Adam differs from the classic Adam: torch divides by
    sqrt(v) / sqrt(1 - b2^t) + eps, i.e. steps lr*sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) +
    eps * sqrt(1-b2^t)), while the classic form adds eps to sqrt(v) outside the bias
    correction. Setting torch's eps to eps / sqrt(1 - b2^t) before step t makes them agree;
    with its eps left at eps they differ visibly once gradients are as small as eps."""
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    params, grads = optimizer_problem(np.float64, np.random.default_rng(2), 4)
    grads = [tree.map(lambda g: g * gradient_scale, g) for g in grads]
    new, _ = run(fnn.Adam(learning_rate=lr, beta1=b1, beta2=b2, epsilon=eps), params, grads)

    def rescale_eps(opt: Any, t: int) -> None:
        opt.param_groups[0]["eps"] = eps / math.sqrt(1 - b2 ** t)

    def make(w: list) -> Any:
        return torch.optim.Adam(w, lr=lr, betas=(b1, b2), eps=eps)

    w = torch_optimizer_run(make, params, grads, rescale_eps)
    assert_matches(leafwise("w", new, w), np.float64, OPTIMIZER_TOL)
    if gradient_scale < 1e-6:
        plain = torch_optimizer_run(make, params, grads)
        assert max_abs_diff(leafwise("w", new, plain)) > 1e-3


if __name__ == "__main__":
    print_report(OPTIMIZER_CASES)
