"""The in-place leaf kernels of the classic optimizers (private: used by fnn.optim.SGDMomentum and
fnn.optim.Adam, and by compat's sgd_momentum / adam_optimizer, which write into the live arrays
with ``out=``). Not a public API: fnn.optim's optimizers are the public form.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import parallel

# Leaves larger than this many elements are updated block by block, so that the block of every
# operand, result and temporary stays in cache between the few passes of the formula (whole
# arrays would make each pass a trip to memory, and fresh temporaries of whole-array size).
BLOCK = 1 << 15
PIECE = 4  # blocks per piece of work handed to a thread (a hand-off costs ~10-40 us)


def _blockwise(kernel: Any, ins: tuple, outs: tuple, tmp_dtypes: tuple) -> None:
    """Run ``kernel(*ins, *outs, *tmps)`` (elementwise; writes ``outs``) on matching blocks of
    flat views, or once on the whole arrays when they are small, of different shapes or not
    contiguous. Both ways apply the same operations to every element: equal results. Leaves of
    at least fnn.parallel.MIN_SIZE elements are cut into pieces of PIECE blocks that run on
    fnn.parallel's threads (each thread with its own temporaries)."""
    shape = outs[0].shape
    arrays = ins + outs
    if outs[0].size <= BLOCK or not all(isinstance(a, np.ndarray) and a.shape == shape
                                        and a.flags.c_contiguous for a in arrays):
        kernel(*ins, *outs, *(np.empty(shape, dt) for dt in tmp_dtypes))
        return
    flat = [a.reshape(-1) for a in arrays]
    tmps = parallel.per_thread(lambda: [np.empty(BLOCK, dt) for dt in tmp_dtypes])

    def piece(sl: slice) -> None:
        own = tmps()
        for s in range(sl.start, sl.stop, BLOCK):
            e = min(s + BLOCK, sl.stop)
            kernel(*(a[s:e] for a in flat), *(t[:e - s] for t in own))

    size = outs[0].size
    parallel.run(piece, parallel.blocks(size, PIECE * BLOCK if size >= parallel.MIN_SIZE
                                        else size))


def sgd_momentum_leaf(w: np.ndarray, g: np.ndarray, v: np.ndarray, learning_rate: float,
                      momentum: float, *, out: tuple | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """One SGD-momentum step for one array: v' = momentum*v + learning_rate*g; w' = w - v'.

    New arrays, or with ``out=(w_out, v_out)`` (which may be w and v themselves, as in the
    classic in-place API) the same values written there.
    """
    g = g.astype(w.dtype, copy=False)
    w_out, v_out = (None, None) if out is None else out
    if v_out is None:
        v_out = np.empty(np.shape(v), np.result_type(momentum, v))
    if w_out is None:
        w_out = np.empty(np.broadcast_shapes(np.shape(w), v_out.shape),
                         np.result_type(w, v_out))

    def kernel(w, g, v, w_out, v_out, lr_g):
        np.multiply(momentum, v, out=v_out)
        v_out += np.multiply(learning_rate, g, out=lr_g)
        np.subtract(w, v_out, out=w_out)

    _blockwise(kernel, (w, g, v), (w_out, v_out), (np.result_type(learning_rate, g),))
    return w_out, v_out


def adam_step_size(learning_rate: float, beta1: float, beta2: float, t: int) -> float:
    """lr_t = learning_rate * sqrt(1 - beta2^t) / (1 - beta1^t) (a Python float)."""
    return float(learning_rate * np.sqrt(1 - beta2 ** t) / (1 - beta1 ** t))


def adam_leaf(w: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, lr_t: float,
              beta1: float, beta2: float, epsilon: float, *, out: tuple | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Adam step for one array: m' = beta1*m + (1-beta1)*g; v' = beta2*v + (1-beta2)*g*g;
    w' = w - lr_t * m' / (sqrt(v') + epsilon).

    New arrays, or with ``out=(w_out, m_out, v_out)`` (which may be w, m and v themselves) the
    same values written there.
    """
    g = g.astype(w.dtype, copy=False)
    w_out, m_out, v_out = (None, None, None) if out is None else out
    if m_out is None:
        m_out = np.empty(np.shape(m), np.result_type(beta1, m))
    if v_out is None:
        v_out = np.empty(np.shape(v), np.result_type(beta2, v))
    step_dtype = np.result_type(lr_t, m_out)
    if w_out is None:
        w_out = np.empty(np.broadcast_shapes(np.shape(w), m_out.shape, v_out.shape),
                         np.result_type(w, step_dtype))

    def kernel(w, g, m, v, w_out, m_out, v_out, g1, g2, denom, step):
        np.multiply(beta1, m, out=m_out)
        m_out += np.multiply(1 - beta1, g, out=g1)
        np.multiply(beta2, v, out=v_out)
        g2 = np.multiply(1 - beta2, g, out=g2)
        g2 *= g
        v_out += g2
        np.sqrt(v_out, out=denom)
        denom += epsilon
        np.multiply(lr_t, m_out, out=step)
        step /= denom
        np.subtract(w, step, out=w_out)

    _blockwise(kernel, (w, g, m, v), (w_out, m_out, v_out),
               (np.result_type(1 - beta1, g), np.result_type(1 - beta2, g), v_out.dtype,
                step_dtype))
    return w_out, m_out, v_out
