"""PyTorch reference tests for the optimizers SGD, AdamW, RMSprop and Lion (against
lion-pytorch's update, written here in torch ops), the learning-rate schedules and
clip_by_global_norm.

Trajectories: the same initial parameters of a small MLP go to our optimizer and to
torch.optim's; at every one of 20 steps each side takes the gradient of the same torch loss at
its own current parameters, and the parameters (and the learning rate) are compared after every
step. Weight-decay masks are torch parameter groups with weight_decay 0; schedules are torch
lr_schedulers stepped after each optimizer step; max_grad_norm is clip_grad_norm_ before it.

Tolerances: float64 atol = rtol = 1e-10, float32 atol = rtol = 1e-5 (torch_kit.assert_close).
Our values must be in the input dtype. ``python tests/torch_reference/test_torch_optim.py``
prints the largest absolute difference per case and dtype.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from torch_kit import (
    CLOSE_TOL,
    DTYPES,
    Compared,
    assert_close,
    max_abs_diff,
    tensor,
    torch,
)

import fnn
from fnn import schedules, tree
from fnn.linear import LinearParams

F = torch.nn.functional


# --- optimizers: trajectories -----------------------------------------------------------------

STEPS = 20
X = np.random.default_rng(7).standard_normal((8, 3))
LABELS = np.random.default_rng(8).integers(0, 2, 8)


def mlp_params(dtype: type) -> tuple:
    """The initial params: (Linear 3 -> 4, (), Linear 4 -> 2) as records, in leaf order
    W1, b1, W2, b2."""
    r = np.random.default_rng(9)
    p = (LinearParams(W=r.standard_normal((4, 3)), b=r.standard_normal(4)), (),
         LinearParams(W=r.standard_normal((2, 4)), b=r.standard_normal(2)))
    return tree.cast(p, dtype)


def mlp_loss(w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor
             ) -> torch.Tensor:
    x = torch.tensor(X, dtype=w1.dtype)
    return F.cross_entropy(torch.tanh(x @ w1.T + b1) @ w2.T + b2, torch.tensor(LABELS))


def mlp_grads(params: Any) -> Any:
    """The gradient of mlp_loss at ``params`` (a tree), as a tree like it."""
    leaves = [tensor(p, grad=True) for p in tree.leaves(params)]
    mlp_loss(*leaves).backward()
    return tree.unflatten(params, [t.grad.numpy() for t in leaves])


def torch_groups(w: list, ours: Any, params: Any) -> list[dict]:
    """torch parameter groups for our weight-decay mask: masked-out leaves get weight_decay 0."""
    mask = tree.leaves(fnn.optim.decay_mask(ours.weight_decay_mask, params))
    decayed = [t for t, m in zip(w, mask) if m]
    kept = [t for t, m in zip(w, mask) if not m]
    return [{"params": decayed}] + ([{"params": kept, "weight_decay": 0.0}] if kept else [])


def trajectory(ours: Any, make_torch: Callable[[list], Any], dtype: type,
               make_scheduler: Callable[[Any], Any] | None = None) -> Compared:
    """Params after each of STEPS steps (and the learning rate before each) of ``ours`` and of
    ``make_torch(param_groups)``, each with gradients of mlp_loss at its own parameters."""
    params = mlp_params(dtype)
    w = [tensor(p, grad=True) for p in tree.leaves(params)]
    opt = make_torch(torch_groups(w, ours, params))
    scheduler = make_scheduler(opt) if make_scheduler else None
    state = ours.init(params)
    pairs: Compared = []
    for step in range(STEPS):
        pairs.append((f"learning rate before step {step + 1}", np.asarray(state.learning_rate),
                      torch.tensor(opt.param_groups[0]["lr"], dtype=torch.float64)))
        params, state = ours.update(params, mlp_grads(params), state)
        opt.zero_grad()
        mlp_loss(*w).backward()
        if ours.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(w, ours.max_grad_norm)
        opt.step()
        if scheduler is not None:
            scheduler.step()
        pairs += [(f"leaf {i} after step {step + 1}", p, t.detach().clone())
                  for i, (p, t) in enumerate(zip(tree.leaves(params), w, strict=True))]
    assert state.t == STEPS
    return pairs


def lr_kw(opt: Any) -> float:
    """torch's base lr for our optimizer: the float, a warmup schedule's peak (torch's LinearLR
    scales the base lr down), or the schedule's value at step 0."""
    if isinstance(opt.learning_rate, schedules.WarmupCosineDecay):
        return opt.learning_rate.peak_value
    return opt.learning_rate_at(0)


SGD_CONFIGS = {
    "plain": dict(learning_rate=0.1),
    "momentum": dict(learning_rate=0.1, momentum=0.9),
    "dampening": dict(learning_rate=0.1, momentum=0.8, dampening=0.3),
    "nesterov": dict(learning_rate=0.1, momentum=0.9, nesterov=True),
    "weight_decay": dict(learning_rate=0.1, momentum=0.9, weight_decay=0.05),
    "nesterov+weight_decay+mask": dict(learning_rate=0.1, momentum=0.9, nesterov=True,
                                       weight_decay=0.05,
                                       weight_decay_mask=fnn.optim.rank_at_least_2),
    "clipped": dict(learning_rate=0.1, momentum=0.9, max_grad_norm=0.3),
}
ADAMW_CONFIGS = {
    "default": dict(learning_rate=0.01),
    "weight_decay=0.3": dict(learning_rate=0.01, weight_decay=0.3),
    "no decay (Adam)": dict(learning_rate=0.01, weight_decay=0.0),
    "mask tree": dict(learning_rate=0.01, weight_decay=0.3, weight_decay_mask=(
        LinearParams(W=True, b=False), (), LinearParams(W=False, b=True))),
    "betas, eps": dict(learning_rate=0.02, beta1=0.5, beta2=0.9, epsilon=1e-3),
    "clipped": dict(learning_rate=0.01, max_grad_norm=0.2),
}
RMSPROP_CONFIGS = {
    "default": dict(learning_rate=0.01),
    "momentum": dict(learning_rate=0.01, momentum=0.9),
    "centered": dict(learning_rate=0.01, centered=True),
    "centered+momentum+weight_decay+mask": dict(
        learning_rate=0.01, centered=True, momentum=0.5, weight_decay=0.1, alpha=0.9,
        weight_decay_mask=lambda path, leaf: path[-1] == "W"),
}


def sgd_torch(o: fnn.SGD) -> Callable:
    return lambda groups: torch.optim.SGD(groups, lr=lr_kw(o), momentum=o.momentum,
                                          dampening=o.dampening, weight_decay=o.weight_decay,
                                          nesterov=o.nesterov)


def adamw_torch(o: fnn.AdamW) -> Callable:
    return lambda groups: torch.optim.AdamW(groups, lr=lr_kw(o), betas=(o.beta1, o.beta2),
                                            eps=o.epsilon, weight_decay=o.weight_decay)


def rmsprop_torch(o: fnn.RMSprop) -> Callable:
    return lambda groups: torch.optim.RMSprop(groups, lr=lr_kw(o), alpha=o.alpha, eps=o.epsilon,
                                              weight_decay=o.weight_decay, momentum=o.momentum,
                                              centered=o.centered)


LION_CONFIGS = {
    "default": dict(learning_rate=0.01),
    "betas, weight_decay, mask": dict(learning_rate=0.02, beta1=0.8, beta2=0.9, weight_decay=0.5,
                                      weight_decay_mask=fnn.optim.rank_at_least_2),
    "clipped": dict(learning_rate=0.01, weight_decay=0.1, max_grad_norm=0.2),
}


class TorchLion(torch.optim.Optimizer):
    """The reference Lion (Chen et al. 2023) in torch ops, as lion-pytorch's update: the weight
    shrinks by 1 - lr·weight_decay, steps by -lr·sign(beta1·m + (1 - beta1)·g), then
    m <- beta2·m + (1 - beta2)·g."""

    def __init__(self, params: Any, lr: float, betas: tuple, weight_decay: float) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            (beta1, beta2), lr = group["betas"], group["lr"]
            for p in group["params"]:
                m = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                p.mul_(1 - lr * group["weight_decay"])
                p.add_((m * beta1 + p.grad * (1 - beta1)).sign(), alpha=-lr)
                m.mul_(beta2).add_(p.grad, alpha=1 - beta2)


def lion_torch(o: fnn.Lion) -> Callable:
    return lambda groups: TorchLion(groups, lr=lr_kw(o), betas=(o.beta1, o.beta2),
                                    weight_decay=o.weight_decay)


OPTIMIZER_CASES: dict[str, tuple] = {}
for cls, torch_of, configs in ((fnn.SGD, sgd_torch, SGD_CONFIGS),
                               (fnn.AdamW, adamw_torch, ADAMW_CONFIGS),
                               (fnn.RMSprop, rmsprop_torch, RMSPROP_CONFIGS),
                               (fnn.Lion, lion_torch, LION_CONFIGS)):
    for label, kw in configs.items():
        OPTIMIZER_CASES[f"{cls.__name__} {label}"] = (cls(**kw), torch_of, None)

lr_sched = torch.optim.lr_scheduler
OPTIMIZER_CASES["SGD momentum + StepDecay"] = (
    fnn.SGD(schedules.StepDecay(0.2, step_size=6, gamma=0.5), momentum=0.9), sgd_torch,
    lambda opt: lr_sched.StepLR(opt, step_size=6, gamma=0.5))
OPTIMIZER_CASES["RMSprop + ExponentialDecay"] = (
    fnn.RMSprop(schedules.ExponentialDecay(0.02, gamma=0.9)), rmsprop_torch,
    lambda opt: lr_sched.ExponentialLR(opt, gamma=0.9))
OPTIMIZER_CASES["AdamW + WarmupCosineDecay"] = (
    fnn.AdamW(schedules.WarmupCosineDecay(0.05, total_steps=STEPS, warmup_steps=5,
                                          init_value=0.01, end_value=0.002)),
    adamw_torch,
    lambda opt: lr_sched.SequentialLR(opt, [
        lr_sched.LinearLR(opt, start_factor=0.2, total_iters=5),
        lr_sched.CosineAnnealingLR(opt, T_max=STEPS - 5, eta_min=0.002)], milestones=[5]))
OPTIMIZER_CASES["SGD nesterov + cosine, clipped, masked"] = (
    fnn.SGD(schedules.WarmupCosineDecay(0.3, total_steps=STEPS), momentum=0.9, nesterov=True,
            weight_decay=0.1, weight_decay_mask=fnn.optim.rank_at_least_2, max_grad_norm=0.5),
    sgd_torch, lambda opt: lr_sched.CosineAnnealingLR(opt, T_max=STEPS))


OPTIMIZER_CASES["Lion + ExponentialDecay"] = (
    fnn.Lion(schedules.ExponentialDecay(0.02, gamma=0.9)), lion_torch,
    lambda opt: lr_sched.ExponentialLR(opt, gamma=0.9))


def optimizer_case(name: str, dtype: type) -> Compared:
    ours, torch_of, scheduler = OPTIMIZER_CASES[name]
    with warnings.catch_warnings():  # SequentialLR passes an epoch to step(): deprecated
        warnings.simplefilter("ignore", UserWarning)
        return trajectory(ours, torch_of(ours), dtype, scheduler)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", OPTIMIZER_CASES)
def test_optimizer_trajectory_matches_torch(name: str, dtype: type) -> None:
    pairs = optimizer_case(name, dtype)
    assert_close([p for p in pairs if not p[0].startswith("learning rate")], dtype)
    assert_close([p for p in pairs if p[0].startswith("learning rate")], np.float64)


def test_trajectories_move() -> None:
    """The comparison is not vacuous: the parameters move by far more than the tolerance."""
    start = tree.leaves(mlp_params(np.float64))
    for name in ("SGD plain", "AdamW default", "RMSprop default", "Lion default"):
        ours = OPTIMIZER_CASES[name][0]
        params, state = mlp_params(np.float64), ours.init(mlp_params(np.float64))
        for _ in range(STEPS):
            params, state = ours.update(params, mlp_grads(params), state)
        assert max(np.max(np.abs(a - b)) for a, b in zip(tree.leaves(params), start)) > 0.05


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("max_norm", [0.1, 1.0, 100.0])
def test_clip_by_global_norm_matches_clip_grad_norm(dtype: type, max_norm: float) -> None:
    grads = tree.map(lambda p: 3 * p, mlp_params(dtype))
    clipped, norm = fnn.clip_by_global_norm(grads, max_norm)
    ts = [tensor(g, grad=True) for g in tree.leaves(grads)]
    for t in ts:
        t.grad = t.detach().clone()
    ref_norm = torch.nn.utils.clip_grad_norm_(ts, max_norm)
    assert_close([(f"leaf {i}", c, t.grad) for i, (c, t) in
                  enumerate(zip(tree.leaves(clipped), ts))], dtype)
    assert abs(norm - float(ref_norm)) <= CLOSE_TOL[dtype] * norm


def test_end_to_end_network_with_cross_entropy_and_adamw() -> None:
    """fnn's own network, CrossEntropy and AdamW with a warmup-cosine schedule against
    torch.nn + F.cross_entropy + torch.optim.AdamW, 20 training steps in float64."""
    net = fnn.Sequential([fnn.Linear(3, 5), fnn.SoftPlus(), fnn.Linear(5, 3)])
    params, state = net.init(0)
    crit = fnn.CrossEntropy(label_smoothing=0.1, weight=[1.0, 2.0, 0.5])
    sched = schedules.WarmupCosineDecay(0.05, total_steps=STEPS, warmup_steps=4,
                                        init_value=0.0125)
    opt = fnn.AdamW(sched, weight_decay=0.1, weight_decay_mask=fnn.optim.rank_at_least_2)
    ref = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Softplus(),
                              torch.nn.Linear(5, 3)).double()
    with torch.no_grad():
        for t, p in zip(ref.parameters(), tree.leaves(params), strict=True):
            t.copy_(tensor(p))
    w = list(ref.parameters())
    ref_opt = torch.optim.AdamW(torch_groups(w, opt, params), lr=0.05, weight_decay=0.1)
    ref_sched = torch.optim.lr_scheduler.SequentialLR(ref_opt, [
        torch.optim.lr_scheduler.LinearLR(ref_opt, start_factor=0.25, total_iters=4),
        torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=STEPS - 4)], milestones=[4])
    x, labels = np.random.default_rng(3).standard_normal((10, 3)), LABELS.repeat(2)[:10]
    opt_state, pairs = opt.init(params), []
    for _ in range(STEPS):
        y, cache = net.forward(params, state, x)
        loss, lcache = crit.forward(y, labels)
        _, grads = net.backward(params, cache, crit.backward(lcache))
        params, opt_state = opt.update(params, grads, opt_state)
        ref_opt.zero_grad()
        ref_loss = F.cross_entropy(ref(tensor(x)), tensor(labels), label_smoothing=0.1,
                                   weight=torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64))
        ref_loss.backward()
        ref_opt.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ref_sched.step()
        pairs += [("loss", loss, ref_loss)] + [
            ("param", p, t.detach().clone()) for p, t in zip(tree.leaves(params), w)]
    assert_close(pairs, np.float64)


# --- report -----------------------------------------------------------------------------------

if __name__ == "__main__":
    print(f"{'case':64s} {'float64':>10s} {'float32':>10s}")
    for name in OPTIMIZER_CASES:
        d = [max_abs_diff(optimizer_case(name, dt)) for dt in DTYPES]
        print(f"{name:64s} {d[0]:10.2e} {d[1]:10.2e}")
