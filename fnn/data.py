"""Data helpers: the embedded 8x8 digits, MNIST IDX files, one-hot targets, splits and batches.

All functions are pure: where order is random, an explicit key decides it (same key, same
order), and nothing reads the global numpy RNG. Returned arrays never alias the inputs.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .core import Key, generator

__all__ = ["load_digits", "load_mnist", "read_idx", "write_idx", "one_hot", "train_test_split",
           "batches"]


def load_digits(dtype: Any = np.float64, images: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 handwritten digits that scikit-learn ships (1,797 samples, classes 0..9).

    Returns ``(x, labels)``: x in [0, 1] (pixel / 16) of shape (N, 64), or (N, 1, 8, 8) with
    ``images=True``, in ``dtype``; labels int64 of shape (N,). Needs scikit-learn (the ``demo``
    extra: ``pip install "fnn[demo]"``); no network access.
    """
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as err:
        raise ImportError('fnn.data.load_digits needs scikit-learn, which ships the digits: '
                          'pip install "fnn[demo]" (or pip install scikit-learn)') from err
    bunch = sk_load_digits()
    x = (np.asarray(bunch.data, dtype=np.float64) / 16.0).astype(dtype)
    if images:
        x = x.reshape(-1, 1, 8, 8)
    return x, np.asarray(bunch.target, dtype=np.int64)


# --- MNIST IDX files --------------------------------------------------------------------------

# IDX header: two zero bytes, a type code, the number of dimensions; then one big-endian uint32
# per dimension; then the data, big-endian, C order.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (as the MNIST files ``train-images-idx3-ubyte`` etc.), gzipped or not.

    Returns an array of the file's shape in native byte order (uint8 for MNIST). A malformed
    file raises ValueError naming the file and the problem (bad magic, truncated, trailing data).
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ValueError(f"{path}: not a valid gzip file ({err})") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'}; "
                         f"expected 0000 then a type code in "
                         f"{sorted(f'{t:02x}' for t in _IDX_TYPES)} and the rank)")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, rank {ndim} needs "
                         f"{header})")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "trailing data"
        raise ValueError(f"{path}: {what}: header says shape {shape} ({expected} bytes), "
                         f"file has {len(raw)} bytes")
    data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: Any) -> Path:
    """Write ``array`` as an IDX file (gzipped when ``path`` ends in ``.gz``); the inverse of
    :func:`read_idx`. The dtype must be one IDX has: uint8, int8, int16, int32, float32, float64.
    """
    array = np.asarray(array)
    codes = {np.dtype(t).newbyteorder("="): code for code, t in _IDX_TYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None or array.ndim > 255:
        raise ValueError(f"write_idx: IDX holds up to 255 axes of {sorted(map(str, codes))}, "
                         f"got {array.dtype} with {array.ndim} axes")
    raw = (bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
           + array.astype(_IDX_TYPES[code]).tobytes())
    path = Path(path)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def _idx_file(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"MNIST file {stem} (or {stem}.gz) not found in {directory}")


def load_mnist(directory: str | Path, kind: str = "train", dtype: Any = np.float64,
               images: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """MNIST (or Fashion-MNIST) from the standard IDX files in ``directory``.

    ``kind`` is ``"train"`` (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``)
    or ``"t10k"`` (the test files). Returns ``(x, labels)``: x in [0, 1] (pixel / 255) of shape
    (N, H*W), or (N, 1, H, W) with ``images=True``; labels int64 (N,). A missing file raises
    FileNotFoundError, a malformed or inconsistent one ValueError, each naming the file.
    """
    if kind not in ("train", "t10k"):
        raise ValueError(f"load_mnist: kind must be 'train' or 't10k', got {kind!r}")
    directory = Path(directory)
    images_path = _idx_file(directory, f"{kind}-images-idx3-ubyte")
    labels_path = _idx_file(directory, f"{kind}-labels-idx1-ubyte")
    pixels, labels = read_idx(images_path), read_idx(labels_path)
    if pixels.ndim != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"{images_path}: expected uint8 images of shape (N, H, W), got "
                         f"{pixels.dtype} of shape {pixels.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(f"{labels_path}: expected uint8 labels of shape (N,), got "
                         f"{labels.dtype} of shape {labels.shape}")
    if len(labels) != len(pixels):
        raise ValueError(f"{labels_path}: {len(labels)} labels for {len(pixels)} images in "
                         f"{images_path}")
    n, h, w = pixels.shape
    x = (pixels.astype(np.float64) / 255.0).astype(dtype)
    x = x.reshape(n, 1, h, w) if images else x.reshape(n, h * w)
    return x, labels.astype(np.int64)


# --- targets, splits, batches -----------------------------------------------------------------

def one_hot(labels: Any, n_classes: int, dtype: Any = np.float64) -> np.ndarray:
    """(N, n_classes) array with out[i, labels[i]] = 1 and zeros elsewhere.

    ``labels`` are integers in [0, n_classes) of shape (N,); anything else raises ValueError.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not (labels.size == 0 or np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"one_hot: expected integer labels of shape (N,), got {labels.dtype} "
                         f"of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"one_hot: labels must be in [0, {n_classes}), got values in "
                         f"[{labels.min()}, {labels.max()}]")
    out = np.zeros((labels.shape[0], n_classes), dtype=dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out


def _same_length(x: np.ndarray, y: np.ndarray, who: str) -> int:
    if x.ndim < 1 or y.ndim < 1 or len(x) != len(y):
        raise ValueError(f"{who}: x and y must have the same first axis, got shapes "
                         f"{x.shape} and {y.shape}")
    return len(x)


def train_test_split(x: Any, labels: Any, test_fraction: float = 0.2, *, key: int | Key
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle with ``key`` and hold out ``round(test_fraction * N)`` samples.

    Returns ``(x_train, x_test, y_train, y_test)`` (copies). Both parts must be non-empty.
    """
    x, labels = np.asarray(x), np.asarray(labels)
    n = _same_length(x, labels, "train_test_split")
    n_test = int(round(test_fraction * n))
    if not 0 < n_test < n:
        raise ValueError(f"train_test_split: test_fraction={test_fraction!r} of {n} samples "
                         f"leaves an empty part ({n_test} test, {n - n_test} train)")
    order = generator(key).permutation(n)
    test, train = order[:n_test], order[n_test:]
    return x[train], x[test], labels[train], labels[test]


def batches(x: Any, y: Any, batch_size: int, *, key: int | Key | None = None,
            shuffle: bool = True, drop_last: bool = False
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x[idx], y[idx])`` minibatches (copies) covering every sample once.

    With ``shuffle`` the order is ``generator(key).permutation(N)`` (``key`` required: the same
    key gives the same batches; pass a new key per epoch, e.g. from :func:`fnn.split_key`);
    without it the order is 0..N-1. The last batch is smaller when ``batch_size`` does not
    divide N, or left out with ``drop_last``.
    """
    x, y = np.asarray(x), np.asarray(y)
    n = _same_length(x, y, "batches")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size <= 0:
        raise ValueError(f"batches: batch_size must be a positive integer, got {batch_size!r}")
    if shuffle and key is None:
        raise TypeError("batches: shuffle=True needs a key (the key decides the order)")
    order = generator(key).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    # Checks above run at the call; the batches are made lazily.
    return ((x[order[i:i + batch_size]], y[order[i:i + batch_size]])
            for i in range(0, stop, batch_size))


# --- the sequence view of images ------------------------------------------------------------

__all__ += ["as_sequences"]


def as_sequences(x: Any) -> np.ndarray:
    """Images as sequences of their rows, for recurrent and attention models: image i becomes
    H steps of W pixels, ``out[i, t]`` = row t.

    ``x`` is (N, 1, H, W) (one channel, as ``images=True`` gives) or (N, D) flat square images
    (D = H*W with H = W, as :func:`load_digits` and :func:`load_mnist` give). Returns a copy of
    shape (N, H, W) in x's dtype: the digits (N, 64) -> (N, 8, 8), 8 steps of 8 pixels. Anything
    else raises ValueError.
    """
    x = np.asarray(x)
    side = int(round(np.sqrt(x.shape[1]))) if x.ndim == 2 else 0
    if x.ndim == 4 and x.shape[1] == 1:
        return x[:, 0].copy()
    if x.ndim == 2 and side * side == x.shape[1]:
        return x.reshape(len(x), side, side).copy()
    raise ValueError(f"as_sequences: expected one-channel images (N, 1, H, W) or flat square "
                     f"images (N, H*W), got shape {x.shape}")
