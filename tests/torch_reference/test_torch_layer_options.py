"""PyTorch reference tests for the layers beyond the classic set: Tanh, Sigmoid, GELU (exact and
tanh), Identity, BatchNormalization with eps, BatchNorm2d (with and without affine, training and
evaluation), LayerNorm (with and without affine, extra leading axes), Residual blocks,
Linear / ChannelwiseScaling created with initializer and dtype options, and GroupNorm (several
group counts, 2-D to 5-D inputs, with and without affine).

Each case compares y, dx, every dparams leaf and (BatchNorm) the new moving statistics with
torch autograd on the same inputs and parameters, using the plumbing of
torch_kit.py. Tolerances: float64 atol = rtol = 1e-10; float32 atol = 1e-5 (scaled
by the array's largest magnitude when that exceeds 1), rtol = 1.3e-6. Our values must come back
in the input dtype.

What differs by design: torch's BatchNorm updates ``running_var`` with the unbiased batch
variance (divisor M - 1, M = N*H*W values per channel); we keep the biased one, as the classic
module does, and the tests convert. ``python tests/torch_reference/test_torch_layer_options.py``
prints the largest absolute difference per case and dtype over all batch sizes."""

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
    parameterless,
    print_report,
    seeded,
    tensor,
    torch,
    versus,
)
from torch_kit import (
    TOL_LOOSE as TOL,  # SIZES: torch's BatchNorm needs N*H*W > 1 in training
)

import fnn
from fnn.linear import ScalingParams
from fnn.normalization import BatchNormState

F = torch.nn.functional



def random_affine(params: Any, dtype: type, rng: np.random.Generator) -> Any:
    """gamma around 1 and beta around 0 instead of exactly ones and zeros (so that a gradient
    that ignores gamma or beta would show)."""
    if params == ():
        return ()
    shape = params.gamma.shape
    return ScalingParams(gamma=rng.uniform(0.5, 1.5, shape).astype(dtype),
                         beta=rng.standard_normal(shape).astype(dtype))


def batchnorm(spatial: bool, alpha: float, eps: float, training: bool, affine: bool) -> Case:
    """BatchNorm2d(C, alpha, eps, affine) against nn.BatchNorm2d(C, eps, momentum=1-alpha,
    affine), or (``spatial`` False) BatchNormalization(C, alpha, eps) against nn.BatchNorm1d;
    both from the same random running statistics. Training compares the new moving mean with
    running_mean and the new moving variance with running_var converted from torch's unbiased
    batch variance v_u to the biased one: ours = a*old + (1-a)*v_u*(M-1)/M where torch has
    a*old + (1-a)*v_u (M values per channel). Evaluation: the state comes back unchanged."""

    def case(dtype: type, rng: np.random.Generator, n: int) -> Compared:
        (c,) = dims(rng, (1, 5))
        spatial_shape = dims(rng, (1, 4), (1, 4)) if spatial else []
        if spatial:
            layer = fnn.BatchNorm2d(c, alpha, eps, affine=affine)
            ref = nn.BatchNorm2d(c, eps=eps, momentum=1 - alpha, affine=affine,
                                 dtype=TORCH_DTYPE[dtype])
        else:
            layer = fnn.BatchNormalization(c, alpha, eps)
            ref = nn.BatchNorm1d(c, eps=eps, momentum=1 - alpha, affine=False,
                                 dtype=TORCH_DTYPE[dtype])
        params = random_affine(init(layer, dtype, rng)[0], dtype, rng)
        old = BatchNormState(training, rng.standard_normal(c).astype(dtype),
                             rng.uniform(0.5, 2.0, c).astype(dtype))
        ref.train(training)
        ref.running_mean.copy_(tensor(old.moving_mean))
        ref.running_var.copy_(tensor(old.moving_variance))
        x = rng.normal(1.0, 2.0, (n, c, *spatial_shape)).astype(dtype)
        pairs, cache = versus(layer, params, old, x, ref, rng)
        new = cache.state
        assert new.training == training
        expected_var = ref.running_var
        if training:
            m = x.size // c
            a_old = alpha * tensor(old.moving_variance)
            expected_var = a_old + (ref.running_var - a_old) * ((m - 1) / m)
        else:
            assert new is old
        return pairs + [("moving_mean", new.moving_mean, ref.running_mean),
                        ("moving_variance", new.moving_variance, expected_var)]

    return case


def layernorm(rank: int, leading: int, eps: float, affine: bool) -> Case:
    """LayerNorm(normalized_shape of ``rank`` dims, eps, affine) on x (N, ``leading`` extra axes,
    *normalized_shape) against nn.LayerNorm with the same weight and bias. Each normalized
    axis has 2 to 5 entries: with one feature, y = beta and the exact dx is 0, which we return
    while torch's float32 rounding, times 1/sqrt(eps), gives about 3e-5."""

    def case(dtype: type, rng: np.random.Generator, n: int) -> Compared:
        shape = tuple(dims(rng, *[(2, 5)] * rank))
        lead = tuple(dims(rng, *[(1, 3)] * leading))
        layer = fnn.LayerNorm(shape, eps=eps, elementwise_affine=affine)
        params = random_affine(init(layer, dtype, rng)[0], dtype, rng)
        ref = nn.LayerNorm(shape, eps=eps, elementwise_affine=affine, dtype=TORCH_DTYPE[dtype])
        x = rng.normal(0.5, 2.0, (n, *lead, *shape)).astype(dtype)
        return versus(layer, params, (), x, ref, rng)[0]

    return case


def case_residual_mlp(dtype: type, rng: np.random.Generator, n: int) -> Compared:
    """Residual(Linear -> GELU(tanh) -> Linear) against x + linear(gelu(linear(x)))."""
    d, h = dims(rng, (1, 6), (1, 6))
    layer = fnn.Residual(fnn.Sequential([fnn.Linear(d, h), fnn.GELU("tanh"), fnn.Linear(h, d)]))
    x = rng.standard_normal((n, d)).astype(dtype)

    def ref(x, w1, b1, w2, b2):
        return x + F.linear(F.gelu(F.linear(x, w1, b1), approximate="tanh"), w2, b2)

    return versus(layer, *init(layer, dtype, rng), x, ref, rng)[0]


class TorchResidual(nn.Module):
    def __init__(self, *inner: nn.Module) -> None:
        super().__init__()
        self.inner = nn.Sequential(*inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.inner(x)


def case_residual_conv(dtype: type, rng: np.random.Generator, n: int) -> Compared:
    """A ResNet-style block in training: Residual(Conv2d(k=3) -> BatchNorm2d(affine) -> ReLU)
    -> LayerNorm over (C, H, W), against the same torch modules; also the new moving mean."""
    c, h, w = dims(rng, (1, 3), (1, 5), (1, 5))
    layer = fnn.Sequential([
        fnn.Residual(fnn.Sequential([fnn.Conv2d(c, c, 3), fnn.BatchNorm2d(c, alpha=0.9,
                                                                          affine=True),
                                     fnn.ReLU()])),
        fnn.LayerNorm((c, h, w))])
    ref = nn.Sequential(
        TorchResidual(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c, eps=1e-3, momentum=0.1),
                      nn.ReLU()),
        nn.LayerNorm((c, h, w))).to(TORCH_DTYPE[dtype])
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    pairs, cache = versus(layer, *init(layer, dtype, rng), x, ref, rng)
    bn_state = cache.state[0][1]
    return pairs + [("moving_mean", bn_state.moving_mean, ref[0].inner[1].running_mean)]


def case_linear_options(dtype: type, rng: np.random.Generator, n: int) -> Compared:
    """Linear created in ``dtype`` with PyTorch's default initializers (kaiming_uniform with
    a = sqrt(5) for W, zeros for b): params come out of init in that dtype, no cast."""
    n_in, n_out = dims(rng, (1, 9), (1, 9))
    layer = fnn.Linear(n_in, n_out, w_init=functools.partial(fnn.init.kaiming_uniform,
                                                             a=math.sqrt(5)),
                       b_init=fnn.init.zeros, dtype=dtype)
    params, _ = layer.init(int(rng.integers(2**31)))
    assert params.W.dtype == params.b.dtype == dtype and not params.b.any()
    assert np.abs(params.W).max() <= 1 / math.sqrt(n_in)  # kaiming_uniform(a=sqrt(5)) bound
    x = rng.standard_normal((n, n_in)).astype(dtype)
    return versus(layer, params, (), x, nn.Linear(n_in, n_out, dtype=TORCH_DTYPE[dtype]),
                  rng)[0]


def case_scaling_options(dtype: type, rng: np.random.Generator, n: int) -> Compared:
    """ChannelwiseScaling with gamma from xavier_normal-like draws (normal init), beta ones, in
    ``dtype``: against x * gamma + beta."""
    (f,) = dims(rng, (1, 9))
    layer = fnn.ChannelwiseScaling(f, gamma_init=functools.partial(fnn.init.uniform, low=0.5,
                                                                   high=1.5),
                                   beta_init=fnn.init.ones, dtype=dtype)
    params, _ = layer.init(int(rng.integers(2**31)))
    assert params.gamma.dtype == params.beta.dtype == dtype and np.all(params.beta == 1)
    x = rng.standard_normal((n, f)).astype(dtype)
    return versus(layer, params, (), x, lambda x, g, b: x * g + b, rng)[0]


def groupnorm(groups: int | None, per_group: tuple[int, int], rank: int, eps: float,
              affine: bool) -> Case:
    """GroupNorm(G, C, eps, affine) on x (N, C, ``rank`` trailing axes of 2 to 4) against
    nn.GroupNorm with the same weight and bias; C = G * (a draw from ``per_group``), G drawn
    from 1 to 3 when ``groups`` is None. Each group holds at least 2 values (one value: y = beta
    and the exact dx is 0, torch's float32 rounding is not; see layernorm), 4 without trailing
    axes: dx of a group of 2 or 3 close values is ill-conditioned in float32 (ours and torch's
    both differ from the float64 dx by up to 6e-3 there, over 300 draws of 3 groups of 2)."""

    def case(dtype: type, rng: np.random.Generator, n: int) -> Compared:
        g = dims(rng, (1, 3))[0] if groups is None else groups
        c = g * dims(rng, per_group)[0]
        layer = fnn.GroupNorm(g, c, eps=eps, affine=affine)
        params = random_affine(init(layer, dtype, rng)[0], dtype, rng)
        ref = nn.GroupNorm(g, c, eps=eps, affine=affine, dtype=TORCH_DTYPE[dtype])
        x = rng.normal(0.5, 2.0, (n, c, *dims(rng, *[(2, 4)] * rank))).astype(dtype)
        return versus(layer, params, (), x, ref, rng)[0]

    return case


LAYER_CASES: dict[str, Case] = {
    "Tanh": parameterless(fnn.Tanh(), nn.Tanh()),
    "Sigmoid": parameterless(fnn.Sigmoid(), nn.Sigmoid()),
    "GELU": parameterless(fnn.GELU(), nn.GELU()),
    "GELU tanh": parameterless(fnn.GELU("tanh"), nn.GELU(approximate="tanh")),
    "Identity": parameterless(fnn.Identity(), nn.Identity()),
    **{f"BatchNormalization eps={eps} alpha={a} {'train' if t else 'eval'}":
       batchnorm(False, a, eps, t, False) for eps, a in ((1e-5, 0.9), (0.1, 0.0))
       for t in (True, False)},
    **{f"BatchNorm2d alpha={a} eps={eps} affine={aff} {'train' if t else 'eval'}":
       batchnorm(True, a, eps, t, aff)
       for a, eps in ((0.0, 1e-3), (0.9, 1e-5)) for aff in (False, True) for t in (True, False)},
    **{f"LayerNorm rank={r} leading={lead} eps={eps} affine={aff}": layernorm(r, lead, eps, aff)
       for r, lead, eps, aff in ((1, 0, 1e-5, True), (1, 1, 1e-5, True), (3, 0, 1e-5, True),
                                 (2, 1, 1e-3, False))},
    "Residual MLP": case_residual_mlp,
    "Residual conv block + LayerNorm": case_residual_conv,
    "Linear w_init b_init dtype": case_linear_options,
    "ChannelwiseScaling gamma_init beta_init dtype": case_scaling_options,
    "GroupNorm G=1 (N, C, L)": groupnorm(1, (2, 4), 1, 1e-5, True),
    "GroupNorm G=2 (N, C, H, W)": groupnorm(2, (1, 3), 2, 1e-5, True),
    "GroupNorm G=C (N, C, H, W) eps=1e-3": groupnorm(None, (1, 1), 2, 1e-3, True),
    "GroupNorm G=1..3 (N, C, H, W) no affine": groupnorm(None, (1, 3), 2, 1e-5, False),
    "GroupNorm G=3 (N, C)": groupnorm(3, (4, 6), 0, 1e-5, True),
    "GroupNorm G=1..3 (N, C, D, H, W)": groupnorm(None, (1, 2), 3, 1e-5, True),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name", LAYER_CASES)
def test_layer_matches_torch(name: str, n: int, dtype: type) -> None:
    assert_matches(LAYER_CASES[name](dtype, seeded(name, dtype, n), n), dtype, TOL)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_gelu_sigmoid_tanh_far_out(dtype: type) -> None:
    """Inputs up to ±30 (sigmoid saturates, GELU's exact form reads Phi far in its tails)."""
    x = np.linspace(-30.0, 30.0, 61, dtype=dtype)[None]
    rng = np.random.default_rng(0)
    for ours, ref in ((fnn.GELU(), nn.GELU()), (fnn.GELU("tanh"), nn.GELU(approximate="tanh")),
                      (fnn.Sigmoid(), nn.Sigmoid()), (fnn.Tanh(), nn.Tanh())):
        assert_matches(versus(ours, (), (), x, ref, rng)[0], dtype, TOL)


if __name__ == "__main__":
    print_report(LAYER_CASES)
