"""compat: a user's Module inside Sequential, Sequential's container protocol and direct update
calls, and failed calls: bad input leaves the module untouched; reassigned parameters and
inputs of the wrong kind raise errors naming the module."""

from __future__ import annotations

import numpy as np
import pytest
from compat_kit import assert_same, copies, rand, sequential

from compat import (
    BatchNormalization,
    ChannelwiseScaling,
    Conv2d,
    Dropout,
    Flatten,
    LeakyReLU,
    Linear,
    LogSoftMax,
    MaxPool2d,
    Module,
    ReLU,
    Sequential,
)

# --- a user's Module inside Sequential -------------------------------------------------------

class Square(Module):
    """A user's module in the classic style: output = input ** 2."""

    def __init__(self):
        super(Square, self).__init__()  # noqa: UP008 - the classic spelling

    def updateOutput(self, input):
        self.output = input ** 2
        return self.output

    def updateGradInput(self, input, gradOutput):
        self.gradInput = 2 * input * gradOutput
        return self.gradInput

    def __repr__(self):
        return "Square"


def test_user_module_inside_sequential():
    np.random.seed(0)
    first, last = Linear(3, 4), Linear(4, 2)
    net = sequential(first, Square(), last)
    x, dy = rand(5, 3), rand(5, 2, seed=1)
    y = net.forward(x)
    h = x @ first.W.T + first.b
    np.testing.assert_allclose(y, h ** 2 @ last.W.T + last.b, rtol=1e-12)
    dx = net.backward(x, dy)
    dh = 2 * h * (dy @ last.W)
    np.testing.assert_allclose(dx, dh @ first.W, rtol=1e-12)
    np.testing.assert_allclose(first.gradW, dh.T @ x, rtol=1e-12)
    np.testing.assert_allclose(last.gradW, dy.T @ h ** 2, rtol=1e-12)
    assert repr(net) == "Linear 3 -> 4\nSquare\nLinear 4 -> 2\n"
    assert net.getParameters()[1] == []


# --- Sequential ----------------------------------------------------------------------------------

def test_sequential_container_protocol():
    net = Sequential()
    assert net.modules == [] and len(net) == 0
    a, b = ReLU(), Flatten()
    net.add(a)
    net.add(b)
    assert net.modules == [a, b] and net[0] is a and net[-1] is b and len(net) == 2
    net.evaluate()
    assert not (net.training or a.training or b.training)
    net.train()
    assert net.training and a.training and b.training


def test_sequential_direct_update_calls_equal_backward():
    def make():
        np.random.seed(0)
        return sequential(Linear(3, 4), BatchNormalization(0.5), ChannelwiseScaling(4),
                          LeakyReLU(), Linear(4, 2), LogSoftMax())

    x, dy = rand(6, 3), rand(6, 2, seed=1)
    a, b = make(), make()
    a.forward(x)
    a.backward(x, dy)
    b.updateOutput(x)
    b.updateGradInput(x, dy)
    b.accGradParameters(x, dy)
    assert_same([a.output, a.gradInput], [b.output, b.gradInput])
    assert_same(a.getGradParameters(), b.getGradParameters())
    b.accGradParameters(x, dy.copy())  # another gradOutput: the children's are recomputed
    np.testing.assert_allclose(b[4].gradW, 2 * a[4].gradW, rtol=1e-14)


# --- bad input -------------------------------------------------------------------------------

def test_wrong_shape_names_the_layer_and_leaves_it_untouched():
    layer = Linear(3, 4)
    x, dy = rand(5, 3), rand(5, 4, seed=1)
    layer.forward(x)
    arrays = [layer.W, layer.b, layer.gradW, layer.gradb, layer.output]
    values = copies(arrays)
    with pytest.raises(ValueError, match=r"Linear.*expected input of shape \(N, 3\), "
                                         r"got shape \(5, 2\)"):
        layer.forward(rand(5, 2))
    with pytest.raises(TypeError, match="floating-point"):
        layer.forward(np.ones((5, 3), dtype=np.int64))
    assert all(a is b for a, b in zip([layer.W, layer.b, layer.gradW, layer.gradb,
                                       layer.output], arrays))
    assert_same(arrays, values)
    np.testing.assert_array_equal(layer.backward(x, dy), dy @ layer.W)  # still for x
    np.testing.assert_array_equal(layer.gradW, dy.T @ x)


def test_dropout_backward_after_a_failed_forward_keeps_the_mask():
    drop, x = Dropout(0.5), np.ones((20, 10))
    y = drop.forward(x).copy()
    with pytest.raises(TypeError):
        drop.forward(np.ones((20, 10), dtype=np.int8))
    np.testing.assert_array_equal(drop.backward(x, x), y)


def test_failed_batchnorm_calls_leave_statistics_untouched():
    bn = BatchNormalization()
    with pytest.raises(ValueError, match=r"got shape \(5,\)"):
        bn.forward(rand(5))
    with pytest.raises(TypeError):
        bn.forward(np.ones((5, 2), dtype=np.int32))
    assert bn.moving_mean is None and bn.moving_variance is None
    bn.forward(rand(5, 2))
    mean, var = bn.moving_mean, bn.moving_variance
    saved = copies([mean, var])
    with pytest.raises(ValueError):
        bn.forward(rand(5, 3))
    assert bn.moving_mean is mean and bn.moving_variance is var
    assert_same([mean, var], saved)


def test_failed_sequential_forward_restores_earlier_children():
    np.random.seed(0)
    bn = BatchNormalization(0.5)
    net = sequential(Linear(3, 4), bn, Linear(5, 2))  # the last layer does not fit
    bn.forward(rand(6, 4, seed=2))
    stats = copies([bn.moving_mean, bn.moving_variance])
    with pytest.raises(ValueError) as info:
        net.forward(rand(6, 3))
    assert "in Sequential layer 2 (forward): Linear 5 -> 2" in info.value.__notes__
    assert_same([bn.moving_mean, bn.moving_variance], stats)


def test_invalid_hyperparameters_raise_at_construction_without_drawing():
    np.random.seed(0)
    expected = np.random.rand()
    for make in (lambda: Linear(0, 3), lambda: Conv2d(1, 2, 2), lambda: ChannelwiseScaling(-1),
                 lambda: Dropout(1.0), lambda: BatchNormalization(alpha=2.0),
                 lambda: MaxPool2d(0), lambda: LeakyReLU(float("nan"))):
        np.random.seed(0)
        with pytest.raises(ValueError):
            make()
        assert np.random.rand() == expected


# --- reassigned parameters and inputs of the wrong kind: errors naming the module ------------

@pytest.mark.parametrize("W, err, words", [
    (np.ones((5, 3)), ValueError, r"Linear 3 -> 5: b must have shape \(5,\), got \(2,\)"),
    ([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], TypeError, "Linear: W must be a float32 or float64 "
                                                    "ndarray, got list"),
    (np.ones(3), ValueError, r"Linear: the parameters have shapes that fit no Linear: W \(3,\)"),
    (np.ones((2, 3), int), TypeError, "Linear: W must be a float32 or float64 ndarray, got "
                                      "dtype int64"),
])
def test_reassigned_parameter_of_the_wrong_kind_names_the_module(W, err, words):
    layer = Linear(3, 2)
    layer.W = W
    with pytest.raises(err, match=words):
        layer.forward(np.ones((4, 3)))


def test_reassigned_bias_of_shape_one_is_not_broadcast():
    layer = Linear(3, 2)
    layer.b = np.ones(1)
    with pytest.raises(ValueError, match=r"Linear 3 -> 2: b must have shape \(2,\), got \(1,\)"):
        layer.forward(np.ones((4, 3)))


def test_batchnorm_on_images_points_to_flatten_or_batchnorm2d():
    bn = BatchNormalization(0.9)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, features\), got shape "
                                         r"\(4, 3, 5, 5\).*Flatten.*fnn.BatchNorm2d"):
        bn.forward(np.ones((4, 3, 5, 5)))
    assert bn.moving_mean is None
