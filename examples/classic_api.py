"""The classic training loop, written against the classic homework API, on the 8x8 digits.

Code written for the Torch7-style homework modules runs unchanged on ``compat``: only the import
line differs. Per batch: zeroGradParameters -> forward -> criterion forward/backward ->
backward -> sgd_momentum(getParameters(), getGradParameters(), config, state); the last batch
of each epoch is smaller. Prints the network, the loss per epoch and the test accuracy.

    python examples/classic_api.py [--epochs 15] [--batch-size 32] [--seed 0]

Needs scikit-learn for the data (``pip install "fnn[demo]"``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from compat import (
    BatchNormalization,
    ChannelwiseScaling,
    ClassNLLCriterion,
    Dropout,
    Linear,
    LogSoftMax,
    ReLU,
    Sequential,
    sgd_momentum,
)
from fnn.data import batches, load_digits, one_hot, train_test_split


def build_net() -> Sequential:
    net = Sequential()
    net.add(Linear(64, 128))
    net.add(BatchNormalization(alpha=0.9))
    net.add(ChannelwiseScaling(128))
    net.add(ReLU())
    net.add(Dropout(0.2))
    net.add(Linear(128, 10))
    net.add(LogSoftMax())
    return net


def main(epochs: int = 15, batch_size: int = 32, seed: int = 0) -> float:
    np.random.seed(seed)  # the classic modules draw their weights and masks from it
    x, labels = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(x, labels, 0.2, key=seed)
    t_train = one_hot(y_train, 10)
    print(f"{len(x_train)} training samples, {len(x_test)} test samples; last batch of "
          f"{len(x_train) % batch_size or batch_size}")

    net = build_net()
    criterion = ClassNLLCriterion()
    optimizer_config = {"learning_rate": 0.05, "momentum": 0.9}
    optimizer_state: dict = {}
    print(net)

    start = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        losses = []
        for x_batch, y_batch in batches(x_train, t_train, batch_size, key=seed * 1000 + epoch):
            net.zeroGradParameters()
            predictions = net.forward(x_batch)
            loss = criterion.forward(predictions, y_batch)
            dp = criterion.backward(predictions, y_batch)
            net.backward(x_batch, dp)
            sgd_momentum(net.getParameters(), net.getGradParameters(), optimizer_config,
                         optimizer_state)
            losses.append(loss)
        print(f"epoch {epoch + 1:2d}: mean training loss {np.mean(losses):.4f}")

    net.evaluate()
    accuracy = float(np.mean(net.forward(x_test).argmax(axis=1) == y_test))
    print(f"test accuracy: {accuracy:.4f} ({time.perf_counter() - start:.1f} s of training)")
    return accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.epochs, args.batch_size, args.seed)
