"""The private kernels of fnn._kernels against naive loops: the window geometry (floor rule,
"same"/"valid", 1-D as 2-D), the flat-padded classic convolution and the im2col convolution
(forward, dx, dW, across batch blocks and for an empty batch), window taps, first-maximum
offsets (ties, NaN), the tiled and general max pools and the average pool."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers import CLOSE

import fnn._kernels
from fnn._kernels import batch_block, conv_flat, conv_im2col, pool
from fnn._kernels.geometry import Window, as_4d, ntuple, out_size, shape_4d


def normal(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


# --- geometry -------------------------------------------------------------------------------

def test_window_of_resolves_stride_and_padding_words():
    assert Window.of(2, 3) == Window((3, 3), (3, 3), (0, 0), (1, 1))  # stride None = kernel
    assert Window.of(2, (3, 5), 1, "same", (2, 1)) == Window((3, 5), (1, 1), (2, 2), (2, 1))
    assert Window.of(2, 4, (2, 1), "valid").padding == (0, 0)
    assert Window.of(1, 3, 2, 1) == Window((3,), (2,), (1,), (1,))
    assert Window.of(1, (3,), None, (1,)).as_2d() == Window((1, 3), (1, 3), (0, 1), (1, 1))
    assert ntuple(2, 3) == (2, 2, 2) and ntuple((1, 2), 2) == (1, 2)


@pytest.mark.parametrize("size, k, s, p, d", list(itertools.product(
    range(1, 8), [1, 2, 3], [1, 2, 3], [0, 1, 2], [1, 2])))
def test_out_size_counts_the_windows_that_fit(size, k, s, p, d):
    """The floor rule = the number of start positions r*s (r >= 0) whose dilated window lies
    inside the padded input."""
    fits = sum(1 for start in range(0, size + 2 * p, s) if start + d * (k - 1) < size + 2 * p)
    assert max(0, out_size(size, k, s, p, d)) == fits


def test_checked_out_sizes_names_the_owner_and_the_sizes():
    window = Window.of(2, 3, 1, 0)
    assert window.checked_out_sizes("owner", (1, 1, 4, 3)) == (2, 1)
    with pytest.raises(ValueError, match=r"^'owner': input of shape \(1, 1, 2, 5\) is too small: "
                                         r"the output would be 0 x 3 \(note\)$"):
        window.checked_out_sizes("owner", (1, 1, 2, 5), " (note)")
    with pytest.raises(ValueError, match=r"would be 0$"):
        Window.of(1, 4).checked_out_sizes("owner", (2, 3, 3))


def test_1d_arrays_run_as_2d_views():
    x = normal((2, 3, 5))
    x4 = as_4d(x)
    assert x4.shape == shape_4d(x.shape) == (2, 3, 1, 5) and np.shares_memory(x, x4)
    assert as_4d(x4) is x4 and shape_4d((1, 2, 3, 4)) == (1, 2, 3, 4)


def test_batch_block_fits_the_budget(monkeypatch):
    assert batch_block(10, 1) == 10 and batch_block(0, 100) == 1
    assert batch_block(10, fnn._kernels.BLOCK_BYTES // 3) == 3
    assert batch_block(10, 10 * fnn._kernels.BLOCK_BYTES) == 1


# --- convolution ----------------------------------------------------------------------------

def naive_conv(x, W, window: Window, groups: int):
    """y[n, o, r, q] = sum over c of o's group and (i, j) of
    W[o, c, i, j] xpad[n, c, r*sh + i*dh, q*sw + j*dw], by loops over n, o, r, q."""
    (ph, pw), (sh, sw), (dh, dw) = window.padding, window.stride, window.dilation
    kh, kw = W.shape[2:]
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    n, c = x.shape[:2]
    o, cg = W.shape[:2]
    out = window.out_sizes(x.shape[2:])
    y = np.zeros((n, o, *out))
    for b, oo, r, q in itertools.product(range(n), range(o), range(out[0]), range(out[1])):
        g = oo // (o // groups)
        patch = xpad[b, g * cg:(g + 1) * cg, r * sh:r * sh + dh * (kh - 1) + 1:dh,
                     q * sw:q * sw + dw * (kw - 1) + 1:dw]
        y[b, oo, r, q] = np.sum(W[oo] * patch)
    return y


def naive_conv_backward(x, W, dy, window: Window, groups: int):
    """(dx, dW) by loops: each output pixel's dy times the window it read (dW) and times W,
    added back where the window read (dx)."""
    (ph, pw), (sh, sw), (dh, dw) = window.padding, window.stride, window.dilation
    kh, kw = W.shape[2:]
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dxpad, dW = np.zeros_like(xpad), np.zeros_like(W)
    n, o, ho, wo = dy.shape
    cg = W.shape[1]
    for b, oo, r, q in itertools.product(range(n), range(o), range(ho), range(wo)):
        g = oo // (o // groups)
        at = (b, slice(g * cg, (g + 1) * cg), slice(r * sh, r * sh + dh * (kh - 1) + 1, dh),
              slice(q * sw, q * sw + dw * (kw - 1) + 1, dw))
        dW[oo] += dy[b, oo, r, q] * xpad[at]
        dxpad[at] += dy[b, oo, r, q] * W[oo]
    return dxpad[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]], dW


@pytest.mark.parametrize("k, n, c, o, h, w", [(1, 2, 2, 3, 3, 4), (3, 2, 3, 2, 4, 5),
                                              (3, 1, 1, 1, 1, 1), (5, 3, 2, 2, 3, 6),
                                              (3, 2, 2, 2, 5, 2)])
def test_flat_kernel_is_the_same_padded_correlation(k, n, c, o, h, w):
    x, W, b, dy = normal((n, c, h, w)), normal((o, c, k, k), 1), normal((o,), 2), normal(
        (n, o, h, w), 3)
    window = Window.of(2, k, 1, "same")
    y = conv_flat.forward(x, W, b)
    np.testing.assert_allclose(y, naive_conv(x, W, window, 1) + b[:, None, None], **CLOSE)
    np.testing.assert_array_equal(conv_flat.forward(x, W, None) + b[:, None, None], y)
    for got, want in zip(conv_flat.backward(x, W, dy), naive_conv_backward(x, W, dy, window, 1)):
        np.testing.assert_allclose(got, want, **CLOSE)


GENERAL = [  # (kernel_size, stride, padding, dilation, groups)
    (3, 1, 0, 1, 1), (3, 2, 1, 1, 1), ((2, 3), (1, 2), (1, 0), 1, 1), (3, 1, 2, 2, 1),
    ((3, 1), (2, 1), (1, 0), (2, 1), 2), (1, 3, 0, 1, 2), (2, 1, 1, 1, 4), ((1, 4), 1, (0, 2),
                                                                            (1, 2), 1)]


@pytest.mark.parametrize("k, s, p, d, groups", GENERAL)
def test_im2col_kernel_is_the_strided_dilated_grouped_correlation(k, s, p, d, groups):
    window = Window.of(2, k, s, p, d)
    x = normal((3, 4, 7, 6))
    W = normal((groups * 2, 4 // groups, *window.kernel), 1)
    y = conv_im2col.forward(x, W, window, groups)
    np.testing.assert_allclose(y, naive_conv(x, W, window, groups), **CLOSE)
    dy = normal(y.shape, 2)
    for got, want in zip(conv_im2col.backward(x, W, dy, window, groups),
                         naive_conv_backward(x, W, dy, window, groups)):
        np.testing.assert_allclose(got, want, **CLOSE)


def test_conv_kernels_are_the_same_across_batch_blocks(monkeypatch):
    """Blocks of 1 or 2 samples (a tiny block budget) give the results of one block (up to
    rounding: dW adds the blocks' sums)."""
    x, W = normal((5, 3, 6, 5)), normal((4, 3, 3, 3), 1)
    dy = normal((5, 4, 6, 5), 2)
    strided = Window.of(2, 3, 2, 1)
    dy2 = normal((5, 4, 3, 3), 3)
    whole = (conv_flat.forward(x, W, None), *conv_flat.backward(x, W, dy),
             conv_im2col.forward(x, W, strided, 1), *conv_im2col.backward(x, W, dy2, strided, 1))
    for budget in (1, 3 * 6 * 5 * 9 * 8 * 2):
        monkeypatch.setattr(fnn._kernels, "BLOCK_BYTES", budget)
        blocked = (conv_flat.forward(x, W, None), *conv_flat.backward(x, W, dy),
                   conv_im2col.forward(x, W, strided, 1),
                   *conv_im2col.backward(x, W, dy2, strided, 1))
        for a, b in zip(whole, blocked):
            np.testing.assert_allclose(a, b, **CLOSE)


def test_conv_kernels_take_an_empty_batch():
    W = normal((4, 2, 3, 3))
    x = np.zeros((0, 2, 5, 5))
    assert conv_flat.forward(x, W, None).shape == (0, 4, 5, 5)
    dx, dW = conv_flat.backward(x, W, np.zeros((0, 4, 5, 5)))
    assert dx.shape == x.shape and dW.shape == W.shape and not dW.any()
    window = Window.of(2, 3, 2, 1)
    assert conv_im2col.forward(x, W, window, 1).shape == (0, 4, 3, 3)
    dx, dW = conv_im2col.backward(x, W, np.zeros((0, 4, 3, 3)), window, 1)
    assert dx.shape == x.shape and dW.shape == W.shape and not dW.any()


# --- pooling --------------------------------------------------------------------------------

def naive_windows(x, window: Window, fill: float):
    """{(r, q): the values of window (r, q), row-major, shape (N, C, kh*kw)} by slicing."""
    (ph, pw), (sh, sw), (kh, kw) = window.padding, window.stride, window.kernel
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    ho, wo = window.out_sizes(x.shape[2:])
    return {(r, q): xpad[:, :, r * sh:r * sh + kh, q * sw:q * sw + kw].reshape(*x.shape[:2], -1)
            for r in range(ho) for q in range(wo)}


def naive_max_pool(x, window: Window):
    """(y, argmax, dx for dy = 1 + the flat index of y) by loops over the windows; argmax is
    np.argmax's first maximum, or the last NaN of a window holding NaN."""
    n, c = x.shape[:2]
    ho, wo = window.out_sizes(x.shape[2:])
    y, argmax = np.zeros((n, c, ho, wo)), np.zeros((n, c, ho, wo), dtype=int)
    dy = 1.0 + np.arange(y.size).reshape(y.shape)
    (ph, pw), (sh, sw), kw = window.padding, window.stride, window.kernel[1]
    dxpad = np.zeros((n, c, x.shape[2] + 2 * ph, x.shape[3] + 2 * pw))
    for (r, q), values in naive_windows(x, window, -np.inf).items():
        for b, ch in itertools.product(range(n), range(c)):
            v = values[b, ch]
            nans = np.flatnonzero(np.isnan(v))
            o = nans[-1] if len(nans) else int(np.argmax(v))
            y[b, ch, r, q], argmax[b, ch, r, q] = v[o], o
            dxpad[b, ch, r * sh + o // kw, q * sw + o % kw] += dy[b, ch, r, q]
    return y, argmax, dy, dxpad[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]]


def test_taps_read_each_window_offset():
    window = Window.of(2, (2, 3), (1, 2), (1, 1))
    x = normal((2, 1, 5, 6))
    out = window.out_sizes(x.shape[2:])
    xpad = pool.pad(x, window.padding, -np.inf)
    windows = naive_windows(x, window, -np.inf)
    for o, (r, c) in enumerate(pool.taps(window, out)):
        tap = xpad[:, :, r, c]
        assert tap.shape == (2, 1, *out)
        for (i, j), values in windows.items():
            np.testing.assert_array_equal(tap[:, :, i, j], values[:, :, o])


def test_max_offsets_ties_go_to_the_first_nan_windows_to_the_last_nan():
    nan = np.nan
    values = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [nan, 5.0, nan, 1.0],
                       [0.0, nan, 7.0, 7.0], [-np.inf, -np.inf, -np.inf, -np.inf],
                       [np.inf, -np.inf, 1.0, 0.0]])
    taps = [values[:, o] for o in range(4)]
    y = np.max(values, axis=1)  # NaN where a NaN is
    np.testing.assert_array_equal(pool.max_offsets(y, taps), [1, 0, 2, 1, 0, 0])
    many = [np.full(3, -1.0) for _ in range(200)]
    many[150][1] = 4.0
    offsets = pool.max_offsets(np.array([-1.0, 4.0, -1.0]), many)
    assert offsets.dtype == np.int32 and list(offsets) == [0, 150, 0]
    assert pool.max_offsets(y, taps).dtype == np.int8


MAX_WINDOWS = [(2, None, 0), (3, None, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 1)), (2, 1, 0),
               ((1, 3), 1, (0, 1)), (1, None, 0)]


@pytest.mark.parametrize("k, s, p", MAX_WINDOWS)
@pytest.mark.parametrize("values", ["distinct", "ties", "nan"])
def test_max_pools_are_the_naive_max_with_its_gradient(k, s, p, values):
    window = Window.of(2, k, s, p)
    x = normal((2, 3, 6, 6))
    if values == "ties":
        x = np.round(x)
    elif values == "nan":
        x[normal(x.shape, 1) > 1.0] = np.nan
    y_want, argmax_want, dy, dx_want = naive_max_pool(x, window)
    out = window.out_sizes(x.shape[2:])
    y, argmax = pool.max_general(x, window, out)
    dx = pool.max_general_backward(argmax, dy, x.shape, window)
    if pool.tiles(window, x.shape):
        y2, argmax2 = pool.max_tiled(x, window.kernel[0])
        np.testing.assert_array_equal(y2, y_want)
        np.testing.assert_array_equal(argmax2, argmax_want)
        np.testing.assert_array_equal(pool.max_tiled_backward(argmax2, dy, x.shape,
                                                              window.kernel[0]), dx_want)
    np.testing.assert_array_equal(y, y_want)
    np.testing.assert_array_equal(argmax, argmax_want)
    np.testing.assert_array_equal(dx, dx_want)


def test_tiles_only_for_square_non_overlapping_unpadded_windows_that_divide():
    assert pool.tiles(Window.of(2, 2), (1, 1, 4, 6))
    assert not pool.tiles(Window.of(2, 2), (1, 1, 5, 6))
    assert not pool.tiles(Window.of(2, (2, 3)), (1, 1, 6, 6))
    assert not pool.tiles(Window.of(2, 2, 1), (1, 1, 4, 4))
    assert not pool.tiles(Window.of(2, 2, None, 1), (1, 1, 4, 4))


@pytest.mark.parametrize("k, s, p", [(2, None, 0), (3, 2, 1), ((2, 3), (2, 1), (1, 1)),
                                     ((1, 3), 1, (0, 1))])
def test_avg_pool_is_the_naive_mean_with_its_gradient(k, s, p):
    window = Window.of(2, k, s, p)
    x = normal((2, 3, 5, 7))
    windows = naive_windows(x, window, 0.0)
    out = window.out_sizes(x.shape[2:])
    y_want = np.zeros((2, 3, *out))
    for (r, q), values in windows.items():
        y_want[:, :, r, q] = values.sum(axis=2) / values.shape[2]
    np.testing.assert_allclose(pool.avg(x, window, out), y_want, **CLOSE)
    dy = normal(y_want.shape, 1)
    (ph, pw), (sh, sw), (kh, kw) = window.padding, window.stride, window.kernel
    dxpad = np.zeros((2, 3, 5 + 2 * ph, 7 + 2 * pw))
    for r, q in windows:
        dxpad[:, :, r * sh:r * sh + kh, q * sw:q * sw + kw] += dy[:, :, r, q, None, None] / (
            kh * kw)
    np.testing.assert_allclose(pool.avg_backward(dy, x.shape, window),
                               dxpad[:, :, ph:ph + 5, pw:pw + 7], **CLOSE)


def test_pool_kernels_take_an_empty_batch():
    x = np.zeros((0, 2, 4, 4))
    for window in (Window.of(2, 2), Window.of(2, 3, 2, 1)):
        out = window.out_sizes((4, 4))
        y, argmax = pool.max_general(x, window, out)
        assert y.shape == argmax.shape == (0, 2, *out)
        assert pool.max_general_backward(argmax, y, x.shape, window).shape == x.shape
        assert pool.avg(x, window, out).shape == (0, 2, *out)
        assert pool.avg_backward(y, x.shape, window).shape == x.shape
    y, argmax = pool.max_tiled(x, 2)
    assert pool.max_tiled_backward(argmax, y, x.shape, 2).shape == x.shape
