"""fnn.data: batches, one_hot, train_test_split, the embedded digits and the IDX loader."""

import gzip
import struct
import sys

import numpy as np
import pytest
from bombs import MIB, assert_refused_cheaply, deflated, gzip_of
from hypothesis import given
from hypothesis import strategies as st

from fnn import Key, data

# --- batches ---------------------------------------------------------------------------------


def _rows(n: int) -> tuple[np.ndarray, np.ndarray]:
    """x whose row i is (i, -i) and y = i: every batch shows which samples it holds."""
    return np.stack([np.arange(n), -np.arange(n)], axis=1).astype(float), np.arange(n)


@given(n=st.integers(1, 60), batch_size=st.integers(1, 70), seed=st.integers(0, 2**64 - 1),
       drop_last=st.booleans())
def test_batches_cover_every_sample_once(n, batch_size, seed, drop_last):
    x, y = _rows(n)
    got = list(data.batches(x, y, batch_size, key=seed, drop_last=drop_last))
    sizes = [len(yb) for _, yb in got]
    full, rest = divmod(n, batch_size)
    assert sizes == [batch_size] * full + ([rest] if rest and not drop_last else [])
    seen = np.concatenate([yb for _, yb in got]) if got else np.array([], int)
    assert len(np.unique(seen)) == len(seen)  # no sample twice
    if not drop_last:
        assert sorted(seen) == list(range(n))  # every sample
    for xb, yb in got:  # x and y stay paired
        np.testing.assert_array_equal(xb[:, 0], yb)


def test_batches_same_key_same_order_other_key_other_order():
    x, y = _rows(100)

    def order(key):
        return np.concatenate([yb for _, yb in data.batches(x, y, 16, key=key)])

    np.testing.assert_array_equal(order(3), order(Key(3)))
    assert not np.array_equal(order(3), order(4))
    assert not np.array_equal(order(3), np.arange(100))


def test_batches_without_shuffle_keep_the_order_and_copy():
    x, y = _rows(7)
    got = list(data.batches(x, y, 3, shuffle=False))
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in got]), np.arange(7))
    got[0][0][:] = 99
    np.testing.assert_array_equal(x, _rows(7)[0])  # the batches are copies


@pytest.mark.parametrize("kwargs, error, match", [
    ({"batch_size": 0, "key": 0}, ValueError, "batch_size"),
    ({"batch_size": 2.0, "key": 0}, ValueError, "batch_size"),
    ({"batch_size": 2}, TypeError, "needs a key"),
])
def test_batches_bad_arguments_fail_at_the_call(kwargs, error, match):
    x, y = _rows(5)
    with pytest.raises(error, match=match):
        data.batches(x, y, **kwargs)  # no iteration: the check is eager


def test_batches_length_mismatch():
    with pytest.raises(ValueError, match="same first axis"):
        data.batches(np.zeros((5, 2)), np.zeros(4), 2, key=0)


# --- one_hot ---------------------------------------------------------------------------------


@given(labels=st.lists(st.integers(0, 9), max_size=30), extra=st.integers(0, 3))
def test_one_hot(labels, extra):
    n_classes = 10 + extra
    out = data.one_hot(np.array(labels, dtype=np.int64), n_classes)
    assert out.shape == (len(labels), n_classes) and out.dtype == np.float64
    np.testing.assert_array_equal(out.sum(axis=1), np.ones(len(labels)))
    np.testing.assert_array_equal(out.argmax(axis=1) if labels else [], labels)


def test_one_hot_dtype_and_values():
    out = data.one_hot([2, 0], 3, dtype=np.float32)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0, 0, 1], [1, 0, 0]])


@pytest.mark.parametrize("labels", [[0, 3], [-1, 0], [0.0, 1.0], [[0, 1]]])
def test_one_hot_rejects_bad_labels(labels):
    with pytest.raises(ValueError, match="one_hot"):
        data.one_hot(np.array(labels), 3)


@pytest.mark.parametrize("labels", [[], np.zeros(0, np.int64), np.zeros(0, np.uint8)])
def test_one_hot_of_no_labels(labels):
    out = data.one_hot(labels, 3, np.float32)
    assert out.shape == (0, 3) and out.dtype == np.float32


@pytest.mark.parametrize("n_classes", [0, -1, 2.5, True, "3", None])
def test_one_hot_rejects_a_bad_class_count(n_classes):
    with pytest.raises(ValueError, match="one_hot: n_classes must be a positive integer"):
        data.one_hot([0, 1], n_classes)


# --- train_test_split ------------------------------------------------------------------------


def test_train_test_split_partitions_and_is_deterministic():
    x, y = _rows(50)
    x_tr, x_te, y_tr, y_te = data.train_test_split(x, y, 0.2, key=1)
    assert (len(y_tr), len(y_te)) == (40, 10)
    assert sorted(np.concatenate([y_tr, y_te])) == list(range(50))
    np.testing.assert_array_equal(x_tr[:, 0], y_tr)
    np.testing.assert_array_equal(x_te[:, 0], y_te)
    again = data.train_test_split(x, y, 0.2, key=1)
    for a, b in zip((x_tr, x_te, y_tr, y_te), again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(data.train_test_split(x, y, 0.2, key=2)[3], y_te)


@pytest.mark.parametrize("fraction", [0.001, 0.995])
def test_train_test_split_refuses_an_empty_part(fraction):
    with pytest.raises(ValueError, match="empty part"):
        data.train_test_split(*_rows(50), fraction, key=0)


@pytest.mark.parametrize("fraction", [float("nan"), float("inf"), "0.2", None, True, 0.0, 1.0,
                                      -0.2, 1.5])
def test_train_test_split_refuses_a_bad_fraction(fraction):
    with pytest.raises(ValueError, match=r"train_test_split: test_fraction must be a real "
                                         r"number in \(0, 1\)"):
        data.train_test_split(*_rows(50), fraction, key=0)


# --- the embedded digits ---------------------------------------------------------------------


def test_load_digits():
    pytest.importorskip("sklearn")
    x, labels = data.load_digits()
    assert x.shape == (1797, 64) and x.dtype == np.float64
    assert x.min() == 0.0 and x.max() == 1.0
    assert labels.dtype == np.int64 and sorted(np.unique(labels)) == list(range(10))
    images, labels2 = data.load_digits(np.float32, images=True)
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.float32
    np.testing.assert_array_equal(images.reshape(1797, 64), x.astype(np.float32))
    np.testing.assert_array_equal(labels2, labels)


def test_load_digits_without_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r"fnn\[demo\]"):
        data.load_digits()


# --- IDX files -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["a-idx3", "a-idx3.gz"])
def test_idx_round_trip(tmp_path, dtype, name):
    a = (np.arange(60).reshape(5, 3, 4) - 7).astype(dtype)
    b = data.read_idx(data.write_idx(tmp_path / name, a))
    assert b.dtype == a.dtype and b.dtype.isnative
    np.testing.assert_array_equal(b, a)


def test_idx_header_is_the_standard_one(tmp_path):
    raw = data.write_idx(tmp_path / "l", np.array([7, 2, 1], np.uint8)).read_bytes()
    assert raw == bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])  # magic 0x00000801, n = 3, data


def _mnist(tmp_path, n=6, h=4, w=4, gz=False, kind="train"):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    ext = ".gz" if gz else ""
    data.write_idx(tmp_path / f"{kind}-images-idx3-ubyte{ext}", pixels)
    data.write_idx(tmp_path / f"{kind}-labels-idx1-ubyte{ext}", labels)
    return pixels, labels


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist(tmp_path, gz):
    pixels, labels = _mnist(tmp_path, gz=gz, kind="t10k")
    x, y = data.load_mnist(tmp_path, "t10k")
    assert x.shape == (6, 16) and x.dtype == np.float64 and y.dtype == np.int64
    np.testing.assert_array_equal(x, pixels.reshape(6, 16) / 255.0)
    np.testing.assert_array_equal(y, labels)
    images, _ = data.load_mnist(tmp_path, "t10k", np.float32, images=True)
    assert images.shape == (6, 1, 4, 4) and images.dtype == np.float32


def test_load_mnist_missing_file_is_named(tmp_path):
    _mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        data.load_mnist(tmp_path)


def _corrupt(path, how):
    raw = path.read_bytes()
    if how == "magic":
        raw = b"\x08\x03" + raw[2:]
    elif how == "type":
        raw = raw[:2] + b"\x07" + raw[3:]
    elif how == "truncated":
        raw = raw[:-5]
    elif how == "trailing":
        raw = raw + b"\x00"
    elif how == "header":
        raw = raw[:9]
    elif how == "gzip":
        raw = gzip.compress(raw)[:-8]
    path.write_bytes(raw)


@pytest.mark.parametrize("how, match", [
    ("magic", "bad magic"), ("type", "bad magic"), ("truncated", "truncated"),
    ("trailing", "trailing data"), ("header", "truncated IDX header"), ("gzip", "gzip"),
])
def test_load_mnist_malformed_file_is_named(tmp_path, how, match):
    _mnist(tmp_path)
    _corrupt(tmp_path / "train-images-idx3-ubyte", how)
    with pytest.raises(ValueError, match=match) as err:
        data.load_mnist(tmp_path)
    assert "train-images-idx3-ubyte" in str(err.value)


def test_load_mnist_inconsistent_files(tmp_path):
    _mnist(tmp_path)
    data.write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="5 labels for 6 images"):
        data.load_mnist(tmp_path)
    data.write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((6, 16), np.uint8))
    with pytest.raises(ValueError, match=r"images of shape \(N, H, W\)"):
        data.load_mnist(tmp_path)


def _assert_refused_cheaply(path, match):
    assert_refused_cheaply(data.read_idx, path, ValueError, match)


def _header(code, shape):
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("raw, match", [
    (_header(0x08, (3,) * 65) + bytes(8), "declares 65 dimensions; numpy arrays have at most 64"),
    (_header(0x0E, (2**32 - 1,) * 4) + bytes(8), "truncated: header says shape"),  # > int64
    (_header(0x08, (1 << 31, 1 << 30)) + bytes(8), "truncated: header says shape"),
])
def test_idx_crafted_header(tmp_path, gz, raw, match):
    path = tmp_path / ("x.gz" if gz else "x")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    _assert_refused_cheaply(path, match)


def test_idx_gzip_that_expands_a_thousandfold(tmp_path):
    """A 1 MB gzip whose header declares 10 bytes and whose stream expands to 1 GiB: refused
    from the header and the gzip trailer, before decompressing the stream."""
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip_of(*deflated(_header(0x08, (10,)), 1024)))
    assert path.stat().st_size < 2 * MIB
    _assert_refused_cheaply(path, "trailing data: header says shape \\(10,\\)")


def test_idx_gzip_whose_trailer_lies(tmp_path):
    """A trailer forged to match the header: the stream is read only up to the declared size
    plus one byte."""
    stream, crc, _ = deflated(_header(0x08, (10,)), 1024)
    path = tmp_path / "x.gz"
    path.write_bytes(gzip_of(stream, crc, 18))
    _assert_refused_cheaply(path, "trailing data: .* the data goes on after 18\\+ bytes")


# --- augment ---------------------------------------------------------------------------------


def _blob(n=6, size=25, width=3.0, dtype=np.float64):
    """n copies of a centred Gaussian blob (rotation-invariant), as (n, 2, size, size)."""
    r = np.arange(size) - (size - 1) / 2
    img = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * width**2))
    return np.broadcast_to(img, (n, 2, size, size)).astype(dtype)


def _moments(images):
    """Per image: total mass, centroid (row, col) and mean squared radius about it."""
    h, w = images.shape[-2:]
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    mass = images.sum(axis=(-2, -1))
    cr, cc = ((images * g).sum(axis=(-2, -1)) / mass for g in (rows, cols))
    radius2 = (images * ((rows - cr[..., None, None]) ** 2 + (cols - cc[..., None, None]) ** 2)
               ).sum(axis=(-2, -1)) / mass
    return mass, cr, cc, radius2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_augment_is_keyed_pure_and_keeps_the_dtype(dtype):
    x = np.random.default_rng(0).random((5, 3, 8, 8)).astype(dtype)
    x.flags.writeable = False
    kwargs = dict(shift=0.2, rotate=30, scale=0.2)
    a = data.augment(x, 1, **kwargs)
    assert a.dtype == dtype and a.shape == x.shape and not np.shares_memory(a, x)
    np.testing.assert_array_equal(a, data.augment(x, Key(1), **kwargs))
    assert not np.array_equal(a, data.augment(x, 2, **kwargs))
    assert not np.array_equal(a[0], a[1])  # each image draws its own transform
    b = data.augment(x, 1)  # nothing to do: a copy
    assert b.dtype == dtype and not np.shares_memory(b, x)
    np.testing.assert_array_equal(b, x)


def test_augment_rotates_about_the_centre_and_treats_channels_alike():
    x = _blob()
    a = data.augment(x, 0, rotate=180)
    np.testing.assert_allclose(a, x, atol=0.03)  # a centred round blob stays (up to the
    # bilinear interpolation)
    np.testing.assert_array_equal(a[:, 0], a[:, 1])


def test_augment_shifts_within_bounds():
    x = _blob(n=40)
    mass, cr, cc, radius2 = _moments(data.augment(x, 0, shift=0.1))
    mass0, cr0, cc0, radius20 = _moments(x)
    np.testing.assert_allclose(mass, mass0, rtol=1e-3)  # the blob stays inside
    np.testing.assert_allclose(radius2, radius20, rtol=0.05)  # moved, not resized
    for moved in (cr - cr0, cc - cc0):
        assert np.abs(moved).max() <= 2.5 + 1e-6  # 0.1 * 25 pixels
        assert np.abs(moved).max() > 1.0 and moved.min() < 0 < moved.max()


def test_augment_scales_within_bounds():
    x = _blob(n=40)
    _, cr, cc, radius2 = _moments(data.augment(x, 0, scale=0.3))
    _, cr0, cc0, radius20 = _moments(x)
    np.testing.assert_allclose(cr, cr0, atol=1e-6)  # about the centre
    zoom = np.sqrt(radius2 / radius20)
    assert zoom.min() > 0.7 - 0.05 and zoom.max() < 1.3 + 0.05
    assert zoom.min() < 0.85 and zoom.max() > 1.15


@pytest.mark.parametrize("x, kwargs, match", [
    (np.zeros((2, 8, 8)), {}, r"x must be float images of shape \(N, C, H, W\)"),
    (np.zeros((2, 1, 8, 8), np.uint8), {}, "x must be float images"),
    (np.zeros((2, 1, 8, 8)), {"shift": -0.1}, r"shift must be a real number in \[0, 1\]"),
    (np.zeros((2, 1, 8, 8)), {"shift": float("nan")}, "shift must be"),
    (np.zeros((2, 1, 8, 8)), {"rotate": 181}, r"rotate must be a real number in \[0, 180\]"),
    (np.zeros((2, 1, 8, 8)), {"scale": 1.0}, r"scale must be a real number in \[0, 1\)"),
    (np.zeros((2, 1, 8, 8)), {"scale": "0.1"}, "scale must be"),
])
def test_augment_refuses_bad_arguments(x, kwargs, match):
    with pytest.raises(ValueError, match="augment: " + match):
        data.augment(x, 0, **kwargs)
