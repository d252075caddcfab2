"""fnn.save / fnn.load against races and crafted files: no lost checkpoint, and a hostile file
is refused with CheckpointError in bounded time and memory."""

import io as pyio
import json
import os
import stat
import threading
import zipfile
import zlib

import attrs
import numpy as np
import pytest
from bombs import MIB, assert_refused_cheaply, deflated, zip_of
from io_kit import mlp, read_body, read_entries, write_entries

import fnn
from fnn import io
from fnn.core import ShapeDtype

# --- concurrent and failing saves -----------------------------------------------------------


def test_racing_saves_always_leave_a_whole_checkpoint(tmp_path):
    """Threads save to one path while another loads it: every load gives a complete
    checkpoint, old or new, never an error; no temporary file is left behind."""
    path = io.save(tmp_path / "m.npz", (np.full(20_000, -1.0),))
    failures = []

    def writer(w):
        try:
            for i in range(15):
                io.save(path, (np.full(20_000, float(100 * w + i)),))
        except Exception as err:  # noqa: BLE001 - reported below
            failures.append(err)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    loads = 0
    while any(t.is_alive() for t in threads):
        a = io.load(path).params[0]
        assert a.shape == (20_000,) and (a == a[0]).all()
        loads += 1
    for t in threads:
        t.join()
    assert failures == [] and loads > 0
    assert io.load(path).params[0][0] in {100 * w + 14 for w in range(4)}
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def test_save_keeps_the_permission_bits(tmp_path):
    path = io.save(tmp_path / "m.npz", (np.ones(2),))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # as open() would give
    path.chmod(0o640)
    io.save(path, (np.zeros(2),))
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    np.testing.assert_array_equal(io.load(path).params[0], np.zeros(2))


@pytest.mark.parametrize("where", ["write", "rename"])
def test_failed_save_removes_its_temporary_file(tmp_path, monkeypatch, where):
    path = io.save(tmp_path / "m.npz", (np.ones(2),))

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(*{"write": (np, "savez", fail), "rename": (os, "replace", fail)}[where])
    with pytest.raises(OSError, match="disk full"):
        io.save(path, (np.zeros(2),))
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]
    np.testing.assert_array_equal(io.load(path).params[0], np.ones(2))


# --- crafted files: refused in bounded time and memory ---------------------------------------


def _refused_cheaply(path, match=None):
    assert_refused_cheaply(io.load, path, io.CheckpointError, match)


@pytest.fixture
def saved(tmp_path):
    net = mlp()
    params, state = net.init(3)
    return io.save(tmp_path / "m.npz", params, state, model=net)


def _linear(n_in, n_out):
    return {"record": "fnn.linear:Linear", "fields": {"n_in": n_in, "n_out": n_out,
                                                     "w_init": None, "b_init": None,
                                                     "dtype": "float64"}}


_CRAFTED_MODELS = {
    "Residual(layer='x')": {"record": "fnn.sequential:Residual", "fields": {"layer": "x"}},
    "Sequential(layers=[1, 2])": {"record": "fnn.sequential:Sequential",
                                  "fields": {"layers": {"list": [1, 2]}}},
    "Linear(1e9, 1e9)": _linear(1e9, 1e9),  # refused by Linear's validators
}


@pytest.mark.parametrize("model", _CRAFTED_MODELS.values(), ids=_CRAFTED_MODELS.keys())
def test_crafted_model_description(saved, model):
    entries = read_entries(saved)
    body = read_body(entries)
    body["trees"]["model"] = model
    write_entries(saved, entries, body)
    _refused_cheaply(saved)


@pytest.mark.parametrize("edit, match", [
    (lambda body: body.update(n_arrays=10**7), "declares n_arrays=10000000"),
    (lambda body: body.update(n_arrays=-1), "declares n_arrays=-1"),
    (lambda body: body["trees"].update(params="NESTED"), "unreadable|malformed"),
])
def test_crafted_counts_and_nesting(saved, edit, match):
    entries = read_entries(saved)
    body = read_body(entries)
    edit(body)
    # written as is (the helper reads n_arrays); json cannot write the nesting: spliced in
    raw = json.dumps(body).replace('"NESTED"', '{"tuple": [' * 100_000 + '{"array": 0}'
                                   + ']}' * 100_000).encode()
    entries["__fnn__"] = np.frombuffer(raw, np.uint8)
    entries["__sha256__"] = np.frombuffer(io._digest(raw, []).encode(), np.uint8)
    np.savez(saved, **entries)
    _refused_cheaply(saved, match)


def _npy_header(shape, descr="<f8"):
    f = pyio.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False,
                                             "shape": shape})
    return f.getvalue()


def _members(path):
    """The checkpoint's entries as (name, stored bytes, crc32, size, deflated) for zip_of."""
    with zipfile.ZipFile(path) as z:
        return [(i.filename, z.read(i), zlib.crc32(z.read(i)), i.file_size, False)
                for i in z.infolist()]


def test_deflated_member_that_expands_a_thousandfold(saved):
    """A 1 MB deflated entry that expands to 1 GiB of float64 zeros, consistent with its
    header: refused from the archive's directory, before anything is decompressed."""
    members = [m for m in _members(saved) if m[0] != "a0.npy"]
    header = _npy_header(((1024 * MIB - 128) // 8,))
    assert len(header) == 128
    stream, crc, size = deflated(header, 1024)
    assert len(stream) < 2 * MIB
    saved.write_bytes(zip_of([*members, ("a0.npy", stream, crc, size, True)]))
    _refused_cheaply(saved, "is compressed or declares more bytes")


@pytest.mark.parametrize("shape", [(1 << 27,), (1 << 40, 1 << 40), (-8,)])
def test_stored_member_whose_header_declares_more_than_it_holds(saved, shape):
    """An uncompressed entry whose npy header claims a huge (or negative) shape: numpy would
    allocate it before reading; the declared size is checked against the entry's first."""
    members = [m for m in _members(saved) if m[0] != "a0.npy"]
    data = _npy_header(shape) + bytes(64)
    saved.write_bytes(zip_of([*members, ("a0.npy", data, zlib.crc32(data), len(data),
                                         False)]))
    _refused_cheaply(saved)


# --- the model spec is checked through its shapes, never by drawing params ----------------------


@fnn.io.register
@attrs.frozen
class HugeParams:
    w: np.ndarray


@fnn.io.register
@attrs.frozen
class Huge(fnn.Layer):
    """A layer whose params are too big to draw: only param_shapes may be used."""

    n: int

    def init(self, key):
        raise AssertionError("init was called on the saved spec")

    def param_shapes(self):
        return HugeParams(w=ShapeDtype((self.n, self.n), "float64"))


def test_save_and_load_check_shapes_without_init(tmp_path):
    path = io.save(tmp_path / "m.npz", HugeParams(w=np.ones((2, 2))), model=Huge(2))
    assert io.load(path).model == Huge(2)
    assert io.load(path, model=Huge(2)).params.w.shape == (2, 2)
    with pytest.raises(io.CheckpointError, match=r"params\.w: expected an array of shape "
                                                 r"\(3, 3\)"):
        io.save(path, HugeParams(w=np.ones((2, 2))), model=Huge(3))
    entries = read_entries(path)
    body = read_body(entries)
    body["trees"]["model"]["fields"]["n"] = 10**12
    write_entries(path, entries, body)
    _refused_cheaply(path, r"params\.w: expected an array of shape \(1000000000000")


@pytest.mark.parametrize("n", [4000, 10**9])
def test_a_large_saved_linear_is_not_drawn(saved, n):
    """A spec of 128 MB (or 8e18 bytes) of params against small arrays: refused from the
    shapes alone."""
    entries = read_entries(saved)
    body = read_body(entries)
    body["trees"]["model"] = _linear(n, n)
    write_entries(saved, entries, body)
    _refused_cheaply(saved, "mismatched checkpoint")
