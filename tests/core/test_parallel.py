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
def test_parallel_kernels_give_the_same_bits_for_any_thread_count(layer, shape, dtype):
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
