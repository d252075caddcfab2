"""``python -m fnn`` (or the ``fnn`` console script): train a classifier on the digits.

By default an MLP on the 8x8 digits that scikit-learn ships (no download), 80/20 split by the
seed; ``--model cnn`` trains a small CNN (Conv2d, MaxPool2d, BatchNormalization, Dropout);
``--mnist DIR`` uses the MNIST IDX files in DIR instead. Prints the progress, the final
train/test accuracy and the time per epoch; writes ``model.npz`` (see :mod:`fnn.io`),
``history.json`` and ``curves.png`` (when matplotlib is installed) to ``--out``.
The same arguments give the same numbers (the wall times aside).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import data, io, train
from .activations import LogSoftMax, ReLU
from .conv import Conv2d
from .core import split_key
from .dropout import Dropout
from .linear import ChannelwiseScaling, Linear
from .losses import ClassNLLCriterion
from .normalization import BatchNormalization
from .optim import Adam, SGDMomentum
from .pooling import MaxPool2d
from .sequential import Sequential
from .shape import Flatten
from .tree import cast

__all__ = ["main", "mlp", "cnn", "parse_args"]

DEFAULT_LR = {"adam": 0.002, "sgd": 0.05}


def _dense_block(n_in: int, n_out: int, p: float) -> list:
    """Linear -> BatchNormalization -> ChannelwiseScaling -> ReLU -> Dropout(p)."""
    return [Linear(n_in, n_out), BatchNormalization(n_out, alpha=0.9), ChannelwiseScaling(n_out),
            ReLU(), Dropout(p)]


def mlp(n_in: int, n_classes: int, hidden: int = 256) -> Sequential:
    """Two hidden layers of ``hidden`` units (each a :func:`_dense_block`, dropout 0.3), then
    Linear and LogSoftMax: (N, n_in) -> log-probabilities (N, n_classes)."""
    return Sequential([*_dense_block(n_in, hidden, 0.3), *_dense_block(hidden, hidden, 0.3),
                       Linear(hidden, n_classes), LogSoftMax()])


def cnn(image_shape: tuple[int, int, int], n_classes: int) -> Sequential:
    """Two 3x3 Conv2d + ReLU + MaxPool2d(2) stages (16, 32 channels), Flatten, a dense block
    of 64 units (dropout 0.3), Linear, LogSoftMax: (N, C, H, W) -> (N, n_classes); H and W
    divisible by 4."""
    c, h, w = image_shape
    return Sequential([Conv2d(c, 16, 3), ReLU(), MaxPool2d(2),
                       Conv2d(16, 32, 3), ReLU(), MaxPool2d(2), Flatten(),
                       *_dense_block(32 * (h // 4) * (w // 4), 64, 0.3),
                       Linear(64, n_classes), LogSoftMax()])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="fnn", description="Train an fnn classifier on the 8x8 digits (or MNIST IDX files).",
        epilog="Writes model.npz (fnn.load reads it), history.json and curves.png to --out.")
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp",
                   help="mlp: 2 x 256 hidden units; cnn: 2 conv stages (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=30, help="(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="(default: %(default)s)")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                   help="adam, or sgd with momentum 0.9 (default: %(default)s)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: 0.002 for adam, 0.05 for sgd)")
    p.add_argument("--seed", type=int, default=0,
                   help="decides the split, the init, the dropout masks and the batch order "
                        "(default: %(default)s)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="(default: %(default)s)")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="held-out part of the digits (default: %(default)s)")
    p.add_argument("--mnist", metavar="DIR", default=None,
                   help="train on the MNIST IDX files in DIR (train-* to train, t10k-* to test)")
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS threads; the matrices are small and more threads mostly contend "
                        "(default: %(default)s)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="train data-parallel on a Dask LocalCluster of N worker processes "
                        "(1 thread each; fnn.distributed, the 'distributed' extra)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="train data-parallel on the existing Dask cluster at ADDRESS, e.g. "
                        "tcp://10.0.0.1:8786 (one shard per worker)")
    p.add_argument("--out", metavar="DIR", default=None, help="(default: runs/MODEL)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no epoch lines")
    args = p.parse_args(argv)
    if args.epochs <= 0 or args.batch_size <= 0 or args.threads <= 0:
        p.error("--epochs, --batch-size and --threads must be positive")
    if args.workers is not None and (args.workers <= 0 or args.scheduler is not None):
        p.error("--workers must be positive and cannot be combined with --scheduler")
    args.lr = DEFAULT_LR[args.optimizer] if args.lr is None else args.lr
    args.out = Path(args.out if args.out is not None else Path("runs") / args.model)
    return args


def _load(args: argparse.Namespace, key: Any) -> tuple[str, tuple]:
    """(name of the data, (x_train, x_test, y_train, y_test))."""
    images = args.model == "cnn"
    if args.mnist is None:
        x, labels = data.load_digits(args.dtype, images=images)
        return "digits", data.train_test_split(x, labels, args.test_fraction, key=key)
    x_train, y_train = data.load_mnist(args.mnist, "train", args.dtype, images=images)
    x_test, y_test = data.load_mnist(args.mnist, "t10k", args.dtype, images=images)
    return "mnist", (x_train, x_test, y_train, y_test)


def _blas_threads(n: int) -> contextlib.AbstractContextManager:
    """Limit BLAS to ``n`` threads while training (threadpoolctl, installed with scikit-learn)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def _fit_function(args: argparse.Namespace) -> Callable[..., train.FitResult]:
    """fnn.fit, or fnn.distributed.fit on the cluster that --workers / --scheduler name."""
    if args.workers is None and args.scheduler is None:
        return train.fit
    from . import distributed
    return functools.partial(distributed.fit, n_workers=args.workers, client=args.scheduler)


def plot_history(history: dict, path: Path) -> bool:
    """Write loss and accuracy curves to ``path`` (PNG, Agg); False if matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    FigureCanvasAgg(fig)
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, what in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        ax.plot(epochs, history[what], label="train")
        if history[f"val_{what}"]:
            ax.plot(epochs, history[f"val_{what}"], label="test")
        ax.set(xlabel="epoch", ylabel=what, title=what)
        ax.legend()
    fig.savefig(path, dpi=100)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0)."""
    args = parse_args(argv)
    k_split, k_init, k_fit = split_key(args.seed, 3)
    dataset, (x_train, x_test, y_train, y_test) = _load(args, k_split)
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    net = (cnn(x_train.shape[1:], n_classes) if args.model == "cnn"
           else mlp(x_train.shape[1], n_classes))
    params, state = cast(net.init(k_init), np.dtype(args.dtype))
    opt = Adam(args.lr) if args.optimizer == "adam" else SGDMomentum(args.lr, momentum=0.9)
    crit = ClassNLLCriterion()
    print(f"fnn: {args.model} on {dataset} ({len(x_train)} train / {len(x_test)} test, "
          f"{args.dtype}), {args.optimizer} lr={args.lr}, batch {args.batch_size}, "
          f"{args.epochs} epochs, seed {args.seed}", flush=True)

    def report(epoch: int, h: dict) -> None:
        print(f"epoch {epoch:3d}/{args.epochs}  loss {h['loss'][-1]:.4f}  "
              f"acc {h['accuracy'][-1]:.4f}  test loss {h['val_loss'][-1]:.4f}  "
              f"test acc {h['val_accuracy'][-1]:.4f}  {h['seconds'][-1]:.2f} s", flush=True)

    start = time.perf_counter()
    with _blas_threads(args.threads):
        result = _fit_function(args)(
            net, crit, opt, params, state, opt.init(params), x_train, y_train,
            epochs=args.epochs, batch_size=args.batch_size, key=k_fit,
            validation=(x_test, y_test), n_classes=n_classes, progress=not args.quiet,
            on_epoch=None if args.quiet else report)
        train_loss, train_acc = train.evaluate(net, crit, result.params, result.state,
                                               x_train, y_train)
    seconds = time.perf_counter() - start
    h = result.history
    final = {"train_loss": train_loss, "train_accuracy": train_acc,
             "test_loss": h["val_loss"][-1], "test_accuracy": h["val_accuracy"][-1],
             "seconds_per_epoch": float(np.mean(h["seconds"])), "seconds": seconds}
    print(f"final: train accuracy {train_acc:.4f}, test accuracy {final['test_accuracy']:.4f} "
          f"({args.epochs} epochs, {final['seconds_per_epoch']:.2f} s/epoch, "
          f"{seconds:.1f} s training)")

    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    record = {"config": config, "dataset": dataset, "final": final, "history": h}
    args.out.mkdir(parents=True, exist_ok=True)
    written = [io.save(args.out / "model.npz", result.params, result.state, result.opt_state,
                       model=net, optimizer=opt, meta=record), args.out / "history.json"]
    written[1].write_text(json.dumps(record, indent=1) + "\n")
    if plot_history(h, args.out / "curves.png"):
        written.append(args.out / "curves.png")
    else:
        print("matplotlib is not installed: no curves.png (pip install matplotlib)")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
