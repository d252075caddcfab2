"""Intra-op parallelism: a small pool of threads for the kernels whose work splits naturally.

    fnn.set_num_threads(2)          # for the rest of the process (default: the available cores)
    with fnn.threads(1):            # for a block of code, restored on exit
        ...

Results never depend on the number of threads. A kernel cuts its work into a fixed partition
that depends only on the array shapes (:func:`blocks`), runs the pieces with :func:`run`, and
combines partial results in the order of the pieces, so a step gives bit-identical results
with 1, 2 or 8 threads. numpy releases the GIL inside its loops, so threads run them on
several cores at once.

Each thread takes one contiguous run of the pieces (a static schedule: one hand-off per thread),
and the elementwise and row kernels make one call per thread on its run (:func:`merged`).

While pieces that call BLAS run, numpy's BLAS is held to one thread by threadpoolctl's scoped
limit (:func:`one_blas_thread`; restored on exit, nothing in the process is changed
permanently), whatever fnn's thread count: the pieces' products do not start BLAS threads on
top of fnn's, and their bits do not depend on fnn's thread count. Without threadpoolctl
installed, the pieces that call BLAS run one after another.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

import numpy as np

__all__ = ["available_cores", "get_num_threads", "set_num_threads", "threads", "blocks", "run",
           "is_serial", "one_blas_thread", "spans", "merged",
           "map_rows", "map_elements", "per_thread", "sum_in_order"]

T = TypeVar("T")


def available_cores() -> int:
    """The number of cores this process may run on (its CPU affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_setting: list[int | None] = [None]  # None: available_cores()
_local = threading.local()  # .inside: True in a pool thread (no nested regions)
_pool_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}


def get_num_threads() -> int:
    """The number of threads fnn's kernels use (default: :func:`available_cores`)."""
    n = _setting[0]
    return available_cores() if n is None else n


def _check(n: Any) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"fnn.set_num_threads: n must be a positive integer or None (the "
                         f"available cores), got {n!r}")
    return int(n)


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads in fnn's kernels from now on (None: the available cores). Results do
    not depend on it; only the speed does."""
    _setting[0] = _check(n)


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[None]:
    """Use ``n`` threads in fnn's kernels inside the ``with`` block; the previous setting is
    restored on exit."""
    new = _check(n)
    old, _setting[0] = _setting[0], new
    try:
        yield
    finally:
        _setting[0] = old


def blocks(size: int, block: int) -> list[slice]:
    """The fixed partition of ``range(size)`` into slices of ``block`` items (the last one
    shorter): it depends on the sizes only, never on the number of threads."""
    block = max(int(block), 1)
    return [slice(start, min(start + block, size)) for start in range(0, size, block)]


def _pool(n: int) -> ThreadPoolExecutor:
    with _pool_lock:
        pool = _pools.get(n)
        if pool is None:
            pool = _pools[n] = ThreadPoolExecutor(n, thread_name_prefix="fnn",
                                                  initializer=_mark_inside)
        return pool


def _mark_inside() -> None:
    _local.inside = True


_controller: list[Any] = []  # the threadpoolctl controller, made once (it scans the libraries)


def _blas_controller() -> Any:
    """threadpoolctl's controller (made once: it scans the libraries), or None if threadpoolctl
    is not installed."""
    if not _controller:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _controller.append(None)
        else:
            _controller.append(ThreadpoolController())
    return _controller[0]


def one_blas_thread() -> contextlib.AbstractContextManager:
    """A ``with`` block in which numpy's BLAS runs on one thread (threadpoolctl's limit,
    restored on exit; nothing if threadpoolctl is not installed, or inside a region, where BLAS
    is held already). fnn computes every matrix product that it does not leave to BLAS's own
    threads in such a block, whatever its own thread count: BLAS's results can depend on BLAS's
    thread count (OpenBLAS's do for some shapes), so fnn's thread count never changes them.

    BLAS's thread count is the process's, so the blocks of all threads share one hold: the
    first to enter sets the limit, the last to leave restores the count it found (with one
    limit per thread, a second thread's limit did not take effect while the first's was on)."""
    if getattr(_local, "inside", False) or _blas_controller() is None:
        return contextlib.nullcontext()
    return _shared_hold()


_hold_lock = threading.Lock()
_hold: list[Any] = [0, None]  # blocks inside the shared hold, threadpoolctl's active limit


@contextlib.contextmanager
def _shared_hold() -> Iterator[None]:
    with _hold_lock:
        if _hold[0] == 0:  # the limit is set when made
            _release_blas_control()
            _hold[1] = _blas_controller().limit(limits=1, user_api="blas")
        _hold[0] += 1
    try:
        yield
    finally:
        with _hold_lock:
            _hold[0] -= 1
            if _hold[0] == 0:
                _release_blas_control()  # this thread may not be the one that set the limit
                _hold[1].restore_original_limits()
                _hold[1] = None
                _release_blas_control()


def _release_blas_control() -> None:
    """threadpoolctl 3.6+ lets one thread at a time set OpenBLAS's (process-wide) thread count;
    a set from another is ignored. The shared hold is set by the first thread in and restored by
    the last one out, under a lock: release the control so that this thread's set counts."""
    for lib in _blas_controller().lib_controllers:
        release = getattr(lib, "clear_controlling_thread", None)
        if release is not None:
            release(force=True)


def is_serial() -> bool:
    """True where :func:`run` runs its items one after another (one thread, or inside a
    parallel region): a kernel whose blocks give the same bits as one whole call may then make
    that one call."""
    return get_num_threads() <= 1 or getattr(_local, "inside", False)


def run(fn: Callable[[Any], T], items: Sequence[Any], *, blas: bool = False) -> list[T]:
    """``[fn(item) for item in items]``, the calls spread over :func:`get_num_threads`
    threads (one after another with one thread, one item, or inside another parallel region).
    Each thread takes one contiguous run of the items (a static schedule: the calling thread the
    first, the pool's threads the others), so a call hands off at most one task per thread.

    ``blas=True`` says that ``fn`` calls BLAS (matrix products): BLAS is then held to one thread
    while the items run (:func:`one_blas_thread`), however many threads fnn has, so that the
    products' bits never depend on that number (and a product never starts BLAS's own threads,
    which would then spin on the cores fnn's pool needs next). Without threadpoolctl, such
    items run one after another. ``fn`` must not write to memory another item reads."""
    if getattr(_local, "inside", False):
        return [fn(item) for item in items]
    if blas and _blas_controller() is None:  # BLAS may not be limited: do not add threads
        return [fn(item) for item in items]
    limit = one_blas_thread() if blas else contextlib.nullcontext()
    threads = get_num_threads()
    runs = spans(len(items), threads)

    def chunk(span: slice) -> list[T]:
        return [fn(item) for item in items[span]]

    with limit:
        if len(runs) <= 1:
            return [fn(item) for item in items]
        futures = [_pool(threads - 1).submit(chunk, span) for span in runs[1:]]
        _local.inside = True
        try:
            first = chunk(runs[0])
        finally:
            _local.inside = False
            wait(futures)
    return first + [r for f in futures for r in f.result()]


def spans(size: int, n: int) -> list[slice]:
    """``range(size)`` cut into ``min(n, size)`` contiguous runs of nearly equal length (the
    first ones one longer): the share of each of n threads."""
    n = max(1, min(n, size))
    q, r = divmod(size, n)
    bounds = [i * q + min(i, r) for i in range(n + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def merged(parts: Sequence[slice]) -> list[slice]:
    """The contiguous slices ``parts`` (a fixed partition, in order) joined into one slice per
    thread of :func:`get_num_threads` (one slice serially): for a kernel whose blocks give the
    bits of one whole call, so that a thread makes one call on its whole share instead of one per
    block (each call costs the GIL a hand-off; on 2 cores, a row-wise softmax in 16 blocks took
    1.5 ms on two threads and 0.56 ms in two halves). The share starts at a block boundary."""
    n = 1 if is_serial() else get_num_threads()
    return [slice(parts[s.start].start, parts[s.stop - 1].stop) for s in spans(len(parts), n)]


# Arrays smaller than this run whole (a thread hand-off costs ~10-40 us); larger ones are cut
# into pieces of about BLOCK elements (a multiple of 64, so that each piece starts where the
# whole array's SIMD loop would be: elementwise results do not depend on the cut).
MIN_SIZE = 1 << 17
BLOCK = 1 << 15


def map_rows(fn: Callable[..., Any], *arrays: Any, min_size: int = MIN_SIZE,
             block: int = BLOCK, rows: int | None = None, per_block: bool = False) -> Any:
    """``fn(*arrays)`` computed on fixed blocks of rows (axis 0) of arrays of equal length, the
    results (one array, or a tuple of arrays) joined along axis 0. ``fn`` must treat rows
    independently (elementwise functions, per-row softmax). Arrays with fewer than
    ``min_size`` elements, or 0-d, are passed whole; a block holds ``rows`` rows (default: about
    ``block`` elements of the first array), so the cut depends only on the shapes.

    The results' dtypes and row shapes come from ``fn`` on the first row alone (a probe); the
    blocks then copy their results into their rows themselves, while they are in their core's
    cache (no serial concatenation afterwards). Each thread makes one call on its share of the
    blocks (:func:`merged`; the arrays whole with one thread), unless ``per_block`` is True: one
    call per block, for a kernel whose blocks are faster even one after another (the pools'
    in float64: a block stays in cache)."""
    x = arrays[0]
    if x.ndim == 0 or x.size < min_size or (not per_block and is_serial()):
        # one call on the whole arrays: the rows are independent and the blocks start where
        # the whole arrays' SIMD loops would be, so the bits are those of the blocks (tested),
        # without the blocks' extra copies when there is no second thread to run them
        return fn(*arrays)
    row = max(x.size // max(x.shape[0], 1), 1)
    if rows is None:  # about `block` elements, a multiple of 64 of them where the rows allow
        step = 64 // math.gcd(64, row)
        rows = max(block // row // step * step, step)
    probe = fn(*(a[:1] for a in arrays))
    single = not isinstance(probe, tuple)
    outs = [np.empty((x.shape[0], *r.shape[1:]), r.dtype) for r in ((probe,) if single
                                                                     else probe)]

    def put(sl: slice) -> None:
        results = fn(*(a[sl] for a in arrays))
        for out, r in zip(outs, (results,) if single else results):
            out[sl] = r

    parts = blocks(x.shape[0], rows)
    run(put, parts if per_block else merged(parts))
    return outs[0] if single else tuple(outs)


def map_elements(fn: Callable[..., Any], *arrays: Any, min_size: int = MIN_SIZE) -> Any:
    """``fn(*arrays)`` for an elementwise ``fn`` of C-contiguous arrays of one shape, computed on
    fixed flat blocks (see :func:`map_rows`) and returned in that shape; other arrays whole."""
    x = arrays[0]
    if x.size < min_size or not all(getattr(a, "flags", None) is not None
                                     and a.flags.c_contiguous and a.shape == x.shape
                                     for a in arrays):
        return fn(*arrays)
    return map_rows(fn, *(a.reshape(-1) for a in arrays), min_size=min_size).reshape(x.shape)


def per_thread(make: Callable[[], T]) -> Callable[[], T]:
    """A getter of one ``make()`` per calling thread, made on first use: the scratch buffers of
    a kernel whose pieces run on :func:`run` (each thread reuses its own, no two threads share
    one). Made per kernel call, so the buffers live as long as that call."""
    made: dict[int, T] = {}

    def get() -> T:
        key = threading.get_ident()
        value = made.get(key)
        if value is None:
            value = made[key] = make()
        return value
    return get


def sum_in_order(parts: Sequence[np.ndarray], out: np.ndarray) -> np.ndarray:
    """``out += part`` for each part in the given order (the partition's order, never the order
    the threads finished in): partial sums combined the same way for any thread count."""
    for part in parts:
        out += part
    return out
