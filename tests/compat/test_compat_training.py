"""The classic training loop, unchanged, converges on toy data (an MLP with BatchNormalization
and Dropout under SGD momentum and Adam; a small CNN); the example script runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from compat_kit import sequential

from compat import (
    BatchNormalization,
    ChannelwiseScaling,
    ClassNLLCriterion,
    Conv2d,
    Dropout,
    Flatten,
    LeakyReLU,
    Linear,
    LogSoftMax,
    MaxPool2d,
    ReLU,
    adam_optimizer,
    sgd_momentum,
)

ROOT = Path(__file__).resolve().parents[2]


def get_batches(dataset, batch_size):
    """The classic notebooks' batch generator (global RNG; the last batch is smaller)."""
    X, Y = dataset
    indices = np.arange(X.shape[0])
    np.random.shuffle(indices)
    for start in range(0, X.shape[0], batch_size):
        idx = indices[start:start + batch_size]
        yield X[idx], Y[idx]


def train(net, criterion, optimizer, config, X, Y, epochs, batch_size):
    """The classic loop; returns the mean loss of each epoch."""
    state: dict = {}
    history = []
    for _ in range(epochs):
        losses = []
        for x_batch, y_batch in get_batches((X, Y), batch_size):
            net.zeroGradParameters()
            predictions = net.forward(x_batch)
            losses.append(criterion.forward(predictions, y_batch))
            dp = criterion.backward(predictions, y_batch)
            net.backward(x_batch, dp)
            optimizer(net.getParameters(), net.getGradParameters(), config, state)
        history.append(np.mean(losses))
    return history


def blobs(n=250):
    """Three Gaussian blobs in 2-D, one-hot targets."""
    centers = np.array([[0.0, 2.0], [2.0, -1.0], [-2.0, -1.0]])
    labels = np.random.randint(0, 3, n)
    return centers[labels] + 0.5 * np.random.randn(n, 2), np.eye(3)[labels]


@pytest.mark.parametrize("optimizer, config", [
    (sgd_momentum, {"learning_rate": 0.05, "momentum": 0.9}),
    (adam_optimizer, {"learning_rate": 0.01, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8})])
def test_mlp_training_loop_converges(optimizer, config):
    np.random.seed(0)
    X, Y = blobs()
    net = sequential(Linear(2, 16), BatchNormalization(0.9), ChannelwiseScaling(16),
                     LeakyReLU(), Dropout(0.1), Linear(16, 3), LogSoftMax())
    history = train(net, ClassNLLCriterion(), optimizer, config, X, Y, epochs=15,
                    batch_size=32)  # 250 = 7 * 32 + 26: a smaller last batch
    assert history[-1] < 0.3 * history[0]
    net.evaluate()
    X_test, Y_test = blobs(200)
    assert np.mean(net.forward(X_test).argmax(1) == Y_test.argmax(1)) > 0.95


def test_cnn_training_loop_converges():
    np.random.seed(1)
    n = 120
    labels = np.random.randint(0, 2, n)  # a horizontal or a vertical bar in noise
    X = 0.3 * np.random.randn(n, 1, 6, 6)
    pos = np.random.randint(0, 6, n)
    for i in range(n):
        if labels[i]:
            X[i, 0, :, pos[i]] += 1
        else:
            X[i, 0, pos[i], :] += 1
    net = sequential(Conv2d(1, 4, 3), ReLU(), MaxPool2d(2), Flatten(), Linear(36, 2),
                     LogSoftMax())
    history = train(net, ClassNLLCriterion(), sgd_momentum,
                    {"learning_rate": 0.05, "momentum": 0.9}, X, np.eye(2)[labels],
                    epochs=15, batch_size=16)
    assert history[-1] < 0.2 * history[0]


def test_example_script_runs():
    pytest.importorskip("sklearn")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT),
                                                                     os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "classic_api.py"),
                             "--epochs", "2"], capture_output=True, text=True, env=env,
                            timeout=120, check=True)
    accuracy = float(result.stdout.split("test accuracy:")[1].split()[0])
    assert accuracy > 0.8, result.stdout
    assert "last batch of 30" in result.stdout
