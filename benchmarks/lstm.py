"""One LSTM training step, fnn against PyTorch CPU (issue 10: aim fnn/torch <= 2).

    python benchmarks/lstm.py                 # N=64, T=32, F=H=128, float32 and float64, 1 thread
    python benchmarks/lstm.py --rounds 9 --threads 2 --dtype float32

Two workloads on x of shape (N, T, F), both from the same float64 weights (fnn's init, copied
into torch's ``nn.LSTM(F, H, batch_first=True)`` and ``nn.Linear``), cast to the dtype:

- ``LSTM fwd+bwd``: the LSTM layer alone, forward and backward with a fixed gradient on every
  output step (the gradient of a sequence-to-sequence loss);
- ``classifier step``: LSTM -> LastStep -> Linear(H, 10) -> LogSoftMax, NLL loss, backward and
  an SGD step (fnn: Sequential, ClassNLLCriterion, SGDMomentum; torch: the same modules,
  ``F.nll_loss`` and ``torch.optim.SGD``).

Method (as benchmarks/run.py): the first calls check the numerics (input gradient or loss
against torch's) and warm up; then the two implementations alternate within each round, each
timed over at least ``--min-time`` seconds; figures are medians over rounds and the ratio is the
median of the per-round ratios. numpy's BLAS and torch run with ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import fnn

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the `bench` extra is not installed
    torch = None

LR = 0.01


def _torch_lstm(params: Any, f: int, h: int, dtype: type) -> Any:
    ref = torch.nn.LSTM(f, h, batch_first=True, dtype=getattr(torch, np.dtype(dtype).name))
    with torch.no_grad():
        for p, a in zip(ref.parameters(), fnn.tree.leaves(params), strict=True):
            p.copy_(torch.from_numpy(a.astype(dtype)))
    return ref


def lstm_fwd_bwd(n: int, t: int, f: int, h: int, dtype: type) -> dict[str, Callable[[], Any]]:
    layer = fnn.LSTM(f, h)
    params64, _ = layer.init(0)
    params = fnn.tree.cast(params64, dtype)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, t, f)).astype(dtype)
    dy = rng.standard_normal((n, t, h)).astype(dtype)

    def ours() -> np.ndarray:
        _, cache = layer.forward(params, (), x)
        return layer.backward(params, cache, dy)[0]

    if torch is None:
        return {"fnn": ours}
    ref = _torch_lstm(params64, f, h, dtype)
    xt, dyt = torch.from_numpy(x), torch.from_numpy(dy)

    def theirs() -> np.ndarray:
        xg = xt.clone().requires_grad_(True)
        ref.zero_grad()
        ref(xg)[0].backward(dyt)
        return xg.grad.numpy()

    return {"fnn": ours, "torch": theirs}


def classifier_step(n: int, t: int, f: int, h: int, dtype: type) -> dict[str, Callable[[], Any]]:
    classes = 10
    net = fnn.Sequential([fnn.LSTM(f, h), fnn.LastStep(), fnn.Linear(h, classes),
                          fnn.LogSoftMax()])
    params64, state = net.init(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, t, f)).astype(dtype)
    labels = rng.integers(0, classes, n)
    target = np.eye(classes, dtype=dtype)[labels]
    crit, opt = fnn.ClassNLLCriterion(), fnn.SGDMomentum(LR)
    box = {"params": fnn.tree.cast(params64, dtype)}
    box["opt"] = opt.init(box["params"])

    def ours() -> float:
        y, cache = net.forward(box["params"], state, x)
        loss, lcache = crit.forward(y, target)
        _, grads = net.backward(box["params"], cache, crit.backward(lcache))
        box["params"], box["opt"] = opt.update(box["params"], grads, box["opt"])
        return float(loss)

    if torch is None:
        return {"fnn": ours}
    lstm = _torch_lstm(params64[0], f, h, dtype)
    linear = torch.nn.Linear(h, classes, dtype=lstm.weight_ih_l0.dtype)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(params64[2].W.astype(dtype)))
        linear.bias.copy_(torch.from_numpy(params64[2].b.astype(dtype)))
    sgd = torch.optim.SGD([*lstm.parameters(), *linear.parameters()], lr=LR)
    xt, lt = torch.from_numpy(x), torch.from_numpy(labels)

    def theirs() -> float:
        sgd.zero_grad()
        loss = F.nll_loss(F.log_softmax(linear(lstm(xt)[0][:, -1]), dim=1), lt)
        loss.backward()
        sgd.step()
        return float(loss.detach())

    return {"fnn": ours, "torch": theirs}


def _time(fn: Callable[[], Any], min_time: float) -> float:
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / calls


def check(name: str, fns: dict[str, Callable[[], Any]], dtype: type) -> None:
    """The first two calls of each (two training steps, or the input gradient) agree."""
    if "torch" not in fns:
        return
    ours = [np.asarray(fns["fnn"]()) for _ in range(2)]
    theirs = [np.asarray(fns["torch"]()) for _ in range(2)]
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    for a, b in zip(ours, theirs):
        scale = max(1.0, float(np.max(np.abs(b))))
        if not np.allclose(a, b, rtol=rtol, atol=rtol * scale):
            sys.exit(f"{name}: fnn and torch disagree (max abs difference "
                     f"{float(np.max(np.abs(a - b))):.3g})")


def run(name: str, fns: dict[str, Callable[[], Any]], rounds: int, min_time: float) -> dict:
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    for fn in fns.values():  # warm-up
        _time(fn, min_time / 2)
    for r in range(rounds):
        for k in order[r % len(order):] + order[:r % len(order)]:
            times[k].append(_time(fns[k], min_time))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = (statistics.median(a / b for a, b in zip(times["fnn"], times["torch"]))
             if "torch" in times else None)
    return {"name": name, "median_s": med, "ratio": ratio}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--t", type=int, default=32)
    p.add_argument("--features", type=int, default=128)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-time", type=float, default=0.3)
    args = p.parse_args(argv)
    from threadpoolctl import threadpool_limits
    if torch is not None:
        torch.set_num_threads(args.threads)
    dtypes = ("float32", "float64") if args.dtype == "both" else (args.dtype,)
    shape = (args.n, args.t, args.features, args.hidden)
    print(f"N={args.n} T={args.t} F={args.features} H={args.hidden}, {args.threads} thread(s), "
          f"{args.rounds} rounds; load average {' '.join(f'{v:.1f}' for v in _load())}")
    print("| workload | dtype | fnn ms | torch ms | fnn/torch |\n| --- | --- | --- | --- | --- |")
    with threadpool_limits(args.threads, user_api="blas"):
        for dname in dtypes:
            dtype = np.dtype(dname).type
            for name, make in (("LSTM fwd+bwd", lstm_fwd_bwd),
                               ("classifier step", classifier_step)):
                fns = make(*shape, dtype)
                check(name, fns, dtype)
                r = run(name, fns, args.rounds, args.min_time)
                med = r["median_s"]
                torch_ms = f"{1e3 * med['torch']:.2f}" if "torch" in med else "-"
                ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
                print(f"| {name} | {dname} | {1e3 * med['fnn']:.2f} | {torch_ms} | {ratio} |",
                      flush=True)
    print(f"load average at the end {' '.join(f'{v:.1f}' for v in _load())}")
    return 0


def _load() -> tuple[float, ...]:
    try:
        import os
        return os.getloadavg()
    except (AttributeError, OSError):
        return ()


if __name__ == "__main__":
    sys.exit(main())
