"""fnn.tree edge cases found by an adversarial pass."""

from __future__ import annotations

import numpy as np
import pytest

import fnn
from fnn import tree


@pytest.mark.parametrize("dtype", [np.int32, np.bool_, "int64", "floaty"], ids=repr)
def test_cast_refuses_a_non_floating_dtype(dtype):
    """cast(params, np.int32) truncated every weight in (-1, 1) to 0, silently."""
    params, _ = fnn.Linear(2, 3).init(0)
    with pytest.raises(ValueError, match="fnn.tree.cast: dtype must be a floating dtype"):
        tree.cast(params, dtype)


@pytest.mark.parametrize("result", [lambda a: (a, a, a), lambda a: a, lambda a: [a, a]])
def test_map_multi_refuses_a_wrong_number_of_results(result):
    """A function returning 3 values per leaf for n_outputs = 2 lost the third silently."""
    with pytest.raises(ValueError, match="fn must return a tuple of n_outputs = 2 values"):
        tree.map_multi(result, 2, (np.ones(2), np.ones(3)))


def test_map_multi_still_splits():
    a, b = tree.map_multi(lambda x: (x + 1, x * 2), 2, (np.ones(2), [np.ones(1)]))
    assert a[0].tolist() == [2, 2] and b[1][0].tolist() == [2]
