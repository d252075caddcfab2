"""The classic loop-based reference: stateful modules written the way the homework solutions are.

This is the baseline that the benchmark measures fnn against, not library code. It follows the
classic algorithms on purpose: Conv2d loops over samples and channels around
``scipy.signal.correlate2d`` (forward, input gradient with the rotated kernel, weight gradient),
SoftMax builds the Jacobian diag(y) - y y^T of every sample, MaxPool2d scatters its gradient
through four index arrays, LogSoftMax recomputes the softmax in backward, BatchNormalization
differentiates through the variance and the mean. Everything else is as direct as the homework:
np.dot for Linear, the mask product for ReLU, the classic ``sgd_momentum``.

Unlike the homework, every buffer keeps the input's dtype, so the float32 rows compare like
with like.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.signal import correlate2d


class Module:
    """Torch7 template: forward = updateOutput; backward = updateGradInput + accGradParameters."""

    def __init__(self) -> None:
        self.output: Any = None
        self.gradInput: Any = None
        self.training = True

    def forward(self, input: np.ndarray) -> np.ndarray:
        return self.updateOutput(input)

    def backward(self, input: np.ndarray, gradOutput: np.ndarray) -> np.ndarray:
        self.updateGradInput(input, gradOutput)
        self.accGradParameters(input, gradOutput)
        return self.gradInput

    def accGradParameters(self, input: np.ndarray, gradOutput: np.ndarray) -> None:
        pass

    def zeroGradParameters(self) -> None:
        for g in self.getGradParameters():
            g.fill(0)

    def getParameters(self) -> list:
        return []

    def getGradParameters(self) -> list:
        return []


class Sequential(Module):
    def __init__(self, *modules: Module) -> None:
        super().__init__()
        self.modules = list(modules)

    def updateOutput(self, input: np.ndarray) -> np.ndarray:
        self.inputs = [input]
        for m in self.modules:
            self.inputs.append(m.forward(self.inputs[-1]))
        self.output = self.inputs[-1]
        return self.output

    def backward(self, input: np.ndarray, gradOutput: np.ndarray) -> np.ndarray:
        g = gradOutput
        for m, x in zip(reversed(self.modules), reversed(self.inputs[:-1])):
            g = m.backward(x, g)
        self.gradInput = g
        return g

    def zeroGradParameters(self) -> None:
        for m in self.modules:
            m.zeroGradParameters()

    def getParameters(self) -> list:
        return [m.getParameters() for m in self.modules]

    def getGradParameters(self) -> list:
        return [m.getGradParameters() for m in self.modules]


class _Parametric(Module):
    def __init__(self, W: np.ndarray, b: np.ndarray) -> None:
        super().__init__()
        self.W, self.b = W.copy(), b.copy()
        self.gradW, self.gradb = np.zeros_like(self.W), np.zeros_like(self.b)

    def getParameters(self) -> list:
        return [self.W, self.b]

    def getGradParameters(self) -> list:
        return [self.gradW, self.gradb]


class Linear(_Parametric):
    def updateOutput(self, input):
        self.output = np.dot(input, self.W.T) + self.b
        return self.output

    def updateGradInput(self, input, gradOutput):
        self.gradInput = np.dot(gradOutput, self.W)
        return self.gradInput

    def accGradParameters(self, input, gradOutput):
        self.gradW += np.dot(gradOutput.T, input)
        self.gradb += np.sum(gradOutput, axis=0)


class ReLU(Module):
    def updateOutput(self, input):
        self.output = np.maximum(input, 0)
        return self.output

    def updateGradInput(self, input, gradOutput):
        self.gradInput = np.multiply(gradOutput, input > 0)
        return self.gradInput


class SoftMax(Module):
    def updateOutput(self, input):
        e = np.exp(input - input.max(axis=1, keepdims=True))
        self.output = e / e.sum(axis=1, keepdims=True)
        return self.output

    def updateGradInput(self, input, gradOutput):
        self.gradInput = np.zeros_like(gradOutput)
        for i, y in enumerate(self.output):  # one Jacobian per sample
            jacobian = np.diag(y) - np.outer(y, y)
            self.gradInput[i] = np.dot(gradOutput[i], jacobian)
        return self.gradInput


class LogSoftMax(Module):
    def updateOutput(self, input):
        z = input - input.max(axis=1, keepdims=True)
        self.output = z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))
        return self.output

    def updateGradInput(self, input, gradOutput):
        e = np.exp(input - input.max(axis=1, keepdims=True))
        softmax = e / e.sum(axis=1, keepdims=True)
        self.gradInput = gradOutput - np.sum(gradOutput, axis=1, keepdims=True) * softmax
        return self.gradInput


class BatchNormalization(Module):
    EPS = 1e-3

    def __init__(self, alpha: float = 0.0) -> None:
        super().__init__()
        self.alpha = alpha
        self.moving_mean = self.moving_variance = None

    def updateOutput(self, input):
        if self.moving_mean is None:
            self.moving_mean = np.zeros(input.shape[1], input.dtype)
            self.moving_variance = np.ones(input.shape[1], input.dtype)
        self.batch_mean = np.mean(input, axis=0)
        self.batch_var = np.var(input, axis=0)
        a = self.alpha
        self.moving_mean = self.moving_mean * a + self.batch_mean * (1 - a)
        self.moving_variance = self.moving_variance * a + self.batch_var * (1 - a)
        self.centered = input - self.batch_mean
        self.std = np.sqrt(self.batch_var + self.EPS)
        self.output = self.centered / self.std
        return self.output

    def updateGradInput(self, input, gradOutput):
        n = input.shape[0]
        grad_var = np.sum(gradOutput * self.centered * -0.5 * (self.batch_var + self.EPS) ** -1.5,
                          axis=0)
        grad_mean = (np.sum(-gradOutput / self.std, axis=0)
                     + grad_var * np.mean(-2.0 * self.centered, axis=0))
        self.gradInput = (gradOutput / self.std + grad_var * 2.0 * self.centered / n
                          + grad_mean / n)
        return self.gradInput


class Conv2d(_Parametric):
    def _padded(self, a: np.ndarray) -> np.ndarray:
        p = self.W.shape[2] // 2
        return np.pad(a, ((0, 0), (0, 0), (p, p), (p, p)))

    def updateOutput(self, input):
        n, _, h, w = input.shape
        out_c, in_c = self.W.shape[:2]
        xp = self._padded(input)
        self.output = np.zeros((n, out_c, h, w), input.dtype)
        for i in range(n):
            for o in range(out_c):
                acc = np.zeros((h, w), input.dtype)
                for c in range(in_c):
                    acc += correlate2d(xp[i, c], self.W[o, c], mode="valid")
                self.output[i, o] = acc + self.b[o]
        return self.output

    def updateGradInput(self, input, gradOutput):
        out_c, in_c = self.W.shape[:2]
        gp = self._padded(gradOutput)
        self.gradInput = np.zeros_like(input)
        for i in range(input.shape[0]):
            for c in range(in_c):
                for o in range(out_c):
                    self.gradInput[i, c] += correlate2d(gp[i, o], np.rot90(self.W[o, c], 2),
                                                        mode="valid")
        return self.gradInput

    def accGradParameters(self, input, gradOutput):
        out_c, in_c = self.W.shape[:2]
        xp = self._padded(input)
        for o in range(out_c):
            for c in range(in_c):
                for i in range(input.shape[0]):
                    self.gradW[o, c] += correlate2d(xp[i, c], gradOutput[i, o], mode="valid")
        self.gradb += np.sum(gradOutput, axis=(0, 2, 3))


class MaxPool2d(Module):
    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.k = kernel_size

    def updateOutput(self, input):
        n, c, h, w = input.shape
        k = self.k
        windows = input.reshape(n, c, h // k, k, w // k, k).transpose(0, 1, 2, 4, 3, 5)
        windows = windows.reshape(n, c, h // k, w // k, k * k)
        self.max_indices = windows.argmax(axis=-1)
        self.output = windows.max(axis=-1)
        return self.output

    def updateGradInput(self, input, gradOutput):
        n, c, h, w = input.shape
        k = self.k
        oh, ow = h // k, w // k
        self.gradInput = np.zeros_like(input)
        g = self.gradInput.reshape(n, c, oh, k, ow, k)
        ni = np.repeat(np.arange(n), c * oh * ow)
        ci = np.tile(np.repeat(np.arange(c), oh * ow), n)
        hi = np.tile(np.repeat(np.arange(oh), ow), n * c)
        wi = np.tile(np.arange(ow), n * c * oh)
        idx = self.max_indices.ravel()
        g[ni, ci, hi, idx // k, wi, idx % k] = gradOutput.ravel()
        return self.gradInput


class Flatten(Module):
    def updateOutput(self, input):
        self.output = input.reshape(len(input), -1)
        return self.output

    def updateGradInput(self, input, gradOutput):
        self.gradInput = gradOutput.reshape(input.shape)
        return self.gradInput


class ClassNLLCriterion:
    def forward(self, input: np.ndarray, target: np.ndarray) -> Any:
        return -np.sum(input * target) / input.shape[0]

    def backward(self, input: np.ndarray, target: np.ndarray) -> np.ndarray:
        return -target / input.shape[0]


def sgd_momentum(variables: list, gradients: list, config: dict, state: dict) -> None:
    state.setdefault("accumulated_grads", {})
    i = 0
    for layer_vars, layer_grads in zip(variables, gradients):
        for var, grad in zip(layer_vars, layer_grads):
            old = state["accumulated_grads"].setdefault(i, np.zeros_like(grad))
            np.add(config["momentum"] * old, config["learning_rate"] * grad, out=old)
            var -= old
            i += 1
