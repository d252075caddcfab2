"""The built-in classic layers. Each is an :class:`~compat.wrap.FnnModule` over one fnn layer;
the formulas, shapes and errors are fnn's (see docs/layers.md), the state is the classic one."""

from __future__ import annotations

from typing import Any

import numpy as np

import fnn
from fnn.conv import ConvParams
from fnn.dropout import DropoutState
from fnn.linear import LinearParams, ScalingParams
from fnn.normalization import BatchNormState

from .wrap import FnnModule, uniform_fan

__all__ = ["Linear", "SoftMax", "LogSoftMax", "BatchNormalization", "ChannelwiseScaling",
           "Dropout", "ReLU", "LeakyReLU", "ELU", "SoftPlus", "Conv2d", "MaxPool2d", "Flatten"]


class Linear(FnnModule):
    """output = input @ W.T + b; input (N, n_in), W (n_out, n_in), b (n_out,) (fnn.Linear).

    Init from the global RNG: W then b, U(+-1/sqrt(n_in)). Gradients gradW, gradb.
    """

    _fnn, _record = fnn.Linear, LinearParams
    _param_names, _grad_names = ("W", "b"), ("gradW", "gradb")

    def __init__(self, n_in: int, n_out: int) -> None:
        fnn.Linear(n_in, n_out)  # invalid sizes raise before the RNG is drawn
        W, b = uniform_fan(n_in, (n_out, n_in), (n_out,))
        super().__init__(W=W, b=b)

    def _spec_key(self, x: Any) -> tuple:
        return self.W.shape[1], self.W.shape[0]

    def __repr__(self) -> str:
        n_in, n_out = self._spec_key(None)
        return f"Linear {n_in} -> {n_out}"


class ChannelwiseScaling(FnnModule):
    """output = input * gamma + beta per feature; input (N, n_out) (fnn.ChannelwiseScaling).

    Init from the global RNG: gamma then beta, U(+-1/sqrt(n_out)). Gradients gradGamma, gradBeta.
    """

    _fnn, _record = fnn.ChannelwiseScaling, ScalingParams
    _param_names, _grad_names = ("gamma", "beta"), ("gradGamma", "gradBeta")

    def __init__(self, n_out: int) -> None:
        fnn.ChannelwiseScaling(n_out)
        gamma, beta = uniform_fan(n_out, (n_out,), (n_out,))
        super().__init__(gamma=gamma, beta=beta)

    def _spec_key(self, x: Any) -> tuple:
        return (self.gamma.shape[0],)


class Conv2d(FnnModule):
    """Cross-correlation with zero "same" padding, stride 1; input (N, in, H, W) -> (N, out, H, W),
    W (out, in, k, k) with odd k, b (out,) (fnn.Conv2d). The spec follows W's shape.

    Init from the global RNG: W then b, U(+-1/sqrt(in_channels)). Gradients gradW, gradb.
    """

    _fnn, _record = fnn.Conv2d, ConvParams
    _param_names, _grad_names = ("W", "b"), ("gradW", "gradb")

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        fnn.Conv2d(in_channels, out_channels, kernel_size, padding=0)  # checks the sizes
        if kernel_size % 2 == 0:  # fnn's message would suggest a padding compat does not take
            raise ValueError(f"Conv2d: kernel_size must be odd (the output keeps the input's "
                             f"size: k // 2 zeros on each side), got {kernel_size!r}")
        k = kernel_size
        W, b = uniform_fan(in_channels, (out_channels, in_channels, k, k), (out_channels,))
        super().__init__(W=W, b=b, in_channels=in_channels, out_channels=out_channels,
                         kernel_size=kernel_size)

    def _spec_key(self, x: Any) -> tuple:
        return self.W.shape[1], self.W.shape[0], self.W.shape[2]

    def __repr__(self) -> str:
        return f"Conv2d {self.W.shape[1]} -> {self.W.shape[0]}"


class BatchNormalization(FnnModule):
    """output = (input - mean) / sqrt(var + EPS) per feature, EPS = 1e-3 (fnn.BatchNormalization).

    Training: batch mean and biased batch variance; moving = alpha * moving + (1 - alpha) * batch
    (alpha weights the OLD statistic). Evaluation: moving_mean and moving_variance. The
    statistics are created (zeros, ones) on the first forward unless assigned before.
    """

    EPS = fnn.BatchNormalization.EPS
    _fnn, _statistics = fnn.BatchNormalization, ("moving_mean", "moving_variance")

    def __init__(self, alpha: float = 0.0) -> None:
        super().__init__(alpha=alpha, moving_mean=None, moving_variance=None)

    def _spec_key(self, x: Any) -> tuple:
        if x is not None and np.ndim(x) != 2:
            raise ValueError(f"{self!r}: expected input of shape (N, features), got shape "
                             f"{np.shape(x)}; flatten images first (Flatten()) or use "
                             f"fnn.BatchNorm2d for per-channel statistics of (N, C, H, W)")
        if self.moving_mean is not None:
            n = np.shape(self.moving_mean)[0]
        else:  # lazily, from the input; fnn reports a wrong shape
            n = np.shape(x)[-1] if np.ndim(x) else 1
        return n, self.alpha, self.EPS

    def _make_spec(self, key: tuple) -> Any:
        n, alpha, eps = key
        return self._fnn(n_features=n, alpha=alpha, eps=eps)

    def _state(self, spec: Any) -> BatchNormState:
        n, mean, var = spec.n_features, self.moving_mean, self.moving_variance
        return BatchNormState(training=bool(self.training),
                              moving_mean=np.zeros(n) if mean is None else np.asarray(mean),
                              moving_variance=np.ones(n) if var is None else np.asarray(var))

    def _commit(self, state: BatchNormState) -> None:
        self.moving_mean, self.moving_variance = state.moving_mean, state.moving_variance


_EVAL_KEY = fnn.Key(0)  # unused in evaluation mode


class _OneHyperparameter(FnnModule):
    """A layer with one hyperparameter, shown as ``Name(hyper=value)``."""

    def __repr__(self) -> str:
        (name,) = self._hyper
        return f"{self._fnn.__name__}({name}={getattr(self, name)})"


class Dropout(_OneHyperparameter):
    """Training: zero each element with probability p (the DROP probability) and scale the
    rest by 1 / (1 - p); backward uses the forward's mask. Evaluation: identity (fnn.Dropout).

    Each training forward seeds its mask with one draw from the global numpy RNG, so
    ``np.random.seed`` reproduces a run.
    """

    _fnn, _hyper = fnn.Dropout, ("p",)
    _recomputable = False  # the mask is drawn: keep the last one until a forward succeeds

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p=p)

    def _state(self, spec: Any) -> DropoutState:
        if not self.training:
            return DropoutState(training=False, key=_EVAL_KEY)
        return DropoutState(training=True, key=fnn.Key(int(np.random.randint(2**63))))

    def _cache_for(self, input: Any) -> Any:
        # As the classic module, backward uses the last forward's mask.
        return self._cache if self._cache is not None else super()._cache_for(input)


class ReLU(FnnModule):
    """output = max(input, 0); any shape (fnn.ReLU)."""

    _fnn = fnn.ReLU


class LeakyReLU(_OneHyperparameter):
    """output = input if input > 0 else slope * input; any shape (fnn.LeakyReLU)."""

    _fnn, _hyper = fnn.LeakyReLU, ("slope",)

    def __init__(self, slope: float = 0.03) -> None:
        super().__init__(slope=slope)


class ELU(_OneHyperparameter):
    """output = input if input > 0 else alpha * (exp(input) - 1); any shape (fnn.ELU)."""

    _fnn, _hyper = fnn.ELU, ("alpha",)

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__(alpha=alpha)


class SoftPlus(FnnModule):
    """output = log(1 + exp(input)), computed stably; any shape (fnn.SoftPlus)."""

    _fnn = fnn.SoftPlus


class SoftMax(FnnModule):
    """output_ij = exp(x_ij) / sum_k exp(x_ik) over the last axis of (N, C) (fnn.SoftMax)."""

    _fnn = fnn.SoftMax


class LogSoftMax(FnnModule):
    """output_ij = x_ij - log sum_k exp(x_ik) over the last axis of (N, C) (fnn.LogSoftMax)."""

    _fnn = fnn.LogSoftMax


class MaxPool2d(FnnModule):
    """Max over k x k windows with stride k: (N, C, H, W) -> (N, C, H/k, W/k); the gradient
    goes to each window's maximum (fnn.MaxPool2d)."""

    _fnn, _hyper = fnn.MaxPool2d, ("kernel_size",)

    def __init__(self, kernel_size: int) -> None:
        super().__init__(kernel_size=kernel_size)

    def __repr__(self) -> str:
        return f"MaxPool2d, kern {self.kernel_size}, stride {self.kernel_size}"


class Flatten(FnnModule):
    """output = input.reshape(N, -1); gradInput = gradOutput.reshape(input.shape) (fnn.Flatten)."""

    _fnn = fnn.Flatten
