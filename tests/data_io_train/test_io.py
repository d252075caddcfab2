"""fnn.save / fnn.load: exact round trips, and clear errors for bad files (never a half load)."""

import zipfile

import attrs
import numpy as np
import pytest
from cases import CASE_IDS, CASES, examples
from helpers import assert_identical
from hypothesis import given
from hypothesis import strategies as st
from io_kit import mlp, read_body, read_entries, round_trip, write_entries

import fnn
from fnn import io, tree


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_round_trip_every_layer(tmp_path_factory, case, dtype):
    """params and the state after a forward (moving statistics, advanced Dropout key) and the
    layer spec come back identical, and give the same output."""
    path = tmp_path_factory.mktemp("ckpt") / "m.npz"

    @given(examples(case, dtype))
    def check(ex):
        _, cache = ex.layer.forward(ex.params, ex.state, ex.x)
        ckpt = round_trip(path, ex.params, cache.state, model=ex.layer)
        assert ckpt.model == ex.layer
        assert_identical(ckpt.params, ex.params)
        assert_identical(ckpt.state, cache.state)
        y_ref, _ = ex.layer.forward(ex.params, cache.state, ex.x)
        y, _ = ckpt.model.forward(ckpt.params, ckpt.state, ex.x)
        assert y.dtype == y_ref.dtype == dtype and y.tobytes() == y_ref.tobytes()

    check()


def _train(net, opt, params, state, opt_state, steps, seed):
    rng = np.random.default_rng(seed)
    crit = fnn.ClassNLLCriterion()
    for _ in range(steps):
        x = rng.normal(size=(8, 5)).astype(np.float32)
        t = fnn.data.one_hot(rng.integers(0, 3, 8), 3, np.float32)
        params, state, opt_state, _, _ = fnn.train.train_step(net, crit, opt, params, state,
                                                              opt_state, x, t)
    return params, state, opt_state


@pytest.mark.parametrize("opt", [fnn.SGDMomentum(0.1, momentum=0.9), fnn.Adam(0.01)],
                         ids=["sgd", "adam"])
def test_round_trip_optimizer_state_and_resume(tmp_path, opt):
    """Training 3 steps, saving, loading and training 2 more equals training 5 steps."""
    net = mlp()
    params, state = (tree.cast(t, np.float32) for t in net.init(7))
    trained = _train(net, opt, params, state, opt.init(params), 3, seed=1)
    ckpt = round_trip(tmp_path / "m.npz", *trained, model=net, optimizer=opt)
    assert ckpt.optimizer == opt
    assert_identical((ckpt.params, ckpt.state, ckpt.opt_state), trained)
    if isinstance(opt, fnn.Adam):
        assert ckpt.opt_state.t == 3 and type(ckpt.opt_state.t) is int
    resumed = _train(net, ckpt.optimizer, ckpt.params, ckpt.state, ckpt.opt_state, 2, seed=2)
    straight = _train(net, opt, *trained, 2, seed=2)
    assert_identical(resumed, straight)


@given(seed=st.integers(0, 2**64 - 1))
def test_round_trip_keys_of_any_size(tmp_path_factory, seed):
    path = tmp_path_factory.mktemp("keys") / "k.npz"
    _, state = fnn.Dropout(0.5).init(fnn.Key(seed))
    ckpt = round_trip(path, (), state)
    assert ckpt.state.key == fnn.Key(seed) and type(ckpt.state.key.seed) is int


def test_round_trip_leaves(tmp_path):
    """Plain leaves of every kind a tree may hold, and arrays of unusual layout and dtype."""
    big = np.arange(12, dtype=">f8").reshape(3, 4)
    leaves = [np.float32(1.5), np.int64(-3), 2**70, -0.0, float("inf"), float("nan"), True,
              None, "text", np.array(2.5), np.zeros((0, 3), np.float32), big, big.T[::2],
              np.arange(4, dtype=np.uint8), [np.ones(2)], (1, (2.0,))]
    ckpt = round_trip(tmp_path / "m.npz", leaves, meta={"history": {"loss": [1.0, 0.5]}})
    assert type(ckpt.params) is list
    assert_identical(ckpt.params[:12], leaves[:12])
    np.testing.assert_array_equal(ckpt.params[12], big.T[::2])
    assert_identical(ckpt.params[13:], leaves[13:])
    assert ckpt.meta == {"history": {"loss": [1.0, 0.5]}}
    assert ckpt.opt_state is None and ckpt.model is None and ckpt.optimizer is None


def test_loaded_arrays_do_not_alias_the_saved_ones(tmp_path):
    params = (np.ones(3),)
    ckpt = round_trip(tmp_path / "m.npz", params)
    ckpt.params[0][:] = 5
    np.testing.assert_array_equal(params[0], np.ones(3))


# --- what save refuses -----------------------------------------------------------------------


@attrs.frozen
class UserRecord:
    w: np.ndarray


@pytest.mark.parametrize("params, match", [
    ((UserRecord(np.ones(2)),), "classes given to fnn.io.register"),
    ((np.array([object()]),), "object array"),
    (({"W": np.ones(2)},), "dict"),
])
def test_save_refuses_what_load_could_not_rebuild(tmp_path, params, match):
    with pytest.raises(TypeError, match=match):
        io.save(tmp_path / "m.npz", params)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left


def test_save_refuses_trees_that_do_not_fit(tmp_path):
    net = mlp()
    params, state = net.init(0)
    with pytest.raises(io.CheckpointError, match=r"params\[5\]\.W: expected an array of shape"):
        io.save(tmp_path / "m.npz", fnn.Sequential(net.layers[:5] + (fnn.Linear(6, 4),
                                                                      net.layers[6])).init(0)[0],
                state, model=net)
    opt_state = fnn.Adam().init(params[:2])
    with pytest.raises(io.CheckpointError, match=r"opt_state\.m: expected 7 entries"):
        io.save(tmp_path / "m.npz", params, state, opt_state)
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_the_old_file(tmp_path):
    path = io.save(tmp_path / "m.npz", (np.ones(2),))
    with pytest.raises(TypeError):
        io.save(path, ({"bad": 1},))
    np.testing.assert_array_equal(io.load(path).params[0], np.ones(2))


# --- bad files -------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    net = mlp()
    params, state = net.init(3)
    opt = fnn.Adam()
    return io.save(tmp_path / "m.npz", params, state, opt.init(params), model=net,
                   optimizer=opt), net


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.99])
def test_truncated_file(saved, keep):
    path, _ = saved
    raw = path.read_bytes()
    path.write_bytes(raw[:int(len(raw) * keep)])
    with pytest.raises(io.CheckpointError, match="m.npz"):
        io.load(path)


def _flip(path, i, original):
    raw = bytearray(original)
    raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("which", ["header", "first array", "last array"])
def test_corrupted_payload_byte(saved, which):
    """A flipped byte inside the JSON header or an array's data is always detected."""
    path, _ = saved
    original = path.read_bytes()
    entries = read_entries(path)
    arrays = [entries[f"a{i}"] for i in range(read_body(entries)["n_arrays"])]
    payload = {"header": entries["__fnn__"], "first array": arrays[0],
               "last array": arrays[-1]}[which].tobytes()
    start = original.find(payload)
    assert start > 0 and len(payload) > 0
    _flip(path, start + len(payload) // 2, original)
    with pytest.raises(io.CheckpointError, match="m.npz"):
        io.load(path)


def test_any_corrupted_byte_fails_or_loads_the_same_trees(saved):
    """Wherever a byte is flipped, load raises CheckpointError or (for the few bytes of the zip
    layout that no reader looks at) gives back exactly the saved trees: never other values."""
    path, _ = saved
    original = path.read_bytes()
    want = io.load(path)
    detected = 0
    for i in range(0, len(original), 37):
        _flip(path, i, original)
        try:
            got = io.load(path)
        except io.CheckpointError as err:
            assert "m.npz" in str(err)
            detected += 1
            continue
        for a, b in zip(tree.leaves((want.params, want.state, want.opt_state)),
                        tree.leaves((got.params, got.state, got.opt_state)), strict=True):
            assert type(a) is type(b)
            if isinstance(a, np.ndarray):
                assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
            else:
                assert a == b
    # most flips are detected (seen: 224 of 257; the rest hit zip fields no reader uses)
    assert detected > 0.75 * (len(original) // 37)


def test_altered_array_fails_the_checksum(saved):
    path, _ = saved
    entries = read_entries(path)
    entries["a0"] = entries["a0"] + 1
    write_entries(path, entries)
    with pytest.raises(io.CheckpointError, match="checksum mismatch"):
        io.load(path)


def test_missing_entry(saved):
    path, _ = saved
    entries = read_entries(path)
    del entries["a2"]
    write_entries(path, entries)
    with pytest.raises(io.CheckpointError, match=r"\['a2'\] are missing or unexpected"):
        io.load(path)


def _set(*keys_and_value):
    """An edit of the JSON body: set body[k1][k2]...[kn] = value."""
    *keys, last, value = keys_and_value

    def edit(body):
        for k in keys:
            body = body[k]
        body[last] = value

    return edit


_MODEL_W = ("trees", "model", "fields", "layers", "tuple", 0, "fields")
_BAD_BODIES = [  # (edit of the description, with a valid checksum; what the error says)
    *[(_set("trees", "model", "record", record), "unknown record type") for record in
      ("collections:OrderedDict", "cases:LayerCase", "fnn.core:Layer", "fnn.core:attrs",
       "fnn_evil:Key", "fnn.core:Key.x")],
    (_set("trees", "optimizer", "fields", "lr", 0.1), "optimizer: fnn.optim:Adam has fields"),
    (_set("trees", "optimizer", "fields", "beta1", 1.5), "cannot rebuild fnn.optim:Adam"),
    (_set(*_MODEL_W, "n_out", 7), r"mismatched checkpoint: params\[0\]\.W"),
    (_set("trees", "params", "tuple", 0, {"array": 99}), "malformed tree description"),
    (_set("version", 99), "version 99"),
    (_set("trees", {}), "malformed description: KeyError"),
]


@pytest.mark.parametrize("edit, match", _BAD_BODIES)
def test_bad_description_is_refused(saved, edit, match):
    """Descriptions that are well-formed JSON with a valid checksum but do not describe a
    loadable model (an unknown class is refused, never imported)."""
    path, _ = saved
    entries = read_entries(path)
    body = read_body(entries)
    edit(body)
    write_entries(path, entries, body)
    with pytest.raises(io.CheckpointError, match=match) as err:
        io.load(path)
    assert str(err.value).startswith(str(path))


def test_load_for_another_model(saved):
    path, net = saved
    assert io.load(path, model=net).model == net
    other = fnn.Sequential(net.layers[:-2] + (fnn.Linear(6, 4), fnn.LogSoftMax()))
    with pytest.raises(io.CheckpointError, match="saved for model"):
        io.load(path, model=other)


def test_load_without_saved_model_checks_the_given_one(tmp_path):
    net = mlp()
    path = io.save(tmp_path / "m.npz", *net.init(0))
    assert io.load(path, model=net).model == net
    with pytest.raises(io.CheckpointError, match=r"params\[0\]\.W: expected an array of shape"):
        io.load(path, model=fnn.Sequential([fnn.Linear(4, 6), *net.layers[1:]]))


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04garbage"])
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "m.npz"
    path.write_bytes(content)
    with pytest.raises(io.CheckpointError, match="m.npz"):
        io.load(path)


def test_other_npz(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, x=np.ones(2))
    with pytest.raises(io.CheckpointError, match="not an fnn checkpoint"):
        io.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        io.load(tmp_path / "nope.npz")


def test_file_is_a_plain_npz_without_pickle(saved):
    path, _ = saved
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    assert "__fnn__.npy" in names and "__sha256__.npy" in names
    with np.load(path, allow_pickle=False) as z:  # readable by numpy alone, no pickle
        assert z["__fnn__"].dtype == np.uint8

