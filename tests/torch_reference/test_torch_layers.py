"""Reference tests: every fnn layer, criterion and optimizer against PyTorch (CPU) autograd.

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
- torch.optim.Adam places epsilon differently (see ``test_torch_optim_adam``).

``python tests/test_torch_reference.py`` prints the largest absolute difference per case and
dtype over all sizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import fnn
from fnn import tree
from fnn.linear import LinearParams, ScalingParams
from fnn.normalization import BatchNormState

torch = pytest.importorskip("torch")
nn = torch.nn
torch.set_num_threads(1)

DTYPES = (np.float64, np.float32)
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}
TOL = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=1.3e-6, atol=1e-6)}
OPTIMIZER_TOL = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: TOL[np.float32]}
SIZES = (2, 5, 16)  # batch sizes (BatchNorm1d needs N >= 2 in training)

Compared = list[tuple[str, Any, Any]]  # (what, ours, reference)
Case = Callable[[type, np.random.Generator, int], Compared]


# --- plumbing ---------------------------------------------------------------------------------

def tensor(a: Any, grad: bool = False) -> torch.Tensor:
    """A torch copy of ``a`` in its own dtype; a leaf recording gradients when ``grad``."""
    return torch.tensor(np.asarray(a)).requires_grad_(grad)


def as_numpy(a: Any) -> np.ndarray:
    return a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def max_abs_diff(pairs: Compared) -> float:
    return max(float(np.max(np.abs(np.asarray(o, np.float64) - as_numpy(r)), initial=0.0))
               for _, o, r in pairs)


def assert_matches(pairs: Compared, dtype: type, tol: dict) -> None:
    """Each of our values has the input dtype, the reference's shape, and is close to it."""
    for what, ours, ref in pairs:
        ours, ref = np.asarray(ours), as_numpy(ref)
        assert ours.dtype == dtype, f"{what}: our dtype is {ours.dtype}"
        assert ref.dtype == dtype, f"{what}: the reference ran in {ref.dtype}"
        assert ours.shape == ref.shape, f"{what}: shape {ours.shape} vs {ref.shape}"
        rtol, atol = tol[dtype]["rtol"], tol[dtype]["atol"]
        if dtype == np.float32:  # rounding grows with the size of the sums: scale atol by it
            atol *= max(1.0, float(np.max(np.abs(ref), initial=0.0)))
        np.testing.assert_allclose(ours, ref, rtol=rtol, atol=atol, err_msg=what)


def init(layer: Any, dtype: type, rng: np.random.Generator) -> tuple[Any, Any]:
    params, state = layer.init(int(rng.integers(2**31)))
    return tree.cast(params, dtype), tree.cast(state, dtype)


def dims(rng: np.random.Generator, *ranges: tuple[int, int]) -> list[int]:
    """One random int from each inclusive ``(low, high)`` range."""
    return [int(rng.integers(lo, hi + 1)) for lo, hi in ranges]


def array_leaves(t: Any) -> list[np.ndarray]:
    return [a for a in tree.leaves(t) if isinstance(a, np.ndarray)]


def leafwise(what: str, ours: Any, refs: list) -> Compared:
    """Pair the array leaves of tree ``ours`` with the list ``refs``."""
    return [(what, a, b) for a, b in zip(array_leaves(ours), refs, strict=True)]


def versus(layer: Any, params: Any, state: Any, x: np.ndarray, ref: Any,
           rng: np.random.Generator, head: tuple | None = None) -> tuple[Compared, Any]:
    """Our forward/backward against PyTorch autograd on the same x and params.

    ``ref`` is a ``torch.nn.Module`` whose parameters, in order, are set to our params' array
    leaves, or a function ``ref(x, *leaves)`` of tensors. The upstream gradient is a standard
    normal draw, or with ``head = (criterion, target, ref_loss)`` the gradient of our criterion
    and of ``ref_loss(output)`` (then the losses are compared too). Returns the comparisons of
    (loss,) y, dx and every dparams leaf, and our cache.
    """
    y, cache = layer.forward(params, state, x)
    leaves = array_leaves(params)
    xt = tensor(x, grad=True)
    if isinstance(ref, nn.Module):
        pts = list(ref.parameters())
        assert len(pts) == len(leaves), "parameter count differs from torch's"
        with torch.no_grad():
            for pt, p in zip(pts, leaves):
                assert pt.shape == p.shape and pt.dtype == TORCH_DTYPE[p.dtype.type]
                pt.copy_(tensor(p))
        yt = ref(xt)
    else:
        pts = [tensor(p, grad=True) for p in leaves]
        yt = ref(xt, *pts)
    if head is None:
        pairs = []
        dy = rng.standard_normal(y.shape).astype(x.dtype)
        yt.backward(tensor(dy))
    else:
        criterion, target, ref_loss = head
        loss, lcache = criterion.forward(y, target)
        dy = criterion.backward(lcache)
        lt = ref_loss(yt)
        lt.backward()
        pairs = [("loss", loss, lt)]
    dx, dparams = layer.backward(params, cache, dy)
    pairs += [("y", y, yt), ("dx", dx, xt.grad)]
    pairs += [(f"dparams leaf {i}", g, pt.grad)
              for i, (g, pt) in enumerate(zip(array_leaves(dparams), pts, strict=True))]
    return pairs, cache


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


def parameterless(layer: Any, ref: nn.Module, images: bool = True) -> Case:
    """A parameterless layer on inputs of standard deviation 3, of shape (N, F) or, when
    ``images``, as often (N, C, H, W)."""

    def case(dtype: type, rng: np.random.Generator, n: int) -> Compared:
        image = images and rng.random() < 0.5
        shape = (n, *dims(rng, (1, 3), (1, 4), (1, 4))) if image else (n, *dims(rng, (1, 9)))
        x = (3.0 * rng.standard_normal(shape)).astype(dtype)
        return versus(layer, (), (), x, ref, rng)[0]

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


def seeded(name: str, dtype: type, n: int) -> np.random.Generator:
    return np.random.default_rng([n, DTYPES.index(dtype), *name.encode()])


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


# --- optimizers -------------------------------------------------------------------------------

STEPS = 20


def optimizer_problem(dtype: type, rng: np.random.Generator, n: int) -> tuple[Any, list]:
    """A params tree as networks have them (records, and () for a layer with no params) and
    STEPS gradient trees like it."""
    params = (LinearParams(W=rng.standard_normal((3, n)), b=rng.standard_normal(3)), (),
              ScalingParams(gamma=rng.standard_normal(n), beta=rng.standard_normal(n)))
    params = tree.cast(params, dtype)
    grads = [tree.map(lambda p: rng.standard_normal(p.shape).astype(dtype), params)
             for _ in range(STEPS)]
    return params, grads


def run(opt: Any, params: Any, grads: list) -> tuple[Any, Any]:
    state = opt.init(params)
    for g in grads:
        params, state = opt.update(params, g, state)
    return params, state


def case_sgd(dtype: type, rng: np.random.Generator, n: int) -> Compared:
    """SGDMomentum against the classic formula on torch tensors:
    v = momentum * v + learning_rate * g; w = w - v."""
    lr, momentum = 0.05, 0.9
    params, grads = optimizer_problem(dtype, rng, n)
    new, state = run(fnn.SGDMomentum(learning_rate=lr, momentum=momentum), params, grads)
    w = [tensor(p) for p in array_leaves(params)]
    v = [torch.zeros_like(p) for p in w]
    for g in grads:
        for i, gi in enumerate(array_leaves(g)):
            v[i] = momentum * v[i] + lr * tensor(gi)
            w[i] = w[i] - v[i]
    return leafwise("w", new, w) + leafwise("accumulated_grads", state.accumulated_grads, v)


def case_adam(dtype: type, rng: np.random.Generator, n: int) -> Compared:
    """Adam against the classic formula on torch tensors, step t = 1, 2, ...:
    m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g; lr_t = lr*sqrt(1-b2^t)/(1-b1^t);
    w = w - lr_t * m / (sqrt(v) + eps)."""
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    params, grads = optimizer_problem(dtype, rng, n)
    new, state = run(fnn.Adam(learning_rate=lr, beta1=b1, beta2=b2, epsilon=eps), params, grads)
    w = [tensor(p) for p in array_leaves(params)]
    m = [torch.zeros_like(p) for p in w]
    v = [torch.zeros_like(p) for p in w]
    for t, g in enumerate(grads, start=1):
        lr_t = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        for i, gi in enumerate(array_leaves(g)):
            gt = tensor(gi)
            m[i] = b1 * m[i] + (1 - b1) * gt
            v[i] = b2 * v[i] + (1 - b2) * gt * gt
            w[i] = w[i] - lr_t * m[i] / (torch.sqrt(v[i]) + eps)
    assert state.t == STEPS
    return leafwise("w", new, w) + leafwise("m", state.m, m) + leafwise("v", state.v, v)


OPTIMIZER_CASES: dict[str, Case] = {"SGDMomentum": case_sgd, "Adam": case_adam}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name", OPTIMIZER_CASES)
def test_optimizer_matches_classic_formula(name: str, n: int, dtype: type) -> None:
    assert_matches(OPTIMIZER_CASES[name](dtype, seeded(name, dtype, n), n), dtype,
                   OPTIMIZER_TOL)


def torch_optimizer_run(make: Callable, params: Any, grads: list,
                        before_step: Callable[[Any, int], None] = lambda opt, t: None
                        ) -> list[torch.Tensor]:
    """Run a torch.optim optimizer over the leaves of ``params`` for the given gradients."""
    w = [tensor(p, grad=True) for p in array_leaves(params)]
    opt = make(w)
    for t, g in enumerate(grads, start=1):
        for wi, gi in zip(w, array_leaves(g)):
            wi.grad = tensor(gi)
        before_step(opt, t)
        opt.step()
    return w


def test_torch_optim_sgd() -> None:
    """torch.optim.SGD keeps the buffer b = momentum * b + g and steps w -= lr * b; for a fixed
    lr that is our v / lr, so the parameters agree (not bit for bit: other rounding)."""
    lr, momentum = 0.05, 0.9
    params, grads = optimizer_problem(np.float64, np.random.default_rng(1), 4)
    new, _ = run(fnn.SGDMomentum(learning_rate=lr, momentum=momentum), params, grads)
    w = torch_optimizer_run(lambda w: torch.optim.SGD(w, lr=lr, momentum=momentum), params,
                            grads)
    assert_matches(leafwise("w", new, w), np.float64, OPTIMIZER_TOL)


@pytest.mark.parametrize("gradient_scale", [1.0, 1e-8])
def test_torch_optim_adam(gradient_scale: float) -> None:
    """Why torch.optim.Adam differs from the classic Adam: torch divides by
    sqrt(v) / sqrt(1 - b2^t) + eps, i.e. steps lr*sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) +
    eps * sqrt(1-b2^t)), while the classic form adds eps to sqrt(v) outside the bias
    correction. Setting torch's eps to eps / sqrt(1 - b2^t) before step t makes them agree;
    with its eps left at eps they differ visibly once gradients are as small as eps."""
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    params, grads = optimizer_problem(np.float64, np.random.default_rng(2), 4)
    grads = [tree.map(lambda g: g * gradient_scale, g) for g in grads]
    new, _ = run(fnn.Adam(learning_rate=lr, beta1=b1, beta2=b2, epsilon=eps), params, grads)

    def rescale_eps(opt: Any, t: int) -> None:
        opt.param_groups[0]["eps"] = eps / math.sqrt(1 - b2 ** t)

    def make(w: list) -> Any:
        return torch.optim.Adam(w, lr=lr, betas=(b1, b2), eps=eps)

    w = torch_optimizer_run(make, params, grads, rescale_eps)
    assert_matches(leafwise("w", new, w), np.float64, OPTIMIZER_TOL)
    if gradient_scale < 1e-6:
        plain = torch_optimizer_run(make, params, grads)
        assert max_abs_diff(leafwise("w", new, plain)) > 1e-3


# --- report -----------------------------------------------------------------------------------

def print_report(cases: dict[str, Case]) -> None:
    """Print the largest absolute difference of each case per dtype over all batch sizes."""
    width = max(map(len, cases)) + 2
    print(f"{'case':{width}s} {'float64':>10s} {'float32':>10s}")
    for name, case in cases.items():
        diffs = [max(max_abs_diff(case(d, seeded(name, d, n), n)) for n in SIZES)
                 for d in DTYPES]
        print(f"{name:{width}s} {diffs[0]:10.2e} {diffs[1]:10.2e}")


if __name__ == "__main__":
    print_report({**LAYER_CASES, **OPTIMIZER_CASES})
