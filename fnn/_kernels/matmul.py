"""The matrix products of Linear and of the attention projections: large ones on BLAS's own
threads, the others on one BLAS thread (``fnn.parallel.one_blas_thread``), whatever fnn's
thread count.

BLAS splits a large product better than fnn's pool could (no GIL, no hand-off: the W1 step took
3.3 ms with its products on BLAS's two threads, 4.2 ms with them cut into shares on fnn's). A
smaller product on BLAS's threads gains little and costs much: it leaves BLAS's worker
spinning on the core that fnn's pool needs next (the W2 step, whose only such product is
Linear(1568, 10)'s, took 18.3 ms with it and 13.3 ms with that product on one BLAS thread;
docs/performance.md). Neither choice depends on fnn's thread count, so neither do the bits
(OpenBLAS's results can depend on its own thread count, and on how a product's rows are cut:
neither is done here).
"""

from __future__ import annotations

import numpy as np

from .. import parallel

# Multiply-adds (M x K x N) from which a product runs on BLAS's own threads.
BLAS_WORK = 1 << 23
# Under this many multiply-adds OpenBLAS uses one thread anyway (its GEMM threshold, 65536 x 4).
ONE_THREAD_WORK = 1 << 18


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for 2-D a (M, K) and b (K, N) (transposed views welcome), in their promoted
    dtype: on BLAS's own threads from BLAS_WORK multiply-adds, else on one BLAS thread."""
    work = a.shape[0] * a.shape[1] * b.shape[1]
    if work >= BLAS_WORK or work < ONE_THREAD_WORK:
        return a @ b
    with parallel.one_blas_thread():
        return a @ b
