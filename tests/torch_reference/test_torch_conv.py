"""PyTorch reference tests for the Conv2d and pooling options: Conv2d with stride, padding (int,
pair, "same", "valid"), dilation, groups (depthwise), no bias, even and pair kernels, PyTorch's
default initializers and a float32 dtype, against torch.nn.functional.conv2d / nn.Conv2d;
MaxPool2d with stride and padding (distinct values, and ties on overlapping windows) against
max_pool2d; AvgPool2d against avg_pool2d (count_include_pad=True); GlobalAvgPool2d against
adaptive_avg_pool2d(x, 1).flatten(1); and a small network of all of them.

Each case compares y, dx and every dparams leaf with torch autograd on the same inputs and
parameters (the plumbing of torch_kit.py). Tolerances: float64 atol = rtol = 1e-10; float32 atol
= 1e-5, scaled by the reference's largest magnitude when that exceeds 1 (dW and db are sums over
N*Ho*Wo terms), rtol = 1.3e-6. Our values must come back in the input dtype. ``python
tests/torch_reference/test_torch_conv.py`` prints the largest absolute difference per case and
dtype over all batch sizes."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import pytest
from torch_kit import (
    DTYPES,
    SIZES,
    TORCH_DTYPE,
    Case,
    Compared,
    assert_matches,
    dims,
    init,
    nn,
    print_report,
    seeded,
    torch,
    versus,
)
from torch_kit import (
    TOL_LOOSE as TOL,
)

import fnn

F = torch.nn.functional



def conv(c_in: int, c_out: int, kernel_size, groups: int = 1, layer_cls=fnn.Conv2d,
         ref_fn=F.conv2d, **options) -> Case:
    """layer_cls(G * c_in, G * c_out * m, kernel_size, groups=G, **options) (c_in, c_out: the
    channels per group, m a random multiplier in 1..2) against ref_fn (F.conv2d, F.conv1d)
    with the same hyperparameters (torch reads padding "same"/"valid", ints and tuples alike),
    on random input sizes that fit."""

    def case(dtype: type, rng: np.random.Generator, n: int) -> Compared:
        (m,) = dims(rng, (1, 2))
        layer = layer_cls(groups * c_in, groups * c_out * m, kernel_size, groups=groups,
                          **options)
        x = rng.standard_normal((n, layer.in_channels, *_fitting(layer, rng))).astype(dtype)
        stride, padding, dilation = layer.stride, layer.padding, layer.dilation

        def ref(x, w, b=None):
            return ref_fn(x, w, b, stride=stride, padding=padding, dilation=dilation,
                          groups=groups)

        return versus(layer, *init(layer, dtype, rng), x, ref, rng)[0]

    return case


def _fitting(layer: Any, rng: np.random.Generator) -> tuple[int, ...]:
    """Input sizes ((H, W) or (L,)) between the smallest that give an output and 7 more."""
    w = layer.window()
    return tuple(max(1, di * (ki - 1) + 1 - 2 * pi) + int(rng.integers(0, 8))
                 for ki, di, pi in zip(w.kernel, w.dilation, w.padding))


def case_conv_torch_init(dtype: type, rng: np.random.Generator, n: int) -> Compared:
    """Conv2d created in ``dtype`` with PyTorch's default initializers (kaiming_uniform with
    a = sqrt(5) for W; U(±1/sqrt(fan_in)) for b, fan_in = in/G * kh * kw) against nn.Conv2d."""
    c, h, w = dims(rng, (1, 3), (3, 9), (3, 9))
    fan_in = c * 3 * 5
    layer = fnn.Conv2d(2 * c, 4, (3, 5), stride=(2, 1), padding=(1, 2), groups=2,
                       w_init=functools.partial(fnn.init.kaiming_uniform, a=math.sqrt(5)),
                       b_init=functools.partial(fnn.init.classic_uniform, fan=fan_in),
                       dtype=dtype)
    params, _ = layer.init(int(rng.integers(2**31)))
    assert params.W.dtype == params.b.dtype == dtype
    assert max(np.abs(params.W).max(), np.abs(params.b).max()) <= 1 / math.sqrt(fan_in)
    ref = nn.Conv2d(2 * c, 4, (3, 5), stride=(2, 1), padding=(1, 2), groups=2,
                    dtype=TORCH_DTYPE[dtype])
    x = rng.standard_normal((n, 2 * c, h, w)).astype(dtype)
    return versus(layer, params, (), x, ref, rng)[0]


def distinct(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Distinct values in [-0.5, 0.5) (exact in float32 for the sizes here)."""
    size = int(np.prod(shape))
    return (rng.permutation(size) / size - 0.5).reshape(shape).astype(dtype)


def pool(layer_cls, ref_fn, kernel_size, stride=None, padding=0, ties: bool = False) -> Case:
    """layer_cls(kernel_size, stride, padding) against ref_fn(x, kernel_size, stride, padding)
    on distinct values, or (``ties``) values in {0, 1}, on random input sizes that fit."""

    def case(dtype: type, rng: np.random.Generator, n: int) -> Compared:
        layer = layer_cls(kernel_size, stride, padding)
        k, p = layer.window().kernel, layer.window().padding
        c, *hw = dims(rng, (1, 3), *[(max(1, ki - 2 * pi), ki - 2 * pi + 7)
                                      for ki, pi in zip(k, p)])
        if stride is None and layer_cls is fnn.MaxPool2d and p == (0, 0):
            hw = [ki * (1 + s // ki) for ki, s in zip(k, hw)]  # classic: k divides H and W
        shape = (n, c, *hw)
        x = (rng.integers(0, 2, shape).astype(dtype) if ties else distinct(rng, shape, dtype))

        def ref(x):
            return ref_fn(x, kernel_size, stride, padding)

        return versus(layer, (), (), x, ref, rng)[0]

    return case


def case_global_avgpool(dtype: type, rng: np.random.Generator, n: int) -> Compared:
    c, h, w = dims(rng, (1, 4), (1, 9), (1, 9))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    return versus(fnn.GlobalAvgPool2d(), (), (), x,
                  lambda x: F.adaptive_avg_pool2d(x, 1).flatten(1), rng)[0]


def case_network(dtype: type, rng: np.random.Generator, n: int) -> Compared:
    """Conv2d(stride 2, no bias) -> BatchNorm2d -> ReLU -> MaxPool2d(3, 2, 1) -> depthwise
    Conv2d(dilation 2) -> AvgPool2d(2, 1) -> Conv2d(even kernel, valid) -> GlobalAvgPool2d ->
    Linear, in training mode, against the same torch modules."""
    c, h, w = dims(rng, (1, 3), (10, 14), (10, 14))
    layer = fnn.Sequential([
        fnn.Conv2d(c, 4, 3, stride=2, padding=1, bias=False),
        fnn.BatchNorm2d(4, alpha=0.9, affine=True), fnn.ReLU(), fnn.MaxPool2d(3, 2, 1),
        fnn.Conv2d(4, 8, 3, dilation=2, groups=4), fnn.AvgPool2d(2, 1),
        fnn.Conv2d(8, 6, 2, padding="valid"), fnn.GlobalAvgPool2d(), fnn.Linear(6, 3)])
    ref = nn.Sequential(
        nn.Conv2d(c, 4, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(4, eps=1e-3, momentum=0.1), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(4, 8, 3, dilation=2, groups=4, padding="same"), nn.AvgPool2d(2, 1),
        nn.Conv2d(8, 6, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    ).to(TORCH_DTYPE[dtype])
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    return versus(layer, *init(layer, dtype, rng), x, ref, rng)[0]


LAYER_CASES: dict[str, Case] = {
    "Conv2d stride=2 padding=1": conv(2, 3, 3, stride=2, padding=1),
    "Conv2d stride=(2, 3) valid": conv(2, 2, 3, stride=(2, 3), padding="valid"),
    "Conv2d padding=0": conv(3, 2, 3, padding=0),
    "Conv2d padding=2": conv(2, 3, 3, padding=2),
    "Conv2d k=(3, 5) padding=(0, 1)": conv(2, 2, (3, 5), padding=(0, 1)),
    "Conv2d k=(1, 3) same": conv(2, 3, (1, 3)),
    "Conv2d dilation=2 same": conv(2, 2, 3, dilation=2),
    "Conv2d dilation=(2, 1) stride=2 padding=1": conv(2, 2, 3, dilation=(2, 1), stride=2,
                                                      padding=1),
    "Conv2d groups=2": conv(2, 3, 3, groups=2),
    "Conv2d groups=3 stride=2 padding=(1, 0)": conv(1, 2, 3, groups=3, stride=2,
                                                    padding=(1, 0)),
    "Conv2d depthwise": conv(1, 1, 3, groups=4),
    "Conv2d depthwise x2 k=5 bias=False": conv(1, 2, 5, groups=3, bias=False),
    "Conv2d bias=False (classic kernel)": conv(3, 2, 3, bias=False),
    "Conv2d bias=False stride=2": conv(2, 2, 3, stride=2, padding=1, bias=False),
    "Conv2d k=2 padding=0": conv(2, 3, 2, padding=0),
    "Conv2d k=4 padding=1 stride=2": conv(2, 2, 4, padding=1, stride=2),
    "Conv2d k=(2, 4) padding=(1, 2) dilation=(1, 2)": conv(2, 2, (2, 4), padding=(1, 2),
                                                           dilation=(1, 2)),
    "Conv2d PyTorch init dtype": case_conv_torch_init,
    "MaxPool2d(2) classic": pool(fnn.MaxPool2d, F.max_pool2d, 2),
    "MaxPool2d(2, stride=2) floor": pool(fnn.MaxPool2d, F.max_pool2d, 2, 2),
    "MaxPool2d(3, stride=1)": pool(fnn.MaxPool2d, F.max_pool2d, 3, 1),
    "MaxPool2d(3, 2, 1)": pool(fnn.MaxPool2d, F.max_pool2d, 3, 2, 1),
    "MaxPool2d(2, padding=1)": pool(fnn.MaxPool2d, F.max_pool2d, 2, None, 1),
    "MaxPool2d((2, 3), (1, 2), (1, 1))": pool(fnn.MaxPool2d, F.max_pool2d, (2, 3), (1, 2),
                                              (1, 1)),
    "MaxPool2d(3, 1, 1) ties": pool(fnn.MaxPool2d, F.max_pool2d, 3, 1, 1, ties=True),
    "MaxPool2d(2, 1) ties": pool(fnn.MaxPool2d, F.max_pool2d, 2, 1, ties=True),
    "AvgPool2d(2)": pool(fnn.AvgPool2d, F.avg_pool2d, 2),
    "AvgPool2d(3, 2, 1)": pool(fnn.AvgPool2d, F.avg_pool2d, 3, 2, 1),
    "AvgPool2d(3, 1)": pool(fnn.AvgPool2d, F.avg_pool2d, 3, 1),
    "AvgPool2d((2, 3), (2, 1), (1, 1))": pool(fnn.AvgPool2d, F.avg_pool2d, (2, 3), (2, 1),
                                              (1, 1)),
    "GlobalAvgPool2d": case_global_avgpool,
    "Conv1d": conv(2, 3, 3, layer_cls=fnn.Conv1d, ref_fn=F.conv1d),
    "Conv1d stride=2 padding=1 dilation=2": conv(2, 2, 3, layer_cls=fnn.Conv1d,
                                                 ref_fn=F.conv1d, stride=2, padding=1,
                                                 dilation=2),
    "Conv1d groups=2 same": conv(1, 2, 5, groups=2, layer_cls=fnn.Conv1d, ref_fn=F.conv1d,
                                 padding="same"),
    "Conv1d depthwise k=2 bias=False": conv(1, 1, 2, groups=3, layer_cls=fnn.Conv1d,
                                            ref_fn=F.conv1d, bias=False, padding=1),
    "MaxPool1d(2)": pool(fnn.MaxPool1d, F.max_pool1d, 2),
    "MaxPool1d(3, 2, 1)": pool(fnn.MaxPool1d, F.max_pool1d, 3, 2, 1),
    "MaxPool1d(3, 1, 1) ties": pool(fnn.MaxPool1d, F.max_pool1d, 3, 1, 1, ties=True),
    "AvgPool1d(2)": pool(fnn.AvgPool1d, F.avg_pool1d, 2),
    "AvgPool1d(3, 2, 1)": pool(fnn.AvgPool1d, F.avg_pool1d, 3, 2, 1),
    "Sequential conv/pool network": case_network,
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name", LAYER_CASES)
def test_layer_matches_torch(name: str, n: int, dtype: type) -> None:
    assert_matches(LAYER_CASES[name](dtype, seeded(name, dtype, n), n), dtype, TOL)


NAN_POOLS = {
    "MaxPool2d(2)": (fnn.MaxPool2d(2), lambda x: F.max_pool2d(x, 2), (4, 6)),
    "MaxPool2d(3, 1, 1)": (fnn.MaxPool2d(3, 1, 1), lambda x: F.max_pool2d(x, 3, 1, 1), (5, 6)),
    "MaxPool2d((2, 3), (2, 1))": (fnn.MaxPool2d((2, 3), (2, 1)),
                                  lambda x: F.max_pool2d(x, (2, 3), (2, 1)), (5, 7)),
    "MaxPool1d(3, 2, 1)": (fnn.MaxPool1d(3, 2, 1), lambda x: F.max_pool1d(x, 3, 2, 1), (9,)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", NAN_POOLS)
def test_maxpool_nan_windows_match_torch(name: str, dtype: type) -> None:
    """About a fifth of the inputs NaN (several in some windows): the same NaN outputs, and
    each NaN window's gradient on the same element (torch: the window's last NaN)."""
    layer, ref, sizes = NAN_POOLS[name]
    rng = seeded(name, dtype, 4)
    x = rng.standard_normal((4, 3, *sizes)).astype(dtype)
    x[rng.random(x.shape) < 0.2] = np.nan
    y, cache = layer.forward((), (), x)
    dy = rng.standard_normal(y.shape).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    yt.backward(torch.tensor(dy))
    assert np.isnan(y).any()
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_allclose(layer.backward((), cache, dy)[0], xt.grad.numpy(), **TOL[dtype])


if __name__ == "__main__":
    print_report(LAYER_CASES)
