"""The plumbing of the PyTorch reference tests (tests/torch_reference/): tensors and arrays,
``versus`` (our forward/backward against torch autograd), the comparisons and their tolerances,
the seeded generators and the report that ``python tests/torch_reference/test_torch_*.py``
prints. See test_torch_layers.py for the tolerances and the differences by design."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from fnn import tree

torch = pytest.importorskip("torch")
nn = torch.nn
torch.set_num_threads(1)

DTYPES = (np.float64, np.float32)
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}
TOL = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=1.3e-6, atol=1e-6)}
OPTIMIZER_TOL = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: TOL[np.float32]}
SIZES = (2, 5, 16)  # batch sizes (BatchNorm1d needs N >= 2 in training)
# float32 atol 1e-5 (scaled by magnitude): the layers beyond the classic set
TOL_LOOSE = {np.float64: TOL[np.float64], np.float32: dict(rtol=1.3e-6, atol=1e-5)}
CLOSE_TOL = {np.float64: 1e-10, np.float32: 1e-5}  # assert_close: atol = rtol

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



def assert_close(pairs: Compared, dtype: type) -> None:
    """Each of our values (in the input dtype when an array) has torch's shape and is within
    ``CLOSE_TOL`` of it."""
    for what, ours, ref in pairs:
        ref = as_numpy(ref)
        if isinstance(ours, np.ndarray | np.generic):
            assert ours.dtype == dtype, f"{what}: our dtype is {ours.dtype}"
        assert np.shape(ours) == ref.shape, f"{what}: shape {np.shape(ours)} vs {ref.shape}"
        np.testing.assert_allclose(ours, ref, rtol=CLOSE_TOL[dtype], atol=CLOSE_TOL[dtype],
                                   err_msg=what)


def parameterless(layer: Any, ref: nn.Module, images: bool = True) -> Case:
    """A parameterless layer on inputs of standard deviation 3, of shape (N, F) or, when
    ``images``, as often (N, C, H, W)."""

    def case(dtype: type, rng: np.random.Generator, n: int) -> Compared:
        image = images and rng.random() < 0.5
        shape = (n, *dims(rng, (1, 3), (1, 4), (1, 4))) if image else (n, *dims(rng, (1, 9)))
        x = (3.0 * rng.standard_normal(shape)).astype(dtype)
        return versus(layer, (), (), x, ref, rng)[0]

    return case


def seeded(name: str, dtype: type, n: int) -> np.random.Generator:
    return np.random.default_rng([n, DTYPES.index(dtype), *name.encode()])



# --- report -----------------------------------------------------------------------------------

def print_report(cases: dict[str, Case]) -> None:
    """Print the largest absolute difference of each case per dtype over all batch sizes."""
    width = max(map(len, cases)) + 2
    print(f"{'case':{width}s} {'float64':>10s} {'float32':>10s}")
    for name, case in cases.items():
        diffs = [max(max_abs_diff(case(d, seeded(name, d, n), n)) for n in SIZES)
                 for d in DTYPES]
        print(f"{name:{width}s} {diffs[0]:10.2e} {diffs[1]:10.2e}")
