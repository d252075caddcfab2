"""Training helpers in the functional style: one pure step, evaluation, and ``fit`` over epochs.

Nothing here holds state between calls: every function takes the network spec, the params, the
layer state and the optimizer state and returns new ones. ``train_step`` is the whole training
step; write your own loop around it (or copy its five lines) when ``fit`` does not suit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np

from .core import Key, backward_params, split_key
from .data import batches, one_hot, positive_int
from .transforms import Chain, Optimizer
from .tree import eval_mode, train_mode

__all__ = ["train_step", "loss_and_gradients", "predict", "evaluate", "fit", "run_epochs",
           "FitResult", "HISTORY_KEYS"]

# The per-epoch entries of a history, each a list with one float per epoch.
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "seconds")


def train_step(net: Any, crit: Any, opt: Any, params: Any, state: Any, opt_state: Any,
               x: np.ndarray, t: np.ndarray) -> tuple[Any, Any, Any, np.generic, np.ndarray]:
    """One step on the batch ``(x, t)``: forward, loss, backward, optimizer update.

    Returns ``(params, state, opt_state, loss, y)`` with the new params, layer state and
    optimizer state, the batch loss and the network output before the update.
    """
    loss, grads, state, y, _ = loss_and_gradients(net, crit, params, state, x, t)
    # the gradients are this step's own: fnn's optimizers may write the new params into them
    donate = {"donate": True} if isinstance(opt, Optimizer | Chain) else {}
    params, opt_state = opt.update(params, grads, opt_state, **donate)
    return params, state, opt_state, loss, y


def loss_and_gradients(net: Any, crit: Any, params: Any, state: Any, x: np.ndarray,
                       t: np.ndarray) -> tuple[np.generic, Any, Any, np.ndarray, Any]:
    """Forward, loss and backward on the batch ``(x, t)``, without the update.

    Returns ``(loss, grads, state, y, loss_cache)``: the batch loss, d loss / d params (the
    params' tree), the new layer state, the network output and the criterion's cache.
    """
    y, cache = net.forward(params, state, x)
    loss, lcache = crit.forward(y, t)
    grads = backward_params(net, params, cache, crit.backward(lcache))  # no unused input dx
    return loss, grads, cache.state, y, lcache


def predict(net: Any, params: Any, state: Any, x: np.ndarray, batch_size: int = 512
            ) -> np.ndarray:
    """The network's output on ``x`` in evaluation mode, computed ``batch_size`` rows at a time
    (an empty ``x`` goes through the network once, giving an empty output)."""
    batch_size = positive_int("predict", "batch_size", batch_size)
    x = np.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"predict: x must have a batch axis, got shape {x.shape}")
    state = eval_mode(state)
    outs = [net.forward(params, state, x[i:i + batch_size])[0]
            for i in range(0, max(len(x), 1), batch_size)]
    return np.concatenate(outs)


def _accuracy(y: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(y, axis=1) == labels))


def evaluate(net: Any, crit: Any, params: Any, state: Any, x: np.ndarray, labels: np.ndarray,
             batch_size: int = 512) -> tuple[float, float]:
    """``(loss, accuracy)`` on ``(x, labels)`` in evaluation mode.

    ``labels`` are integer classes (N,); the criterion gets their one-hot encoding in the
    output's dtype; accuracy is the fraction where the output's argmax equals the label.
    """
    y = predict(net, params, state, x, batch_size)
    loss, _ = crit.forward(y, one_hot(labels, y.shape[1], y.dtype))
    return float(loss), _accuracy(y, labels)


@attrs.frozen
class FitResult:
    """What :func:`fit` returns: the trained trees and the history.

    ``history`` maps each of :data:`HISTORY_KEYS` to a list with one float per epoch: ``loss``
    and ``accuracy`` averaged over the epoch's batches (training mode, before each update),
    ``val_loss`` and ``val_accuracy`` in evaluation mode after the epoch (empty without
    validation data), ``seconds`` the wall time of the epoch (validation included).
    """

    params: Any
    state: Any
    opt_state: Any
    history: dict


def fit(net: Any, crit: Any, opt: Any, params: Any, state: Any, opt_state: Any, *,
        x: np.ndarray, labels: np.ndarray, epochs: int, batch_size: int, key: int | Key,
        validation: tuple[np.ndarray, np.ndarray] | None = None, n_classes: int | None = None,
        progress: bool = False, on_epoch: Callable[[int, dict], None] | None = None
        ) -> FitResult:
    """Train a classifier for ``epochs`` passes over ``(x, labels)`` with :func:`train_step`.

    Every argument after ``opt_state`` is keyword-only. ``x`` is a non-empty float array
    (N, ...); ``labels`` are integer classes (N,) (not one-hot rows: pass
    ``targets.argmax(axis=1)``); the criterion gets one-hot targets in x's dtype with
    ``n_classes`` columns (default: the largest label + 1). ``epochs`` and ``batch_size`` are
    positive integers. Bad arguments raise ValueError naming ``fit`` and the argument before
    any training. Epoch ``e`` shuffles with the e-th key split off ``key``, so the same
    arguments give the same result. The state is put in training mode first. ``progress``
    shows a tqdm bar over each epoch's batches when tqdm is installed (nothing otherwise);
    ``on_epoch(epoch, history)`` is called after each epoch (epoch counts from 1).
    """
    x, targets, validation = fit_arguments("fit", x, labels, epochs, batch_size, n_classes,
                                           validation)

    def step(params: Any, state: Any, opt_state: Any, idx: np.ndarray) -> tuple:
        xb, tb = x[idx], targets[idx]
        params, state, opt_state, loss, y = train_step(net, crit, opt, params, state,
                                                       opt_state, xb, tb)
        n_correct = int(np.sum(np.argmax(y, axis=1) == np.argmax(tb, axis=1)))
        return params, state, opt_state, float(loss) * len(xb), n_correct

    return run_epochs(step, net, crit, params, state, opt_state, len(x), epochs=epochs,
                      batch_size=batch_size, key=key, validation=validation, progress=progress,
                      on_epoch=on_epoch)


def run_epochs(step: Callable[..., tuple], net: Any, crit: Any, params: Any, state: Any,
               opt_state: Any, n_samples: int, *, epochs: int, batch_size: int, key: int | Key,
               validation: tuple[np.ndarray, np.ndarray] | None = None, progress: bool = False,
               on_epoch: Callable[[int, dict], None] | None = None) -> FitResult:
    """The epoch loop of :func:`fit` around any ``step``, with its batches and history.

    Epoch ``e`` draws the index batches of ``fnn.data.batches`` over ``range(n_samples)`` with
    the e-th key split off ``key`` (so ``x[idx]`` is the batch ``batches(x, ...)`` yields) and
    calls ``step(params, state, opt_state, idx) -> (params, state, opt_state, loss_sum,
    n_correct)``, where ``loss_sum`` is the batch loss times the batch size. The state is put
    in training mode first; the history, ``validation``, ``progress`` and ``on_epoch`` are as
    in :func:`fit`. ``fnn.distributed.fit`` runs its sharded step in this same loop.
    """
    if on_epoch is not None and not callable(on_epoch):  # not after the first epoch's work
        raise TypeError(f"fit: on_epoch must be a function (epoch, history) or None, got "
                        f"{on_epoch!r}")
    history: dict = {k: [] for k in HISTORY_KEYS}
    state = train_mode(state)
    index = np.arange(n_samples)
    n_batches = -(-n_samples // batch_size)
    for epoch, epoch_key in enumerate(split_key(key, epochs), start=1):
        start = time.perf_counter()
        total_loss, n_correct = 0.0, 0
        for idx, _ in _progress(batches(index, index, batch_size, key=epoch_key), n_batches,
                                f"epoch {epoch}/{epochs}", progress):
            params, state, opt_state, loss_sum, correct = step(params, state, opt_state, idx)
            total_loss += loss_sum
            n_correct += correct
        history["loss"].append(total_loss / n_samples)
        history["accuracy"].append(n_correct / n_samples)
        if validation is not None:
            val_loss, val_acc = evaluate(net, crit, params, state, *validation)
            history["val_loss"].append(val_loss)
            history["val_accuracy"].append(val_acc)
        history["seconds"].append(time.perf_counter() - start)
        if on_epoch is not None:
            on_epoch(epoch, history)
    return FitResult(params=params, state=state, opt_state=opt_state, history=history)


def fit_arguments(who: str, x: Any, labels: Any, epochs: Any, batch_size: Any,
                  n_classes: Any, validation: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    """The checks of :func:`fit`'s arguments (shared with ``fnn.distributed.fit``, named
    ``who`` in the errors), before any training: returns ``(x, one-hot targets in x's dtype,
    validation as a pair of arrays or None)``."""
    positive_int(who, "epochs", epochs)
    positive_int(who, "batch_size", batch_size)
    x, labels = _samples(who, x, labels, "")
    if n_classes is None:
        n_classes = int(labels.max()) + 1
    n_classes = positive_int(who, "n_classes", n_classes)
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise ValueError(f"{who}: validation must be a pair (x, labels), got "
                             f"{type(validation).__name__}")
        validation = _samples(who, *validation, "validation ")
        _same_samples(who, x, *validation, n_classes)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    return x, one_hot(labels, n_classes, dtype), validation


def _same_samples(who: str, x: np.ndarray, val_x: np.ndarray, val_labels: np.ndarray,
                  n_classes: int) -> None:
    """Refuse validation data that would only fail after the first epoch's training: samples
    of another shape than x's, labels outside [0, n_classes)."""
    if val_x.shape[1:] != x.shape[1:]:
        raise ValueError(f"{who}: validation x has samples of shape {val_x.shape[1:]}, x has "
                         f"samples of shape {x.shape[1:]}")
    low, high = int(val_labels.min()), int(val_labels.max())
    if low < 0 or high >= n_classes:
        raise ValueError(f"{who}: validation labels must be in [0, {n_classes}) (n_classes), "
                         f"got values in [{low}, {high}]")


def _samples(who: str, x: Any, labels: Any, which: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, labels)`` as arrays if x is a non-empty array (N, ...) of floats (or of integer
    indices, for a network that starts with an Embedding) and labels integer classes (N,),
    else a ValueError from ``who`` saying what it wants (one-hot rows are a common slip)."""
    x, labels = np.asarray(x), np.asarray(labels)
    if x.ndim < 1 or len(x) == 0 or not (np.issubdtype(x.dtype, np.floating)
                                         or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{who}: {which}x must be a non-empty float (or integer index) array "
                         f"(N, ...), got {x.dtype} of shape {x.shape}")
    if labels.shape != (len(x),) or not np.issubdtype(labels.dtype, np.integer):
        hint = " (one-hot rows? pass labels.argmax(axis=1))" if labels.ndim == 2 else ""
        raise ValueError(f"{who}: {which}labels must be integer classes of shape ({len(x)},) "
                         f"for x's {len(x)} samples, got {labels.dtype} of shape "
                         f"{labels.shape}{hint}")
    return x, labels


def _progress(it: Any, total: int, desc: str, enabled: bool) -> Any:
    """``it`` wrapped in a transient tqdm bar when ``enabled`` and tqdm is installed."""
    if not enabled:
        return it
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return it
    return tqdm(it, total=total, desc=desc, leave=False, unit="batch", disable=None)
