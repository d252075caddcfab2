"""Behaviour of the Conv2d and pooling options that the generic table (tests/cases/) does not
check: construction and input-size errors, repr, initialisation (classic fan, split keys, bias
off, initializers, dtype), identities between configurations (groups = independent convs,
dilation = a kernel with zeros, stride = subsampling, the tuned classic kernel = the general
one), the no-bias record through the tree helpers, optimizers, a training step and fnn.save,
max-pool gradients on overlapping windows and ties, average pools by hand."""

from __future__ import annotations

import functools
import math
import re

import attrs
import numpy as np
import pytest
import scipy.signal
from helpers import CLOSE

import fnn
from fnn import tree
from fnn._kernels import conv_flat, conv_im2col, pool
from fnn.conv import ConvParams, ConvParamsNoBias
from fnn.core import split_key


def normal(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return fnn.generator(seed).standard_normal(shape)


def forward_backward(layer, params, x, dy_seed: int = 1):
    """(y, dx, dparams) with a standard normal dy in y's dtype."""
    y, cache = layer.forward(params, (), x)
    dx, dparams = layer.backward(params, cache, normal(y.shape, dy_seed).astype(y.dtype))
    return y, dx, dparams


# --- construction -----------------------------------------------------------------------------

BAD_HYPER = [
    ("Conv2d", lambda: fnn.Conv2d(3, 4, 3, groups=2)),  # in_channels not divisible
    ("Conv2d", lambda: fnn.Conv2d(4, 3, 3, groups=2)),  # out_channels not divisible
    ("Conv2d", lambda: fnn.Conv2d(2, 2, 3, groups=0)),
    ("Conv2d", lambda: fnn.Conv2d(2, 2, 4)),  # even kernel with "same"
    ("Conv2d", lambda: fnn.Conv2d(2, 2, (3, 2))),
    ("Conv2d", lambda: fnn.Conv2d(2, 2, 3, stride=2)),  # "same" needs stride 1
    ("Conv2d", lambda: fnn.Conv2d(2, 2, 3, padding=-1)),
    ("Conv2d", lambda: fnn.Conv2d(2, 2, 3, padding="full")),
    ("Conv2d", lambda: fnn.Conv2d(2, 2, 3, padding=(1, 1, 1))),
    ("Conv2d", lambda: fnn.Conv2d(2, 2, 3, padding=1.0)),
    ("Conv2d", lambda: fnn.Conv2d(2, 2, (3,))),
    ("Conv2d", lambda: fnn.Conv2d(2, 2, (3, 0), padding=0)),
    ("Conv2d", lambda: fnn.Conv2d(2, 2, (3, True), padding=0)),
    ("Conv2d", lambda: fnn.Conv2d(2, 2, 3, stride=0, padding=1)),
    ("Conv2d", lambda: fnn.Conv2d(2, 2, 3, dilation=0)),
    ("Conv2d", lambda: fnn.Conv2d(2, 2, 3, bias=1)),
    ("Conv2d", lambda: fnn.Conv2d(2, 2, 3, bias=False, b_init=fnn.init.zeros)),
    ("Conv2d", lambda: fnn.Conv2d(2, 2, 3, w_init="kaiming")),
    ("Conv2d", lambda: fnn.Conv2d(2, 2, 3, dtype="int32")),
    ("MaxPool2d", lambda: fnn.MaxPool2d(2, padding=2)),  # more than half the kernel
    ("MaxPool2d", lambda: fnn.MaxPool2d((3, 2), padding=(1, 2))),
    ("MaxPool2d", lambda: fnn.MaxPool2d(2, stride=0)),
    ("MaxPool2d", lambda: fnn.MaxPool2d(2, stride=2.0)),
    ("MaxPool2d", lambda: fnn.MaxPool2d((2, 2, 2))),
    ("AvgPool2d", lambda: fnn.AvgPool2d(0)),
    ("AvgPool2d", lambda: fnn.AvgPool2d(3, padding=2)),
    ("AvgPool2d", lambda: fnn.AvgPool2d(3, padding=-1)),
]


@pytest.mark.parametrize("name, make", BAD_HYPER, ids=[f"{n}-{i}" for i, (n, _) in
                                                       enumerate(BAD_HYPER)])
def test_invalid_hyperparameters_raise_at_construction(name, make):
    with pytest.raises(ValueError, match=rf"^{name}: "):
        make()


def test_even_kernel_message_says_what_to_do():
    with pytest.raises(ValueError, match=r'^Conv2d: kernel_size must be odd \("same" padding '
                                         r'needs a centre\), got 4; for an even kernel pass an '
                                         r'explicit padding'):
        fnn.Conv2d(1, 1, 4)
    fnn.Conv2d(1, 1, 4, padding=0), fnn.Conv2d(1, 1, (2, 4), padding=(1, 2))  # explicit: fine


def test_classic_call_and_positional_pool_arguments():
    """The classic positional call is unchanged; Conv2d's options are keyword-only; the pools
    take (kernel_size, stride, padding) positionally, as torch."""
    layer = fnn.Conv2d(2, 3, 5)
    assert (layer.stride, layer.padding, layer.dilation, layer.groups, layer.bias) == (
        1, "same", 1, 1, True)
    with pytest.raises(TypeError):
        fnn.Conv2d(2, 3, 3, 2)  # type: ignore[misc]
    assert fnn.MaxPool2d(3, 2, 1) == fnn.MaxPool2d(3, stride=2, padding=1)
    assert fnn.AvgPool2d(3, None, 1).stride is None
    assert fnn.Conv2d(2, 3, [3, 5]).kernel_size == (3, 5)  # lists become tuples
    assert fnn.MaxPool2d(2, [1, 2]).stride == (1, 2) and fnn.MaxPool2d(2, None).stride is None


def test_repr_shows_required_and_changed_options_only():
    assert repr(fnn.Conv2d(2, 3, 3)) == "Conv2d(in_channels=2, out_channels=3, kernel_size=3)"
    assert (repr(fnn.Conv2d(2, 4, (3, 1), stride=2, padding=(1, 0), groups=2, bias=False,
                            dtype=np.float32))
            == "Conv2d(in_channels=2, out_channels=4, kernel_size=(3, 1), stride=2, "
               "padding=(1, 0), groups=2, bias=False, dtype='float32')")
    assert repr(fnn.MaxPool2d(2)) == "MaxPool2d(kernel_size=2)"
    assert repr(fnn.MaxPool2d(3, 2, 1)) == "MaxPool2d(kernel_size=3, stride=2, padding=1)"
    assert repr(fnn.AvgPool2d(2)) == "AvgPool2d(kernel_size=2)"
    assert repr(fnn.GlobalAvgPool2d()) == "GlobalAvgPool2d()"


# --- input errors -----------------------------------------------------------------------------

@pytest.mark.parametrize("layer, shape, message", [
    (fnn.Conv2d(1, 1, 5, padding="valid"), (2, 1, 4, 6), r"0 x 2 \(kernel_size=5, stride=1, "
                                                           r"padding='valid', dilation=1\)"),
    (fnn.Conv2d(1, 1, 3, dilation=3), (2, 1, 9, 9), None),  # "same" always fits
    (fnn.Conv2d(1, 1, 3, dilation=3, padding=1), (2, 1, 4, 9), r"0 x 5"),
    (fnn.Conv2d(1, 1, 3, dilation=3, padding=1), (2, 1, 5, 5), None),
    (fnn.Conv2d(1, 1, (1, 4), stride=3, padding=0), (1, 1, 1, 3), r"1 x 0"),
    (fnn.MaxPool2d(3, stride=1), (1, 1, 2, 5), r"0 x 3$"),
    (fnn.AvgPool2d(4, padding=1), (1, 1, 6, 1), r"2 x 0$"),
    (fnn.AvgPool2d(4, padding=1), (1, 1, 6, 2), None),
])
def test_input_too_small_for_one_window_raises(layer, shape, message):
    if message is None:
        layer.forward(layer.init(0)[0], (), np.ones(shape))
        return
    with pytest.raises(ValueError, match=rf"^{re.escape(repr(layer))}: input of shape "
                                         rf"{re.escape(str(shape))} is too small: the output would "
                                         rf"be {message}"):
        layer.forward(layer.init(0)[0], (), np.ones(shape))


def test_classic_maxpool_still_requires_divisible_sizes_explicit_stride_floors():
    x = normal((1, 2, 5, 4))
    with pytest.raises(ValueError, match=r"divisible by 2, got shape \(1, 2, 5, 4\)"):
        fnn.MaxPool2d(2).forward((), (), x)
    with pytest.raises(ValueError, match=r"divisible by 2 \(H\) and 3 \(W\)"):
        fnn.MaxPool2d((2, 3)).forward((), (), x)
    y, _ = fnn.MaxPool2d(2, stride=2).forward((), (), x)  # floor: the last row is dropped
    np.testing.assert_array_equal(y, fnn.MaxPool2d(2).forward((), (), x[:, :, :4])[0])
    y, _ = fnn.MaxPool2d(2, padding=1).forward((), (), x)  # stride = kernel, padded: floor
    assert y.shape == (1, 2, 3, 3)


def test_backward_checks_the_gradient_shape():
    layer = fnn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2)
    params, _ = layer.init(0)
    _, cache = layer.forward(params, (), normal((3, 2, 7, 5)))
    with pytest.raises(ValueError, match=r"expected gradient of shape \(3, 4, 4, 3\), got "
                                         r"shape \(3, 4, 7, 5\)"):
        layer.backward(params, cache, normal((3, 4, 7, 5)))
    pool = fnn.MaxPool2d(3, 2, 1)
    _, cache = pool.forward((), (), normal((3, 2, 7, 5)))
    with pytest.raises(ValueError, match=r"expected gradient of shape \(3, 2, 4, 3\)"):
        pool.backward((), cache, normal((3, 2, 3, 2)))


# --- initialisation ---------------------------------------------------------------------------

def test_classic_init_is_unchanged():
    """The classic spec draws W then b: U(±1/sqrt(in_channels)) from keys split in that order."""
    params, _ = fnn.Conv2d(3, 4, 5).init(7)
    kw, kb = split_key(7, 2)
    W = fnn.init.classic_uniform(kw, (4, 3, 5, 5), fan=3)
    b = fnn.init.classic_uniform(kb, (4,), fan=3)
    np.testing.assert_array_equal(params.W, W)
    np.testing.assert_array_equal(params.b, b)


def test_init_fan_is_channels_per_group_and_W_is_the_same_without_bias():
    layer = fnn.Conv2d(6, 4, (3, 1), groups=2)
    params, _ = layer.init(3)
    kw, kb = split_key(3, 2)
    np.testing.assert_array_equal(params.W, fnn.init.classic_uniform(kw, (4, 3, 3, 1), fan=3))
    np.testing.assert_array_equal(params.b, fnn.init.classic_uniform(kb, (4,), fan=3))
    nobias, state = fnn.Conv2d(6, 4, (3, 1), groups=2, bias=False).init(3)
    assert type(nobias) is ConvParamsNoBias and state == ()
    np.testing.assert_array_equal(nobias.W, params.W)
    depthwise, _ = fnn.Conv2d(5, 10, 3, groups=5).init(0)
    assert depthwise.W.shape == (10, 1, 3, 3) and np.abs(depthwise.W).max() <= 1.0


def test_initializers_and_dtype():
    w_init = functools.partial(fnn.init.kaiming_uniform, a=math.sqrt(5))
    layer = fnn.Conv2d(4, 6, (3, 5), groups=2, padding=(1, 2), w_init=w_init,
                       b_init=fnn.init.zeros, dtype=np.float32)
    params, _ = layer.init(5)
    kw, _ = split_key(5, 2)
    np.testing.assert_array_equal(params.W, w_init(kw, (6, 2, 3, 5), np.float32))
    assert params.W.dtype == params.b.dtype == np.float32 and not params.b.any()
    assert np.abs(params.W).max() <= 1 / math.sqrt(2 * 3 * 5)  # PyTorch fan: in/G * kh * kw
    y, dx, dparams = forward_backward(layer, params, normal((2, 4, 5, 6)).astype(np.float32))
    assert y.dtype == dx.dtype == np.float32
    assert all(g.dtype == np.float32 for g in tree.leaves(dparams))


# --- identities between configurations ----------------------------------------------------------

def test_groups_are_independent_convolutions():
    """Conv2d(4, 6, groups=2) = Conv2d(2, 3) on channels 0-1 and another on channels 2-3."""
    layer = fnn.Conv2d(4, 6, 3, groups=2, stride=2, padding=1)
    params, _ = layer.init(1)
    x = normal((3, 4, 7, 6))
    y, dx, dparams = forward_backward(layer, params, x)
    half = fnn.Conv2d(2, 3, 3, stride=2, padding=1)
    dy = normal(y.shape, 1)
    for g in range(2):
        p = ConvParams(W=params.W[3 * g:3 * g + 3], b=params.b[3 * g:3 * g + 3])
        yg, cache = half.forward(p, (), x[:, 2 * g:2 * g + 2])
        dxg, dpg = half.backward(p, cache, dy[:, 3 * g:3 * g + 3])
        np.testing.assert_allclose(y[:, 3 * g:3 * g + 3], yg, **CLOSE)
        np.testing.assert_allclose(dx[:, 2 * g:2 * g + 2], dxg, **CLOSE)
        np.testing.assert_allclose(dparams.W[3 * g:3 * g + 3], dpg.W, **CLOSE)
        np.testing.assert_allclose(dparams.b[3 * g:3 * g + 3], dpg.b, **CLOSE)


def test_depthwise_is_a_per_channel_correlation():
    layer = fnn.Conv2d(3, 3, 3, groups=3, bias=False)
    params, _ = layer.init(2)
    x = normal((2, 3, 5, 6))
    y, _ = layer.forward(params, (), x)
    for n in range(2):
        for c in range(3):
            ref = scipy.signal.correlate(x[n, c], params.W[c, 0], mode="same")
            np.testing.assert_allclose(y[n, c], ref, **CLOSE)


def test_dilation_is_a_kernel_with_zeros_between_its_taps():
    layer = fnn.Conv2d(2, 3, 3, dilation=(2, 3), padding=(1, 2))
    params, _ = layer.init(4)
    spread = np.zeros((3, 2, 5, 7))
    spread[:, :, ::2, ::3] = params.W
    dense = fnn.Conv2d(2, 3, (5, 7), padding=(1, 2))
    x = normal((2, 2, 6, 8))
    y, dx, dparams = forward_backward(layer, params, x)
    y2, dx2, dparams2 = forward_backward(dense, ConvParams(W=spread, b=params.b), x)
    np.testing.assert_allclose(y, y2, **CLOSE)
    np.testing.assert_allclose(dx, dx2, **CLOSE)
    np.testing.assert_allclose(dparams.W, dparams2.W[:, :, ::2, ::3], **CLOSE)


@pytest.mark.parametrize("stride", [2, (3, 1), (1, 2)])
def test_stride_subsamples_the_stride_1_output(stride):
    layer = fnn.Conv2d(2, 3, 3, stride=stride, padding=1)
    params, _ = layer.init(0)
    x = normal((2, 2, 7, 8))
    y, _ = layer.forward(params, (), x)
    full, _ = fnn.Conv2d(2, 3, 3).forward(params, (), x)
    sh, sw = stride if isinstance(stride, tuple) else (stride, stride)
    np.testing.assert_allclose(y, full[:, :, ::sh, ::sw], **CLOSE)


@pytest.mark.parametrize("k, bias", [(1, True), (3, True), (5, False)])
def test_the_tuned_classic_kernel_equals_the_general_one(k, bias):
    """Explicit padding k//2 (and "valid" for k = 1) takes the tuned path, like the default;
    the general im2col computes the same."""
    layer = fnn.Conv2d(3, 4, k, padding=k // 2, bias=bias)
    assert layer._tuned() and fnn.Conv2d(3, 4, k)._tuned()
    assert fnn.Conv2d(3, 4, 1, padding="valid")._tuned()
    assert not fnn.Conv2d(3, 4, k, padding=k // 2 + 1)._tuned()
    assert not fnn.Conv1d(3, 4, k, padding=k // 2)._tuned() or k == 1
    params, _ = layer.init(k)
    x = normal((5, 3, 6, 7))
    dy = normal((5, 4, 6, 7), 1)
    window = layer.window()
    np.testing.assert_allclose(conv_flat.forward(x, params.W, None),
                               conv_im2col.forward(x, params.W, window, 1), **CLOSE)
    for a, b in zip(conv_flat.backward(x, params.W, dy),
                    conv_im2col.backward(x, params.W, dy, window, 1)):
        np.testing.assert_allclose(a, b, **CLOSE)


def test_the_tuned_maxpool_kernel_equals_the_general_one():
    window = fnn.MaxPool2d(3).window()
    x = normal((2, 3, 6, 9))
    dy = normal((2, 3, 2, 3), 1)
    assert pool.tiles(window, x.shape) and not pool.tiles(window, (2, 3, 7, 9))
    y, argmax = pool.max_tiled(x, 3)
    y2, argmax2 = pool.max_general(x, window, (2, 3))
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(argmax, argmax2)
    np.testing.assert_array_equal(pool.max_tiled_backward(argmax, dy, x.shape, 3),
                                  pool.max_general_backward(argmax2, dy, x.shape, window))


# --- bias=False through the rest of fnn -----------------------------------------------------------

def _nobias_net() -> fnn.Sequential:
    return fnn.Sequential([
        fnn.Conv2d(2, 4, 3, stride=2, padding=1, bias=False), fnn.BatchNorm2d(4, affine=True),
        fnn.ReLU(), fnn.Conv2d(4, 4, 3, groups=4, bias=False), fnn.MaxPool2d(3, 2, 1),
        fnn.GlobalAvgPool2d(), fnn.Linear(4, 3), fnn.LogSoftMax()])


def test_no_bias_params_in_tree_helpers_optimizers_and_a_training_step():
    net = _nobias_net()
    params, state = net.init(0)
    assert type(params[0]) is ConvParamsNoBias and type(params[3]) is ConvParamsNoBias
    assert [p.shape for p in tree.leaves(params[0])] == [(4, 2, 3, 3)]
    assert tree.map(np.shape, params[3]) == ConvParamsNoBias(W=(4, 1, 3, 3))
    x = normal((6, 2, 7, 6))
    t = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    for opt in (fnn.SGDMomentum(0.1, 0.9), fnn.Adam(1e-2),
                fnn.AdamW(1e-2, weight_decay_mask=fnn.optim.rank_at_least_2)):
        p, s, opt_state = params, state, opt.init(params)
        losses = []
        for _ in range(3):
            p, s, opt_state, loss, _ = fnn.train.train_step(net, fnn.ClassNLLCriterion(), opt,
                                                            p, s, opt_state, x, t)
            losses.append(float(loss))
        assert type(p[0]) is ConvParamsNoBias and not np.array_equal(p[0].W, params[0].W)
        assert losses[-1] < losses[0], (opt, losses)
    assert tree.cast(params, np.float32)[0].W.dtype == np.float32


def test_save_and_load_a_model_with_conv_and_pool_options(tmp_path):
    net = _nobias_net()
    net = fnn.Sequential([*net.layers[:4], fnn.AvgPool2d((2, 3), stride=1, padding=(1, 1)),
                          fnn.Conv2d(4, 2, (2, 4), padding=(1, 2), dilation=(1, 2)),
                          fnn.GlobalAvgPool2d()])
    params, state = net.init(3)
    opt = fnn.Adam(1e-3)
    opt_state = opt.init(params)
    path = fnn.save(tmp_path / "m.npz", params, state, opt_state, model=net, optimizer=opt)
    ck = fnn.load(path)
    assert ck.model == net and ck.model.layers[5].kernel_size == (2, 4)
    tree.map(np.testing.assert_array_equal, ck.params, params)
    tree.map(np.testing.assert_array_equal, ck.opt_state, opt_state)
    x = normal((2, 2, 7, 6))
    np.testing.assert_array_equal(net.forward(ck.params, ck.state, x)[0],
                                  net.forward(params, state, x)[0])
    with_bias = fnn.Sequential([attrs.evolve(net.layers[0], bias=True), *net.layers[1:]])
    with pytest.raises(fnn.CheckpointError, match=r"params\[0\]: expected ConvParams, the file "
                                                  r"has ConvParamsNoBias"):
        fnn.save(tmp_path / "n.npz", params, state, model=with_bias)


# --- pooling by hand ----------------------------------------------------------------------------

def test_maxpool_overlapping_windows_add_their_gradients_and_ties_go_to_the_first():
    x = np.array([[[[0., 1., 0., 2.],
                    [0., 9., 0., 2.],
                    [3., 3., 0., 0.]]]])
    pool = fnn.MaxPool2d(2, stride=1)
    y, cache = pool.forward((), (), x)
    np.testing.assert_array_equal(y, [[[[9., 9., 2.], [9., 9., 2.]]]])
    dy = np.array([[[[1., 2., 4.], [8., 16., 32.]]]])
    dx, _ = pool.backward((), cache, dy)
    # 9 is the max of the 4 windows around it; the right column's 2s tie: each window takes
    # its first (the upper 2 gets the top window's 4, the lower 2 the bottom window's 32)
    np.testing.assert_array_equal(dx, [[[[0., 0., 0., 4.],
                                         [0., 27., 0., 32.],
                                         [0., 0., 0., 0.]]]])


def test_maxpool_padding_never_wins():
    x = -np.arange(1.0, 10.0).reshape(1, 1, 3, 3) - 100.0  # all far below 0 (the zero pad)
    y, cache = fnn.MaxPool2d(3, stride=2, padding=1).forward((), (), x)
    np.testing.assert_array_equal(y, [[[[-101., -102.], [-104., -105.]]]])
    dx, _ = fnn.MaxPool2d(3, stride=2, padding=1).backward((), cache, np.ones(y.shape))
    assert dx.shape == x.shape and dx.sum() == 4.0


def test_avgpool_counts_the_padding_and_floors():
    x = np.arange(1.0, 13.0).reshape(1, 1, 3, 4)
    pool = fnn.AvgPool2d(2, padding=1)  # stride 2: rows -1..0, 1..2; columns -1..0, 1..2, 3..4
    y, cache = pool.forward((), (), x)
    np.testing.assert_allclose(y, [[[[1 / 4, (2 + 3) / 4, 4 / 4],
                                     [(5 + 9) / 4, (6 + 7 + 10 + 11) / 4, (8 + 12) / 4]]]],
                               **CLOSE)
    dx, _ = pool.backward((), cache, np.ones(y.shape))
    np.testing.assert_array_equal(dx, np.full(x.shape, 0.25))
    y, _ = fnn.AvgPool2d(2).forward((), (), x[:, :, :3, :3])  # no divisibility required
    np.testing.assert_allclose(y, [[[[(1 + 2 + 5 + 6) / 4]]]], **CLOSE)


def test_global_avgpool_is_the_mean_and_spreads_the_gradient():
    x = normal((3, 2, 4, 5))
    layer = fnn.GlobalAvgPool2d()
    y, cache = layer.forward((), (), x)
    np.testing.assert_allclose(y, x.mean(axis=(2, 3)), **CLOSE)
    full = fnn.AvgPool2d((4, 5)).forward((), (), x)[0]
    np.testing.assert_allclose(y, full[:, :, 0, 0], **CLOSE)
    dy = normal((3, 2), 1)
    dx, _ = layer.backward((), cache, dy)
    np.testing.assert_allclose(dx, np.broadcast_to(dy[:, :, None, None] / 20, x.shape), **CLOSE)
    with pytest.raises(ValueError, match=r"GlobalAvgPool2d\(\): expected input of shape "
                                         r"\(N, C, H, W\)"):
        layer.forward((), (), x[0])
