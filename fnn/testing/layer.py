""":func:`check_layer`: every generic check on a layer, with inputs it draws itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import tree
from ..activations import ELU, LeakyReLU, ReLU
from ..core import Key, generator, split_key
from ..pooling import MaxPool1d, MaxPool2d
from ..sequential import Residual, Sequential
from .checks import (
    check_backward_params,
    check_batch_consistency,
    check_dtypes,
    check_gradients,
    check_init_shapes,
    check_modes,
    check_purity,
    check_shapes,
)

__all__ = ["check_layer", "kink_distance", "eval_state", "input_array", "unique_values",
           "AWAY_FROM_KINKS", "KINK_MARGIN"]

AWAY_FROM_KINKS = (0.05, 3.0)
"""Inputs are drawn with |value| in this range: away from the kinks at 0 of ReLU & co."""

KINK_MARGIN = 1e-5
"""The gradient check needs inputs farther than this from a kink (its step is 1e-6)."""


def unique_values(ints: np.ndarray) -> np.ndarray:
    """Distinct float64 values from integers in [-1000, 1000] of any shape:
    (ints * size + position) / (250 * size), one-to-one, so at least 1/(250 * size) apart and
    within about [-4, 4] (max pooling: the finite-difference step must not cross a tie)."""
    size = ints.size
    return (ints * size + np.arange(size).reshape(ints.shape)) / (250.0 * size)


def input_array(key: int | Key, shape: Sequence[int], *, unique: bool = False) -> np.ndarray:
    """A float64 input of ``shape`` drawn from ``key``: values with |x| uniform in
    :data:`AWAY_FROM_KINKS` and a random sign, or with ``unique`` :func:`unique_values` of
    integers uniform in [-1000, 1000]."""
    rng = generator(key)
    shape = tuple(shape)
    if unique:
        return unique_values(rng.integers(-1000, 1001, shape))
    return rng.uniform(*AWAY_FROM_KINKS, shape) * rng.choice((-1.0, 1.0), shape)


def eval_state(layer: Any, params: Any, state: Any, x: np.ndarray) -> Any:
    """The state after one training forward on ``x``, in evaluation mode: running statistics
    that are not their initial values."""
    return tree.eval_mode(layer.forward(params, state, x)[1].state)


def kink_distance(layer: Any, params: Any, state: Any, x: np.ndarray) -> float:
    """How far the inputs of the non-differentiable layers inside ``layer`` are from a kink:
    min |input| for ReLU, LeakyReLU and ELU with alpha != 1, the smallest gap between the two
    largest values of a window for MaxPool1d and MaxPool2d,
    ``layer.kink_distance(params, state, x)`` for a layer of your own that defines it, inf
    otherwise; a Sequential is followed child by child,
    a Residual into its inner layer. A finite-difference check with step eps means something
    only where this is well above eps."""
    if isinstance(layer, Sequential):
        distance = np.inf
        for child, p, s in zip(layer.layers, params, state):
            distance = min(distance, kink_distance(child, p, s, x))
            x = child.forward(p, s, x)[0]
        return distance
    if isinstance(layer, Residual):
        return kink_distance(layer.layer, params, state, x)
    if isinstance(layer, (ReLU, LeakyReLU)) or (isinstance(layer, ELU) and layer.alpha != 1.0):
        return float(np.abs(x).min(initial=np.inf))
    if isinstance(layer, (MaxPool1d, MaxPool2d)):
        return _pool_gap(layer, x)
    own = getattr(layer, "kink_distance", None)
    return float(own(params, state, x)) if callable(own) else np.inf


def _pool_gap(layer: MaxPool1d | MaxPool2d, x: np.ndarray) -> float:
    """The smallest gap between the two largest values of a window (inf for 1x1 windows)."""
    if layer.window().kernel in ((1,), (1, 1)):
        return np.inf
    x = x if x.ndim == 4 else x[:, :, None, :]
    window = layer.window().as_2d()
    k, s, p = window.kernel, window.stride, window.padding
    n, c, h, w = (*x.shape[:2], *window.out_sizes(x.shape[2:]))
    xpad = np.pad(x, ((0, 0), (0, 0), (p[0],) * 2, (p[1],) * 2), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(xpad, k, axis=(2, 3))
    windows = windows[:, :, ::s[0], ::s[1]][:, :, :h, :w]
    top = np.sort(windows.reshape(n, c, h, w, k[0] * k[1]), axis=-1)
    return float((top[..., -1] - top[..., -2]).min(initial=np.inf))


def _input_shape(input_shape: Any) -> tuple[int, ...]:
    shape = tuple(input_shape) if isinstance(input_shape, Sequence) else None
    if not shape or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool)
                            and d > 0 for d in shape):
        raise ValueError(f"check_layer: input_shape must be a non-empty tuple of positive "
                         f"ints, batch axis first, e.g. (4, 3), got {input_shape!r}")
    return tuple(int(d) for d in shape)


def check_layer(layer: Any, input_shape: Sequence[int], *, key: int | Key = 0,
                mode: str = "train", batch_coupled: bool = False, unique_values: bool = False,
                max_draws: int = 20, rtol: float = 1e-5, atol: float = 1e-7) -> dict[str, Any]:
    """Run on ``layer`` every generic check the project runs on its built-in layers.

    Inputs:
    - layer: any object with ``init``, ``forward``, ``backward``, ``output_shape`` and (with
      params) ``param_shapes``, e.g. a subclass of ``fnn.Layer``;
    - input_shape: the shape of x, batch axis first, e.g. (4, 3); N >= 2 for the batch check;
    - key: the seed of everything drawn (params, inputs, dy);
    - mode: ``"train"`` (the state ``init`` returns) or ``"eval"`` (the state after one
      training forward on another input, then ``fnn.eval_mode``);
    - batch_coupled: True when the samples of a batch affect each other's outputs (batch
      statistics, a random mask drawn for the whole batch): skips the batch check;
    - unique_values: draw distinct input values (layers with ties, such as max pooling);
      otherwise |x| is in [0.05, 3], away from the kinks at 0;
    - max_draws: inputs drawn until one is farther than 1e-5 from every kink
      (:func:`kink_distance`); rtol, atol: of the gradient check.

    Runs, in order: :func:`check_init_shapes` and :func:`check_modes` on ``init``'s result,
    then on x in float64: :func:`check_shapes` (against ``layer.output_shape``),
    :func:`check_purity`, :func:`check_dtypes`, :func:`check_batch_consistency` (unless
    ``batch_coupled`` or N = 1), :func:`check_backward_params` and :func:`check_gradients`.

    Returns: ``{"checks": names of the checks run, "gradients": the largest absolute error per
    array}``; raises AssertionError naming the layer and the failed check.
    """
    shape = _input_shape(input_shape)
    if mode not in ("train", "eval"):
        raise ValueError(f"check_layer: mode must be 'train' or 'eval', got {mode!r}")
    k_init, k_warm, k_x = split_key(key, 3)
    params, state = layer.init(k_init)
    check_init_shapes(layer, params, state)
    check_modes(layer, k_init)
    params, state = tree.cast(params, np.float64), tree.cast(state, np.float64)
    if mode == "eval":
        state = eval_state(layer, params, state, input_array(k_warm, shape, unique=unique_values))
    for k in split_key(k_x, max_draws):
        x = input_array(k, shape, unique=unique_values)
        if kink_distance(layer, params, state, x) > KINK_MARGIN:
            break
    else:
        raise ValueError(f"check_layer: none of {max_draws} inputs of shape {shape} is farther "
                         f"than {KINK_MARGIN} from a kink of {layer!r}; raise max_draws")
    checks = ["init_shapes", "modes", "shapes", "purity", "dtypes"]
    check_shapes(layer, params, state, x)
    check_purity(layer, params, state, x)
    check_dtypes(layer, params, state, x)
    if not batch_coupled and shape[0] >= 2:
        check_batch_consistency(layer, params, state, x)
        checks.append("batch_consistency")
    check_backward_params(layer, params, state, x)
    gradients = check_gradients(layer, params, state, x, rtol=rtol, atol=atol)
    return {"checks": [*checks, "backward_params", "gradients"], "gradients": gradients}
