"""Functional-API research script: an MLP and a small CNN on the 8x8 digits, loop written out.

    python examples/functional_digits.py [EPOCHS]    # needs the demo extra (scikit-learn)

Everything is explicit: one seed splits into the keys of the data split, the init and the batch
order; params, layer state (BatchNorm statistics, Dropout keys) and optimizer state are values
that each step returns anew. Change a layer, the optimizer or the loop and run again.
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import fnn
from fnn.data import batches, load_digits, one_hot, train_test_split


def mlp() -> fnn.Sequential:
    return fnn.Sequential([
        fnn.Linear(64, 128), fnn.BatchNormalization(128, alpha=0.9), fnn.ChannelwiseScaling(128),
        fnn.ReLU(), fnn.Dropout(p=0.2),
        fnn.Linear(128, 10), fnn.LogSoftMax(),
    ])


def cnn() -> fnn.Sequential:
    return fnn.Sequential([
        fnn.Conv2d(1, 8, kernel_size=3), fnn.ReLU(), fnn.MaxPool2d(2),   # (N, 8, 4, 4)
        fnn.Conv2d(8, 16, kernel_size=3), fnn.ReLU(), fnn.MaxPool2d(2),  # (N, 16, 2, 2)
        fnn.Flatten(),                                                     # (N, 64)
        fnn.BatchNormalization(64, alpha=0.9), fnn.ChannelwiseScaling(64), fnn.Dropout(p=0.2),
        fnn.Linear(64, 10), fnn.LogSoftMax(),
    ])


def run(name: str, net: fnn.Sequential, images: bool, epochs: int, seed: int = 0) -> tuple:
    x, labels = load_digits(np.float32, images=images)
    k_split, k_init, k_order = fnn.split_key(seed, 3)
    x_train, x_test, y_train, y_test = train_test_split(x, labels, 0.2, key=k_split)
    params, state = fnn.tree.cast(net.init(k_init), np.float32)
    crit, opt = fnn.ClassNLLCriterion(), fnn.Adam(learning_rate=2e-3)
    opt_state = opt.init(params)

    start = time.perf_counter()
    for epoch_key in fnn.split_key(k_order, epochs):
        for xb, yb in batches(x_train, y_train, 32, key=epoch_key):
            y, cache = net.forward(params, state, xb)
            loss, lcache = crit.forward(y, one_hot(yb, 10, y.dtype))
            _, grads = net.backward(params, cache, crit.backward(lcache))
            params, opt_state = opt.update(params, grads, opt_state)
            state = cache.state

    y_test_hat, _ = net.forward(params, fnn.eval_mode(state), x_test)
    accuracy = np.mean(y_test_hat.argmax(axis=1) == y_test)
    print(f"{name}: test accuracy {accuracy:.4f}, last batch loss {float(loss):.4f} "
          f"({epochs} epochs, {time.perf_counter() - start:.1f} s)")
    return params, state, opt_state, opt, x_test, y_test_hat


if __name__ == "__main__":
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    run("mlp", mlp(), images=False, epochs=epochs)
    net = cnn()
    params, state, opt_state, opt, x_test, y_test_hat = run("cnn", net, images=True,
                                                            epochs=epochs)

    # Save everything (no pickle), load it back, and check it predicts the same.
    with tempfile.TemporaryDirectory() as tmp:
        path = fnn.save(Path(tmp) / "cnn.npz", params, state, opt_state, model=net,
                        optimizer=opt)
        ckpt = fnn.load(path)
        y_again, _ = ckpt.model.forward(ckpt.params, fnn.eval_mode(ckpt.state), x_test)
        assert np.array_equal(y_again, y_test_hat)
        print(f"saved and reloaded {path.name}: {path.stat().st_size} bytes, same predictions")
