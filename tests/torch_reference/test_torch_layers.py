"""Reference tests: every classic fnn layer and criterion against PyTorch (CPU) autograd (the
classic optimizers: test_torch_optim_classic.py; the plumbing: torch_kit.py).

Each case builds the same inputs and parameters for fnn and for its PyTorch counterpart and
returns ``(what, ours, reference)`` triples: outputs, dx, every dparams leaf, new running
statistics, losses, updated parameters and optimizer moments. Every case runs in float64
(atol = rtol = 1e-10) and float32 (rtol 1.3e-6, torch's default for float32, and atol 1e-6 for
O(1) values, scaled by the array's largest magnitude when that exceeds 1: float32 rounding
grows with the size of a sum, e.g. Conv2d's dW over N*H*W terms, where torch's float32 error
is the larger of the two); the optimizers over 20 steps are held to 1e-12 in float64. Our
values must also come back in the input dtype.

Where fnn (the classic API) and PyTorch differ by design, the tests compare what matches and
say what differs (see also docs/layers.md):

- BatchNorm1d updates ``running_var`` with the unbiased batch variance (divisor N - 1); we use
  the biased one (divisor N), as the classic module does. Normalization itself uses the biased
  variance in both.
- Softplus(beta=1, threshold=20) returns x itself where x > 20; we return the exact
  log(1 + exp(x)). Inputs here stay below 20; ``test_softplus_above_threshold`` bounds the gap.
- ClassNLLCriterionUnstable's backward is -t / clip(p) / N everywhere (classic); autograd of
  clamp gives 0 where p was clipped. Inputs here are clipped only where the target is 0.
- torch.optim.Adam places epsilon differently (see ``test_torch_optim_adam`` in
  test_torch_optim_classic.py).

``python tests/torch_reference/test_torch_layers.py`` prints the largest absolute difference
per case and dtype over all sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from torch_kit import (
    DTYPES,
    SIZES,
    TOL,
    TORCH_DTYPE,
    Case,
    Compared,
    as_numpy,
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

import fnn
from fnn import tree
from fnn.normalization import BatchNormState

# --- layers -----------------------------------------------------------------------------------

def case_linear(dtype: type, rng: np.random.Generator, n: int) -> Compared:
    n_in, n_out = dims(rng, (1, 9), (1, 9))
    layer = fnn.Linear(n_in, n_out)
    x = rng.standard_normal((n, n_in)).astype(dtype)
    ref = nn.Linear(n_in, n_out, dtype=TORCH_DTYPE[dtype])
    return versus(layer, *init(layer, dtype, rng), x, ref, rng)[0]


def case_scaling(dtype: type, rng: np.random.Generator, n: int) -> Compared:
    (f,) = dims(rng, (1, 9))
    layer = fnn.ChannelwiseScaling(f)
    x = rng.standard_normal((n, f)).astype(dtype)
    return versus(layer, *init(layer, dtype, rng), x, lambda x, g, b: x * g + b, rng)[0]


def batchnorm(alpha: float, training: bool, affine: bool) -> Case:
    """BatchNormalization(alpha) [+ ChannelwiseScaling when ``affine``] against
    BatchNorm1d(momentum=1-alpha, eps=1e-3, affine), both starting from the same random
    running statistics. Training compares the new moving mean with torch's running_mean and
    the new moving variance with torch's running_var converted from its unbiased batch
    variance v_u to the biased one: ours = a*old + (1-a)*v_u*(N-1)/N, where torch has
    a*old + (1-a)*v_u. Evaluation: the state comes back unchanged."""

    def case(dtype: type, rng: np.random.Generator, n: int) -> Compared:
        (f,) = dims(rng, (1, 9))
        bn = fnn.BatchNormalization(f, alpha)
        layer = fnn.Sequential([bn, fnn.ChannelwiseScaling(f)]) if affine else bn
        params, _ = init(layer, dtype, rng)
        old = BatchNormState(training, rng.standard_normal(f).astype(dtype),
                             rng.uniform(0.5, 2.0, f).astype(dtype))
        ref = nn.BatchNorm1d(f, eps=bn.EPS, momentum=1 - alpha, affine=affine,
                             dtype=TORCH_DTYPE[dtype]).train(training)
        ref.running_mean.copy_(tensor(old.moving_mean))
        ref.running_var.copy_(tensor(old.moving_variance))
        x = rng.normal(1.0, 2.0, (n, f)).astype(dtype)
        pairs, cache = versus(layer, params, (old, ()) if affine else old, x, ref, rng)
        new = cache.state[0] if affine else cache.state
        assert new.training == training
        expected_var = ref.running_var
        if training:
            a_old = alpha * tensor(old.moving_variance)
            expected_var = a_old + (ref.running_var - a_old) * ((n - 1) / n)
        return pairs + [("moving_mean", new.moving_mean, ref.running_mean),
                        ("moving_variance", new.moving_variance, expected_var)]

    return case


def dropout(p: float, training: bool) -> Case:
    """Training: against x * keep / (1 - p) under autograd, with our mask recovered from y / x
    (x has no zeros); the recovered scale of every kept element must be 1/(1-p).
    Evaluation: against torch.nn.Dropout(p).eval(), the identity."""

    def case(dtype: type, rng: np.random.Generator, n: int) -> Compared:
        layer = fnn.Dropout(p)
        params, state = init(layer, dtype, rng)
        state = tree.set_training(state, training)
        x = rng.standard_normal((n, *dims(rng, (1, 6), (1, 4)))).astype(dtype)
        if not training:
            return versus(layer, params, state, x, nn.Dropout(p).eval(), rng)[0]
        scale = layer.forward(params, state, x)[0] / x
        keep = scale != 0
        pairs = [("kept scale", scale[keep], torch.full((int(keep.sum()),), 1 / (1 - p),
                                                        dtype=TORCH_DTYPE[dtype]))]
        return pairs + versus(layer, params, state, x,
                              lambda x: x * tensor(keep) / (1 - p), rng)[0]

    return case


def conv2d(k: int) -> Case:
    def case(dtype: type, rng: np.random.Generator, n: int) -> Compared:
        c_in, c_out, h, w = dims(rng, (1, 3), (1, 3), (1, 7), (1, 7))
        layer = fnn.Conv2d(c_in, c_out, k)
        x = rng.standard_normal((n, c_in, h, w)).astype(dtype)
        ref = nn.Conv2d(c_in, c_out, k, padding=k // 2, dtype=TORCH_DTYPE[dtype])
        return versus(layer, *init(layer, dtype, rng), x, ref, rng)[0]

    return case


def maxpool_input(rng: np.random.Generator, n: int, k: int, dtype: type,
                  ties: bool = False) -> np.ndarray:
    """(n, C, H, W) with H, W multiples of k: distinct values, or many ties (values in {0, 1})."""
    c, hk, wk = dims(rng, (1, 3), (1, 3), (1, 3))
    shape = (n, c, hk * k, wk * k)
    size = int(np.prod(shape))
    values = rng.integers(0, 2, size) if ties else rng.permutation(size) / size - 0.5
    return values.reshape(shape).astype(dtype)


def maxpool(k: int) -> Case:
    def case(dtype: type, rng: np.random.Generator, n: int) -> Compared:
        x = maxpool_input(rng, n, k, dtype)
        return versus(fnn.MaxPool2d(k), (), (), x, nn.MaxPool2d(k), rng)[0]

    return case


def case_flatten(dtype: type, rng: np.random.Generator, n: int) -> Compared:
    x = rng.standard_normal((n, *dims(rng, (1, 3), (1, 4), (1, 4)))).astype(dtype)
    return versus(fnn.Flatten(), (), (), x, nn.Flatten(), rng)[0]


# --- criteria ---------------------------------------------------------------------------------

def criterion_versus(criterion: Any, y: np.ndarray, target: np.ndarray,
                     ref_loss: Callable[[torch.Tensor], torch.Tensor]) -> Compared:
    """Our loss and dy against ``ref_loss(y)`` and its autograd gradient."""
    loss, cache = criterion.forward(y, target)
    yt = tensor(y, grad=True)
    lt = ref_loss(yt)
    lt.backward()
    return [("loss", loss, lt), ("dy", criterion.backward(cache), yt.grad)]


def classes(rng: np.random.Generator, n: int, dtype: type, c: int | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-probabilities (N, C) of random logits, class indices (N,) and their one-hot rows;
    C is random unless given."""
    c = dims(rng, (2, 9))[0] if c is None else c
    z = 3.0 * rng.standard_normal((n, c))
    logp = z - np.logaddexp.reduce(z, axis=1, keepdims=True)
    idx = rng.integers(0, c, n)
    return logp.astype(dtype), idx, np.eye(c, dtype=dtype)[idx]


def case_mse(dtype: type, rng: np.random.Generator, n: int) -> Compared:
    shape = (n, *dims(rng, (1, 9))) if rng.random() < 0.5 else (n, *dims(rng, (1, 3), (1, 4)))
    y, t = (rng.standard_normal((2, *shape))).astype(dtype)
    return criterion_versus(fnn.MSECriterion(), y, t,
                            lambda y: ((y - tensor(t)) ** 2).sum() / n)


def case_nll(dtype: type, rng: np.random.Generator, n: int) -> Compared:
    logp, idx, onehot = classes(rng, n, dtype)
    return criterion_versus(fnn.ClassNLLCriterion(), logp, onehot,
                            lambda y: nn.functional.nll_loss(y, tensor(idx)))


def case_nll_unstable(dtype: type, rng: np.random.Generator, n: int) -> Compared:
    """On probabilities, some exactly 0 where the target is 0 (clipped to EPS: loss and gradient
    contributions are 0 in both)."""
    logp, _, onehot = classes(rng, n, dtype)
    p = np.exp(logp)
    p[(rng.random(p.shape) < 0.3) & (onehot == 0)] = 0
    eps = fnn.ClassNLLCriterionUnstable.EPS
    return criterion_versus(
        fnn.ClassNLLCriterionUnstable(), p, onehot,
        lambda y: -(tensor(onehot) * torch.log(torch.clamp(y, eps, 1 - eps))).sum() / n)


# --- networks ---------------------------------------------------------------------------------

def network(ours: list, ref: Callable[[], list], x_shape: tuple[int, ...], n_classes: int
            ) -> Case:
    """Sequential(ours) + ClassNLLCriterion against nn.Sequential(*ref()) + NLLLoss, end to end
    (loss, output, dx, every dparams leaf, BatchNorm's new moving mean). ``ref`` builds fresh
    modules (torch modules are mutable: their dtype and running statistics)."""

    def case(dtype: type, rng: np.random.Generator, n: int) -> Compared:
        net = fnn.Sequential(ours)
        params, state = init(net, dtype, rng)
        module = nn.Sequential(*ref()).to(TORCH_DTYPE[dtype])
        x = rng.standard_normal((n, *x_shape)).astype(dtype)
        _, idx, onehot = classes(rng, n, dtype, n_classes)
        head = (fnn.ClassNLLCriterion(), onehot,
                lambda y: nn.functional.nll_loss(y, tensor(idx)))
        pairs, cache = versus(net, params, state, x, module, rng, head)
        pairs += [(f"layer {i} moving_mean", s.moving_mean, m.running_mean)
                  for i, (s, m) in enumerate(zip(cache.state, module))
                  if isinstance(s, BatchNormState)]
        return pairs

    return case


MLP = network(
    [fnn.Linear(6, 5), fnn.BatchNormalization(5, 0.9), fnn.ChannelwiseScaling(5), fnn.ReLU(),
     fnn.Linear(5, 8), fnn.ELU(0.5), fnn.Linear(8, 4), fnn.LogSoftMax()],
    lambda: [nn.Linear(6, 5), nn.BatchNorm1d(5, eps=1e-3, momentum=0.1), nn.Identity(),
             nn.ReLU(), nn.Linear(5, 8), nn.ELU(0.5), nn.Linear(8, 4), nn.LogSoftmax(dim=1)],
    (6,), 4)

CNN = network(
    [fnn.Conv2d(2, 3, 3), fnn.LeakyReLU(0.1), fnn.MaxPool2d(2), fnn.Conv2d(3, 4, 5),
     fnn.SoftPlus(), fnn.Flatten(), fnn.Linear(4 * 3 * 2, 5), fnn.LogSoftMax()],
    lambda: [nn.Conv2d(2, 3, 3, padding=1), nn.LeakyReLU(0.1), nn.MaxPool2d(2),
             nn.Conv2d(3, 4, 5, padding=2), nn.Softplus(), nn.Flatten(),
             nn.Linear(4 * 3 * 2, 5), nn.LogSoftmax(dim=1)],
    (2, 6, 4), 5)

LAYER_CASES: dict[str, Case] = {
    "Linear": case_linear,
    "ChannelwiseScaling": case_scaling,
    **{f"BatchNormalization alpha={a} {'train' if t else 'eval'}": batchnorm(a, t, False)
       for a in (0.0, 0.9) for t in (True, False)},
    **{f"BatchNormalization+ChannelwiseScaling {'train' if t else 'eval'}":
       batchnorm(0.7, t, True) for t in (True, False)},
    **{f"Dropout p={p} {'train' if t else 'eval'}": dropout(p, t)
       for p, t in ((0.0, True), (0.3, True), (0.8, True), (0.5, False))},
    "ReLU": parameterless(fnn.ReLU(), nn.ReLU()),
    "LeakyReLU default": parameterless(fnn.LeakyReLU(), nn.LeakyReLU(0.03)),
    "LeakyReLU slope=0.2": parameterless(fnn.LeakyReLU(0.2), nn.LeakyReLU(negative_slope=0.2)),
    "ELU default": parameterless(fnn.ELU(), nn.ELU()),
    "ELU alpha=0.3": parameterless(fnn.ELU(0.3), nn.ELU(alpha=0.3)),
    # x stays far below torch's threshold 20 (6.7 standard deviations at scale 3)
    "SoftPlus": parameterless(fnn.SoftPlus(), nn.Softplus()),
    "SoftMax": parameterless(fnn.SoftMax(), nn.Softmax(dim=1), images=False),
    "LogSoftMax": parameterless(fnn.LogSoftMax(), nn.LogSoftmax(dim=1), images=False),
    **{f"Conv2d k={k}": conv2d(k) for k in (1, 3, 5)},
    **{f"MaxPool2d k={k}": maxpool(k) for k in (1, 2, 3)},
    "Flatten": case_flatten,
    "MSECriterion": case_mse,
    "ClassNLLCriterion": case_nll,
    "ClassNLLCriterionUnstable": case_nll_unstable,
    "Sequential MLP": MLP,
    "Sequential CNN": CNN,
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name", LAYER_CASES)
def test_layer_matches_torch(name: str, n: int, dtype: type) -> None:
    assert_matches(LAYER_CASES[name](dtype, seeded(name, dtype, n), n), dtype, TOL)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("k", [2, 3])
def test_maxpool_ties_go_to_the_first_max(k: int, dtype: type) -> None:
    """With ties both send each window's gradient to its first maximum in row-major order."""
    rng = seeded("ties", dtype, k)
    x = maxpool_input(rng, 4, k, dtype, ties=True)
    pairs, _ = versus(fnn.MaxPool2d(k), (), (), x, nn.MaxPool2d(k), rng)
    assert_matches(pairs, dtype, TOL)
    n, c, h, w = x.shape
    windows = x.reshape(n, c, h // k, k, w // k, k).transpose(0, 1, 2, 4, 3, 5)
    first = windows.reshape(*windows.shape[:4], k * k).argmax(axis=-1)  # first occurrence
    mask = np.eye(k * k, dtype=bool)[first].reshape(n, c, h // k, w // k, k, k)
    expected = mask.transpose(0, 1, 2, 4, 3, 5).reshape(x.shape)
    dx = pairs[1][1]
    assert (windows == windows.max(axis=(-2, -1), keepdims=True)).sum() > first.size  # ties
    np.testing.assert_array_equal(dx != 0, expected)


def test_softplus_above_threshold() -> None:
    """Above torch's threshold 20, torch returns y = x and dx = dy; we return the exact
    log(1 + exp(x)) (< exp(-x) above x, up to y's rounding) and sigmoid(x) * dy (< |dy| exp(-x)
    below dy, likewise)."""
    x = np.linspace(20.5, 40.0, 12)[None]
    pairs, _ = versus(fnn.SoftPlus(), (), (), x, nn.Softplus(), np.random.default_rng(0))
    (_, y, y_ref), (_, dx, dy) = ((w, o, as_numpy(r)) for w, o, r in pairs)
    np.testing.assert_array_equal(y_ref, x)
    assert np.all(np.abs(y - x) <= np.exp(-x) + np.spacing(x))
    assert np.all(np.abs(dx - dy) <= np.abs(dy) * np.exp(-x) + np.spacing(np.abs(dy)))
    np.testing.assert_allclose(y, np.logaddexp(0, x), rtol=1e-15)


if __name__ == "__main__":
    print_report(LAYER_CASES)
