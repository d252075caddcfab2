"""Bad input: wrong shapes (the message names the layer, the expected and the actual shape),
invalid hyperparameters (at construction, naming the class), integer arrays (TypeError), and
nothing mutated when an error is raised."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from cases import CASE_IDS, CASES, examples
from helpers import assert_unchanged, snapshot
from hypothesis import given
from hypothesis import strategies as st

import fnn
from fnn import tree

ROWS = pytest.mark.parametrize("case", CASES, ids=CASE_IDS)


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
    (fnn.GroupNorm(2, 4), (2, 3, 5), "(N, 4, *)"),
    (fnn.GroupNorm(2, 4), (4,), "(N, 4)"),
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


@ROWS
@given(data=st.data())
def test_float16_is_refused_with_one_message(case, data):
    """One rule for every layer: fnn computes in float32 or float64; float16 (and longdouble)
    inputs and gradients are a TypeError saying so, never a silently upcast result."""
    ex = data.draw(examples(case))
    y, cache = ex.layer.forward(ex.params, ex.state, ex.x)
    for dtype in (np.float16, np.longdouble):
        if np.dtype(dtype) == np.float64:  # longdouble is float64 on some platforms
            continue
        if case.integer_input:  # indices: a float input of any kind is refused
            with pytest.raises(TypeError, match=f"integer indices, got dtype {np.dtype(dtype)}"):
                ex.layer.forward(ex.params, ex.state, ex.x.astype(dtype))
        else:
            with pytest.raises(TypeError, match="float32 or float64 input, got dtype"):
                ex.layer.forward(ex.params, ex.state, ex.x.astype(dtype))
        with pytest.raises(TypeError, match="float32 or float64 gradient, got dtype"):
            ex.layer.backward(ex.params, cache, np.ones(y.shape, dtype))


# --- params and state against the spec ---------------------------------------------------

def _array_leaf_indices(t: Any) -> list[int]:
    return [i for i, a in enumerate(tree.leaves(t)) if isinstance(a, np.ndarray)]


def _replace_leaf(t: Any, i: int, new: Any) -> Any:
    leaves = tree.leaves(t)
    return tree.unflatten(t, leaves[:i] + [new] + leaves[i + 1:])


@ROWS
@given(data=st.data())
def test_params_and_state_are_checked_against_the_spec(case, data):
    """Every array leaf of params and state, replaced by one of another shape, an integer
    array or a list, makes forward raise naming the field (``params.W``, ``state.moving_mean``)
    and the expected shape, before anything is computed; nothing is mutated."""
    ex = data.draw(examples(case))
    for which in ("params", "state"):
        t = ex.params if which == "params" else ex.state
        for i in _array_leaf_indices(t):
            leaf = tree.leaves(t)[i]
            bad_values = [(np.zeros(leaf.shape + (1,), leaf.dtype), ValueError, "must have shape"),
                          (np.zeros(leaf.shape, np.int64), TypeError, "float32 or float64"),
                          (leaf.tolist(), TypeError, "ndarray")]
            if leaf.ndim:
                bad_values.append((np.zeros(leaf.shape[:-1] + (leaf.shape[-1] + 1,),
                                            leaf.dtype), ValueError, "must have shape"))
            for bad, err, words in bad_values:
                args = {"params": ex.params, "state": ex.state}
                args[which] = _replace_leaf(t, i, bad)
                before = snapshot((ex.params, ex.state, ex.x))
                with pytest.raises(err, match=rf"{which}[.\[].*{words}"):
                    ex.layer.forward(args["params"], args["state"], ex.x)
                assert_unchanged(before, (ex.params, ex.state, ex.x))


def test_params_check_examples_from_the_issue():
    x = np.ones((4, 3))
    linear = fnn.Linear(3, 2)
    from fnn.linear import LinearParams
    with pytest.raises(ValueError, match=r"Linear\(n_in=3, n_out=2\): params\.W must have "
                                         r"shape \(2, 3\), got \(5, 3\)"):
        linear.forward(LinearParams(W=np.ones((5, 3)), b=np.ones(5)), (), x)
    with pytest.raises(ValueError, match=r"params\.b must have shape \(2,\), got \(1,\)"):
        linear.forward(LinearParams(W=np.ones((2, 3)), b=np.ones(1)), (), x)
    with pytest.raises(TypeError, match=r"params\.W must be float32 or float64, got dtype int"):
        linear.forward(LinearParams(W=np.ones((2, 3), int), b=np.ones(2)), (), x)
    with pytest.raises(TypeError, match=r"params must be a LinearParams, got tuple"):
        linear.forward((), (), x)
    # a checkpoint's params used with another spec: caught by the child, named with its index
    net = fnn.Sequential([fnn.Linear(3, 4), fnn.ReLU(), fnn.Linear(4, 2)])
    other = fnn.Sequential([fnn.Linear(3, 5), fnn.ReLU(), fnn.Linear(5, 2)])
    with pytest.raises(ValueError, match="params.W must have shape") as info:
        net.forward(other.init(0)[0], net.init(0)[1], x)
    assert "Sequential layer 0" in "".join(info.value.__notes__)


# --- empty batches -----------------------------------------------------------------------

@pytest.mark.parametrize("layer, shape", [
    (fnn.BatchNormalization(3), (0, 3)),
    (fnn.BatchNorm2d(2), (0, 2, 3, 3)),
    (fnn.BatchNorm2d(2), (4, 2, 0, 3)),
])
def test_batchnorm_refuses_an_empty_training_batch(layer, shape):
    params, state = layer.init(0)
    before = snapshot(state)
    with pytest.raises(ValueError, match="training mode needs"):
        layer.forward(params, state, np.ones(shape))
    assert_unchanged(before, state)
    y, cache = layer.forward(params, fnn.eval_mode(state), np.ones(shape))  # eval: defined
    assert y.shape == shape and layer.backward(params, cache, y)[0].shape == shape


@pytest.mark.parametrize("layer, shape, out", [
    (fnn.Flatten(), (0, 3, 2), (0, 6)),
    (fnn.LayerNorm(3), (0, 3), (0, 3)),
    (fnn.LayerNorm((2, 3)), (0, 5, 2, 3), (0, 5, 2, 3)),
    (fnn.LayerNorm(3, elementwise_affine=False), (2, 0, 3), (2, 0, 3)),
    (fnn.Linear(3, 2), (0, 3), (0, 2)),
    (fnn.SoftMax(), (0, 4), (0, 4)),
    (fnn.Dropout(0.5), (0, 4), (0, 4)),
    (fnn.GroupNorm(2, 4), (0, 4, 3), (0, 4, 3)),
    (fnn.GroupNorm(2, 4, affine=False), (2, 4, 0), (2, 4, 0)),
])
def test_empty_batch_gives_an_empty_output(layer, shape, out):
    params, state = layer.init(0)
    y, cache = layer.forward(params, state, np.ones(shape))
    assert y.shape == out == layer.output_shape(shape)
    dx, dparams = layer.backward(params, cache, np.ones(out))
    assert dx.shape == shape
    for g, p in zip(tree.leaves(dparams), tree.leaves(params)):
        assert g.shape == p.shape and not g.any()


# --- outputs the cache keeps are read-only -------------------------------------------------

@pytest.mark.parametrize("layer, shape", [
    (fnn.SoftMax(), (2, 3)), (fnn.LogSoftMax(), (2, 3)), (fnn.Tanh(), (2, 3)),
    (fnn.Sigmoid(), (2, 3)), (fnn.BatchNormalization(3), (4, 3)),
    (fnn.LayerNorm(3, elementwise_affine=False), (2, 3)),
])
def test_an_output_the_cache_keeps_cannot_be_changed_in_place(layer, shape):
    params, state = layer.init(0)
    x = fnn.generator(0).standard_normal(shape)
    y, cache = layer.forward(params, state, x)
    dx = layer.backward(params, cache, np.ones(shape))[0]
    with pytest.raises(ValueError, match="read-only"):
        y *= 0
    np.testing.assert_array_equal(layer.backward(params, cache, np.ones(shape))[0], dx)


@pytest.mark.parametrize("layer", [fnn.ReLU(), fnn.LeakyReLU(), fnn.ELU(), fnn.SoftPlus(),
                                   fnn.Tanh(), fnn.Sigmoid(), fnn.GELU(), fnn.Identity(),
                                   fnn.Dropout(0.3)])
def test_zero_d_input_to_an_elementwise_layer(layer):
    params, state = layer.init(0)
    for value in (-1.5, 2.0):
        x = np.array(value)
        y, cache = layer.forward(params, fnn.eval_mode(state), x)
        assert isinstance(y, np.ndarray) and y.shape == () and y.dtype == x.dtype
        expected, _ = layer.forward(params, fnn.eval_mode(state), x.reshape(1))
        assert y == expected[0]
        dx, _ = layer.backward(params, cache, np.array(1.0))
        assert isinstance(dx, np.ndarray) and dx.shape == ()


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
    ("GroupNorm", lambda: fnn.GroupNorm(2, 3)),
    ("GroupNorm", lambda: fnn.GroupNorm(0, 3)),
    ("GroupNorm", lambda: fnn.GroupNorm(1, 3, eps=-1e-5)),
    ("GroupNorm", lambda: fnn.GroupNorm(1, 3, affine=1)),
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


def test_groupnorm_output_shape():
    layer = fnn.GroupNorm(2, 4)
    assert layer.output_shape((3, 4)) == (3, 4) and layer.output_shape((1, 4, 2, 5)) == (1, 4, 2, 5)
    for bad, expected in (((3,), r"\(N, 4\)"), ((3, 5, 2), r"\(N, 4, \*\)")):
        with pytest.raises(ValueError, match=r"GroupNorm\(num_groups=2, num_channels=4\): "
                                             r"expected input of shape " + expected):
            layer.output_shape(bad)
