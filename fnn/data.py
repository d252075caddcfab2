"""Data helpers: the embedded 8x8 digits, MNIST IDX files, augmentation, one-hot targets,
splits and batches.

All functions are pure: where order is random, an explicit key decides it (same key, same
order), and nothing reads the global numpy RNG. Returned arrays never alias the inputs.
"""

from __future__ import annotations

import gzip
import math
import numbers
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ._files import write_atomic
from .core import FLOAT_DTYPES, Key, generator

__all__ = ["load_digits", "load_mnist", "mnist_files", "read_idx", "write_idx", "one_hot",
           "train_test_split", "batches", "augment", "as_sequences"]


def load_digits(dtype: Any = np.float64, images: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 handwritten digits that scikit-learn ships (1,797 samples, classes 0..9).

    Returns ``(x, labels)``: x in [0, 1] (pixel / 16) of shape (N, 64), or (N, 1, 8, 8) with
    ``images=True``, in ``dtype``; labels int64 of shape (N,). Needs scikit-learn (the ``demo``
    extra: ``pip install "fnn[demo]"``); no network access.
    """
    _float_dtype("load_digits", dtype)
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


def _float_dtype(who: str, dtype: Any) -> None:
    """Refuse a dtype other than float32/float64 for pixels in [0, 1]: an integer one would
    truncate them to 0 and 1, float16 is refused by every layer."""
    try:
        ok = np.dtype(dtype) in FLOAT_DTYPES
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{who}: dtype must be float32 or float64 (pixels are scaled to "
                         f"[0, 1]), got {dtype!r}")


# --- MNIST IDX files --------------------------------------------------------------------------

# IDX header: two zero bytes, a type code, the number of dimensions; then one big-endian uint32
# per dimension; then the data, big-endian, C order.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


_IDX_MAX_RANK = 64  # numpy's limit on the number of axes
_CHUNK = 1 << 24  # bytes read at a time: memory follows what the file really holds


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (as the MNIST files ``train-images-idx3-ubyte`` etc.), gzipped or not.

    Returns an array of the file's shape in native byte order (uint8 for MNIST). A malformed
    file raises ValueError naming the file and the problem (bad magic, rank over 64, truncated,
    trailing data, a declared size the file does not have, a broken gzip stream). The header is
    read and checked against the file's real size first (for a gzip file, the uncompressed size
    its trailer records), so a small file cannot make this read or allocate much more than it
    holds.
    """
    path = Path(path)
    with path.open("rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    try:
        if gzipped:
            with gzip.open(path, "rb") as f:
                return _read_idx(path, f, _gzip_size(path), exact=False)
        with path.open("rb") as f:
            return _read_idx(path, f, path.stat().st_size, exact=True)
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: not a valid gzip file ({type(err).__name__}: {err})") from err


def _gzip_size(path: Path) -> int:
    """The uncompressed size (mod 2**32) that a gzip file's trailer records."""
    with path.open("rb") as f:
        f.seek(0, 2)
        if f.tell() < 18:
            raise ValueError(f"{path}: not a valid gzip file (only {f.tell()} bytes)")
        f.seek(-4, 2)
        return int.from_bytes(f.read(4), "little")


def _read_idx(path: Path, f: Any, size: int, exact: bool) -> np.ndarray:
    """The IDX array from the open stream ``f`` of ``size`` bytes (``exact``), or of a size
    equal to ``size`` mod 2**32 (a gzip trailer's record)."""
    head = f.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {head.hex() or 'empty'}; "
                         f"expected 0000 then a type code in "
                         f"{sorted(f'{t:02x}' for t in _IDX_TYPES)} and the rank)")
    dtype, ndim = np.dtype(_IDX_TYPES[head[2]]), head[3]
    if ndim > _IDX_MAX_RANK:
        raise ValueError(f"{path}: IDX header declares {ndim} dimensions; numpy arrays have at "
                         f"most {_IDX_MAX_RANK}")
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header ({4 + len(dims)} bytes, rank {ndim} "
                         f"needs {4 + 4 * ndim})")
    shape = struct.unpack(f">{ndim}I", dims)
    n_bytes = math.prod(shape) * dtype.itemsize  # a Python int: no overflow
    expected = 4 + 4 * ndim + n_bytes
    if (expected if exact else expected % 2**32) != size:
        what = "truncated" if expected > size else "trailing data"
        has = "the file has" if exact else "the gzip trailer records (mod 2**32)"
        raise ValueError(f"{path}: {what}: header says shape {shape} ({expected} bytes), "
                         f"{has} {size} bytes")
    chunks, left = [], n_bytes
    while left and (chunk := f.read(min(left, _CHUNK))):
        chunks.append(chunk)
        left -= len(chunk)
    if left or f.read(1):
        what = "truncated" if left else "trailing data"
        raise ValueError(f"{path}: {what}: header says shape {shape} ({expected} bytes), the "
                         f"data {'ends' if left else 'goes on'} after "
                         f"{expected - left}{'' if left else '+'} bytes")
    return np.frombuffer(b"".join(chunks), dtype).reshape(shape).astype(dtype.newbyteorder("="))


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
    content = gzip.compress(raw) if path.suffix == ".gz" else raw
    write_atomic(path, lambda f: f.write(content))
    return path


def mnist_files(directory: str | Path, kind: str = "train") -> tuple[Path, Path]:
    """The paths of the ``kind`` (``"train"`` or ``"t10k"``) images and labels IDX files in
    ``directory``, each plain or gzipped; FileNotFoundError naming a missing one."""
    if kind not in ("train", "t10k"):
        raise ValueError(f"load_mnist: kind must be 'train' or 't10k', got {kind!r}")
    directory = Path(directory)
    return tuple(_idx_file(directory, f"{kind}-{what}") for what in ("images-idx3-ubyte",
                                                                     "labels-idx1-ubyte"))


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
    _float_dtype("load_mnist", dtype)  # before reading 50 MB
    images_path, labels_path = mnist_files(directory, kind)
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


# --- augmentation ------------------------------------------------------------------------------

_AUGMENT_CHUNK = 1024  # images warped per call: bounds the coordinate map to 24 * 1024 * H * W B


def augment(x: Any, key: int | Key, *, shift: float = 0.0, rotate: float = 0.0,
            scale: float = 0.0) -> np.ndarray:
    """Random affine augmentation of a batch of images: each image is rotated, scaled and
    shifted about its centre by its own random amounts (all channels alike), with bilinear
    interpolation (``skimage.transform.warp``) and zeros where a pixel comes from outside.

    Inputs: ``x`` float images (N, C, H, W); ``key`` decides the draws (same key, same result,
    like :func:`batches`: pass a new key per epoch); ``shift`` the largest translation as a
    fraction of the height and width, in [0, 1]; ``rotate`` the largest rotation in degrees,
    in [0, 180]; ``scale`` the largest relative change of size, in [0, 1). Each image draws
    independently and uniformly a rotation in [-rotate, rotate], a zoom factor in
    [1 - scale, 1 + scale] and shifts in [-shift, shift] * H and * W.

    Returns a new array of x's shape and dtype (float32 stays float32); x is not changed. All
    amounts 0 give a copy of x. A bad argument raises ValueError naming ``augment`` and it.
    """
    x = np.asarray(x)
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"augment: x must be float images of shape (N, C, H, W), got "
                         f"{x.dtype} of shape {x.shape}")
    for name, value, high, closed in (("shift", shift, 1, True), ("rotate", rotate, 180, True),
                                      ("scale", scale, 1, False)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                or not (0 <= value <= high if closed else 0 <= value < high):
            raise ValueError(f"augment: {name} must be a real number in [0, {high}"
                             f"{']' if closed else ')'}, got {value!r}")
    draws = generator(key).uniform(-1.0, 1.0, (len(x), 4))
    if shift == rotate == scale == 0:
        return x.copy()
    from skimage.transform import warp  # scikit-image: a runtime dependency, imported on use

    n, c, h, w = x.shape
    out = np.empty_like(x)
    for start in range(0, n, _AUGMENT_CHUNK):
        part = x[start:start + _AUGMENT_CHUNK]
        m = len(part)
        coords = _inverse_map(draws[start:start + m], (h, w), shift, rotate, scale)
        planes = np.broadcast_to(np.arange(m * c, dtype=np.float64)[:, None, None],
                                 (m * c, h, w))
        rows, cols = (np.repeat(a, c, axis=0) for a in coords)
        warped = warp(part.reshape(m * c, h, w), np.stack([planes, rows, cols]), order=1,
                      mode="constant", cval=0.0, preserve_range=True)
        out[start:start + m] = warped.reshape(m, c, h, w)
    return out


def _inverse_map(draws: np.ndarray, size: tuple[int, int], shift: float, rotate: float,
                 scale: float) -> tuple[np.ndarray, np.ndarray]:
    """For each image (one row of ``draws`` in [-1, 1]: angle, zoom, shift down, shift right),
    the input (row, col) that each output pixel reads: the output is the input rotated by
    the angle and zoomed about the centre, then shifted; so an output point p reads the input
    at centre + R(-angle) (p - centre - shift) / zoom. Two arrays (M, H, W)."""
    h, w = size
    angle = np.deg2rad(rotate * draws[:, 0])[:, None, None]
    zoom = (1.0 + scale * draws[:, 1])[:, None, None]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    v = np.arange(h)[None, :, None] - cy - (shift * h * draws[:, 2])[:, None, None]
    u = np.arange(w)[None, None, :] - cx - (shift * w * draws[:, 3])[:, None, None]
    cos, sin = np.cos(angle), np.sin(angle)
    return cy + (cos * v - sin * u) / zoom, cx + (sin * v + cos * u) / zoom


# --- targets, splits, batches -----------------------------------------------------------------

def positive_int(who: str, name: str, value: Any) -> int:
    """``value`` as an int if it is a positive integer (not a bool), else a ValueError
    naming the function ``who`` and the argument ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{who}: {name} must be a positive integer, got {value!r}")
    return int(value)


def one_hot(labels: Any, n_classes: int, dtype: Any = np.float64) -> np.ndarray:
    """(N, n_classes) array with out[i, labels[i]] = 1 and zeros elsewhere.

    ``labels`` are integers in [0, n_classes) of shape (N,) (N = 0 gives an empty
    (0, n_classes) array); ``n_classes`` a positive integer; anything else raises ValueError.
    """
    n_classes = positive_int("one_hot", "n_classes", n_classes)
    labels = np.asarray(labels)
    if labels.size == 0 and labels.ndim == 1:
        labels = labels.astype(np.int64)  # [] reads as float64
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
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

    Returns ``(x_train, x_test, y_train, y_test)`` (copies). ``test_fraction`` is a real
    number in (0, 1), and both parts must be non-empty; else ValueError.
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real) \
            or not 0 < test_fraction < 1:  # NaN fails too
        raise ValueError(f"train_test_split: test_fraction must be a real number in (0, 1), "
                         f"got {test_fraction!r}")
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
    batch_size = positive_int("batches", "batch_size", batch_size)
    if shuffle and key is None:
        raise TypeError("batches: shuffle=True needs a key (the key decides the order)")
    order = generator(key).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    # Checks above run at the call; the batches are made lazily.
    return ((x[order[i:i + batch_size]], y[order[i:i + batch_size]])
            for i in range(0, stop, batch_size))


# --- the sequence view of images ------------------------------------------------------------

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
