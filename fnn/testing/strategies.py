"""Hypothesis strategies behind the generic layer checks (hypothesis is a test dependency:
importing this module without it raises ImportError saying how to install it).

    from hypothesis import given
    from fnn.testing import check_gradients
    from fnn.testing.strategies import layer_examples

    @given(layer_examples(Bias(3), (3,)))
    def test_bias_gradients(example):
        params, state, x = example
        check_gradients(Bias(3), params, state, x)

``arrays`` draws the inputs of the project's layer table, ``keys`` the seeds, ``batch_sizes``
the batch axis and ``layer_examples`` all of them for one layer, as the table does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

try:
    import hypothesis.extra.numpy as hnp
    from hypothesis import strategies as st
except ImportError as err:  # pragma: no cover - exercised without hypothesis installed
    raise ImportError("fnn.testing.strategies needs hypothesis, a test dependency: "
                      "pip install hypothesis (or the project's extra: pip install "
                      "'fnn[test]'); fnn.testing.check_layer works without it") from err

from .. import tree
from .layer import AWAY_FROM_KINKS, eval_state, unique_values

__all__ = ["arrays", "keys", "batch_sizes", "layer_examples"]


def arrays(shape: Sequence[int], dtype: Any = np.float64, *, unique: bool = False
           ) -> st.SearchStrategy[np.ndarray]:
    """Arrays of ``shape`` and floating ``dtype`` (drawn in float64, then cast): values with
    |x| in [0.05, 3] (away from the kinks at 0 of ReLU, LeakyReLU, ELU), or with ``unique``
    distinct values at least 1/(250 * size) apart in about [-4, 4] (no ties in a max pool
    window; :func:`fnn.testing.unique_values` of integers in [-1000, 1000])."""
    shape = tuple(shape)
    if unique:
        ints = hnp.arrays(np.int64, shape, elements=st.integers(-1000, 1000))
        values = ints.map(unique_values)
    else:
        lo, hi = AWAY_FROM_KINKS
        values = hnp.arrays(np.float64, shape, elements=st.floats(lo, hi) | st.floats(-hi, -lo))
    return values.map(lambda a: a.astype(dtype))


def keys() -> st.SearchStrategy[int]:
    """Seeds for ``init`` and any other key argument: ints in [0, 2**32 - 1]."""
    return st.integers(0, 2**32 - 1)


def batch_sizes(min_size: int = 1, max_size: int = 3) -> st.SearchStrategy[int]:
    """Batch sizes N in [min_size, max_size] (small: a gradient check costs 2 forwards an
    element)."""
    return st.integers(min_size, max_size)


@st.composite
def layer_examples(draw: st.DrawFn, layer: Any, sample_shape: Sequence[int], *,
                   mode: str = "train", unique: bool = False, dtype: Any = np.float64,
                   min_batch: int = 1, max_batch: int = 3) -> tuple[Any, Any, np.ndarray]:
    """``(params, state, x)`` for ``layer.forward``: params and state from ``init`` of a drawn
    key (``mode="eval"``: after one training forward on another drawn batch, then
    ``fnn.eval_mode``), x of shape (N, *sample_shape) from :func:`arrays` with N from
    :func:`batch_sizes`; every floating-point leaf in ``dtype``."""
    shape = (draw(batch_sizes(min_batch, max_batch)), *sample_shape)
    params, state = layer.init(draw(keys()))
    if mode == "eval":
        state = eval_state(layer, params, state, draw(arrays(shape, unique=unique)))
    x = draw(arrays(shape, dtype, unique=unique))
    return tree.cast(params, dtype), tree.cast(state, dtype), x
