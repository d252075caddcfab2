"""``python -m fnn`` (or the ``fnn`` console script): train a classifier on the digits.

By default an MLP on the 8x8 digits that scikit-learn ships (no download), 80/20 split by the
seed; ``--model cnn`` trains a small CNN (Conv2d, MaxPool2d, BatchNormalization, Dropout),
``--model lstm`` / ``gru`` a recurrent classifier and ``--model transformer`` a transformer
classifier on each image as a sequence of its rows; ``--mnist DIR`` uses the MNIST IDX files in
DIR instead; ``--augment`` trains the CNN on a freshly augmented copy of the training images
each epoch (:func:`fnn.data.augment`). Every argument is checked, and the output directory
created, before any data is loaded (a bad one gives argparse's usage error, exit status 2).
Prints the progress, the final train/test accuracy and the time per epoch; writes ``model.npz``
(see :mod:`fnn.io`), ``history.json`` and ``curves.png`` (when matplotlib is installed) to
``--out``. The same arguments give the same numbers (the wall times aside).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import data, io, memory, parallel, train
from ._files import write_atomic
from .activations import LogSoftMax, ReLU
from .attention import TransformerEncoderLayer
from .conv import Conv2d
from .core import split_key
from .dropout import Dropout
from .embedding import PositionalEmbedding
from .linear import ChannelwiseScaling, Linear
from .losses import ClassNLLCriterion
from .normalization import BatchNormalization, LayerNorm
from .optim import Adam, SGDMomentum
from .pooling import MaxPool2d
from .recurrent import GRU, LSTM
from .sequence import Bidirectional
from .sequential import Sequential
from .shape import Flatten
from .tree import cast

__all__ = ["main", "mlp", "cnn", "recurrent", "transformer", "parse_args"]

DEFAULT_LR = {"adam": 0.002, "sgd": 0.05}
# --augment: the largest shift (fraction of the side), rotation (degrees) and zoom change.
# Mild on purpose: on the 8x8 digits 0.1 / 10 / 0.1 cost 1.4 points of test accuracy (seed 0).
AUGMENT = {"shift": 0.05, "rotate": 5.0, "scale": 0.05}


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


def transformer(sequence_shape: tuple[int, int], n_classes: int, dim: int = 32,
                num_heads: int = 4, ff_dim: int = 64, depth: int = 2,
                dropout: float = 0.1) -> Sequential:
    """A small transformer classifier on sequences (N, T, F) (the digits: 8 rows of 8 pixels):
    Linear(F, dim) on every step, a learned PositionalEmbedding(T, dim), ``depth``
    TransformerEncoderLayer(dim, num_heads, ff_dim, dropout, norm_first=True), LayerNorm,
    Flatten, Linear(T * dim, n_classes), LogSoftMax: -> (N, n_classes)."""
    t, f = sequence_shape
    return Sequential([Linear(f, dim), PositionalEmbedding(t, dim),
                       *(TransformerEncoderLayer(dim, num_heads, ff_dim, dropout,
                                                 norm_first=True) for _ in range(depth)),
                       LayerNorm(dim), Flatten(), Linear(t * dim, n_classes), LogSoftMax()])


RECURRENT = {"lstm": LSTM, "gru": GRU}
DEFAULT_EPOCHS = {"lstm": 60, "gru": 60}  # 30 for the others


def recurrent(cell: str, sequence_shape: tuple[int, int], n_classes: int, hidden: int = 64
              ) -> Sequential:
    """A bidirectional ``cell`` ("lstm" or "gru") of ``hidden`` units each way, then the hidden
    states of every step side by side (Flatten), Dropout(0.3), Linear, LogSoftMax:
    sequences (N, T, F) -> (N, n_classes)."""
    t, f = sequence_shape
    return Sequential([Bidirectional(RECURRENT[cell](f, hidden)), Flatten(), Dropout(0.3),
                       Linear(t * 2 * hidden, n_classes), LogSoftMax()])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line's arguments, every one checked (argparse's usage error, exit status 2,
    for a bad one), the defaults filled in and the output directory created."""
    p = argparse.ArgumentParser(
        prog="fnn", description="Train an fnn classifier on the 8x8 digits (or MNIST IDX files).",
        epilog="Writes model.npz (fnn.load reads it), history.json and curves.png to --out.")
    p.add_argument("--model", choices=("mlp", "cnn", *RECURRENT, "transformer"), default="mlp",
                   help="mlp: 2 x 256 hidden units; cnn: 2 conv stages; lstm, gru: bidirectional, "
                        "64 units each way; transformer: 2 encoder layers; the sequence models "
                        "read the image rows as steps (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=None,
                   help="(default: 60 for lstm and gru, 30 for the others)")
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
                   help="threads of fnn's parallel kernels (fnn.threads) and of BLAS; the "
                        "results do not depend on it. Default %(default)s: on a machine "
                        "whose cores other processes also use, more threads wait for each "
                        "other (docs/performance.md)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="train data-parallel on a Dask LocalCluster of N worker processes "
                        "(1 thread each; fnn.distributed, the 'distributed' extra)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="train data-parallel on the existing Dask cluster at ADDRESS, e.g. "
                        "tcp://10.0.0.1:8786 (one shard per worker)")
    p.add_argument("--out", metavar="DIR", default=None, help="(default: runs/MODEL)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no epoch lines")
    p.add_argument("--augment", action="store_true",
                   help="cnn only: train on a new random affine augmentation of the images "
                        "each epoch (shift up to 5%%, rotation up to 5 degrees, zoom up to "
                        "5%%)")
    args = p.parse_args(argv)
    _validate(p, args)
    return args


def _validate(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check every argument (``p.error``: the usage line, exit status 2) and fill the
    defaults; create the output directory and check that it is writable."""
    if args.epochs is None:
        args.epochs = DEFAULT_EPOCHS.get(args.model, 30)
    if args.epochs <= 0 or args.batch_size <= 0 or args.threads <= 0:
        p.error("--epochs, --batch-size and --threads must be positive")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        p.error(f"--lr must be a positive number, got {args.lr}")
    if args.seed < 0:
        p.error(f"--seed must be a non-negative integer, got {args.seed}")
    if not 0 < args.test_fraction < 1:  # NaN fails too
        p.error(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    if args.augment and args.model != "cnn":
        p.error(f"--augment works on images: use it with --model cnn, not {args.model}")
    if args.mnist is not None:
        try:
            for kind in ("train", "t10k"):
                data.mnist_files(args.mnist, kind)
        except FileNotFoundError as err:
            p.error(f"--mnist: {err}" if Path(args.mnist).is_dir()
                    else f"--mnist: no directory {args.mnist}")
    if args.workers is not None and (args.workers <= 0 or args.scheduler is not None):
        p.error("--workers must be positive and cannot be combined with --scheduler")
    if args.augment and (args.workers is not None or args.scheduler is not None):
        p.error("--augment runs in this process: it cannot be combined with --workers or "
                "--scheduler")
    args.lr = DEFAULT_LR[args.optimizer] if args.lr is None else args.lr
    args.out = Path(args.out if args.out is not None else Path("runs") / args.model)
    if args.out.exists() and not args.out.is_dir():
        p.error(f"--out: {args.out} is a file, not a directory")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=args.out):
            pass
    except OSError as err:
        p.error(f"--out: cannot write to {args.out} ({err.strerror or err})")


def _load(args: argparse.Namespace, key: Any) -> tuple[str, tuple]:
    """(name of the data, (x_train, x_test, y_train, y_test))."""
    images = args.model == "cnn"
    sequences = args.model in (*RECURRENT, "transformer")
    view = data.as_sequences if sequences else np.asarray  # rows as steps
    if args.mnist is None:
        x, labels = data.load_digits(args.dtype, images=images)
        return "digits", data.train_test_split(view(x), labels, args.test_fraction, key=key)
    x_train, y_train = data.load_mnist(args.mnist, "train", args.dtype, images=images)
    x_test, y_test = data.load_mnist(args.mnist, "t10k", args.dtype, images=images)
    return "mnist", (view(x_train), view(x_test), y_train, y_test)


@contextlib.contextmanager
def _threads(n: int) -> Any:
    """``n`` threads for fnn's kernels (fnn.threads) and BLAS (threadpoolctl's limit, if
    installed) while training; both restored on exit."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        blas: contextlib.AbstractContextManager = contextlib.nullcontext()
    else:
        blas = threadpool_limits(limits=n, user_api="blas")
    with blas, parallel.threads(n):
        yield


def _fit_function(args: argparse.Namespace) -> Callable[..., train.FitResult]:
    """fnn.fit, or fnn.distributed.fit on the cluster that --workers / --scheduler name."""
    if args.workers is None and args.scheduler is None:
        return train.fit
    from . import distributed
    return functools.partial(distributed.fit, n_workers=args.workers, client=args.scheduler)


def plot_history(history: dict, path: Path, title: str | None = None) -> bool:
    """Write loss and accuracy curves to ``path`` (PNG, Agg) under ``title``; False if
    matplotlib is missing."""
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
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0)."""
    args = parse_args(argv)
    # this process is a training program: keep freed memory for the next step's arrays
    memory.keep_freed_memory()
    k_split, k_init, k_fit = split_key(args.seed, 3)
    try:
        dataset, (x_train, x_test, y_train, y_test) = _load(args, k_split)
    except ValueError as err:  # --test-fraction too close to 0 or 1 for the data, a bad IDX file
        print(f"fnn: error: {err}", file=sys.stderr)
        return 2
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    builders = {"mlp": lambda: mlp(x_train.shape[1], n_classes),
                "cnn": lambda: cnn(x_train.shape[1:], n_classes),
                "lstm": lambda: recurrent("lstm", x_train.shape[1:], n_classes),
                "gru": lambda: recurrent("gru", x_train.shape[1:], n_classes),
                "transformer": lambda: transformer(x_train.shape[1:], n_classes)}
    net = builders[args.model]()
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
    with _threads(args.threads):
        fit = _fit_augmented if args.augment else _fit_function(args)
        result = fit(net, crit, opt, params, state, opt.init(params), x=x_train,
                     labels=y_train, epochs=args.epochs, batch_size=args.batch_size,
                     key=k_fit, validation=(x_test, y_test), n_classes=n_classes,
                     progress=not args.quiet, on_epoch=None if args.quiet else report)
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
    text = (json.dumps(record, indent=1) + "\n").encode()
    write_atomic(written[1], lambda f: f.write(text))  # never half a file, like model.npz
    title = (f"fnn {args.model}{' (augmented)' if args.augment else ''} on {dataset}, "
             f"{args.optimizer} lr={args.lr}: test accuracy {final['test_accuracy']:.2%}")
    if plot_history(h, args.out / "curves.png", title):
        written.append(args.out / "curves.png")
    else:
        print("matplotlib is not installed: no curves.png (pip install matplotlib)")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _fit_augmented(net: Any, crit: Any, opt: Any, params: Any, state: Any, opt_state: Any, *,
                   x: np.ndarray, labels: np.ndarray, epochs: int, key: Any,
                   on_epoch: Any = None, **kwargs: Any) -> train.FitResult:
    """:func:`fnn.train.fit` with a new augmentation of ``x`` (:data:`AUGMENT`) every epoch:
    one one-epoch fit per epoch, each on ``data.augment(x, ...)`` with its own keys; the
    epoch's seconds include the augmentation."""
    history: dict = {k: [] for k in train.HISTORY_KEYS}
    for epoch, epoch_key in enumerate(split_key(key, epochs), start=1):
        k_augment, k_fit = split_key(epoch_key)
        start = time.perf_counter()
        x_epoch = data.augment(x, k_augment, **AUGMENT)
        seconds = time.perf_counter() - start
        result = train.fit(net, crit, opt, params, state, opt_state, x=x_epoch, labels=labels,
                           epochs=1, key=k_fit, **kwargs)
        params, state, opt_state = result.params, result.state, result.opt_state
        result.history["seconds"][0] += seconds
        for k in train.HISTORY_KEYS:
            history[k] += result.history[k]
        if on_epoch is not None:
            on_epoch(epoch, history)
    return train.FitResult(params=params, state=state, opt_state=opt_state, history=history)
