"""Parameter initializers: pure functions ``init(key, shape, dtype=np.float64, **options)``.

Each draws from :func:`fnn.generator` of its key, in float64, and casts to ``dtype``, so a float32
model is exactly the float32 cast of the float64 model with the same key. Fans follow PyTorch:
for a shape (out, in, *kernel), fan_in = in * prod(kernel) and fan_out = out * prod(kernel).

Layers take an initializer as ``w_init`` / ``b_init`` (any callable of this signature; bind
options with ``functools.partial``); ``None`` keeps the classic U(-1/sqrt(fan), 1/sqrt(fan)) with
the layer's own fan (see docs/layers.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .core import Key, generator

__all__ = ["Initializer", "fans", "calculate_gain", "uniform", "classic_uniform",
           "kaiming_uniform", "kaiming_normal", "xavier_uniform", "xavier_normal", "orthogonal",
           "zeros", "ones", "init_param"]

Initializer = Callable[..., np.ndarray]  # (key, shape, dtype) -> array


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of ``shape`` (at least 2-D), as PyTorch computes them."""
    if len(shape) < 2:
        raise ValueError(f"fans: a weight needs at least 2 dimensions, got shape {tuple(shape)}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


_GAINS = {"linear": 1.0, "conv1d": 1.0, "conv2d": 1.0, "conv3d": 1.0, "sigmoid": 1.0,
          "identity": 1.0, "tanh": 5.0 / 3, "relu": math.sqrt(2.0), "selu": 3.0 / 4}


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for ``nonlinearity`` (PyTorch's table; leaky_relu uses slope
    ``param``, default 0.01)."""
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity not in _GAINS:
        raise ValueError(f"calculate_gain: unknown nonlinearity {nonlinearity!r}; known: "
                         f"{sorted([*_GAINS, 'leaky_relu'])}")
    return _GAINS[nonlinearity]


def _fan(shape: Sequence[int], mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    return fans(shape)[0 if mode == "fan_in" else 1]


def uniform(key: int | Key, shape: Sequence[int], dtype: Any = np.float64, *,
            low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """U(low, high)."""
    return generator(key).uniform(low, high, size=tuple(shape)).astype(dtype)


def classic_uniform(key: int | Key, shape: Sequence[int], dtype: Any = np.float64, *,
                    fan: int) -> np.ndarray:
    """U(-1/sqrt(fan), 1/sqrt(fan)): the classic homework rule (each layer names its fan)."""
    bound = 1.0 / math.sqrt(fan)
    return uniform(key, shape, dtype, low=-bound, high=bound)


def kaiming_uniform(key: int | Key, shape: Sequence[int], dtype: Any = np.float64, *,
                    a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu") -> np.ndarray:
    """U(-b, b) with b = gain * sqrt(3 / fan) (He et al.; PyTorch's kaiming_uniform_)."""
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / _fan(shape, mode))
    return uniform(key, shape, dtype, low=-bound, high=bound)


def kaiming_normal(key: int | Key, shape: Sequence[int], dtype: Any = np.float64, *,
                   a: float = 0.0, mode: str = "fan_in",
                   nonlinearity: str = "leaky_relu") -> np.ndarray:
    """N(0, std^2) with std = gain / sqrt(fan) (PyTorch's kaiming_normal_)."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(shape, mode))
    return (generator(key).standard_normal(tuple(shape)) * std).astype(dtype)


def xavier_uniform(key: int | Key, shape: Sequence[int], dtype: Any = np.float64, *,
                   gain: float = 1.0) -> np.ndarray:
    """U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out)) (Glorot and Bengio)."""
    fan_in, fan_out = fans(shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform(key, shape, dtype, low=-bound, high=bound)


def xavier_normal(key: int | Key, shape: Sequence[int], dtype: Any = np.float64, *,
                  gain: float = 1.0) -> np.ndarray:
    """N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return (generator(key).standard_normal(tuple(shape)) * std).astype(dtype)


def orthogonal(key: int | Key, shape: Sequence[int], dtype: Any = np.float64, *,
               gain: float = 1.0) -> np.ndarray:
    """A (semi-)orthogonal matrix of shape (shape[0], prod(shape[1:])) reshaped to ``shape``,
    times ``gain``: the Q of a QR decomposition of a Gaussian matrix, signs fixed by R's
    diagonal (Saxe et al.; PyTorch's orthogonal_)."""
    if len(shape) < 2:
        raise ValueError(f"orthogonal: needs at least 2 dimensions, got shape {tuple(shape)}")
    rows, cols = shape[0], math.prod(shape[1:])
    a = generator(key).standard_normal((rows, cols))
    if rows < cols:
        a = a.T
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return (gain * q).reshape(tuple(shape)).astype(dtype)


def zeros(key: int | Key, shape: Sequence[int], dtype: Any = np.float64) -> np.ndarray:
    """All zeros (the key is accepted for a uniform signature and not used)."""
    return np.zeros(tuple(shape), dtype=dtype)


def ones(key: int | Key, shape: Sequence[int], dtype: Any = np.float64) -> np.ndarray:
    """All ones (the key is accepted for a uniform signature and not used)."""
    return np.ones(tuple(shape), dtype=dtype)


def init_param(init: Initializer | None, key: int | Key, shape: Sequence[int], dtype: Any,
               fan: int) -> np.ndarray:
    """What layers call: ``init(key, shape, dtype)``, or the classic rule with ``fan`` when
    ``init`` is None."""
    if init is None:
        return classic_uniform(key, shape, dtype, fan=fan)
    out = np.asarray(init(key, tuple(shape), dtype))
    if out.shape != tuple(shape):
        raise ValueError(f"initializer {init!r} returned shape {out.shape}, expected "
                         f"{tuple(shape)}")
    return out.astype(dtype, copy=False)
