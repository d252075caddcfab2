"""PyTorch float32 references for the compat modules, shared by test_compat_torch.py and the
parity report in docs/compat.md.

Each case draws one random batch and returns rows ``(what, reference, ours)``: the output (or
loss), gradInput, every parameter gradient and, for BatchNormalization, the new statistics.
The compat modules run through the classic API (zeroGradParameters, forward, backward); their
parameters are float32 arrays sharing memory with the torch parameters (``tensor.numpy()``)
and their gradient attributes float32 zeros.

    python tests/compat/compat_torch_cases.py [n_batches]

prints the largest absolute difference per case over ``n_batches`` (default 100) batches.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import compat

nn = torch.nn
F32 = np.float32
Rows = list[tuple[str, Any, Any]]


def as_numpy(a: Any) -> np.ndarray:
    return a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


ATOL, RTOL = 1e-6, 1e-5  # np.allclose(reference, ours, atol=1e-6), default rtol


def differences(rows: Rows) -> dict[str, tuple[float, float]]:
    """Per quantity: the largest |reference - ours| and the largest
    |reference - ours| / (ATOL + RTOL * |ours|) (np.allclose passes when it is <= 1)."""
    out = {}
    for what, ref, ours in rows:
        ours = np.asarray(ours, np.float64)
        diff = np.abs(as_numpy(ref).astype(np.float64) - ours)
        out[what] = (float(np.max(diff, initial=0.0)),
                     float(np.max(diff / (ATOL + RTOL * np.abs(ours)), initial=0.0)))
    return out


def normal(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(F32)


def compare(module: compat.Module, ref: Callable, x: np.ndarray, rng: np.random.Generator,
            params: list[tuple[Any, str, str, torch.Tensor]] = ()) -> Rows:
    """Forward and backward of ``module`` and of the torch function ``ref`` on ``x`` with one
    random gradOutput. ``params`` lists ``(owner, attribute, gradient attribute, tensor)``: the
    owner's attribute becomes a float32 view of the tensor, its gradient float32 zeros; after
    backward the gradient attribute is compared with ``tensor.grad``."""
    for owner, name, grad_name, p in params:
        setattr(owner, name, p.detach().numpy())
        setattr(owner, grad_name, np.zeros(tuple(p.shape), F32))
    module.zeroGradParameters()
    y = module.forward(x)
    dy = normal(rng, *y.shape)
    dx = module.backward(x, dy)
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    yt.backward(torch.tensor(dy))
    return ([("output", yt, y), ("gradInput", xt.grad, dx)]
            + [(grad_name, p.grad, getattr(owner, grad_name)) for owner, _, grad_name, p in params])


# Upper bounds of the random sizes. Float32 rounding of the reductions (over the batch, and the
# image for Conv2d) grows with their length, in torch as in numpy: the tests use SMALL, where
# np.allclose(atol=1e-6) holds; the report shows LARGE too.
SMALL = {"batch": 32, "features": 16, "conv_batch": 2, "channels": 4, "image": 6}
LARGE = {"batch": 64, "features": 32, "conv_batch": 8, "channels": 4, "image": 12}


def dims(rng: np.random.Generator, size: dict[str, int], *names: str) -> list[int]:
    """One random size per name, uniform in [1, size[name]] ([2, ...] for "batch2")."""
    return [int(rng.integers(2 if name == "batch2" else 1, size[name.rstrip("2")] + 1))
            for name in names]


def uniform_(t: torch.Tensor, rng: np.random.Generator, low: float = -1.0, high: float = 1.0
             ) -> torch.Tensor:
    """Fill ``t`` from ``rng`` (not torch's global RNG), so that a case depends on ``rng`` only."""
    with torch.no_grad():
        t.copy_(torch.tensor(rng.uniform(low, high, tuple(t.shape)).astype(F32)))
    return t


# --- cases: rng -> rows -------------------------------------------------------------------------

def case_linear(rng: np.random.Generator, size: dict) -> Rows:
    n, n_in, n_out = dims(rng, size, "batch", "features", "features")
    ref = nn.Linear(n_in, n_out)
    for p in ref.parameters():
        uniform_(p, rng)
    m = compat.Linear(n_in, n_out)
    return compare(m, ref, normal(rng, n, n_in), rng,
                   [(m, "W", "gradW", ref.weight), (m, "b", "gradb", ref.bias)])


def case_scaling(rng: np.random.Generator, size: dict) -> Rows:
    n, f = dims(rng, size, "batch", "features")
    gamma = uniform_(torch.empty(f, requires_grad=True), rng)
    beta = uniform_(torch.empty(f, requires_grad=True), rng)
    m = compat.ChannelwiseScaling(f)
    return compare(m, lambda x: x * gamma + beta, normal(rng, n, f), rng,
                   [(m, "gamma", "gradGamma", gamma), (m, "beta", "gradBeta", beta)])


def elementwise(make: Callable[[], tuple[compat.Module, Callable]]) -> Callable:
    def case(rng: np.random.Generator, size: dict) -> Rows:
        n, f = dims(rng, size, "batch", "features")
        m, ref = make()
        return compare(m, ref, normal(rng, n, f) * 3, rng)

    return case


def batchnorm(training: bool, affine: bool) -> Callable:
    """BatchNormalization(alpha) [followed by ChannelwiseScaling] against
    BatchNorm1d(momentum=1-alpha, eps=1e-3, affine) on x ~ N(1, 2^2). Both start from the same
    random moving statistics near the data's (mean 1 +- 0.1, variance 4 * U(0.8, 1.25)), as
    after training. torch updates running_var with the unbiased batch variance v_u; ours uses
    the biased one, so our moving_variance is compared with a*old + (1-a)*v_u*(N-1)/N."""

    def case(rng: np.random.Generator, size: dict) -> Rows:
        n, f = dims(rng, size, "batch2", "features")
        alpha = float(rng.uniform(0, 1))
        bn = compat.BatchNormalization(alpha)
        ref = nn.BatchNorm1d(f, eps=bn.EPS, momentum=1 - alpha, affine=affine).train(training)
        old_mean = 1 + normal(rng, f) / 10
        old_var = 4 * rng.uniform(0.8, 1.25, f).astype(F32)
        bn.moving_mean, bn.moving_variance = old_mean.copy(), old_var.copy()
        ref.running_mean.copy_(torch.tensor(old_mean))
        ref.running_var.copy_(torch.tensor(old_var))
        module, params = bn, []
        if affine:
            cs = compat.ChannelwiseScaling(f)
            module = compat.Sequential()
            module.add(bn)
            module.add(cs)
            params = [(cs, "gamma", "gradGamma", uniform_(ref.weight, rng)),
                      (cs, "beta", "gradBeta", uniform_(ref.bias, rng))]
        if not training:
            module.evaluate()
        x = rng.normal(1.0, 2.0, (n, f)).astype(F32)
        rows = compare(module, ref, x, rng, params)
        expected_var = ref.running_var
        if training:
            a_old = alpha * torch.tensor(old_var)
            expected_var = a_old + (ref.running_var - a_old) * ((n - 1) / n)
        return rows + [("moving_mean", ref.running_mean, bn.moving_mean),
                       ("moving_variance", expected_var, bn.moving_variance)]

    return case


def case_conv2d(rng: np.random.Generator, size: dict) -> Rows:
    n, c_in, c_out, h, w = dims(rng, size, "conv_batch", "channels", "channels", "image",
                                "image")
    k = int(rng.choice([1, 3, 5]))
    ref = nn.Conv2d(c_in, c_out, k, padding=k // 2)
    for p in ref.parameters():
        uniform_(p, rng)
    m = compat.Conv2d(c_in, c_out, k)
    return compare(m, ref, normal(rng, n, c_in, h, w), rng,
                   [(m, "W", "gradW", ref.weight), (m, "b", "gradb", ref.bias)])


def case_maxpool2d(rng: np.random.Generator, size: dict) -> Rows:
    k = int(rng.choice([1, 2, 3]))
    n, c, h, w = dims(rng, size, "conv_batch", "channels", "image", "image")
    return compare(compat.MaxPool2d(k), nn.MaxPool2d(k), normal(rng, n, c, h * k, w * k), rng)


def case_flatten(rng: np.random.Generator, size: dict) -> Rows:
    n, c, h, w = dims(rng, size, "conv_batch", "channels", "image", "image")
    return compare(compat.Flatten(), nn.Flatten(), normal(rng, n, c, h, w), rng)


def criterion(crit: compat.Criterion, ref: Callable, inputs: str) -> Callable:
    """``crit`` against ``ref(input_tensor, target_tensor, labels)`` on one-hot targets;
    ``inputs`` is "normal", "log-probabilities" or "probabilities"."""

    def case(rng: np.random.Generator, size: dict) -> Rows:
        n, c = dims(rng, size, "batch", "features")
        c += 1
        labels = rng.integers(0, c, n)
        target = np.eye(c, dtype=F32)[labels]
        y = normal(rng, n, c)
        if inputs != "normal":
            y = torch.log_softmax(torch.tensor(y), 1).numpy()
            y = np.exp(y) if inputs == "probabilities" else y
        loss, dy = crit.forward(y, target), crit.backward(y, target)
        yt = torch.tensor(y, requires_grad=True)
        lt = ref(yt, torch.tensor(target), torch.tensor(labels))
        lt.backward()
        return [("loss", lt, loss), ("gradInput", yt.grad, dy)]

    return case


CASES: dict[str, Callable[[np.random.Generator, dict], Rows]] = {
    "Linear": case_linear,
    "SoftMax": elementwise(lambda: (compat.SoftMax(), nn.Softmax(dim=1))),
    "LogSoftMax": elementwise(lambda: (compat.LogSoftMax(), nn.LogSoftmax(dim=1))),
    "BatchNormalization (train)": batchnorm(training=True, affine=False),
    "BatchNormalization (evaluate)": batchnorm(training=False, affine=False),
    "BatchNormalization + ChannelwiseScaling (train)": batchnorm(training=True, affine=True),
    "BatchNormalization + ChannelwiseScaling (evaluate)": batchnorm(training=False, affine=True),
    "ChannelwiseScaling": case_scaling,
    "ReLU": elementwise(lambda: (compat.ReLU(), nn.ReLU())),
    "LeakyReLU": elementwise(lambda: (compat.LeakyReLU(0.03), nn.LeakyReLU(0.03))),
    "ELU": elementwise(lambda: (compat.ELU(0.7), nn.ELU(0.7))),
    "SoftPlus": elementwise(lambda: (compat.SoftPlus(), nn.Softplus())),
    "Conv2d": case_conv2d,
    "MaxPool2d": case_maxpool2d,
    "Flatten": case_flatten,
    "MSECriterion": criterion(compat.MSECriterion(),
                              lambda y, t, _: ((y - t) ** 2).sum() / y.shape[0], "normal"),
    "ClassNLLCriterion": criterion(compat.ClassNLLCriterion(),
                                   lambda y, _, labels: nn.NLLLoss()(y, labels),
                                   "log-probabilities"),
    "ClassNLLCriterionUnstable": criterion(compat.ClassNLLCriterionUnstable(),
                                           lambda y, _, labels: nn.NLLLoss()(torch.log(y), labels),
                                           "probabilities"),
}


def report(size: dict, n_batches: int = 100, seed: int = 0
           ) -> dict[str, tuple[dict[str, tuple[float, float]], int]]:
    """Per case: the worst of :func:`differences` per quantity over ``n_batches`` batches, and
    the number of batches in which np.allclose failed (a ratio above 1)."""
    out = {}
    for i, (name, case) in enumerate(CASES.items()):
        rng = np.random.default_rng([seed, i])
        worst: dict[str, tuple[float, float]] = {}
        failed = 0
        for _ in range(n_batches):
            found = differences(case(rng, size))
            failed += max(ratio for _, ratio in found.values()) > 1
            for what, (diff, ratio) in found.items():
                old = worst.get(what, (0.0, 0.0))
                worst[what] = (max(old[0], diff), max(old[1], ratio))
        out[name] = worst, failed
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    print(f"torch {torch.__version__}, numpy {np.__version__}, float32, {n} random batches per "
          f"module and size; ratio = max |ref - ours| / ({ATOL} + {RTOL} |ours|), np.allclose "
          f"needs <= 1; SMALL = {SMALL}, LARGE = {LARGE}")
    print("| module | SMALL: largest abs. difference | ratio | batches over 1 | LARGE: largest "
          "abs. difference | ratio | batches over 1 | LARGE, per quantity |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    small, large = report(SMALL, n), report(LARGE, n)
    for name in CASES:
        cells = []
        for worst, failed in (small[name], large[name]):
            cells += [f"{max(d for d, _ in worst.values()):.1e}",
                      f"{max(r for _, r in worst.values()):.2f}", str(failed)]
        per = ", ".join(f"{what} {d:.1e}" for what, (d, _) in large[name][0].items())
        print(f"| {name} | " + " | ".join(cells) + f" | {per} |")
