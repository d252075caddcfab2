"""Bad input: wrong shapes (the message names the layer, the expected and the actual shape),
invalid hyperparameters (at construction, naming the class), integer arrays (TypeError), and
nothing mutated when an error is raised."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from cases import CASE_IDS, CASES, examples
from hypothesis import given
from hypothesis import strategies as st

import fnn
from fnn import tree

ROWS = pytest.mark.parametrize("case", CASES, ids=CASE_IDS)


def snapshot(t: Any) -> Any:
    return tree.map(lambda a: a.copy() if isinstance(a, np.ndarray) else a, t)


def assert_unchanged(before: Any, after: Any) -> None:
    for u, v in zip(tree.leaves(before), tree.leaves(after), strict=True):
        np.testing.assert_array_equal(u, v)


# --- wrong input shapes ----------------------------------------------------------------------

BAD_SHAPES = [
    (fnn.Linear(3, 4), (2, 5), "(N, 3)"),
    (fnn.Linear(3, 4), (2, 3, 1), "(N, ..., 3)"),  # over the last axis, as torch.nn.Linear
    (fnn.Linear(3, 4), (3,), "(N, 3)"),
    (fnn.ChannelwiseScaling(3), (2, 4), "(N, 3)"),
    (fnn.BatchNormalization(3), (2, 4), "(N, 3)"),
    (fnn.BatchNormalization(3), (2, 3, 1, 1), "(N, 3)"),
    (fnn.SoftMax(), (4,), "(N, C)"),
    (fnn.LogSoftMax(), (2, 3, 1), "(N, C)"),
    (fnn.Conv2d(2, 3, 3), (2, 2), "(N, 2, H, W)"),
    (fnn.Conv2d(2, 3, 3), (1, 3, 4, 4), "(N, 2, H, W)"),
    (fnn.MaxPool2d(2), (4, 4), "(N, C, H, W)"),
    (fnn.MaxPool2d(2), (1, 1, 3, 4), "divisible by 2"),
    (fnn.MaxPool2d(3), (1, 2, 6, 4), "divisible by 3"),
    (fnn.Flatten(), (), "(N, ...)"),
    # the child raises, about the shape it sees: (2, 6) after Flatten
    (fnn.Sequential([fnn.Flatten(), fnn.Linear(4, 2)]), (2, 2, 3), "(N, 4)"),
]


@pytest.mark.parametrize("layer, shape, expected", BAD_SHAPES,
                         ids=[f"{type(b[0]).__name__}-{b[1]}" for b in BAD_SHAPES])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_wrong_input_shape(layer, shape, expected, mode):
    params, state = layer.init(0)
    if mode == "eval":
        state = fnn.eval_mode(state)
    x = np.linspace(-1, 1, int(np.prod(shape))).reshape(shape)
    before = snapshot((params, state, x))
    with pytest.raises(ValueError) as info:
        layer.forward(params, state, x)
    message = " ".join([str(info.value), *getattr(info.value, "__notes__", [])])
    child, seen = (layer[1], (2, 6)) if isinstance(layer, fnn.Sequential) else (layer, shape)
    assert repr(child) in message and expected in message and f"got shape {seen}" in message
    assert_unchanged(before, (params, state, x))


@ROWS
@given(data=st.data())
def test_wrong_gradient_shape(case, data):
    """backward with a dy one longer than y along the batch axis, then along the last axis."""
    ex = data.draw(examples(case))
    y, cache = ex.layer.forward(ex.params, ex.state, ex.x)
    for axis in (0, -1):
        bad = list(y.shape)
        bad[axis] += 1
        dy = np.ones(bad)
        before = snapshot((ex.params, cache, dy))
        with pytest.raises(ValueError, match="gradient") as info:
            ex.layer.backward(ex.params, cache, dy)
        message = " ".join([str(info.value), *getattr(info.value, "__notes__", [])])
        assert str(tuple(bad)) in message
        assert_unchanged(before, (ex.params, cache, dy))


# --- integer arrays --------------------------------------------------------------------------

@ROWS
@given(data=st.data())
def test_integer_input_is_a_type_error(case, data):
    """... and float input, for the rows whose input is integer indices (Embedding)."""
    ex = data.draw(examples(case))
    y, cache = ex.layer.forward(ex.params, ex.state, ex.x)
    if case.integer_input:
        with pytest.raises(TypeError, match="integer indices, got dtype float64"):
            ex.layer.forward(ex.params, ex.state, ex.x.astype(np.float64))
        with pytest.raises(TypeError, match="floating-point gradient"):
            ex.layer.backward(ex.params, cache, np.ones(y.shape, np.int64))
        return
    for dtype in (np.int64, np.int32, np.bool_):
        with pytest.raises(TypeError, match=rf"floating-point input, got dtype "
                                            rf"{np.dtype(dtype)}"):
            ex.layer.forward(ex.params, ex.state, ex.x.astype(dtype))
        with pytest.raises(TypeError, match="floating-point gradient"):
            ex.layer.backward(ex.params, cache, np.ones(y.shape, dtype))


# --- invalid hyperparameters -----------------------------------------------------------------

BAD_HYPER = [
    ("Dropout", lambda: fnn.Dropout(p=1.0)),
    ("Dropout", lambda: fnn.Dropout(p=-0.1)),
    ("Dropout", lambda: fnn.Dropout(p=float("nan"))),
    ("Dropout", lambda: fnn.Dropout(p=True)),
    ("Dropout", lambda: fnn.Dropout(p="0.5")),
    ("Conv2d", lambda: fnn.Conv2d(1, 1, 2)),
    ("Conv2d", lambda: fnn.Conv2d(1, 1, 0)),
    ("Conv2d", lambda: fnn.Conv2d(1, 1, -3)),
    ("Conv2d", lambda: fnn.Conv2d(0, 1, 3)),
    ("Conv2d", lambda: fnn.Conv2d(1, True, 3)),
    ("Conv2d", lambda: fnn.Conv2d(1, 1, 3.0)),
    ("Linear", lambda: fnn.Linear(0, 3)),
    ("Linear", lambda: fnn.Linear(3, -1)),
    ("Linear", lambda: fnn.Linear(True, 3)),
    ("Linear", lambda: fnn.Linear(2.0, 3)),
    ("ChannelwiseScaling", lambda: fnn.ChannelwiseScaling(0)),
    ("BatchNormalization", lambda: fnn.BatchNormalization(0)),
    ("BatchNormalization", lambda: fnn.BatchNormalization(3, alpha=1.5)),
    ("BatchNormalization", lambda: fnn.BatchNormalization(3, alpha=-0.1)),
    ("BatchNormalization", lambda: fnn.BatchNormalization(False)),
    ("MaxPool2d", lambda: fnn.MaxPool2d(0)),
    ("MaxPool2d", lambda: fnn.MaxPool2d(True)),
    ("LeakyReLU", lambda: fnn.LeakyReLU(slope=float("inf"))),
    ("LeakyReLU", lambda: fnn.LeakyReLU(slope=False)),
    ("ELU", lambda: fnn.ELU(alpha=float("nan"))),
    ("SGDMomentum", lambda: fnn.SGDMomentum(learning_rate=-1.0)),
    ("SGDMomentum", lambda: fnn.SGDMomentum(learning_rate=0.1, momentum=1.0)),
    ("Adam", lambda: fnn.Adam(beta1=1.0)),
    ("Adam", lambda: fnn.Adam(beta2=-0.5)),
    ("Adam", lambda: fnn.Adam(epsilon=-1e-8)),
    ("Adam", lambda: fnn.Adam(learning_rate=True)),
]


@pytest.mark.parametrize("name, make", BAD_HYPER, ids=[f"{n}-{i}" for i, (n, _) in
                                                       enumerate(BAD_HYPER)])
def test_invalid_hyperparameters_raise_at_construction(name, make):
    with pytest.raises(ValueError, match=rf"^{name}: "):
        make()


def test_valid_edge_hyperparameters():
    fnn.Dropout(p=0.0)
    fnn.BatchNormalization(1, alpha=1.0)
    fnn.Conv2d(1, 1, 1)
    fnn.MaxPool2d(1)
    fnn.SGDMomentum(learning_rate=0.0)
    fnn.Linear(np.int64(2), 3)
