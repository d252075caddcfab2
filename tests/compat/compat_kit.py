"""Helpers of the compat tests: random arrays, a Sequential of given modules, deep copies of
nested lists of arrays and their bit-for-bit comparison."""

from __future__ import annotations

import numpy as np

from compat import Module, Sequential


def rand(*shape: int, seed: int = 0, dtype=np.float64) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def sequential(*modules: Module) -> Sequential:
    net = Sequential()
    for m in modules:
        net.add(m)
    return net


def copies(a):
    """Deep copies of the arrays in a list (of lists) of arrays."""
    return [copies(x) if isinstance(x, list) else np.array(x) for x in a]


def assert_same(a, b):
    """Bit-identical nested lists of arrays."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if isinstance(x, list):
            assert_same(x, y)
        else:
            assert x.dtype == y.dtype and np.array_equal(x, y)
