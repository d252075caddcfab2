"""fnn.distributed: equality with fnn.fit, speed on a LocalCluster, per-step overhead, transfers.

    python benchmarks/distributed.py            # about a minute on 2 cores
    python benchmarks/distributed.py --json out.json

Needs the `distributed` and `demo` extras (Dask, scikit-learn for the digits). Prints:

1. equality: fnn.distributed.fit (2 workers, 2 shards) against fnn.fit on the digits MLP
   (Linear-ReLU-Linear-LogSoftMax, float64, Adam, batch 64), the largest |difference| of a
   parameter over the parameter's largest magnitude, after 1 and 5 epochs; and a net with
   BatchNormalization and Dropout run twice with 2 shards (bit-equal or not).
2. speed: seconds per step of the benchmark CNN (W2 of benchmarks/workloads.py) at batch 512
   in float32 and float64: one process with one BLAS thread (fnn.fit) against 2 worker
   processes with one thread each (fnn.distributed.fit), side by side in one run, the
   median of the rounds; and where a distributed step's time goes (the workers' compute time
   from Dask's task stream against the step's wall time).
3. per-step overhead on a tiny model (the digits MLP with 32 hidden units, batch 64).
4. params transfer per step: sending the params with each shard task (what fit does)
   against scattering them to every worker first (broadcast futures), for 20k to 5M float32
   parameters.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

# This file is named distributed.py: its folder goes to the END of sys.path (for workloads and
# classic) so that `import distributed` is Dask's, here and in the spawned worker processes.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]
sys.path.insert(0, str(_HERE.parent))

import distributed  # noqa: E402
import workloads  # noqa: E402

import fnn  # noqa: E402
from fnn import distributed as fd  # noqa: E402


def _max_rel_diff(a, b) -> float:
    return max(float(np.max(np.abs(u - v)) / np.max(np.abs(u)))
               for u, v in zip(fnn.tree.leaves(a), fnn.tree.leaves(b)))


def _digits_fit(fit, net, epochs, **kwargs):
    x, labels = fnn.data.load_digits()
    opt = fnn.Adam(learning_rate=2e-3)
    params, state = net.init(1)
    return fit(net, fnn.ClassNLLCriterion(), opt, params, state, opt.init(params), x=x,
               labels=labels, epochs=epochs, batch_size=64, key=2, **kwargs)


def equality(client) -> dict:
    mlp = fnn.Sequential([fnn.Linear(64, 128), fnn.ReLU(), fnn.Linear(128, 10),
                          fnn.LogSoftMax()])
    out = {}
    for epochs in (1, 5):
        ref = _digits_fit(fnn.fit, mlp, epochs)
        got = _digits_fit(fd.fit, mlp, epochs, client=client, shards=2)
        out[f"mlp_rel_diff_after_{epochs}_epochs"] = _max_rel_diff(ref.params, got.params)
    coupled = fnn.Sequential([fnn.Linear(64, 128), fnn.BatchNormalization(128), fnn.ReLU(),
                              fnn.Dropout(0.3), fnn.Linear(128, 10), fnn.LogSoftMax()])
    a, b = (_digits_fit(fd.fit, coupled, 2, client=client, shards=2) for _ in range(2))
    out["bn_dropout_2_shards_bit_equal"] = all(
        np.array_equal(u, v) for u, v in zip(fnn.tree.leaves((a.params, a.state)),
                                             fnn.tree.leaves((b.params, b.state))))
    return out


def _cnn(dtype, n):
    w = workloads.WORKLOADS["W2 CNN step"]
    net = fnn.Sequential([workloads.FNN_LAYERS[kind](*args) for kind, *args in w.layers])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 1, 28, 28)).astype(dtype)
    return net, x, rng.integers(0, 10, n)


def _seconds_per_step(fit, net, x, labels, batch_size, **kwargs) -> float:
    opt = fnn.SGDMomentum(learning_rate=0.01, momentum=0.9)
    params, state = fnn.tree.cast(net.init(0), x.dtype)
    result = fit(net, fnn.ClassNLLCriterion(), opt, params, state, opt.init(params), x=x,
                 labels=labels, epochs=1, batch_size=batch_size, key=0, **kwargs)
    return result.history["seconds"][0] / -(-len(x) // batch_size)  # without the scatter


def _cpu_seconds(client) -> tuple[float, list[float]]:
    """CPU seconds used so far by this process and by each worker process."""
    return time.process_time(), sorted(client.run(time.process_time).values())


def speed(client, rounds: int, steps: int) -> dict:
    out = {}
    for dtype in (np.float32, np.float64):
        net, x, labels = _cnn(dtype, 512 * steps)
        local, dist, cpu_local, cpu_workers, cpu_driver = [], [], [], [], []
        for _ in range(rounds):
            start = time.process_time()
            with threadpool_limits(limits=1):
                local.append(_seconds_per_step(fnn.fit, net, x, labels, 512))
            cpu_local.append((time.process_time() - start) / steps)
            driver, workers = _cpu_seconds(client)
            dist.append(_seconds_per_step(fd.fit, net, x, labels, 512, client=client))
            driver2, workers2 = _cpu_seconds(client)
            cpu_driver.append((driver2 - driver) / steps)
            cpu_workers.append(max(b - a for a, b in zip(workers, workers2)) / steps)
        name = np.dtype(dtype).name
        out[f"cnn512_{name}_1proc_s_per_step"] = statistics.median(local)
        out[f"cnn512_{name}_2workers_s_per_step"] = statistics.median(dist)
        out[f"cnn512_{name}_speedup"] = statistics.median(a / b for a, b in zip(local, dist))
        # CPU seconds per step: the one process; the busier worker; the driver (scheduler and
        # client included). Under contention wall time is not CPU time; these are.
        out[f"cnn512_{name}_1proc_cpu_s_per_step"] = statistics.median(cpu_local)
        out[f"cnn512_{name}_busier_worker_cpu_s_per_step"] = statistics.median(cpu_workers)
        out[f"cnn512_{name}_driver_cpu_s_per_step"] = statistics.median(cpu_driver)
    # Where the time goes: the workers' busy time per step against the wall time of a step.
    net, x, labels = _cnn(np.float32, 512 * steps)
    client.get_task_stream()  # start recording
    with distributed.get_task_stream(client) as ts:
        wall = _seconds_per_step(fd.fit, net, x, labels, 512, client=client)
    shards = [t for t in ts.data if str(t["key"]).startswith("fnn-fit-")]
    compute = [sum(s["stop"] - s["start"] for s in t["startstops"] if s["action"] == "compute")
               for t in shards]
    transfer = [sum(s["stop"] - s["start"] for s in t["startstops"] if s["action"] != "compute")
                for t in shards]
    out["cnn512_float32_step_wall_s"] = wall
    out["cnn512_float32_shard_compute_s_median"] = statistics.median(compute)
    out["cnn512_float32_shard_transfer_s_median"] = statistics.median(transfer) if transfer \
        else 0.0
    return out


def overhead(client, rounds: int) -> dict:
    net = fnn.Sequential([fnn.Linear(64, 32), fnn.ReLU(), fnn.Linear(32, 10), fnn.LogSoftMax()])
    x, labels = fnn.data.load_digits()
    local, dist = [], []
    for _ in range(rounds):
        with threadpool_limits(limits=1):
            local.append(_seconds_per_step(fnn.fit, net, x, labels, 64))
        dist.append(_seconds_per_step(fd.fit, net, x, labels, 64, client=client))
    return {"tiny_1proc_s_per_step": statistics.median(local),
            "tiny_2workers_s_per_step": statistics.median(dist),
            "tiny_overhead_s_per_step": statistics.median(dist) - statistics.median(local)}


def _touch(params, i):
    return i


def transfer(client, repeats: int) -> dict:
    out = {}
    n_workers = len(client.nthreads())
    for n in (20_000, 500_000, 5_000_000):
        params = np.ones(n, np.float32)
        embed, broadcast = [], []
        for r in range(repeats):
            start = time.perf_counter()
            client.gather([client.submit(_touch, params, i, key=f"embed-{n}-{r}-{i}")
                           for i in range(n_workers)])
            embed.append(time.perf_counter() - start)
            start = time.perf_counter()
            [ref] = client.scatter([params], broadcast=True, hash=False)
            client.gather([client.submit(_touch, ref, i, key=f"bcast-{n}-{r}-{i}")
                           for i in range(n_workers)])
            broadcast.append(time.perf_counter() - start)
            del ref
        out[f"params_{n}_with_tasks_s"] = statistics.median(embed)
        out[f"params_{n}_broadcast_s"] = statistics.median(broadcast)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=4, help="CNN steps per timed fit")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    results: dict = {}
    with fd.local_cluster(2) as cluster, distributed.Client(cluster) as client:
        for part in (equality(client), speed(client, args.rounds, args.steps),
                     overhead(client, args.rounds), transfer(client, args.rounds)):
            results |= part
            for k, v in part.items():
                print(f"{k:45s} {v:.3g}" if isinstance(v, float) else f"{k:45s} {v}",
                      flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
