"""The ONE table of layer cases that drives the generic layer tests.

Every row of :data:`CASES` is a :class:`LayerCase`; every generic check (shapes, purity, dtype,
finite-difference gradients, batch consistency, ...) runs on every row, and the PyTorch
reference tests import the same table. A row is:

- ``name``: the test id, e.g. ``"conv-k3"`` or ``"batchnorm-eval"``;
- ``setup(draw) -> (layer, sample_shape)``: hypothesis draws the hyperparameters and the shape of
  ONE sample (no batch axis); the batch size is drawn separately by :func:`examples`;
- ``mode``: ``"train"`` or ``"eval"``, the mode the layer runs in. Eval rows are first run once in
  training mode on another drawn batch, so that running statistics are not their initial values;
- ``batch_coupled``: True when the samples of a batch affect each other's outputs (BatchNorm in
  training through the batch statistics, Dropout in training through its key);
- ``unique_values``: True when the input must hold distinct values, at least 1/(250 * size)
  >= 1e-5 apart for the sizes drawn here (max pooling: the finite-difference step, 1e-6, must
  not cross a tie). Other rows draw values in
  [-3, -0.05] U [0.05, 3], away from the kinks of ReLU, LeakyReLU and ELU at 0;
- ``integer_input``: True when x holds integer indices (Embedding first): x is drawn as valid
  indices (int64, not cast to the dtype), and the checks expect dx = None.

Use :func:`examples` (a hypothesis strategy) to get an :class:`Example` of a row:
``layer, params, state, x`` in the requested dtype, ready for ``layer.forward(params, state, x)``.
The values, keys and batch sizes come from the public strategies of ``fnn.testing.strategies``
and the checks in tests/layers/test_layers.py are the public ``fnn.testing`` ones (``check_layer``
runs them all on a user's layer), so a user's layer gets exactly the tests a row gets.
``kink_distance`` (from ``fnn.testing``) says how far an input is from the non-differentiable
points of a layer (finite-difference checks skip examples closer than 1e-5).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
from hypothesis import strategies as st

import fnn
from cases.sequence import SEQUENCE_ROWS, indices
from fnn.testing import kink_distance, training_flags
from fnn.testing.strategies import arrays, layer_examples

__all__ = ["LayerCase", "Example", "CASES", "CASE_IDS", "examples",
           "input_values", "indices", "kink_distance", "training_flags"]

Setup = Callable[[st.DrawFn], tuple[Any, tuple[int, ...]]]


@attrs.frozen
class LayerCase:
    name: str
    setup: Setup
    mode: str = "train"
    batch_coupled: bool = False
    unique_values: bool = False
    integer_input: bool = False


@attrs.frozen
class Example:
    """One drawn instance of a row: call ``layer.forward(params, state, x)``."""

    case: LayerCase
    layer: Any
    params: Any
    state: Any
    x: np.ndarray


# --- hyperparameter and shape draws (small: the gradient check costs 2 forwards an element) ---

def _size(draw: st.DrawFn, hi: int = 4) -> int:
    return draw(st.integers(1, hi))


def _any_shape(draw: st.DrawFn) -> tuple[int, ...]:
    """A sample shape of rank 0 to 3 (with the batch axis: rank 1 to 4)."""
    return tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=3)))


def _features(draw: st.DrawFn, layer_cls: Callable[..., Any], **hyper: Any):
    n = _size(draw)
    return layer_cls(n, **hyper), (n,)


def _elementwise(make: Callable[[st.DrawFn], Any]) -> Setup:
    return lambda draw: (make(draw), _any_shape(draw))


def _linear(draw: st.DrawFn):
    n_in, n_out = _size(draw), _size(draw)
    return fnn.Linear(n_in, n_out), (n_in,)


def _classes(layer_cls: Callable[[], Any]) -> Setup:
    return lambda draw: (layer_cls(), (_size(draw, 5),))


# eps no smaller than the classic 1e-3: 1 / sqrt(eps) bounds the curvature the finite
# differences must resolve when a batch's values nearly coincide
_eps = st.sampled_from([1e-3, 1e-2, 0.5])


def _batchnorm(draw: st.DrawFn):
    return _features(draw, fnn.BatchNormalization, alpha=draw(st.floats(0.0, 1.0)),
                     eps=draw(_eps))


def _batchnorm2d(draw: st.DrawFn):
    c = _size(draw, 3)
    layer = fnn.BatchNorm2d(c, alpha=draw(st.floats(0.0, 1.0)), eps=draw(_eps),
                            affine=draw(st.booleans()))
    return layer, (c, _size(draw, 3), _size(draw, 3))


def _layernorm(draw: st.DrawFn):
    """normalized_shape of rank 1 or 2 after 0 or 1 extra leading axes."""
    normalized = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))
    leading = tuple(draw(st.lists(st.integers(1, 3), max_size=1)))
    layer = fnn.LayerNorm(normalized, eps=draw(_eps), elementwise_affine=draw(st.booleans()))
    return layer, leading + normalized


def _groupnorm(draw: st.DrawFn):
    """GroupNorm(G, C = G * (1 or 2)) on (C, *0 to 2 axes of 1 to 3), with or without affine."""
    g = _size(draw, 3)
    c = g * _size(draw, 2)
    layer = fnn.GroupNorm(g, c, eps=draw(_eps), affine=draw(st.booleans()))
    return layer, (c, *draw(st.lists(st.integers(1, 3), max_size=2)))


def _residual_mlp(draw: st.DrawFn):
    n, hidden = _size(draw), _size(draw)
    return fnn.Residual(fnn.Sequential([fnn.Linear(n, hidden), fnn.GELU(),
                                        fnn.Linear(hidden, n)])), (n,)


def _residual_conv(draw: st.DrawFn):
    """Residual(Conv2d(k=3) -> BatchNorm2d(affine) -> Tanh): a ResNet-style block."""
    c = _size(draw, 2)
    block = fnn.Sequential([fnn.Conv2d(c, c, 3), fnn.BatchNorm2d(c, alpha=0.5, affine=True),
                            fnn.Tanh()])
    return fnn.Residual(block), (c, _size(draw, 4), _size(draw, 4))


def _conv(k: int) -> Setup:
    def setup(draw: st.DrawFn):
        c_in, c_out = _size(draw, 2), _size(draw, 2)
        return fnn.Conv2d(c_in, c_out, k), (c_in, _size(draw, 5), _size(draw, 5))
    return setup


def _pool(k: int) -> Setup:
    def setup(draw: st.DrawFn):
        return fnn.MaxPool2d(k), (_size(draw, 2), k * _size(draw, 2), k * _size(draw, 2))
    return setup


# --- Conv2d / pooling options: hyperparameters drawn per row, then an input size for which
# at least one window fits (up to 3 more rows and columns)

def _ntuple(v: Any, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, tuple) else (v,) * n


def _fitting_sizes(draw: st.DrawFn, layer: Any) -> tuple[int, ...]:
    """Input sizes, one per spatial axis of a conv or pool ``layer``, for which at least one
    window fits (and up to 3 more)."""
    w = layer.window()
    return tuple(max(1, di * (ki - 1) + 1 - 2 * pi) + draw(st.integers(0, 3))
                 for ki, pi, di in zip(w.kernel, w.padding, w.dilation))


def _conv_options(options: Callable[[st.DrawFn], dict], depthwise: bool = False) -> Setup:
    """Conv2d(c_in, c_out, **options(draw)): groups g from the options (depthwise: g = c_in),
    1 or 2 input and output channels per group."""
    def setup(draw: st.DrawFn):
        opts = options(draw)
        g = _size(draw, 3) if depthwise else opts.get("groups", 1)
        c_in = g * (1 if depthwise else _size(draw, 2))
        layer = fnn.Conv2d(c_in, g * _size(draw, 2), **{**opts, "groups": g})
        return layer, (c_in, *_fitting_sizes(draw, layer))
    return setup


def _k(draw: st.DrawFn, odd: bool = False) -> int:
    return draw(st.sampled_from([1, 3] if odd else [1, 2, 3]))


def _pool_options(layer_cls: Callable[..., Any], stride_none: bool = True) -> Setup:
    """layer_cls(k, stride, padding): k 1 to 3 or a tuple (one per spatial axis), stride None
    (the kernel) or 1 to 3, padding 0 to k // 2; C 1 or 2."""
    def setup(draw: st.DrawFn):
        sizes = st.tuples(*[st.integers(1, 3)] * layer_cls.ndim)
        k = draw(st.integers(1, 3) | sizes)
        strides = st.integers(1, 3) | sizes
        stride = draw(st.none() | strides if stride_none else strides)
        padding = tuple(draw(st.integers(0, ki // 2)) for ki in _ntuple(k, layer_cls.ndim))
        if len(set(padding)) == 1 and draw(st.booleans()):
            padding = padding[0]
        layer = layer_cls(k, stride, padding)
        w = layer.window()
        if layer_cls is fnn.MaxPool2d and stride is None and w.padding == (0, 0):
            shape = tuple(ki * _size(draw, 2) for ki in w.kernel)  # classic: k divides H, W
        else:
            shape = _fitting_sizes(draw, layer)
        return layer, (_size(draw, 2), *shape)
    return setup


def _conv1d(draw: st.DrawFn):
    """Conv1d: kernel 1 to 3, stride 1 or 2, padding 0, 1, "valid" or ("same" with an odd
    kernel and stride 1), dilation 1 or 2, groups 1 or 2 (1 or 2 channels per group), bias
    or not."""
    k, stride = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    paddings = [0, 1, "valid"] + (["same"] if k % 2 and stride == 1 else [])
    g = draw(st.integers(1, 2))
    layer = fnn.Conv1d(g * _size(draw, 2), g * _size(draw, 2), k, stride=stride,
                       padding=draw(st.sampled_from(paddings)), dilation=draw(st.integers(1, 2)),
                       groups=g, bias=draw(st.booleans()))
    return layer, (layer.in_channels, *_fitting_sizes(draw, layer))


def _mlp(draw: st.DrawFn):
    """Linear -> BatchNorm -> ChannelwiseScaling -> LeakyReLU -> Dropout -> Linear -> LogSoftMax."""
    n_in, hidden, n_out = _size(draw), _size(draw), _size(draw)
    net = fnn.Sequential([
        fnn.Linear(n_in, hidden), fnn.BatchNormalization(hidden, alpha=0.9),
        fnn.ChannelwiseScaling(hidden), fnn.LeakyReLU(), fnn.Dropout(p=0.3),
        fnn.Linear(hidden, n_out), fnn.LogSoftMax()])
    return net, (n_in,)


def _cnn(draw: st.DrawFn):
    """[Conv2d(k=3) -> MaxPool2d(2)] -> ReLU -> Flatten -> BatchNorm -> Dropout -> Linear ->
    SoftMax, the first block a nested Sequential. (ReLU after the pooling computes the same as
    before it, and keeps the pooled values free of the exact ties of ReLU's zeros.)"""
    c_in, c_out, h, w = _size(draw, 2), _size(draw, 2), 2 * _size(draw, 2), 2 * _size(draw, 2)
    flat = c_out * (h // 2) * (w // 2)
    net = fnn.Sequential([
        fnn.Sequential([fnn.Conv2d(c_in, c_out, 3), fnn.MaxPool2d(2)]), fnn.ReLU(), fnn.Flatten(),
        fnn.BatchNormalization(flat, alpha=0.5), fnn.Dropout(p=0.25), fnn.Linear(flat, 3),
        fnn.SoftMax()])
    return net, (c_in, h, w)


# --- recurrent layers: x (N, T, F); T from 1 to 4 steps ---------------------------------------

_CELLS = {"rnn-tanh": fnn.RNN, "rnn-relu": lambda f, h, **kw: fnn.RNN(f, h, "relu", **kw),
          "lstm": fnn.LSTM, "gru": fnn.GRU}


def _recurrent(cell: str | None = None, reverse: bool | None = False,
               bidirectional: bool = False) -> Setup:
    """A recurrent layer of ``cell`` (None: drawn), ``reverse`` (None: drawn), optionally
    wrapped in Bidirectional; F and H from 1 to 3."""
    def setup(draw: st.DrawFn):
        make = _CELLS[cell if cell is not None else draw(st.sampled_from(sorted(_CELLS)))]
        rev = draw(st.booleans()) if reverse is None else reverse
        f, h = _size(draw, 3), _size(draw, 3)
        layer = make(f, h, reverse=rev)
        return (fnn.Bidirectional(layer) if bidirectional else layer), (_size(draw), f)
    return setup


def _lstm_classifier(draw: st.DrawFn):
    """LSTM -> LastStep -> Linear: a sequence classifier."""
    f, h, c = _size(draw, 3), _size(draw, 3), _size(draw, 3)
    return fnn.Sequential([fnn.LSTM(f, h), fnn.LastStep(), fnn.Linear(h, c)]), (_size(draw), f)


CASES: list[LayerCase] = [
    LayerCase("linear", _linear),
    LayerCase("softmax", _classes(fnn.SoftMax)),
    LayerCase("logsoftmax", _classes(fnn.LogSoftMax)),
    LayerCase("batchnorm-train", _batchnorm, batch_coupled=True),
    LayerCase("batchnorm-eval", _batchnorm, mode="eval"),
    LayerCase("channelwise-scaling", lambda draw: _features(draw, fnn.ChannelwiseScaling)),
    LayerCase("dropout-train", _elementwise(lambda d: fnn.Dropout(p=d(st.floats(0.0, 0.9)))),
              batch_coupled=True),
    LayerCase("dropout-eval", _elementwise(lambda d: fnn.Dropout(p=d(st.floats(0.0, 0.9)))),
              mode="eval"),
    LayerCase("dropout-p0", _elementwise(lambda d: fnn.Dropout(p=0.0))),  # y == x: uncoupled
    LayerCase("relu", _elementwise(lambda d: fnn.ReLU())),
    LayerCase("leakyrelu", _elementwise(lambda d: fnn.LeakyReLU(slope=d(st.floats(0.0, 1.0))))),
    LayerCase("elu", _elementwise(lambda d: fnn.ELU(alpha=d(st.floats(0.1, 2.0))))),
    LayerCase("softplus", _elementwise(lambda d: fnn.SoftPlus())),
    LayerCase("tanh", _elementwise(lambda d: fnn.Tanh())),
    LayerCase("sigmoid", _elementwise(lambda d: fnn.Sigmoid())),
    LayerCase("gelu", _elementwise(lambda d: fnn.GELU(d(st.sampled_from(["none", "tanh"]))))),
    LayerCase("identity", _elementwise(lambda d: fnn.Identity())),
    LayerCase("batchnorm2d-train", _batchnorm2d, batch_coupled=True),
    LayerCase("batchnorm2d-eval", _batchnorm2d, mode="eval"),
    LayerCase("layernorm", _layernorm),
    LayerCase("residual-linear", lambda draw: _features(
        draw, lambda n: fnn.Residual(fnn.Linear(n, n)))),
    LayerCase("residual-mlp", _residual_mlp),
    LayerCase("residual-conv-train", _residual_conv, batch_coupled=True),
    LayerCase("residual-conv-eval", _residual_conv, mode="eval"),
    LayerCase("conv-k1", _conv(1)),
    LayerCase("conv-k3", _conv(3)),
    LayerCase("conv-k5", _conv(5)),
    LayerCase("conv-stride2", _conv_options(lambda d: dict(
        kernel_size=_k(d), stride=2, padding=d(st.sampled_from(["valid", 0, 1]))))),
    LayerCase("conv-padding-valid", _conv_options(lambda d: dict(
        kernel_size=d(st.integers(1, 4)), padding="valid"))),
    LayerCase("conv-padding-int", _conv_options(lambda d: dict(
        kernel_size=3, padding=d(st.integers(0, 2))))),
    LayerCase("conv-padding-pair", _conv_options(lambda d: dict(
        kernel_size=(_k(d), _k(d)), padding=(d(st.integers(0, 2)), d(st.integers(0, 2)))))),
    LayerCase("conv-dilation2", _conv_options(lambda d: dict(
        kernel_size=_k(d, odd=True), dilation=d(st.sampled_from([2, (2, 1)]))))),
    LayerCase("conv-groups2", _conv_options(lambda d: dict(kernel_size=_k(d, odd=True),
                                                           groups=2))),
    LayerCase("conv-depthwise", _conv_options(lambda d: dict(
        kernel_size=3, **d(st.sampled_from([{}, dict(stride=2, padding=1)]))), depthwise=True)),
    LayerCase("conv-nobias", _conv_options(lambda d: dict(
        kernel_size=_k(d, odd=True), bias=False,
        **d(st.sampled_from([{}, dict(stride=2, padding=1)]))))),
    LayerCase("conv-even-kernel", _conv_options(lambda d: dict(
        kernel_size=d(st.sampled_from([2, 4])), padding=d(st.integers(0, 2))))),
    LayerCase("conv-pair-kernel", _conv_options(lambda d: dict(
        kernel_size=d(st.sampled_from([(1, 3), (3, 1), (3, 5)]))))),
    LayerCase("maxpool-k2", _pool(2), unique_values=True),
    LayerCase("maxpool-k3", _pool(3), unique_values=True),
    LayerCase("maxpool-stride-padding", _pool_options(fnn.MaxPool2d, stride_none=False),
              unique_values=True),
    LayerCase("maxpool-options", _pool_options(fnn.MaxPool2d), unique_values=True),
    LayerCase("avgpool", _pool_options(fnn.AvgPool2d)),
    LayerCase("conv1d", _conv1d),
    LayerCase("maxpool1d", _pool_options(fnn.MaxPool1d), unique_values=True),
    LayerCase("avgpool1d", _pool_options(fnn.AvgPool1d)),
    LayerCase("global-avgpool", lambda draw: (fnn.GlobalAvgPool2d(), (
        _size(draw, 3), _size(draw, 3), _size(draw, 3)))),
    LayerCase("flatten", _elementwise(lambda d: fnn.Flatten())),
    LayerCase("mlp-train", _mlp, batch_coupled=True),
    LayerCase("mlp-eval", _mlp, mode="eval"),
    LayerCase("cnn-train", _cnn, batch_coupled=True, unique_values=True),
    LayerCase("cnn-eval", _cnn, mode="eval", unique_values=True),
    LayerCase("groupnorm", _groupnorm),
    *(LayerCase(name, setup, **flags) for name, setup, flags in SEQUENCE_ROWS),
    LayerCase("rnn-tanh", _recurrent("rnn-tanh")),
    LayerCase("rnn-relu", _recurrent("rnn-relu")),
    LayerCase("lstm", _recurrent("lstm")),
    LayerCase("gru", _recurrent("gru")),
    LayerCase("recurrent-reverse", _recurrent(reverse=True)),
    LayerCase("bidirectional", _recurrent(reverse=None, bidirectional=True)),
    LayerCase("laststep", lambda draw: (fnn.LastStep(), (_size(draw), *_any_shape(draw)))),
    LayerCase("lstm-laststep-linear", _lstm_classifier),
]
CASE_IDS = [case.name for case in CASES]


# --- values and examples ------------------------------------------------------------------

def input_values(draw: st.DrawFn, shape: tuple[int, ...], unique: bool = False) -> np.ndarray:
    """Float64 values of ``shape`` from ``fnn.testing.strategies.arrays``: when ``unique``,
    distinct multiples of 1/(250 * size) in about [-4, 4]; else values in
    [-3, -0.05] U [0.05, 3]."""
    return draw(arrays(shape, unique=unique))


@st.composite
def examples(draw: st.DrawFn, case: LayerCase, dtype: Any = np.float64, min_batch: int = 1,
             max_batch: int = 3) -> Example:
    """An :class:`Example` of ``case``: ``fnn.testing.strategies.layer_examples`` of the drawn
    layer and sample shape, in the row's mode (eval: after a training forward on another drawn
    batch), with min_batch <= N <= max_batch; all floating-point leaves in ``dtype``."""
    layer, sample_shape = case.setup(draw)
    if case.integer_input:  # indices (Embedding first): drawn valid, never cast
        return _integer_example(draw, case, layer, sample_shape, dtype, min_batch, max_batch)
    params, state, x = draw(layer_examples(
        layer, sample_shape, mode=case.mode, unique=case.unique_values, dtype=dtype,
        min_batch=min_batch, max_batch=max_batch))
    return Example(case, layer, params, state, x)


def _integer_example(draw: st.DrawFn, case: LayerCase, layer: Any, sample_shape: tuple,
                     dtype: Any, min_batch: int, max_batch: int) -> Example:
    """An :class:`Example` whose x holds valid indices (see ``cases.sequence.indices``)."""
    shape = (draw(st.integers(min_batch, max_batch)), *sample_shape)
    params, state = layer.init(draw(st.integers(0, 2**32 - 1)))
    if case.mode == "eval":
        state = fnn.eval_mode(layer.forward(params, state, indices(draw, shape, layer))[1].state)
    return Example(case, layer, fnn.tree.cast(params, dtype), fnn.tree.cast(state, dtype),
                   indices(draw, shape, layer))
