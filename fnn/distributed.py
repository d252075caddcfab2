"""Data-parallel training and hyperparameter sweeps on Dask's distributed scheduler.

Needs the ``distributed`` extra (``pip install "fnn[distributed]"``, i.e. ``dask[distributed]``).
Pure steps make this safe: the gradient of a shard is a function of (params, state, shard), so
Dask can run it on any worker and run it again after a failure with the same result.

- :func:`fit` is :func:`fnn.fit` with each global batch split into shards (one per worker by
  default): every shard's forward and backward runs as a Dask task, the driver combines the
  shard gradients with the weights that make them the full-batch gradient (in shard order, so a
  run is reproducible for a given number of shards) and applies one optimizer update.
- :func:`sweep` runs independent trainings as tasks and returns their results in order.
- :func:`local_cluster` starts the processes-backed ``LocalCluster`` both use by default.

Every function takes ``client``: ``None`` (an embedded ``LocalCluster`` of ``n_workers``
processes with one thread each, closed at the end), a ``distributed.Client``, or a scheduler
address such as ``"tcp://10.0.0.1:8786"``. See docs/distributed.md for the exact guarantees.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError
from typing import Any

import numpy as np

from . import tree
from .core import Key, split_key
from .train import FitResult, fit_arguments, loss_and_gradients, run_epochs

__all__ = ["fit", "sweep", "local_cluster", "ClusterError"]

# How often (seconds) a wait for shard results checks that the cluster still has workers.
_POLL = 1.0


class ClusterError(RuntimeError):
    """The Dask cluster was unreachable or lost its workers: the message names the cluster and
    the step. ``result`` is the :class:`fnn.train.FitResult` of the last completed step (its
    history covers the completed epochs); None when no step had started (connecting,
    scattering the data) and in :func:`sweep`."""

    def __init__(self, message: str, result: FitResult | None = None) -> None:
        super().__init__(message)
        self.result = result


def _dask() -> Any:
    try:
        import distributed
    except ImportError as err:
        raise ImportError('fnn.distributed needs Dask\'s distributed scheduler: '
                          'pip install "fnn[distributed]" (or pip install "dask[distributed]")'
                          ) from err
    return distributed


def local_cluster(n_workers: int | None = None, **kwargs: Any) -> Any:
    """A ``distributed.LocalCluster`` of ``n_workers`` worker processes with one thread each.

    ``n_workers`` defaults to ``os.cpu_count()`` (0: a scheduler alone, scale it later). The
    scheduler's dashboard (with bokeh installed) listens on a free port (``.dashboard_link``;
    pass ``dashboard_address=":8787"`` to fix it); other ``kwargs`` go to ``LocalCluster``. The
    worker processes start with the driver's ``sys.path``, so they import the same fnn. Close
    it (``with`` or ``.close()``) when done. In a script, create it under
    ``if __name__ == "__main__":`` (worker processes are spawned and import the main module).
    """
    n_workers = (os.cpu_count() or 1) if n_workers is None else n_workers
    _positive("fnn.distributed.local_cluster", "n_workers", n_workers, minimum=0)
    options = {"processes": True, "threads_per_worker": 1, "dashboard_address": ":0",
               "worker_dashboard_address": None} | kwargs
    dd = _dask()
    import dask

    # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also fixes glibc's mmap
    # threshold: every large temporary is then mapped and faulted in anew (the CNN step took
    # 10-45 % more CPU time in a worker so started); keep glibc's adaptive default.
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return dd.LocalCluster(n_workers=n_workers, **options)


def _positive(who: str, name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{who}: {name} must be {what}, got {value!r}")


def _cluster_name(client: Any) -> str:
    return f"the Dask cluster at {client.scheduler.address}"


def _lost(where: str, err: BaseException) -> ClusterError:
    return ClusterError(f"{where}: lost the cluster: {err!r}")


@contextlib.contextmanager
def _connect(client: Any, n_workers: int | None, who: str, timeout: float) -> Iterator[Any]:
    """A connected Client: ``client`` itself, a new one to the address ``client``, or one on a
    new :func:`local_cluster` (closed at exit)."""
    dd = _dask()
    if client is not None and n_workers is not None:
        raise ValueError(f"{who}: n_workers={n_workers!r} sizes the embedded LocalCluster; "
                         f"it cannot be combined with client={client!r}")
    if isinstance(client, dd.Client):
        yield client
        return
    if client is not None and not isinstance(client, str):
        raise TypeError(f"{who}: client must be None, a distributed.Client or a scheduler "
                        f"address string, got {type(client).__name__}: {client!r}")
    with contextlib.ExitStack() as stack:
        if client is None:
            address = stack.enter_context(local_cluster(n_workers))
        else:
            address = client
        try:
            client = stack.enter_context(dd.Client(address, timeout=timeout))
        except (OSError, TimeoutError) as err:
            raise ClusterError(f"{who}: cannot reach the Dask scheduler at {address!r} "
                               f"(waited {timeout:g} s): {err}") from err
        yield client


def _wait(client: Any, futures: list, where: str, timeout: float) -> None:
    """Wait for ``futures``; ClusterError naming ``where`` if the scheduler goes away or has
    had no worker for ``timeout`` seconds."""
    dd = _dask()
    without_workers = 0.0
    while True:
        try:
            dd.wait(futures, timeout=_POLL)
            return
        except TimeoutError:
            pass
        try:
            n_threads = sum(client.nthreads().values())
        except (OSError, TimeoutError, CancelledError) as err:
            raise _lost(where, err) from err
        without_workers = 0.0 if n_threads else without_workers + _POLL
        if without_workers >= timeout:
            raise ClusterError(f"{where}: the cluster has had no worker for "
                               f"{without_workers:g} s")


def _lost_cluster_errors() -> tuple[type[BaseException], ...]:
    """What Dask raises when the scheduler or the workers (not a task) fail."""
    dd = _dask()
    return OSError, TimeoutError, CancelledError, dd.KilledWorker, dd.client.ClosedClientError


def _run(client: Any, submit: Callable[[], list], where: str, timeout: float) -> list:
    """The results of the futures ``submit()`` returns, in order. A task's own exception is
    re-raised as is (with a note naming ``where``); a lost cluster raises ClusterError."""
    futures: list = []
    try:
        futures = submit()
        _wait(client, futures, where, timeout)
        return client.gather(futures)
    except ClusterError:
        raise
    except Exception as err:
        # A task's own OSError (say) is the task's, not a lost cluster.
        by_task = any(f.status == "error" for f in futures) and not isinstance(
            err, _dask().KilledWorker)
        if by_task or not isinstance(err, _lost_cluster_errors()):
            err.add_note(f"raised in a task of {where}")
            raise
        raise _lost(where, err) from err


def _scatter(client: Any, arrays: list, where: str, timeout: float) -> list:
    """Futures of ``arrays``, each copied to every worker (waiting up to ``timeout`` seconds
    for a first worker)."""
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError as err:
        raise ClusterError(f"{where}: the cluster has no worker (waited {timeout:g} s)"
                           ) from err
    except (OSError, CancelledError) as err:
        raise _lost(where, err) from err
    return client.scatter(arrays, broadcast=True, hash=False)


# --- fit ----------------------------------------------------------------------------------------

def _shard_state(state: Any, shard: int, n_shards: int) -> Any:
    """The state shard ``shard`` runs with: every random key ``k`` replaced by
    ``split_key(k, n_shards)[shard]`` (Dropout masks differ between shards); one shard runs
    with ``state`` itself, as :func:`fnn.fit` does."""
    if n_shards == 1:
        return state
    return tree.map(lambda leaf: split_key(leaf, n_shards)[shard] if isinstance(leaf, Key)
                    else leaf, state)


def _shard_gradients(net: Any, crit: Any, params: Any, state: Any, x: np.ndarray,
                     targets: np.ndarray, idx: np.ndarray) -> tuple:
    """The task: loss and gradients on ``x[idx]``. Returns (grads, state, loss, n_correct,
    denominator) where ``denominator`` is what a "mean" criterion divided the loss by."""
    # Fresh (aligned) copies of the arrays Dask deserialized: its receive buffers can put an
    # array at an address that is not a multiple of its itemsize, and a matrix product with
    # such an array sums in another order (measured): last-bit differences between runs.
    params, state = tree.map(lambda a: np.array(a) if isinstance(a, np.ndarray) else a,
                             (params, state))
    xb, tb = x[idx], targets[idx]
    loss, grads, state, y, lcache = loss_and_gradients(net, crit, params, state, xb, tb)
    n_correct = int(np.sum(np.argmax(y, axis=1) == np.argmax(tb, axis=1)))
    return grads, state, float(loss), n_correct, float(getattr(lcache, "denominator", len(xb)))


def _weighted_sum(trees: list, weights: list[float]) -> Any:
    """Leafwise ``sum_i weights[i] * trees[i]`` over floating-point array leaves, summed in
    list order (in each leaf's dtype); every other leaf is taken from ``trees[0]``."""

    def leaf(*xs: Any) -> Any:
        if not (isinstance(xs[0], np.ndarray) and np.issubdtype(xs[0].dtype, np.floating)):
            return xs[0]
        w = [xs[0].dtype.type(wi) for wi in weights]
        total = xs[0] * w[0]
        for x, wi in zip(xs[1:], w[1:]):
            total += x * wi
        return total

    return tree.map(leaf, *trees)


def _shard_weights(crit: Any, denominators: list[float]) -> list[float]:
    """Weights that turn shard losses (and gradients) into the full batch's: 1 for a summed
    criterion, else each shard's share of the mean's denominator (its rows, or for class
    weights the sum of its rows' weights)."""
    if getattr(crit, "reduction", "mean") == "sum":
        return [1.0] * len(denominators)
    total = sum(denominators)
    return [d / total for d in denominators]


def fit(net: Any, crit: Any, opt: Any, params: Any, state: Any, opt_state: Any, *,
        x: np.ndarray, labels: np.ndarray, epochs: int, batch_size: int, key: int | Key,
        client: Any = None, n_workers: int | None = None, shards: int | None = None,
        validation: tuple[np.ndarray, np.ndarray] | None = None, n_classes: int | None = None,
        progress: bool = False, on_epoch: Callable[[int, dict], None] | None = None,
        timeout: float = 60.0) -> FitResult:
    """:func:`fnn.fit` with each batch's forward and backward split over Dask workers.

    Same arguments, batches (same ``key``, same batches) and :class:`fnn.train.FitResult` as
    :func:`fnn.fit`, plus: ``client`` (None: a :func:`local_cluster` of ``n_workers``
    processes, closed at the end; a ``distributed.Client``; or a scheduler address), ``shards``
    (default: the number of workers when training starts; fixed for the whole run) and
    ``timeout`` (seconds to wait to connect, and for a worker when the cluster has none).

    ``x`` and the one-hot targets are scattered to every worker once. Each step sends the
    params and the state with the shard tasks; shard ``i`` of a batch of ``B`` rows is the
    ``i``-th of ``np.array_split(batch, shards)``; its gradient ``g_i`` (of its mean loss)
    returns to the driver, which forms ``g = sum_i (n_i / B) g_i`` in shard order (for a
    criterion with ``reduction="sum"``: ``sum_i g_i``; with class weights: each shard's share
    of the weight sum) and applies ``opt.update``. Without batch-coupled layers the params
    equal ``fnn.fit``'s up to the summation order; with ``shards=1``, bit for bit (when the
    driver's BLAS, like the workers', runs one thread).

    Layer state: floating-point leaves (BatchNorm's moving statistics, computed per shard)
    are combined with the same weights; random keys: shard ``i`` runs with
    ``split_key(k, shards)[i]`` for each key ``k`` of the state, and the next keys are shard
    0's. A worker that dies mid-step is replaced and its pure task recomputed, with the same
    result. If the scheduler is unreachable or has had no worker for ``timeout`` seconds,
    raises :class:`ClusterError` naming the cluster and the step, whose ``result`` holds the
    last completed params, state and optimizer state.
    """
    who = "fnn.distributed.fit"
    x, targets, validation = fit_arguments(who, x, labels, epochs, batch_size, n_classes,
                                           validation)
    if shards is not None:
        _positive(who, "shards", shards)
    n_batches = -(-len(x) // batch_size)
    run = uuid.uuid4().hex[:12]
    counter = itertools.count()
    completed: dict = {"history": {}}

    with _connect(client, n_workers, who, timeout) as c:
        who = f"{who} on {_cluster_name(c)}"
        data = _scatter(c, [x, targets], who, timeout)
        n_shards = shards or len(c.nthreads())

        def step(params: Any, state: Any, opt_state: Any, idx: np.ndarray) -> tuple:
            number = next(counter)
            where = (f"{who}, epoch {number // n_batches + 1} step {number % n_batches + 1} "
                     f"({n_shards} shards)")
            parts = [(i, p) for i, p in enumerate(np.array_split(idx, n_shards)) if len(p)]

            def shard_results(attempt: int) -> list:
                return _run(c, lambda: [
                    c.submit(_shard_gradients, net, crit, params,
                             _shard_state(state, i, n_shards), *data, part,
                             key=f"fnn-fit-{run}-{number}-{attempt}-{i}")
                    for i, part in parts], where, timeout)

            try:
                try:
                    results = shard_results(0)
                except ClusterError:
                    if all(ref.status == "finished" for ref in data):
                        raise
                    # Every worker holding the data died: scatter them again, run the step again.
                    data[:] = _scatter(c, [x, targets], where, timeout)
                    results = shard_results(1)
            except ClusterError as err:
                err.result = FitResult(params, state, opt_state, completed["history"])
                raise
            grads, states, losses, correct, denominators = zip(*results)
            weights = _shard_weights(crit, list(denominators))
            params, opt_state = opt.update(params, _weighted_sum(list(grads), weights),
                                           opt_state)
            loss = sum(w * v for w, v in zip(weights, losses))
            return (params, _weighted_sum(list(states), weights), opt_state, loss * len(idx),
                    sum(correct))

        def epoch_done(epoch: int, history: dict) -> None:
            completed["history"] = {k: list(v) for k, v in history.items()}
            if on_epoch is not None:
                on_epoch(epoch, history)

        try:
            return run_epochs(step, net, crit, params, state, opt_state, len(x), epochs=epochs,
                              batch_size=batch_size, key=key, validation=validation,
                              progress=progress, on_epoch=epoch_done)
        finally:
            with contextlib.suppress(Exception):
                c.cancel(data)


# --- sweep --------------------------------------------------------------------------------------

def sweep(train: Callable[[Any], Any], configs: Iterable[Any], client: Any = None, *,
          n_workers: int | None = None, timeout: float = 60.0) -> list:
    """``[train(config) for config in configs]``, each call a Dask task, in ``configs`` order.

    A call that raises gives its exception (the instance) in its slot; the others are not
    affected. ``train`` and the configs must be picklable (cloudpickle: lambdas and local
    functions are fine). ``client``, ``n_workers`` and ``timeout`` as in :func:`fit`; a lost
    cluster raises :class:`ClusterError`.
    """
    configs = list(configs)
    run = uuid.uuid4().hex[:12]
    with _connect(client, n_workers, "fnn.distributed.sweep", timeout) as c:
        futures = [c.submit(train, config, key=f"fnn-sweep-{run}-{i}")
                   for i, config in enumerate(configs)]
        where = f"fnn.distributed.sweep of {len(configs)} configs on {_cluster_name(c)}"
        try:
            _wait(c, futures, where, timeout)
            return [f.exception() if f.status == "error" else f.result() for f in futures]
        except _lost_cluster_errors() as err:
            raise _lost(where, err) from err
