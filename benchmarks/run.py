"""Time fnn against compat, PyTorch CPU and the classic loop-based reference.

    python benchmarks/run.py --quick             # a couple of minutes at most
    python benchmarks/run.py                     # the full run (docs/performance.md)
    python benchmarks/run.py --json out.json --only W2 --dtype float64
    python benchmarks/run.py --profile --only W3 --dtype float32   # cProfile of fnn's calls

Method. Every implementation of a workload is built from the same weights and inputs; its first
calls are the numerics check (the losses of the first two training steps, or the input
gradient, against fnn's: 1e-10 relative in float64) and the warm-up. Then the implementations
are interleaved within each round (the order rotates from round to round), each timed with
``time.perf_counter`` over enough calls to last ``--min-time`` seconds, after untimed calls for
half that time, at least 0.1 s (so that the other library's idle threads have stopped spinning
and this one's are awake again); a figure is the median
over rounds, and a ratio between two implementations is the median of their per-round ratios,
so both sides of a ratio were measured side by side in the same run. PyTorch runs with as many
threads as numpy's BLAS. The lower bound of a workload is its matrix-product FLOPs at the
machine's measured GEMM rate, or its unavoidable memory traffic at the measured copy bandwidth,
whichever is larger; each time is also printed as a multiple of that bound.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import workloads as wl

DTYPES = {"float32": np.float32, "float64": np.float64}
# fnn / torch targets (float32, float64) per workload: those of the performance plan in
# docs/performance.md.
TARGETS = {"W1 MLP step": (1.0, 1.0), "W2 CNN step": (1.0, 0.9), "W3 conv": (1.6, 0.6),
           "W3 softmax": (1.3, 1.3), "W3 batchnorm": (1.1, 1.1), "W3 maxpool": (0.8, 0.8)}
NUMERICS_RTOL = {"float32": 1e-4, "float64": 1e-10}


# --- the machine -------------------------------------------------------------------------------

def blas_threads() -> tuple[int, str]:
    """numpy's BLAS thread count and a description (threadpoolctl when installed, else 2)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return 2, "unknown (threadpoolctl not installed; assuming 2 threads)"
    infos = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    # numpy's own BLAS first (scipy and torch may bring others)
    infos.sort(key=lambda i: "numpy" not in str(i.get("filepath", "")))
    for info in infos:
            desc = (f"{info.get('internal_api')} {info.get('version')} "
                    f"({info.get('architecture')}, {info.get('threading_layer')})")
            return int(info["num_threads"]), desc
    return 2, "unknown (no BLAS found by threadpoolctl; assuming 2 threads)"


def limit_threads(n: int) -> Any:
    """numpy's BLAS, fnn's kernels and PyTorch all at ``n`` threads; returns the
    threadpoolctl limiter."""
    wl.fnn.set_num_threads(n)
    if wl.torch is not None:
        wl.torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(n, user_api="blas")


def machine(threads: int, blas: str) -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "blas": blas, "threads": threads,
            "torch": None if wl.torch is None else wl.torch.__version__,
            "compat": wl.compat is not None,
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "loadavg_start": os.getloadavg()}


def best_rate(fn: Callable[[], Any], work: float, rounds: int) -> float:
    """work / (best time of ``fn``) over ``rounds`` calls after one warm-up."""
    fn()
    best = min(_timed(fn) for _ in range(rounds))
    return work / best


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def gemm_rate(dtype: type, n: int, rounds: int) -> float:
    """Measured matrix-product rate (FLOP/s) of an n x n x n product in ``dtype``."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, n, n)).astype(dtype)
    out = np.empty((n, n), dtype)
    return best_rate(lambda: np.matmul(a, b, out=out), 2.0 * n ** 3, rounds)


def copy_bandwidth(rounds: int) -> float:
    """Measured memory bandwidth (bytes/s, read + write) of a 64 MB copy."""
    a = np.ones(1 << 24, np.float32)
    b = np.empty_like(a)
    return best_rate(lambda: np.copyto(b, a), 2.0 * a.nbytes, rounds)


# --- timing --------------------------------------------------------------------------------

def interleaved(fns: dict[str, Callable[[], Any]], first_call: dict[str, float],
                rounds: dict[str, int], min_time: float) -> dict[str, list[float]]:
    """Per-call seconds of each function, one entry per round. In round r every function with
    more than r rounds runs ``reps`` calls back to back, in an order rotated by r.

    Each timed batch follows untimed calls for max(0.1 s, min_time / 2) (unless one call
    takes longer): after a switch, the previous library's idle threads still spin (OpenBLAS's
    for up to ~0.1 s) and the new one's have gone to sleep; timed at once, PyTorch's 2-thread
    W1 step measured 2x slower than alone."""
    reps = {k: max(1, min(1000, round(min_time / max(first_call[k], 1e-9)))) for k in fns}
    rewarm = max(0.1, min_time / 2)
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(max(rounds.values())):
        for k in names[r % len(names):] + names[:r % len(names)]:
            if r >= rounds[k]:
                continue
            fn, n = fns[k], reps[k]
            t0 = time.perf_counter()
            while first_call[k] < rewarm and time.perf_counter() - t0 < rewarm:
                fn()
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            times[k].append((time.perf_counter() - t0) / n)
    return times


def paired_ratio(a: list[float], b: list[float]) -> float | None:
    """Median over the rounds both ran of a[r] / b[r]."""
    n = min(len(a), len(b))
    return statistics.median(a[r] / b[r] for r in range(n)) if n else None


def relative_error(value: Any, reference: Any) -> float:
    v, ref = np.asarray(value, np.float64), np.asarray(reference, np.float64)
    return float(np.max(np.abs(v - ref)) / max(np.max(np.abs(ref)), 1e-300))


# --- one workload in one dtype -----------------------------------------------------------------

def run_case(w: wl.Workload, dname: str, impls: list[str], args: argparse.Namespace,
             rates: dict) -> dict:
    dtype = DTYPES[dname]
    d = w.data(dtype)
    fns, first_call, probes = {}, {}, {}
    for impl in impls:
        fns[impl] = wl.build(impl, w, d, dtype)
        # The numerics calls: two training steps (their losses) or one kernel call (its dx).
        calls = 2 if w.kind == "step" else 1
        t0 = time.perf_counter()
        probes[impl] = [wl.as_numpy(fns[impl]()) for _ in range(calls)]
        first_call[impl] = (time.perf_counter() - t0) / calls
        if first_call[impl] < 0.2:  # warm-up (the slow classic calls have had theirs)
            for _ in range(3):
                fns[impl]()
    numerics = {impl: relative_error(probes[impl], probes["fnn"]) for impl in impls
                if impl != "fnn"}
    rounds = {impl: (args.classic_rounds if impl == "classic" else args.rounds)
              for impl in impls}
    times = interleaved(fns, first_call, rounds, args.min_time)
    bound = max(w.flops / rates["gemm"][dname],
                w.traffic * np.dtype(dtype).itemsize / rates["bandwidth"])
    med = {impl: statistics.median(times[impl]) for impl in impls}
    work = (f"{w.flops / 1e9:.2f} GFLOP" if w.flops
            else f"{w.traffic * np.dtype(dtype).itemsize / 1e6:.1f} MB")
    res = {"workload": w.name, "dtype": dname, "work": work, "bound_s": bound, "median_s": med,
           "rounds_s": times, "numerics_rel_err": numerics,
           "numerics_ok": all(e <= NUMERICS_RTOL[dname] for e in numerics.values()),
           "first_losses" if w.kind == "step" else "dx_checked": (
               {k: [float(v) for v in p] for k, p in probes.items()} if w.kind == "step"
               else True)}
    if "torch" in impls:
        res["fnn/torch"] = paired_ratio(times["fnn"], times["torch"])
        res["target"] = TARGETS[w.name][0 if dname == "float32" else 1]
    if "compat" in impls:
        res["compat/fnn"] = paired_ratio(times["compat"], times["fnn"])
    if "classic" in impls:
        res["classic/fnn"] = med["classic"] / med["fnn"]
    return res


# --- output ------------------------------------------------------------------------------------

def _ms(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s * 1e3:.3g}" if s < 1 else f"{s * 1e3:.0f}"


def _x(r: float | None, digits: int = 2) -> str:
    return "–" if r is None else f"{r:.{digits}f}"


def table(results: list[dict], impls: list[str]) -> str:
    """The results as a Markdown table."""
    head = (["workload", "dtype", "work"] + [f"{k} ms" for k in impls]
            + ["fnn/torch", "target", "compat/fnn", "classic/fnn", "bound ms"]
            + [f"{k} ×bound" for k in impls if k != "classic"] + ["numerics (max rel. err)"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        med, bound = r["median_s"], r["bound_s"]
        ratio, target = r.get("fnn/torch"), r.get("target")
        mark = "" if ratio is None else (" ✓" if ratio <= target else " ✗")
        row = ([r["workload"], r["dtype"], r["work"]] + [_ms(med.get(k)) for k in impls]
               + [_x(ratio) + mark, _x(target), _x(r.get("compat/fnn")),
                  _x(r.get("classic/fnn"), 1), _ms(bound)]
               + [_x(med[k] / bound, 1) for k in impls if k != "classic"]
               + [("ok " if r["numerics_ok"] else "FAIL ")
                  + f"{max(r['numerics_rel_err'].values(), default=0):.1e}"])
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def profile(w: wl.Workload, dname: str, calls: int) -> None:
    fn = wl.build("fnn", w, w.data(DTYPES[dname]), DTYPES[dname])
    fn()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn()
    prof.disable()
    print(f"\n## cProfile of fnn, {w.name} {dname}, {calls} calls (top 15 by own time)")
    pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(15)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer, shorter rounds (< 2 minutes)")
    p.add_argument("--rounds", type=int, help="rounds per implementation (default 15; quick 5)")
    p.add_argument("--classic-rounds", type=int, help="rounds of the slow classic reference "
                   "(default 3; quick 1)")
    p.add_argument("--min-time", type=float, help="seconds per timed batch of calls "
                   "(default 0.2; quick 0.05)")
    p.add_argument("--only", action="append", default=[], metavar="PREFIX",
                   help="workloads whose name starts with PREFIX (repeatable), e.g. W3")
    p.add_argument("--dtype", action="append", choices=list(DTYPES), default=[])
    p.add_argument("--impl", action="append", default=[], help="implementations (repeatable; "
                   "fnn always runs)")
    p.add_argument("--threads", type=int, help="BLAS and torch threads (default: numpy's BLAS)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--profile", action="store_true", help="cProfile fnn's calls instead")
    p.add_argument("--keep-memory", action=argparse.BooleanOptionalAction, default=True,
                   help="fnn.memory.keep_freed_memory() first, as python -m fnn does (for "
                        "every implementation: one process); --no-keep-memory: glibc's default")
    args = p.parse_args(argv)
    kept = args.keep_memory and wl.fnn.memory.keep_freed_memory()
    args.rounds = args.rounds or (5 if args.quick else 15)
    args.classic_rounds = args.classic_rounds or (1 if args.quick else 3)
    args.min_time = args.min_time or (0.05 if args.quick else 0.2)

    threads, blas = blas_threads()
    threads = args.threads or threads
    limiter = limit_threads(threads)  # noqa: F841 - keeps the BLAS limit for the whole run
    selected = [w for name, w in wl.WORKLOADS.items()
                if not args.only or any(name.startswith(o) for o in args.only)]
    dnames = args.dtype or list(DTYPES)
    if args.profile:
        for w in selected:
            for dname in dnames:
                profile(w, dname, 20 if w.kind == "step" else 10)
        return 0
    impls = [k for k in wl.implementations() if not args.impl or k == "fnn" or k in args.impl]
    info = machine(threads, blas)
    print(f"# fnn benchmark: {info['cpu']}, {info['cores']} cores, {threads} threads")
    print(f"numpy {info['numpy']} with {blas}; torch {info['torch']}; "
          f"compat {'yes' if info['compat'] else 'not importable'}; "
          f"OPENBLAS_CORETYPE={info['OPENBLAS_CORETYPE']}; "
          f"load average {info['loadavg_start'][0]:.2f}; "
          f"malloc keeps freed memory: {'yes' if kept else 'no (glibc default)'}")
    t_start = time.perf_counter()
    n = 1024 if args.quick else 2048
    rates = {"gemm": {k: gemm_rate(dt, n, 5) for k, dt in DTYPES.items()},
             "bandwidth": copy_bandwidth(5)}
    print("GEMM " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in rates["gemm"].items())
          + f" ({n}^3); copy bandwidth {rates['bandwidth'] / 1e9:.1f} GB/s (64 MB)")
    print(f"rounds {args.rounds} (classic {args.classic_rounds}), {args.min_time} s per batch\n")
    results = []
    for w in selected:
        for dname in dnames:
            results.append(run_case(w, dname, impls, args, rates))
            r = results[-1]
            print(f"  {w.name} {dname}: " + ", ".join(
                f"{k} {_ms(v)} ms" for k, v in r["median_s"].items())
                + f"; fnn/torch {_x(r.get('fnn/torch'))}", flush=True)
    info["loadavg_end"] = os.getloadavg()
    info["seconds"] = time.perf_counter() - t_start
    print("\n" + table(results, impls))
    print(f"\nms: median per call; ratios: median of per-round ratios (classic/fnn: of medians); "
          f"bound: matrix-product FLOPs at the GEMM rate or memory traffic at the copy "
          f"bandwidth (work: matrix-product FLOPs, or bytes read and written); "
          f"{info['seconds']:.0f} s, load average at the end "
          f"{info['loadavg_end'][0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rates": rates, "results": results,
                       "args": vars(args)}, f, indent=1)
    return 0 if all(r["numerics_ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
