"""PyTorch reference tests for the PyTorch-style criteria (CrossEntropy, NLLLoss, BCEWithLogits,
L1, Huber), the optimizers SGD, AdamW, RMSprop and Lion (against lion-pytorch's update, written
here in torch ops), the learning-rate schedules and clip_by_global_norm.

Criteria: loss and dy against torch.nn.functional and autograd (for reduction "none", the
gradient of sum(dloss * loss) for a random dloss), over every combination of target kind, class
weight, label smoothing, ignore_index and reduction, and on logits of ±1e4.

Optimizers: trajectories. The same initial parameters of a small MLP go to our optimizer and to
torch.optim's; at every one of 20 steps each side takes the gradient of the same torch loss at
its own current parameters, and the parameters (and the learning rate) are compared after every
step. Weight-decay masks are torch parameter groups with weight_decay 0; schedules are torch
lr_schedulers stepped after each optimizer step; max_grad_norm is clip_grad_norm_ before it.

Tolerances: float64 atol = rtol = 1e-10, float32 atol = rtol = 1e-5. Our values must be in the
input dtype. ``python tests/test_torch_ext_losses_optim.py`` prints the largest absolute
difference per case and dtype.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import fnn
from fnn import schedules, tree
from fnn.linear import LinearParams

torch = pytest.importorskip("torch")
from test_torch_reference import as_numpy, max_abs_diff, tensor  # noqa: E402

F = torch.nn.functional
torch.set_num_threads(1)

DTYPES = (np.float64, np.float32)
TOL = {np.float64: 1e-10, np.float32: 1e-5}

Compared = list[tuple[str, Any, Any]]  # (what, ours, torch's)


def assert_close(pairs: Compared, dtype: type) -> None:
    for what, ours, ref in pairs:
        ref = as_numpy(ref)
        if isinstance(ours, np.ndarray | np.generic):
            assert ours.dtype == dtype, f"{what}: our dtype is {ours.dtype}"
        assert np.shape(ours) == ref.shape, f"{what}: shape {np.shape(ours)} vs {ref.shape}"
        np.testing.assert_allclose(ours, ref, rtol=TOL[dtype], atol=TOL[dtype], err_msg=what)


# --- criteria ---------------------------------------------------------------------------------

def criterion_versus(crit: Any, y: np.ndarray, target: Any,
                     ref: Callable[[torch.Tensor], torch.Tensor], rng: np.random.Generator
                     ) -> Compared:
    """Our loss and dy against ``ref(y)`` and autograd. For reduction "none" both take a random
    dloss; for "mean" and "sum" a random scalar dloss half of the time."""
    loss, cache = crit.forward(y, target)
    yt = tensor(y, grad=True)
    lt = ref(yt)
    if crit.reduction == "none":
        dloss = rng.standard_normal(np.shape(loss)).astype(y.dtype)
    elif rng.random() < 0.5:
        dloss = np.asarray(rng.standard_normal(), y.dtype)
    else:  # the default dloss = 1.0
        lt.backward()
        return [("loss", loss, lt), ("dy", crit.backward(cache), yt.grad)]
    lt.backward(tensor(dloss))
    return [("loss", loss, lt), ("dy", crit.backward(cache, dloss), yt.grad)]


def logits(rng: np.random.Generator, dtype: type, shape: tuple, scale: float = 3.0
           ) -> np.ndarray:
    return (scale * rng.standard_normal(shape)).astype(dtype)


def classes_at_axis_1(t: torch.Tensor) -> torch.Tensor:
    """Our class-last layout (N, T, C) as torch's (N, C, T); (N, C) stays."""
    return t.movedim(-1, 1) if t.ndim > 2 else t


def class_problem(rng: np.random.Generator, dtype: type, kind: str, lead: tuple = (6,),
                  c: int = 5) -> tuple[Any, torch.Tensor]:
    """(our target, torch's target) of ``kind`` for positions ``lead`` ((N,) or (N, T)):
    "labels" int, "probs" rows of a random softmax, "onehot" int64 rows for us and float rows
    for torch (with the class axis at 1)."""
    labels = rng.integers(0, c, lead)
    if kind == "labels":
        return labels, tensor(labels)
    if kind == "onehot":
        onehot = np.eye(c, dtype=np.int64)[labels]
        return onehot, classes_at_axis_1(tensor(onehot.astype(dtype)))
    q = np.exp(rng.standard_normal((*lead, c)))
    q = (q / q.sum(axis=-1, keepdims=True)).astype(dtype)
    return q, classes_at_axis_1(tensor(q))


REDUCTIONS = ("mean", "sum", "none")


def cross_entropy(kind: str, weighted: bool, smoothing: float, reduction: str,
                  ignore: bool = False, scale: float = 3.0, seq: bool = False) -> Callable:
    """CrossEntropy on (6, 5), or with ``seq`` on (3, 4, 5) against torch's (3, 5, 4)."""
    def case(dtype: type, rng: np.random.Generator) -> Compared:
        lead, c = ((3, 4) if seq else (6,)), 5
        target, ref_target = class_problem(rng, dtype, kind, lead, c)
        weight = rng.uniform(0.2, 2.0, c) if weighted else None
        kw: dict[str, Any] = dict(reduction=reduction, label_smoothing=smoothing)
        if ignore:
            target[rng.random(lead) < 0.4] = 2
            ref_target = tensor(target)
            kw["ignore_index"] = 2
        crit = fnn.CrossEntropy(weight=weight, **kw)
        ref_weight = None if weight is None else tensor(weight.astype(dtype))
        return criterion_versus(
            crit, logits(rng, dtype, (*lead, c), scale), target,
            lambda y: F.cross_entropy(classes_at_axis_1(y), ref_target, weight=ref_weight, **kw),
            rng)

    return case


def nll(weighted: bool, reduction: str, ignore: bool, seq: bool = False) -> Callable:
    """NLLLoss on (7, 4), or with ``seq`` on (2, 5, 4) against torch's (2, 4, 5)."""
    def case(dtype: type, rng: np.random.Generator) -> Compared:
        lead, c = ((2, 5) if seq else (7,)), 4
        x = logits(rng, dtype, (*lead, c))
        logp = (x - np.logaddexp.reduce(x.astype(np.float64), axis=-1, keepdims=True)
                ).astype(dtype)
        labels = rng.integers(0, c, lead)
        kw: dict[str, Any] = dict(reduction=reduction)
        if ignore:
            labels.flat[:3] = -100  # torch's default ignore_index, made explicit here
            kw["ignore_index"] = -100
        weight = rng.uniform(0.2, 2.0, c) if weighted else None
        ref_weight = None if weight is None else tensor(weight.astype(dtype))
        return criterion_versus(fnn.NLLLoss(weight=weight, **kw), logp, labels,
                                lambda y: F.nll_loss(classes_at_axis_1(y), tensor(labels),
                                                     weight=ref_weight, **kw), rng)

    return case


def bce(pos_weight: str, reduction: str, scale: float = 3.0, vector: bool = False
        ) -> Callable:
    def case(dtype: type, rng: np.random.Generator) -> Compared:
        shape = (8,) if vector else (6, 3)
        x = logits(rng, dtype, shape, scale)
        t = rng.random(shape)
        t = np.where(rng.random(shape) < 0.5, np.round(t), t).astype(dtype)  # hard and soft
        pw = {"none": None, "one": rng.uniform(0.5, 3.0, 1),
              "per class": rng.uniform(0.5, 3.0, shape[-1])}[pos_weight]
        ref_pw = None if pw is None else tensor(pw.astype(dtype))
        return criterion_versus(
            fnn.BCEWithLogits(pos_weight=pw, reduction=reduction), x, t,
            lambda y: F.binary_cross_entropy_with_logits(y, tensor(t), pos_weight=ref_pw,
                                                         reduction=reduction), rng)

    return case


def regression(crit: Any, ref: Callable) -> Callable:
    """L1 or Huber on (N, C, K) with some exact ties (d = 0) and some |d| = delta."""
    def case(dtype: type, rng: np.random.Generator) -> Compared:
        y = logits(rng, dtype, (4, 3, 2), 1.5)
        t = logits(rng, dtype, y.shape, 1.5)
        t.flat[:2] = y.flat[:2]
        if isinstance(crit, fnn.Huber):
            t.flat[2:4] = y.flat[2:4] + np.array([crit.delta, -crit.delta], dtype)
        return criterion_versus(crit, y, t, lambda yt: ref(yt, tensor(t)), rng)

    return case


CRITERION_CASES: dict[str, Callable] = {}
for kind, weighted, smoothing, reduction in itertools.product(
        ("labels", "probs", "onehot"), (False, True), (0.0, 0.15), REDUCTIONS):
    CRITERION_CASES[f"CrossEntropy {kind} weight={weighted} ls={smoothing} {reduction}"] = \
        cross_entropy(kind, weighted, smoothing, reduction)
for weighted, smoothing, reduction in itertools.product((False, True), (0.0, 0.15), REDUCTIONS):
    CRITERION_CASES[f"CrossEntropy labels ignore_index weight={weighted} ls={smoothing} "
                    f"{reduction}"] = cross_entropy("labels", weighted, smoothing, reduction,
                                                    ignore=True)
for kind, reduction in itertools.product(("labels", "probs"), REDUCTIONS):
    CRITERION_CASES[f"CrossEntropy {kind} logits ±1e4 {reduction}"] = cross_entropy(
        kind, True, 0.1, reduction, scale=1e4)
for weighted, reduction, ignore in itertools.product((False, True), REDUCTIONS, (False, True)):
    CRITERION_CASES[f"NLLLoss weight={weighted} ignore={ignore} {reduction}"] = nll(
        weighted, reduction, ignore)
for kind, weighted, smoothing, reduction in itertools.product(
        ("labels", "probs"), (False, True), (0.0, 0.15), REDUCTIONS):
    CRITERION_CASES[f"CrossEntropy (N,T,C) {kind} weight={weighted} ls={smoothing} "
                    f"{reduction}"] = cross_entropy(kind, weighted, smoothing, reduction, seq=True)
for smoothing, reduction in itertools.product((0.0, 0.15), REDUCTIONS):
    CRITERION_CASES[f"CrossEntropy (N,T,C) padding ignore_index ls={smoothing} {reduction}"] = \
        cross_entropy("labels", True, smoothing, reduction, ignore=True, seq=True)
for weighted, reduction, ignore in itertools.product((False, True), REDUCTIONS, (False, True)):
    CRITERION_CASES[f"NLLLoss (N,T,C) weight={weighted} ignore={ignore} {reduction}"] = nll(
        weighted, reduction, ignore, seq=True)
for pw, reduction in itertools.product(("none", "one", "per class"), REDUCTIONS):
    CRITERION_CASES[f"BCEWithLogits pos_weight={pw} {reduction}"] = bce(pw, reduction)
for reduction in REDUCTIONS:
    CRITERION_CASES[f"BCEWithLogits (N,) {reduction}"] = bce("one", reduction, vector=True)
    CRITERION_CASES[f"BCEWithLogits logits ±1e4 {reduction}"] = bce("per class", reduction,
                                                                      scale=1e4)
    CRITERION_CASES[f"L1 {reduction}"] = regression(
        fnn.L1(reduction=reduction), lambda y, t, r=reduction: F.l1_loss(y, t, reduction=r))
    for delta in (1.0, 0.3):
        CRITERION_CASES[f"Huber delta={delta} {reduction}"] = regression(
            fnn.Huber(delta=delta, reduction=reduction),
            lambda y, t, d=delta, r=reduction: F.huber_loss(y, t, reduction=r, delta=d))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("labels, kw", [
    ([1, 1], dict(ignore_index=1)),  # every row ignored: nan loss, zero gradient
    ([1, 1], dict(weight=[1.0, 0.0, 1.0])),  # total weight 0: nan loss and gradient
    ([1, 0], dict(weight=[1.0, 0.0, 1.0])),
])
def test_mean_over_nothing_is_nan_as_in_torch(labels: list, kw: dict, smoothing: float,
                                             dtype: type) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(dtype)
    ref_kw = {k: (tensor(np.asarray(v, dtype)) if k == "weight" else v) for k, v in kw.items()}
    crits = [(fnn.CrossEntropy(label_smoothing=smoothing, **kw),
              lambda y: F.cross_entropy(y, tensor(labels), label_smoothing=smoothing,
                                        **ref_kw))]
    if not smoothing:
        crits.append((fnn.NLLLoss(**kw), lambda y: F.nll_loss(y, tensor(labels), **ref_kw)))
    for crit, ref in crits:
        pairs = criterion_versus(crit, x, np.array(labels), ref, np.random.default_rng(1))
        for what, ours, theirs in pairs:
            np.testing.assert_array_equal(np.isnan(ours), np.isnan(as_numpy(theirs)), what)
        assert_close([(w, np.nan_to_num(o), np.nan_to_num(as_numpy(r))) for w, o, r in pairs],
                     dtype)


def seeded(name: str, dtype: type) -> np.random.Generator:
    return np.random.default_rng([DTYPES.index(dtype), *name.encode()])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", CRITERION_CASES)
def test_criterion_matches_torch(name: str, dtype: type) -> None:
    pairs = CRITERION_CASES[name](dtype, seeded(name, dtype))
    assert all(np.all(np.isfinite(as_numpy(o))) for _, o, _ in pairs)
    assert_close(pairs, dtype)


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
    assert abs(norm - float(ref_norm)) <= TOL[dtype] * norm


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
    for name, case in CRITERION_CASES.items():
        d = [max_abs_diff(case(dt, seeded(name, dt))) for dt in DTYPES]
        print(f"{name:64s} {d[0]:10.2e} {d[1]:10.2e}")
    for name in OPTIMIZER_CASES:
        d = [max_abs_diff(optimizer_case(name, dt)) for dt in DTYPES]
        print(f"{name:64s} {d[0]:10.2e} {d[1]:10.2e}")
