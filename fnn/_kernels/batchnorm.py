"""The training passes of BatchNormalization on (N, F) arrays: the reductions over the batch
axis whole, the elementwise passes on fixed blocks of rows run on fnn.parallel's threads.

The statistics are numpy's reductions of the whole array, so they never depend on the number of
threads; the passes are elementwise, so their blocks do not change a bit either (the results
are those of the whole-array formula). Cutting the reductions into blocks of columns instead
made every operation 2-3x slower on one core (short strided inner loops), more than a second
core gives back; cutting them into blocks of rows would change their rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import parallel

# Elements per block of rows: a block of every operand stays in a core's L2 cache.
BLOCK = 1 << 16


def row_blocks(a: np.ndarray) -> list[slice]:
    """The fixed partition of the rows of an (N, F) array: whole below fnn.parallel.MIN_SIZE
    elements, when not C-contiguous (LayerNorm's transposed view) or with one thread, else
    blocks of about BLOCK elements."""
    n, f = a.shape
    if (a.size < parallel.MIN_SIZE or not a.flags.c_contiguous
            or parallel.is_serial()):
        return [slice(0, n)]  # the whole passes: the same bits, fewer calls
    return parallel.blocks(n, max(1, BLOCK // max(f, 1)))


def _rows(fn: Callable[[slice], None], a: np.ndarray) -> None:
    parallel.run(fn, parallel.merged(row_blocks(a)))


def forward(x: np.ndarray, eps: float
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(xhat, mean, var, inv_std) of a training batch x (N >= 1, F), in x's dtype:
    mean = x.mean(0), var = mean((x - mean)^2) (biased), inv_std = 1/sqrt(var + eps),
    xhat = (x - mean) * inv_std."""
    mean = x.mean(axis=0)
    y = np.empty_like(x)  # x's layout, as x - mean
    _rows(lambda sl: np.subtract(x[sl], mean, out=y[sl]), x)
    var = np.einsum("ij,ij->j", y, y) / x.shape[0]
    inv_std = 1.0 / np.sqrt(var + eps)
    _rows(lambda sl: np.multiply(y[sl], inv_std, out=y[sl]), x)
    return y, mean, var, inv_std


def backward(xhat: np.ndarray, inv_std: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """dx = (dy - mean(dy) - xhat * mean(dy * xhat)) * inv_std (means over the batch axis), in
    the promoted dtype of xhat and dy."""
    n = xhat.shape[0]
    mean_dy = dy.sum(axis=0) / n
    mean_dy_xhat = np.einsum("ij,ij->j", dy, xhat) / n
    dx = np.empty_like(xhat, dtype=np.result_type(xhat, dy, mean_dy_xhat))

    def block(sl: slice) -> None:
        dxb = np.multiply(xhat[sl], mean_dy_xhat, out=dx[sl])
        np.subtract(dy[sl], dxb, out=dxb)
        dxb -= mean_dy
        dxb *= inv_std

    _rows(block, xhat)
    return dx
