"""fnn's parallel kernels with 1 thread against N threads, side by side in one process.

Each round times every case once with ``fnn.threads(1)`` (the serial path: the kernels run
block by block on the calling thread and numpy's BLAS keeps its own thread count, as before
fnn had threads) and once with ``fnn.threads(N)`` (the blocks on N threads, BLAS held to one
thread each), in alternating order; a case's figure is the median of the per-round ratios
t(N) / t(1) (below 1: the threads help), with the fraction p of the 1-thread time spent in
fnn.parallel's regions and Amdahl's speed-up 1 / (1 - p + p/c) for c cores. The results are
bit-identical either way (tests/core/test_parallel.py); this only measures the speed. The fnn of
this checkout is imported (not an installed one).

    python benchmarks/threads.py                    # N = 2, float32 and float64, 7 rounds
    python benchmarks/threads.py --threads 4 --rounds 11 --only conv
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
import workloads as wl  # noqa: E402
from lstm import _time  # noqa: E402 - seconds per call, calls repeated for min_time

import fnn  # noqa: E402


def _layer_case(layer: fnn.Layer, shape: tuple, dtype: type) -> Callable[[], object]:
    rng = np.random.default_rng(0)
    params, state = layer.init(0)
    params, state = fnn.tree.cast(params, dtype), fnn.tree.cast(state, dtype)
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(layer.output_shape(shape)).astype(dtype)

    def call() -> object:
        _, cache = layer.forward(params, state, x)
        return layer.backward(params, cache, dy)
    return call


def _adam_case(dtype: type) -> Callable[[], object]:
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s).astype(dtype) for s in ((512, 784), (256, 512), (1024,))]
    opt = fnn.Adam(1e-3)
    state = opt.init(params)
    return lambda: opt.update(params, params, state)


def _step(name: str, dtype: type) -> Callable[[], object]:
    w = wl.WORKLOADS[name]
    return wl.build("fnn", w, w.data(dtype), dtype)


CASES: dict[str, Callable[[type], Callable[[], object]]] = {
    "W1 MLP step": lambda dt: _step("W1 MLP step", dt),
    "W2 CNN step": lambda dt: _step("W2 CNN step", dt),
    "conv fwd+bwd (W3)": lambda dt: _layer_case(fnn.Conv2d(16, 32, 3), (64, 16, 32, 32), dt),
    "conv stride 2": lambda dt: _layer_case(fnn.Conv2d(16, 32, 3, stride=2, padding=1),
                                            (64, 16, 32, 32), dt),
    "maxpool 2 (W3)": lambda dt: _layer_case(fnn.MaxPool2d(2), (64, 32, 32, 32), dt),
    "maxpool 3 s2": lambda dt: _layer_case(fnn.MaxPool2d(3, 2, 1), (64, 32, 32, 32), dt),
    "avgpool 2": lambda dt: _layer_case(fnn.AvgPool2d(2), (64, 32, 32, 32), dt),
    "batchnorm (W3)": lambda dt: _layer_case(fnn.BatchNormalization(1024), (512, 1024), dt),
    "batchnorm2d": lambda dt: _layer_case(fnn.BatchNorm2d(32), (64, 32, 32, 32), dt),
    "softmax (W3)": lambda dt: _layer_case(fnn.SoftMax(), (512, 1000), dt),
    "relu (W2 size)": lambda dt: _layer_case(fnn.ReLU(), (64, 16, 28, 28), dt),
    "elu (W2 size)": lambda dt: _layer_case(fnn.ELU(), (64, 16, 28, 28), dt),
    "adam update": _adam_case,
}
"""The kernels with a parallel path at the benchmark's sizes, and the two steps: name ->
(dtype -> the timed call)."""


def parallel_fraction(fn: Callable[[], object], calls: int = 5) -> float:
    """The fraction of fn's time (1 thread) spent in fnn.parallel's regions (``run``, and
    ``map_rows`` / ``map_elements``, which make one whole call with one thread): the part that
    N threads can share (Amdahl's p)."""
    inside, depth = [0.0], [0]
    names = ("run", "map_rows", "map_elements")
    originals = {name: getattr(fnn.parallel, name) for name in names}

    def timed(f: Callable[..., object]) -> Callable[..., object]:
        def call(*args: object, **kwargs: object) -> object:
            depth[0] += 1
            start = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    inside[0] += time.perf_counter() - start
        return call
    with fnn.threads(1):
        fn()
        for name, f in originals.items():
            setattr(fnn.parallel, name, timed(f))
        try:
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            total = time.perf_counter() - start
        finally:
            for name, f in originals.items():
                setattr(fnn.parallel, name, f)
    return inside[0] / total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="N, the threads to compare with 1")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--min-time", type=float, default=0.05, help="seconds per timed batch")
    p.add_argument("--dtype", action="append", choices=["float32", "float64"], default=[])
    p.add_argument("--blas", type=int, help="hold numpy's BLAS to this many threads for the "
                   "whole run (threadpoolctl; default: numpy's own count)")
    p.add_argument("--only", action="append", default=[], metavar="TEXT",
                   help="cases whose name contains TEXT (repeatable)")
    p.add_argument("--keep-memory", action=argparse.BooleanOptionalAction, default=True,
                   help="fnn.memory.keep_freed_memory() first, as python -m fnn does")
    args = p.parse_args(argv)
    kept = args.keep_memory and fnn.memory.keep_freed_memory()
    if args.blas:
        from threadpoolctl import threadpool_limits
        limiter = threadpool_limits(args.blas, user_api="blas")  # noqa: F841 - for the run
    print(f"# fnn threads: 1 against {args.threads}, BLAS threads {args.blas or 'default'}, "
          f"malloc keeps freed memory: {'yes' if kept else 'no'}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print("\n| case | dtype | ms, 1 thread | ms, N threads | N/1 | parallel fraction p | "
          "Amdahl 2 / 4 / 8 / 16 cores |\n|---|---|---|---|---|---|---|")
    for dname in args.dtype or ["float32", "float64"]:
        for name, make in CASES.items():
            if args.only and not any(o in name for o in args.only):
                continue
            fn = make(getattr(np, dname))
            t1, tn, ratios = [], [], []
            for r in range(args.rounds):
                order = (1, args.threads) if r % 2 == 0 else (args.threads, 1)
                t = {}
                for n in order:
                    with fnn.threads(n):
                        # untimed first, at least 0.1 s: the pool's threads, and BLAS's idle
                        # threads of the case before, which spin for a while (see run.py)
                        _time(fn, max(args.min_time, 0.1))
                        t[n] = _time(fn, args.min_time)
                t1.append(t[1])
                tn.append(t[args.threads])
                ratios.append(t[args.threads] / t[1])
            frac = parallel_fraction(fn)
            amdahl = " / ".join(f"{1 / (1 - frac + frac / c):.1f}" for c in (2, 4, 8, 16))
            print(f"| {name} | {dname} | {statistics.median(t1) * 1e3:.2f} | "
                  f"{statistics.median(tn) * 1e3:.2f} | {statistics.median(ratios):.2f} | "
                  f"{frac:.2f} | {amdahl} |", flush=True)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
