"""The training passes of BatchNormalization on (N, F) arrays, on fixed blocks of feature
columns run on fnn.parallel's threads.

Every feature's statistics are reduced over its own column only, in the same order whatever
block holds it, and the blocks depend on the shape only: the results are the same bits for any
number of threads (and the same as one pass over the whole array).
"""

from __future__ import annotations

import numpy as np

from .. import parallel

# Elements per block of columns (a multiple of 64 columns): a block of x, y (and in backward dy,
# xhat, dx) stays in a core's L2 cache between the passes of the formula.
BLOCK = 1 << 16


def column_blocks(a: np.ndarray) -> list[slice]:
    """The fixed partition of the F feature columns of an (N, F) array: whole below
    fnn.parallel.MIN_SIZE elements or when not C-contiguous (LayerNorm's transposed view: its
    columns are contiguous, and numpy reduces them whole), else blocks of a multiple of 64
    columns."""
    n, f = a.shape
    if a.size < parallel.MIN_SIZE or not a.flags.c_contiguous:
        return [slice(0, f)]
    return parallel.blocks(f, max(64, BLOCK // max(n, 1) // 64 * 64))


def forward(x: np.ndarray, eps: float
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(xhat, mean, var, inv_std) of a training batch x (N >= 1, F), in x's dtype:
    mean = x.mean(0), var = mean((x - mean)^2) (biased), inv_std = 1/sqrt(var + eps),
    xhat = (x - mean) * inv_std."""
    n, f = x.shape
    y = np.empty_like(x)  # x's layout, as x - mean
    mean, var, inv_std = (np.empty(f, x.dtype) for _ in range(3))

    def block(sl: slice) -> None:
        m = x[:, sl].mean(axis=0)
        yb = np.subtract(x[:, sl], m, out=y[:, sl])
        v = np.einsum("ij,ij->j", yb, yb) / n
        s = 1.0 / np.sqrt(v + eps)
        yb *= s
        mean[sl], var[sl], inv_std[sl] = m, v, s

    parallel.run(block, column_blocks(x))
    return y, mean, var, inv_std


def backward(xhat: np.ndarray, inv_std: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """dx = (dy - mean(dy) - xhat * mean(dy * xhat)) * inv_std (means over the batch axis), in
    the promoted dtype of xhat and dy."""
    n = xhat.shape[0]
    dx = np.empty_like(xhat, dtype=np.result_type(xhat, dy))

    def block(sl: slice) -> None:
        dyb, xb = dy[:, sl], xhat[:, sl]
        mean_dy = dyb.sum(axis=0) / n
        mean_dy_xhat = np.einsum("ij,ij->j", dyb, xb) / n
        dxb = np.multiply(xb, mean_dy_xhat, out=dx[:, sl])
        np.subtract(dyb, dxb, out=dxb)
        dxb -= mean_dy
        dxb *= inv_std[sl]

    parallel.run(block, column_blocks(xhat))
    return dx
