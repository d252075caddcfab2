"""fnn.io.register: checkpoints of user-defined layers and records (the Bias example of
docs/contract.md), still without pickle and refusing anything unregistered."""

import attrs
import numpy as np
import pytest
from helpers import assert_identical
from io_kit import read_body, read_entries, round_trip, write_entries

import fnn
from fnn import io


@fnn.io.register
@attrs.frozen
class BiasParams:
    b: np.ndarray  # (n,)


@attrs.frozen
class BiasCache:
    state: tuple = ()


@fnn.io.register
@attrs.frozen
class Bias(fnn.Layer):
    """The Bias example of docs/contract.md: y = x + b."""

    n: int = attrs.field(validator=attrs.validators.gt(0))

    def init(self, key):
        return BiasParams(b=fnn.generator(key).uniform(-1, 1, self.n)), ()

    def param_shapes(self):
        return BiasParams(b=fnn.core.ShapeDtype((self.n,), "float64"))

    def forward(self, params, state, x):
        return x + params.b.astype(x.dtype), BiasCache(state=state)

    def backward(self, params, cache, dy):
        return dy.copy(), BiasParams(b=dy.sum(axis=0).astype(params.b.dtype))


def test_registered_user_layer_round_trips(tmp_path):
    net = fnn.Sequential([fnn.Linear(3, 4), Bias(4)])
    params, state = net.init(0)
    ckpt = round_trip(tmp_path / "m.npz", params, state, model=net)
    assert ckpt.model == net and type(ckpt.params[1]) is BiasParams
    assert_identical(ckpt.params, params)
    x = np.ones((2, 3))
    assert ckpt.model.forward(ckpt.params, ckpt.state, x)[0].tobytes() == \
        net.forward(params, state, x)[0].tobytes()
    with pytest.raises(io.CheckpointError, match=r"params\[1\]\.b: expected an array of shape "
                                                 r"\(5,\)"):
        io.save(tmp_path / "m.npz", params, state, model=fnn.Sequential([fnn.Linear(3, 4),
                                                                         Bias(5)]))


def test_load_refuses_a_record_this_program_did_not_register(tmp_path, monkeypatch):
    path = io.save(tmp_path / "m.npz", Bias(2).init(0)[0], model=Bias(2))
    monkeypatch.delitem(io._REGISTERED, "test_io_register:Bias")  # as in a program that never did
    with pytest.raises(io.CheckpointError, match="unknown record type 'test_io_register:Bias'"):
        io.load(path)


def test_registered_class_validators_run_at_load(tmp_path):
    path = io.save(tmp_path / "m.npz", Bias(2).init(0)[0], model=Bias(2))
    entries = read_entries(path)
    body = read_body(entries)
    body["trees"]["model"]["fields"]["n"] = -2
    write_entries(path, entries, body)
    with pytest.raises(io.CheckpointError, match="cannot rebuild test_io_register:Bias"):
        io.load(path)


class NotAttrs:
    pass


@attrs.frozen
class Derived:
    x: int
    y: int = attrs.field(init=False, default=0)


@pytest.mark.parametrize("cls", [NotAttrs, Derived(1)])
def test_register_wants_an_attrs_class(cls):
    with pytest.raises(TypeError, match="fnn.io.register: expected an attrs class"):
        fnn.io.register(cls)


def test_save_refuses_a_registered_record_load_could_not_rebuild(tmp_path, monkeypatch):
    monkeypatch.setitem(io._REGISTERED, "test_io_register:Derived", Derived)
    with pytest.raises(TypeError, match="Derived has fields that its constructor does not"):
        io.save(tmp_path / "m.npz", (Derived(1),))
    assert list(tmp_path.iterdir()) == []


@fnn.io.register
@attrs.frozen
class PlainBias(fnn.Layer):
    """A layer with params but none of the shape methods (written before them)."""

    n: int

    def init(self, key):
        return BiasParams(b=np.zeros(self.n)), ()


def test_a_registered_layer_without_shape_methods_is_checked_through_its_init(tmp_path):
    path = io.save(tmp_path / "m.npz", *PlainBias(2).init(0), model=PlainBias(2))
    assert io.load(path).model == PlainBias(2)
    with pytest.raises(io.CheckpointError, match=r"params\.b: expected an array of shape \(3,\)"):
        io.save(path, *PlainBias(2).init(0), model=PlainBias(3))
