"""The benchmark workloads and, for each, one callable per implementation.

A workload is a network (W1, W2: a training step) or a single layer (W3: forward + backward
with a fixed output gradient). Every implementation starts from the same float64 weights (fnn's
``init``), cast to the dtype under test, and sees the same inputs:

- ``fnn``: the functional API (``Sequential``, ``ClassNLLCriterion``, ``SGDMomentum``);
- ``compat``: the classic stateful API computed by fnn (``zeroGradParameters``, ``forward``,
  ``backward``, ``sgd_momentum``);
- ``torch``: PyTorch CPU modules with autograd and ``torch.optim.SGD`` (same thread count);
- ``classic``: the loop-based homework-style modules of ``classic.py``.

A callable returns the step's loss (W1, W2) or the input gradient (W3), so that the first calls
double as the numerics check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import classic
import numpy as np

import fnn

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the `bench` extra is not installed
    torch = None

try:
    import compat
except ImportError:  # compat not available: its columns stay empty
    compat = None

LEARNING_RATE, MOMENTUM = 0.01, 0.9
BN_ALPHA = 0.9  # fnn/classic weight of the old statistic; torch momentum = 1 - alpha
SEED = 0

# A layer is a tuple (kind, *hyperparameters); the same list builds every implementation.
MLP = [("linear", 784, 512), ("relu",), ("linear", 512, 256), ("relu",), ("linear", 256, 10),
       ("logsoftmax",)]
CNN = [("conv", 1, 16, 3), ("relu",), ("maxpool", 2), ("conv", 16, 32, 3), ("relu",),
       ("maxpool", 2), ("flatten",), ("linear", 1568, 10), ("logsoftmax",)]

FNN_LAYERS: dict[str, Callable[..., Any]] = {
    "linear": fnn.Linear, "conv": fnn.Conv2d, "relu": fnn.ReLU, "maxpool": fnn.MaxPool2d,
    "flatten": fnn.Flatten, "logsoftmax": fnn.LogSoftMax, "softmax": fnn.SoftMax,
    "batchnorm": lambda n: fnn.BatchNormalization(n, alpha=BN_ALPHA)}
PARAMETRIC = {"linear", "conv"}


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # "step" (loss of a training step) or "kernel" (input gradient of one layer)
    layers: list
    x_shape: tuple
    flops: float  # matrix-product FLOPs of the work (what a lower bound must do)
    traffic: float  # arrays' elements that must be read or written at least once

    def data(self, dtype: type) -> dict[str, np.ndarray]:
        """Inputs, one-hot targets (steps) or an output gradient (kernels), weights (float64)."""
        rng = np.random.default_rng(SEED)
        net = fnn.Sequential([FNN_LAYERS[kind](*args) for kind, *args in self.layers])
        params, _ = net.init(SEED)
        d = {"x": rng.standard_normal(self.x_shape).astype(dtype), "params": params}
        y_shape = np.shape(net.forward(fnn.tree.cast(params, dtype), net.init(SEED)[1],
                                       d["x"])[0])
        if self.kind == "step":
            d["labels"] = rng.integers(0, y_shape[1], size=y_shape[0])
            d["target"] = np.eye(y_shape[1], dtype=dtype)[d["labels"]]
        else:
            d["dy"] = rng.standard_normal(y_shape).astype(dtype)
        return d


def _conv_flops(n: int, hw: int, c_in: int, c_out: int, k: int) -> float:
    return 2.0 * n * hw * c_out * c_in * k * k


def _mlp_flops(n: int) -> float:
    sizes = [(784, 512), (512, 256), (256, 10)]
    fwd = sum(2.0 * n * a * b for a, b in sizes)
    return 2 * fwd + sum(2.0 * n * a * b for a, b in sizes[1:])  # forward, dW, dx (not input)


def _cnn_flops(n: int) -> float:
    conv1, conv2 = _conv_flops(n, 784, 1, 16, 3), _conv_flops(n, 196, 16, 32, 3)
    linear = 2.0 * n * 1568 * 10
    return 2 * (conv1 + conv2 + linear) + conv2 + linear


WORKLOADS = {
    "W1 MLP step": Workload("W1 MLP step", "step", MLP, (128, 784), _mlp_flops(128), 0),
    "W2 CNN step": Workload("W2 CNN step", "step", CNN, (64, 1, 28, 28), _cnn_flops(64), 0),
    "W3 conv": Workload("W3 conv", "kernel", [("conv", 16, 32, 3)], (64, 16, 32, 32),
                        3 * _conv_flops(64, 1024, 16, 32, 3), 0),
    # softmax / batchnorm: read x, write y; read y (or xhat) and dy, write dx
    "W3 softmax": Workload("W3 softmax", "kernel", [("softmax",)], (512, 1000), 0, 5 * 512e3),
    "W3 batchnorm": Workload("W3 batchnorm", "kernel", [("batchnorm", 1024)], (512, 1024), 0,
                             5 * 512 * 1024),
    # maxpool: read x, write dx; write y, read dy (a quarter of x each)
    "W3 maxpool": Workload("W3 maxpool", "kernel", [("maxpool", 2)], (64, 32, 32, 32), 0,
                           2.5 * 64 * 32 * 32 * 32),
}


def _weights(d: dict, dtype: type) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W, b) of each parametric layer, in order, cast to ``dtype``."""
    return [(p.W.astype(dtype), p.b.astype(dtype)) for p in d["params"] if p != ()]


# --- fnn -------------------------------------------------------------------------------------

def build_fnn(w: Workload, d: dict, dtype: type) -> Callable[[], Any]:
    net = fnn.Sequential([FNN_LAYERS[kind](*args) for kind, *args in w.layers])
    params0, state0 = net.init(SEED)
    params = fnn.tree.cast(params0, dtype)
    state = fnn.tree.cast(state0, dtype)
    x = d["x"]
    if w.kind == "kernel":
        dy = d["dy"]

        def kernel() -> np.ndarray:
            _, cache = net.forward(params, state, x)
            return net.backward(params, cache, dy)[0]

        return kernel
    crit, opt, t = fnn.ClassNLLCriterion(), fnn.SGDMomentum(LEARNING_RATE, MOMENTUM), d["target"]
    s = {"params": params, "state": state, "opt": opt.init(params)}

    def step() -> float:
        # fnn's training step: no input gradient for the first layer (backward_params), the new
        # params written into the step's own gradient arrays (donated to the update)
        s["params"], s["state"], s["opt"], loss, _ = fnn.train.train_step(
            net, crit, opt, s["params"], s["state"], s["opt"], x, t)
        return float(loss)

    return step


# --- the two stateful APIs (compat and classic) ----------------------------------------------

def _stateful_layer(api: Any, kind: str, args: tuple, weights: list) -> Any:
    """One module of ``api`` (compat or classic: the same class names)."""
    if kind in PARAMETRIC:
        W, b = weights.pop(0)
        cls = api.Linear if kind == "linear" else api.Conv2d
        if api is classic:
            return cls(W, b)
        m = cls(*args)
        m.W, m.b = W.copy(), b.copy()
        m.gradW, m.gradb = np.zeros_like(m.W), np.zeros_like(m.b)  # accumulate in dtype
        return m
    return {"relu": api.ReLU, "maxpool": api.MaxPool2d, "flatten": api.Flatten,
            "logsoftmax": api.LogSoftMax, "softmax": api.SoftMax,
            "batchnorm": lambda n: api.BatchNormalization(BN_ALPHA)}[kind](*args)


def build_stateful(api: Any, w: Workload, d: dict, dtype: type) -> Callable[[], Any]:
    weights = _weights(d, dtype)
    modules = [_stateful_layer(api, kind, tuple(args), weights) for kind, *args in w.layers]
    if api is classic:
        net = classic.Sequential(*modules)
    else:
        net = api.Sequential()
        for m in modules:
            net.add(m)
    x = d["x"]
    if w.kind == "kernel":
        dy = d["dy"]

        def kernel() -> np.ndarray:
            net.zeroGradParameters()
            net.forward(x)
            return net.backward(x, dy)

        return kernel
    crit, t = api.ClassNLLCriterion(), d["target"]
    config, opt_state = {"learning_rate": LEARNING_RATE, "momentum": MOMENTUM}, {}

    def step() -> float:
        net.zeroGradParameters()
        out = net.forward(x)
        loss = crit.forward(out, t)
        net.backward(x, crit.backward(out, t))
        api.sgd_momentum(net.getParameters(), net.getGradParameters(), config, opt_state)
        return float(loss)

    return step


# --- PyTorch ---------------------------------------------------------------------------------

def _torch_layer(kind: str, args: tuple, weights: list, tdtype: Any) -> Any:
    nn = torch.nn
    if kind in PARAMETRIC:
        m = (nn.Linear(*args, dtype=tdtype) if kind == "linear"
             else nn.Conv2d(*args, padding=args[2] // 2, dtype=tdtype))
        W, b = weights.pop(0)
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(W))
            m.bias.copy_(torch.from_numpy(b))
        return m
    return {"relu": lambda: nn.ReLU(), "maxpool": lambda: nn.MaxPool2d(*args),
            "flatten": lambda: nn.Flatten(), "logsoftmax": lambda: nn.LogSoftmax(dim=1),
            "softmax": lambda: nn.Softmax(dim=1),
            "batchnorm": lambda: nn.BatchNorm1d(args[0], eps=fnn.BatchNormalization.EPS,
                                                momentum=1 - BN_ALPHA, affine=False),
            }[kind]()


def build_torch(w: Workload, d: dict, dtype: type) -> Callable[[], Any]:
    tdtype = {np.float32: torch.float32, np.float64: torch.float64}[dtype]
    weights = _weights(d, dtype)
    model = torch.nn.Sequential(*[_torch_layer(kind, tuple(args), weights, tdtype)
                                  for kind, *args in w.layers]).to(tdtype)
    x = torch.tensor(d["x"])
    if w.kind == "kernel":
        dy = torch.tensor(d["dy"])

        def kernel() -> Any:
            model.zero_grad(set_to_none=True)
            xg = x.detach().requires_grad_()
            model(xg).backward(dy)
            return xg.grad

        return kernel
    labels = torch.tensor(d["labels"])
    opt = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = F.nll_loss(model(x), labels)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def implementations() -> list[str]:
    """The implementations available here, in table order."""
    return ["fnn"] + (["compat"] if compat is not None else []) + (
        ["torch"] if torch is not None else []) + ["classic"]


def build(impl: str, w: Workload, d: dict, dtype: type) -> Callable[[], Any]:
    if impl == "fnn":
        return build_fnn(w, d, dtype)
    if impl == "torch":
        return build_torch(w, d, dtype)
    return build_stateful(compat if impl == "compat" else classic, w, d, dtype)


def as_numpy(value: Any) -> Any:
    """A loss (float) or a gradient (numpy array or torch tensor) as numpy, for comparison."""
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach().numpy()
    return value
