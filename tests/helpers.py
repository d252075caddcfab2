"""Helpers shared by test modules of several subjects (tests/ is on sys.path: pyproject.toml's
``pythonpath``): float leaves of a tree, snapshots of a tree and the checks that nothing
changed, and MultiHeadAttention with a fixed key padding mask as a Layer."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

import fnn
from fnn import tree


def float_leaves(t: Any) -> list[np.ndarray]:
    """The floating-point array leaves of tree ``t``, in order."""
    return [a for a in tree.leaves(t) if isinstance(a, np.ndarray)
            and np.issubdtype(a.dtype, np.floating)]


def snapshot(t: Any) -> Any:
    """Tree ``t`` with a copy of each array leaf (to compare with after a call)."""
    return tree.map(lambda a: a.copy() if isinstance(a, np.ndarray) else a, t)


def assert_unchanged(before: Any, after: Any) -> None:
    """The leaves of ``after`` equal those of the snapshot ``before``, one for one."""
    for u, v in zip(tree.leaves(before), tree.leaves(after), strict=True):
        np.testing.assert_array_equal(u, v)


def assert_identical(a: Any, b: Any) -> None:
    """Same tree: same container types and leaf types; arrays with equal dtype, shape, bytes."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
        assert a.tobytes() == b.tobytes()
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b)
    elif tree.is_leaf(a):
        assert a == b
    else:
        assert len(tree.leaves(a)) == len(tree.leaves(b))
        if attrs.has(type(a)):
            for f in attrs.fields(type(a)):
                assert_identical(getattr(a, f.name), getattr(b, f.name))
        else:
            for x, y in zip(a, b, strict=True):
                assert_identical(x, y)


@attrs.frozen
class WithPadding(fnn.Layer):
    """MultiHeadAttention called with a fixed key_padding_mask (for fnn.testing's checks)."""

    layer: fnn.MultiHeadAttention
    mask: np.ndarray = attrs.field(eq=False)

    def forward(self, params, state, x):
        return self.layer.forward(params, state, x, key_padding_mask=self.mask)

    def backward(self, params, cache, dy):
        return self.layer.backward(params, cache, dy)


CLOSE = dict(rtol=1e-12, atol=1e-12)  # assert_allclose tolerances of float64 formulas
