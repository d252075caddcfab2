"""Conv1d, MaxPool1d and AvgPool1d (construction, defaults, errors, equality with the 2-D layers
at H = 1); output_shape and param_shapes of the convolution and pooling layers; the edge cases
of issue 9: an empty batch, NaN in a max-pool window, compat's even-kernel message; the classic
Conv2d against scipy's correlate and MaxPool2d's known answer."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.signal

import compat
import fnn
from fnn import tree
from fnn.core import ShapeDtype


def normal(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return fnn.generator(seed).standard_normal(shape)


# --- the 1-D layers -------------------------------------------------------------------------

def test_1d_defaults_and_repr_are_pytorchs():
    conv = fnn.Conv1d(2, 4, 3)
    assert (conv.stride, conv.padding, conv.dilation, conv.groups, conv.bias) == (1, 0, 1, 1,
                                                                                  True)
    assert repr(conv) == "Conv1d(in_channels=2, out_channels=4, kernel_size=3)"
    assert (repr(fnn.Conv1d(2, 4, 3, stride=2, padding=1, groups=2, bias=False))
            == "Conv1d(in_channels=2, out_channels=4, kernel_size=3, stride=2, padding=1, "
               "groups=2, bias=False)")
    assert fnn.Conv2d(2, 4, 3).padding == "same"  # unchanged
    assert repr(fnn.MaxPool1d(3, 2, 1)) == "MaxPool1d(kernel_size=3, stride=2, padding=1)"
    assert fnn.AvgPool1d(2).stride is None and fnn.Conv1d(1, 1, [3]).kernel_size == (3,)


@pytest.mark.parametrize("make, message", [
    (lambda: fnn.Conv1d(2, 2, 4, padding="same"), r"^Conv1d: kernel_size must be odd .* pass "
                                                  r"an explicit padding \(an int\)$"),
    (lambda: fnn.Conv1d(2, 2, 3, stride=2, padding="same"), r"^Conv1d: padding=\"same\" needs"),
    (lambda: fnn.Conv1d(2, 2, (3, 3)), r"^Conv1d: kernel_size must be an integer >= 1, a tuple "
                                       r"of 1 of them, got \(3, 3\)$"),
    (lambda: fnn.Conv1d(3, 2, 3, groups=2), r"^Conv1d: in_channels=3 is not divisible"),
    (lambda: fnn.MaxPool1d(2, padding=2), r"^MaxPool1d: padding must be at most half"),
    (lambda: fnn.AvgPool1d(0), r"^AvgPool1d: kernel_size must be an integer >= 1"),
])
def test_1d_invalid_hyperparameters_name_the_layer(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("options1, options2", [
    ({}, dict(padding=0)), (dict(padding="same"), dict(padding="same")),
    (dict(stride=2, padding=2), dict(stride=(1, 2), padding=(0, 2))),
    (dict(dilation=2, groups=2), dict(dilation=(1, 2), groups=2, padding=0)),
    (dict(bias=False), dict(bias=False, padding=0))])
def test_conv1d_is_conv2d_on_a_height_of_one(options1, options2):
    conv1 = fnn.Conv1d(4, 6, 3, **options1)
    conv2 = fnn.Conv2d(4, 6, (1, 3), **options2)
    params, _ = conv1.init(3)
    params2 = tree.map(lambda a: a[:, :, None] if a.ndim == 3 else a, params)
    np.testing.assert_array_equal(params2.W, conv2.init(3)[0].W)
    x = normal((3, 4, 9))
    y, cache = conv1.forward(params, (), x)
    y2, cache2 = conv2.forward(params2, (), x[:, :, None])
    np.testing.assert_array_equal(y, y2[:, :, 0])
    dy = normal(y.shape, 1)
    dx, dparams = conv1.backward(params, cache, dy)
    dx2, dparams2 = conv2.backward(params2, cache2, dy[:, :, None])
    np.testing.assert_array_equal(dx, dx2[:, :, 0])
    assert dparams.W.shape == params.W.shape
    np.testing.assert_array_equal(dparams.W, dparams2.W[:, :, 0])


@pytest.mark.parametrize("pool1, pool2", [
    (fnn.MaxPool1d(2), fnn.MaxPool2d((1, 2), (1, 2))), (fnn.MaxPool1d(3, 2, 1),
                                                        fnn.MaxPool2d((1, 3), (1, 2), (0, 1))),
    (fnn.AvgPool1d(2), fnn.AvgPool2d((1, 2))), (fnn.AvgPool1d(3, 1, 1),
                                                fnn.AvgPool2d((1, 3), 1, (0, 1)))])
def test_1d_pools_are_2d_pools_on_a_height_of_one(pool1, pool2):
    x = normal((2, 3, 9))  # 9: the default stride floors (no divisibility required in 1-D)
    y, cache = pool1.forward((), (), x)
    y2, cache2 = pool2.forward((), (), x[:, :, None])
    np.testing.assert_array_equal(y, y2[:, :, 0])
    dy = normal(y.shape, 1)
    np.testing.assert_array_equal(pool1.backward((), cache, dy)[0],
                                  pool2.backward((), cache2, dy[:, :, None])[0][:, :, 0])


def test_1d_layers_check_their_input_rank_and_size():
    with pytest.raises(ValueError, match=r"^Conv1d\(.*\): expected input of shape \(N, 2, L\), "
                                         r"got shape \(1, 2, 3, 4\)$"):
        fnn.Conv1d(2, 2, 3).forward(fnn.Conv1d(2, 2, 3).init(0)[0], (), normal((1, 2, 3, 4)))
    with pytest.raises(ValueError, match=r"too small: the output would be 0 \(kernel_size=3"):
        fnn.Conv1d(2, 2, 3).output_shape((1, 2, 2))
    with pytest.raises(ValueError, match=r"^MaxPool1d\(kernel_size=3\): input of shape "
                                         r"\(1, 2, 2\) is too small: the output would be 0$"):
        fnn.MaxPool1d(3).forward((), (), normal((1, 2, 2)))


# --- output_shape and param_shapes -----------------------------------------------------------

SHAPED = [
    (fnn.Conv2d(2, 4, 3), (3, 2, 5, 6)), (fnn.Conv2d(2, 4, (3, 2), stride=2, padding=(1, 0),
                                                     groups=2, bias=False), (1, 2, 7, 5)),
    (fnn.Conv1d(2, 3, 3, stride=2, dilation=2, dtype="float32"), (2, 2, 9)),
    (fnn.MaxPool2d(2), (2, 3, 4, 6)), (fnn.MaxPool2d(3, 2, 1), (1, 2, 7, 5)),
    (fnn.AvgPool2d((2, 3), 1), (1, 1, 4, 4)), (fnn.MaxPool1d(2), (2, 3, 7)),
    (fnn.AvgPool1d(3, 2, 1), (2, 1, 6)), (fnn.GlobalAvgPool2d(), (2, 3, 4, 5)),
]


@pytest.mark.parametrize("layer, shape", SHAPED, ids=[repr(s[0]) for s in SHAPED])
def test_output_shape_and_param_shapes_agree_with_init_and_forward(layer, shape):
    params, state = layer.init(0)
    y, _ = layer.forward(params, state, np.zeros(shape))
    assert layer.output_shape(shape) == y.shape
    described = layer.param_shapes()
    assert tree.map(lambda a: ShapeDtype(a.shape, a.dtype), params) == described


@pytest.mark.parametrize("layer, shape", [
    (fnn.Conv2d(2, 4, 3), (3, 3, 5, 6)), (fnn.Conv2d(2, 4, 3), (3, 2, 5)),
    (fnn.Conv2d(2, 4, 5, padding=0), (1, 2, 3, 6)), (fnn.MaxPool2d(2), (1, 1, 3, 4)),
    (fnn.MaxPool2d(3, 1), (1, 1, 2, 4)), (fnn.AvgPool1d(2), (1, 1, 4, 4)),
    (fnn.GlobalAvgPool2d(), (2, 3))])
def test_output_shape_raises_what_forward_raises(layer, shape):
    with pytest.raises(ValueError) as from_forward:
        layer.forward(layer.init(0)[0], (), np.zeros(shape))
    with pytest.raises(ValueError, match=f"^{re.escape(str(from_forward.value))}$"):
        layer.output_shape(shape)


# --- issue 9: empty batches, NaN, compat ---------------------------------------------------------

EMPTY = [fnn.Conv2d(2, 4, 3), fnn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2),
         fnn.Conv2d(2, 3, (2, 3), padding="valid", bias=False), fnn.Conv1d(2, 4, 3, padding=1),
         fnn.MaxPool2d(2), fnn.MaxPool2d(3, 2, 1), fnn.AvgPool2d(2), fnn.AvgPool1d(3, 1),
         fnn.MaxPool1d(2), fnn.GlobalAvgPool2d()]


@pytest.mark.parametrize("layer", EMPTY, ids=repr)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_empty_batch_gives_empty_outputs_and_zero_dparams(layer, dtype):
    shape = (0, 2, 6) if "1d" in type(layer).__name__ else (0, 2, 6, 6)
    params, state = layer.init(0)
    params = tree.cast(params, dtype)
    y, cache = layer.forward(params, state, np.zeros(shape, dtype))
    assert y.shape == layer.output_shape(shape) and y.dtype == dtype
    dx, dparams = layer.backward(params, cache, np.zeros(y.shape, dtype))
    assert dx.shape == shape and dx.dtype == dtype
    for grad, param in zip(tree.leaves(dparams), tree.leaves(params)):
        assert grad.shape == param.shape and grad.dtype == dtype and not grad.any()


NAN = np.nan


@pytest.mark.parametrize("layer, x, dx", [
    (fnn.MaxPool2d(2), [[1, NAN], [NAN, 3]], [[0, 0], [1, 0]]),  # tiled kernel
    (fnn.MaxPool2d(2, 2), [[1, NAN, 0], [NAN, 3, 0]], [[0, 0, 0], [1, 0, 0]]),  # general
    (fnn.MaxPool2d((1, 4)), [[5, NAN, 7, NAN]], [[0, 0, 0, 1]]),
    (fnn.MaxPool1d(4), [5, NAN, 7, NAN], [0, 0, 0, 1]),
    (fnn.MaxPool1d(3, 1, 1), [1, NAN, 2, NAN, 5], [0, 2, 0, 3, 0])])  # dy = 1: windows add
def test_a_nan_window_sends_its_gradient_to_its_last_nan_as_pytorch(layer, x, dx):
    """PyTorch's CPU max pool takes a value as the new maximum when it is greater or NaN, so
    a window's last NaN gets the gradient (checked against torch in
    tests/torch_reference/test_torch_conv.py); y is NaN there."""
    x = np.array(x, dtype=float)[None, None]
    y, cache = layer.forward((), (), x)
    assert np.isnan(y).all()
    np.testing.assert_array_equal(layer.backward((), cache, np.ones(y.shape))[0][0, 0], dx)


def test_compat_even_kernel_message_suggests_no_padding_argument():
    with pytest.raises(ValueError, match=r"^Conv2d: kernel_size must be odd") as info:
        compat.Conv2d(1, 2, 4)
    assert "padding" not in str(info.value)
    with pytest.raises(ValueError, match=r"^Conv2d: kernel_size must be an integer >= 1"):
        compat.Conv2d(1, 2, 0)


# --- classic known answers -----------------------------------------------------

@pytest.mark.parametrize("k", [1, 3, 5])
def test_conv2d_matches_scipy_correlate(k):
    layer = fnn.Conv2d(2, 3, k)
    params, _ = layer.init(k)
    x = fnn.generator(k).standard_normal((2, 2, 5, 6))
    y, _ = layer.forward(params, (), x)
    for n in range(2):
        for o in range(3):
            ref = params.b[o] + sum(
                scipy.signal.correlate(x[n, c], params.W[o, c], mode="same") for c in range(2))
            np.testing.assert_allclose(y[n, o], ref, rtol=1e-12, atol=1e-12)


def test_maxpool_known_answer_and_tie_gradient_goes_to_first():
    x = np.array([[[[1.0, 5.0, 2.0, 2.0],
                    [3.0, 4.0, 2.0, 2.0]]]])
    layer = fnn.MaxPool2d(2)
    y, cache = layer.forward((), (), x)
    np.testing.assert_array_equal(y, [[[[5.0, 2.0]]]])
    dx, _ = layer.backward((), cache, np.array([[[[10.0, 20.0]]]]))
    np.testing.assert_array_equal(dx, [[[[0.0, 10.0, 20.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]])
