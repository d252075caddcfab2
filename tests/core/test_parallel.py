"""fnn.parallel: the thread control, and results that do not depend on the number of threads
(bit for bit) for every parallel kernel."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import fnn
from fnn import parallel

THREAD_COUNTS = (1, 2, 8)


def test_thread_control_and_its_errors():
    before = parallel.get_num_threads()
    assert before >= 1
    with fnn.threads(3):
        assert parallel.get_num_threads() == 3
        with fnn.threads(None):
            assert parallel.get_num_threads() == parallel.available_cores()
        assert parallel.get_num_threads() == 3
    assert parallel.get_num_threads() == before
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="fnn.set_num_threads: n must be a positive"):
            fnn.set_num_threads(bad)
        with pytest.raises(ValueError, match="n must be a positive"):
            with fnn.threads(bad):
                pass
    assert parallel.get_num_threads() == before


def test_blocks_depend_on_sizes_only():
    assert parallel.blocks(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert parallel.blocks(0, 4) == []
    assert parallel.blocks(3, 0) == [slice(0, 1), slice(1, 2), slice(2, 3)]


def test_spans_and_merged_share_out_contiguous_runs():
    assert parallel.spans(7, 3) == [slice(0, 3), slice(3, 5), slice(5, 7)]
    assert parallel.spans(2, 8) == [slice(0, 1), slice(1, 2)]
    assert parallel.spans(0, 2) == [slice(0, 0)]
    parts = parallel.blocks(10, 3)  # 0-3, 3-6, 6-9, 9-10
    with fnn.threads(2):
        assert parallel.merged(parts) == [slice(0, 6), slice(6, 10)]  # at block boundaries
    with fnn.threads(1):
        assert parallel.merged(parts) == [slice(0, 10)]
    with fnn.threads(8):
        assert parallel.merged(parts) == parts


def test_run_gives_each_thread_one_contiguous_run():
    names = {}

    def item(i):
        names[i] = threading.current_thread().name
        return i
    with fnn.threads(3):
        assert parallel.run(item, range(8)) == list(range(8))
    me = threading.current_thread().name
    assert [i for i in range(8) if names[i] == me] == [0, 1, 2]  # the first run, here
    assert all(names[i].startswith("fnn") for i in range(3, 8))  # the others on the pool
    assert names[3] == names[4] == names[5] and names[6] == names[7]  # a run on one thread


@pytest.mark.parametrize("bad", [0, 7])  # on the calling thread, on a pool thread
def test_run_raises_an_items_error_after_the_other_threads_have_finished(bad):
    done = []

    def item(i):
        if i == bad:
            raise KeyError(i)
        done.append(i)
    with fnn.threads(2), pytest.raises(KeyError):
        parallel.run(item, range(8))
    other = range(4, 8) if bad < 4 else range(4)  # the other thread's run finished first
    assert set(other) <= set(done)
    assert not getattr(parallel._local, "inside", False)  # the calling thread is out again


def test_run_with_blas_holds_blas_to_one_thread_whatever_fnns_thread_count():
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas(_):
        return {i["num_threads"] for i in threadpoolctl.threadpool_info()
                if i["user_api"] == "blas"}
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        with fnn.threads(2):
            assert parallel.run(blas, [0], blas=True) == [{1}]
            assert parallel.run(blas, [0, 1], blas=True) == [{1}, {1}]
            assert blas(0) == {2}  # restored
        with fnn.threads(1):  # also serially: BLAS's bits must not depend on fnn's threads
            assert parallel.run(blas, [0, 1], blas=True) == [{1}, {1}]
            with parallel.one_blas_thread():
                assert blas(0) == {1}
        assert blas(0) == {2}
        assert parallel.run(blas, [0]) == [{2}]  # no BLAS in the items: BLAS untouched


def test_run_keeps_the_order_and_does_not_nest():
    seen = []

    def inner(i):
        seen.append(threading.current_thread().name)
        return parallel.run(lambda j: i * 10 + j, range(3))  # nested: runs serially

    with fnn.threads(4):
        assert parallel.run(inner, range(5)) == [[i * 10 + j for j in range(3)] for i in range(5)]
        assert parallel.run(lambda i: i, []) == []


ELEMENTWISE = [fnn.ReLU(), fnn.LeakyReLU(0.1), fnn.ELU(), fnn.SoftPlus(), fnn.Tanh(),
               fnn.Sigmoid(), fnn.GELU(), fnn.GELU("tanh"), fnn.Identity()]


def _run(layer, x, dy):
    params, state = layer.init(0)
    y, cache = layer.forward(params, state, x)
    return y, layer.backward(params, cache, dy)[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layer, shape", [(layer, (3, 5, 97, 101)) for layer in ELEMENTWISE]
                         + [(fnn.SoftMax(), (1500, 131)), (fnn.LogSoftMax(), (1500, 131))],
                         ids=repr)
def test_parallel_kernels_give_the_same_bits_for_any_thread_count(layer, shape, dtype,
                                                                  monkeypatch):
    """Every activation's blocked path (off for ReLU by measurement: switched on here for all),
    under 1, 2 and 8 threads and against one whole call."""
    monkeypatch.setattr(type(layer), "_parallel", True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype) * 3
    dy = rng.standard_normal(shape).astype(dtype)
    assert x.size >= parallel.MIN_SIZE  # large enough to be cut into blocks
    results = []
    for n in THREAD_COUNTS:
        with fnn.threads(n):
            results.append(_run(layer, x, dy))
    for y, dx in results[1:]:
        np.testing.assert_array_equal(y, results[0][0], strict=True)
        np.testing.assert_array_equal(dx, results[0][1], strict=True)
    # the blocks are cut where the whole array's SIMD loop is: the same bits as one call
    whole = layer._f(x)
    np.testing.assert_array_equal(results[0][0], whole, strict=True)


# --- the kernels of fnn._kernels and fnn._optim_kernels: every parallel path, the same bits for
# 1, 2 and 8 threads, on inputs large enough to be cut into several blocks --------------------

def _same_bits_for_every_thread_count(compute):
    """compute() under 1, 2 and 8 threads: every float leaf of the results bit-identical."""
    results = []
    for n in THREAD_COUNTS:
        with fnn.threads(n):
            results.append(fnn.tree.leaves(compute()))
    for leaves in results[1:]:
        assert len(leaves) == len(results[0])
        for a, b in zip(leaves, results[0]):
            np.testing.assert_array_equal(a, b, strict=True)
    return results[0]


def _layer_run(layer, shape, dtype, *, params_only=False):
    rng = np.random.default_rng(1)
    params, state = layer.init(0)
    params, state = fnn.tree.cast(params, dtype), fnn.tree.cast(state, dtype)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    dy = rng.standard_normal(layer.output_shape(shape)).astype(dtype)

    def compute():
        y, cache = layer.forward(params, state, x)
        if params_only:
            return y, cache.state, layer.backward_params(params, cache, dy)
        return y, cache.state, layer.backward(params, cache, dy)
    return compute


CONV_CASES = [
    (fnn.Conv2d(8, 16, 3), (40, 8, 24, 24)),  # the flat-padding kernel: 3+ batch blocks
    (fnn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2), (24, 8, 48, 48)),  # im2col
    (fnn.Conv1d(8, 16, 5, dilation=2), (40, 8, 600)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("params_only", [False, True])
@pytest.mark.parametrize("layer, shape", CONV_CASES, ids=repr)
def test_conv_batch_blocks_give_the_same_bits_for_any_thread_count(layer, shape, dtype,
                                                                   params_only):
    from fnn._kernels import batch_block
    per_sample = layer.in_channels * int(np.prod(layer.window().kernel)) * int(
        np.prod(layer.output_shape(shape)[2:])) * np.dtype(dtype).itemsize
    assert shape[0] // batch_block(shape[0], per_sample) >= 3  # several blocks to share out
    _same_bits_for_every_thread_count(_layer_run(layer, shape, dtype, params_only=params_only))


POOL_CASES = [fnn.MaxPool2d(2), fnn.MaxPool2d(3, 2, 1), fnn.AvgPool2d(2), fnn.AvgPool2d(3, 2, 1),
              fnn.MaxPool1d(3, 2)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layer", POOL_CASES, ids=repr)
def test_pool_image_blocks_give_the_same_bits_for_any_thread_count(layer, dtype):
    from fnn._kernels import pool
    shape = (16, 24, 1, 2048) if layer.ndim == 1 else (16, 24, 48, 48)
    shape = shape[:2] + shape[3:] if layer.ndim == 1 else shape
    assert np.prod(shape) >= 3 * pool.IMAGE_BLOCK  # several blocks to share out
    y = _same_bits_for_every_thread_count(_layer_run(layer, shape, dtype))[0]
    # the blocks give the bits of one call on the whole input
    x4 = (np.random.default_rng(1).standard_normal(shape) * 3).astype(dtype)
    x4 = x4.reshape(shape[0], shape[1], -1, shape[-1])
    window = layer.window().as_2d()
    if isinstance(layer, fnn.MaxPool2d | fnn.MaxPool1d):
        whole = (pool.max_tiled(x4, 2)[0] if pool.tiles(window, x4.shape)
                 else pool.max_general(x4, window, window.out_sizes(x4.shape[2:]))[0])
    else:
        whole = pool.avg(x4, window, window.out_sizes(x4.shape[2:]))
    np.testing.assert_array_equal(y, whole.reshape(y.shape), strict=True)


def test_pool_with_nan_gives_the_same_bits_for_any_thread_count():
    x = np.random.default_rng(2).standard_normal((16, 24, 48, 48))
    x[3, 5, 7, 9] = x[15, 23, 0, 0] = np.nan
    layer = fnn.MaxPool2d(3, 2, 1)

    def compute():
        y, cache = layer.forward((), (), x)
        return y, cache.argmax, layer.backward((), cache, np.ones_like(y))[0]
    _same_bits_for_every_thread_count(compute)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(512, 1024), (300, 1000), (40, 8000)])
def test_batchnorm_column_blocks_give_the_same_bits_for_any_thread_count(shape, dtype,
                                                                          monkeypatch):
    """The statistics, the moving statistics, y and dx: the same bits for any number of threads,
    and as the whole-array formula."""
    from fnn._kernels import batchnorm
    layer = fnn.BatchNormalization(shape[1])
    state = fnn.tree.cast(layer.init(0)[1], dtype)
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    assert len(batchnorm.row_blocks(x)) >= 3  # several blocks to share out

    def compute():
        y, cache = layer.forward((), state, x)
        return (y, cache.inv_std, cache.state.moving_mean, cache.state.moving_variance,
                layer.backward((), cache, dy)[0])
    blocked = _same_bits_for_every_thread_count(compute)
    # one block of all the rows gives the same bits
    monkeypatch.setattr(batchnorm, "row_blocks", lambda a: [slice(0, a.shape[0])])
    for a, b in zip(blocked, compute()):
        np.testing.assert_array_equal(a, b, strict=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [lambda: fnn.SGDMomentum(0.01, 0.9), lambda: fnn.Adam(1e-3)],
                         ids=["SGDMomentum", "Adam"])
def test_optimizer_leaf_pieces_give_the_same_bits_for_any_thread_count(make, dtype,
                                                                       monkeypatch):
    """Two updates of a large leaf (cut into pieces on the threads) and a small one (whole)."""
    from fnn import _optim_kernels
    rng = np.random.default_rng(3)
    params = [rng.standard_normal(s).astype(dtype) for s in ((700, 900), (33,))]
    grads = [rng.standard_normal(p.shape).astype(dtype) for p in params]
    assert params[0].size >= 3 * _optim_kernels.PIECE * _optim_kernels.BLOCK
    opt = make()

    def compute():
        p, state = params, opt.init(params)
        for _ in range(2):
            p, state = opt.update(p, grads, state)
        return p, state
    new = _same_bits_for_every_thread_count(compute)
    # the elementwise formula on the whole leaf at once gives the same bits
    monkeypatch.setattr(_optim_kernels, "BLOCK", params[0].size)
    np.testing.assert_array_equal(fnn.tree.leaves(compute())[0], new[0], strict=True)


def test_cli_threads_sets_fnn_threads_and_blas_and_restores_them():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from fnn import cli

    def blas():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info()
                if i["user_api"] == "blas"]
    before, blas_before = parallel.get_num_threads(), blas()
    with cli._threads(3):
        assert parallel.get_num_threads() == 3
        assert set(blas()) <= {3}
    assert parallel.get_num_threads() == before and blas() == blas_before


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm2d_gives_the_same_bits_for_any_thread_count(dtype):
    """Its (N, C, H, W) <-> (N*H*W, C) copies on blocks of samples, and BatchNormalization's
    row blocks (2^17 elements and more: parallel)."""
    shape = (16, 32, 24, 24)
    assert np.prod(shape) >= parallel.MIN_SIZE
    _same_bits_for_every_thread_count(_layer_run(fnn.BatchNorm2d(32), shape, dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, k, n", [(64, 1568, 10),  # one BLAS thread (W2's Linear)
                                     (100, 2000, 24),  # OpenBLAS: 1 and 2 threads differ
                                     (128, 784, 512)])  # BLAS's own threads (W1's first Linear)
def test_matmul_bits_do_not_depend_on_fnn_threads(m, k, n, dtype):
    """fnn._kernels.matmul (Linear's and the attention projections' products): the same bits for
    any fnn thread count, under BLAS's default thread count; those on one BLAS thread are
    numpy's product on one BLAS thread."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from fnn._kernels.matmul import BLAS_WORK, matmul
    rng = np.random.default_rng(4)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((n, k)).astype(dtype).T  # a transposed view, as W.T
    results = _same_bits_for_every_thread_count(lambda: [matmul(a, b), matmul(b.T, a.T)])
    if m * k * n < BLAS_WORK:
        with threadpoolctl.threadpool_limits(1, user_api="blas"):
            np.testing.assert_array_equal(results[0], a @ b, strict=True)
            np.testing.assert_array_equal(results[1], b.T @ a.T, strict=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("params_only", [False, True])
@pytest.mark.parametrize("layer, shape", [(fnn.Linear(300, 200), (1000, 300)),
                                          (fnn.Linear(2000, 24), (100, 2000)),
                                          (fnn.Linear(64, 48), (40, 50, 64))], ids=repr)
def test_linear_gives_the_same_bits_for_any_thread_count(layer, shape, dtype, params_only):
    _same_bits_for_every_thread_count(_layer_run(layer, shape, dtype, params_only=params_only))


def test_blas_holds_from_several_threads_restore_blas_once_all_have_left():
    """Threads of the caller's own (two trainings at once, say) each hold BLAS to one thread
    many times, overlapping: BLAS is back at its count when the last has left, never stuck."""
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas():
        return {i["num_threads"] for i in threadpoolctl.threadpool_info()
                if i["user_api"] == "blas"}
    from fnn._kernels.matmul import matmul
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((64, 1568)), rng.standard_normal((1568, 10))  # one BLAS thread
    errors = []

    def work():
        try:
            for _ in range(100):
                with parallel.one_blas_thread():
                    assert blas() == {1}
                matmul(a, b)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        workers = [threading.Thread(target=work) for _ in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert blas() == {2}
    assert not errors, errors[:1]
