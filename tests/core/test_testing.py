"""fnn.testing: check_layer passes correct layers (the Bias example of docs/contract.md, every
row of the layer table) and fails each kind of broken layer; its strategies draw what they
document; it imports without hypothesis."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
from cases import CASE_IDS, CASES
from hypothesis import given, settings
from hypothesis import strategies as st

import fnn
from fnn.core import ShapeDtype
from fnn.testing import (
    check_gradients,
    check_layer,
    check_purity,
    input_array,
    kink_distance,
)
from fnn.testing.strategies import arrays, batch_sizes, keys, layer_examples

# --- the individual checks catch broken layers -------------------------------------------

@attrs.frozen
class Square(fnn.Layer):
    """y = x^2 with a configurable backward; ``how`` picks the way it is broken."""

    how: str = "ok"

    def forward(self, params, state, x):
        if self.how == "mutates":
            x *= 1.0  # even a write that leaves the values alone is caught: inputs are read-only
        if self.how == "writes-back":
            x.flags.writeable = True
            np.clip(x, -1.0, 1.0, out=x)  # idempotent: both forwards agree, x is changed
        if self.how == "aliases":
            return x, Cache(x=x, state=state)
        y = x * x
        if self.how == "nondeterministic":
            y = y + np.random.default_rng().random()
        return y, Cache(x=x, state=state)

    def backward(self, params, cache, dy):
        if self.how == "wrong-backward":
            return dy * cache.x, ()
        if self.how == "backward-alias":
            return dy, ()
        return 2 * cache.x * dy, ()


@attrs.frozen
class Cache:
    x: np.ndarray
    state: Any = ()


@attrs.frozen
class BadParamGrad(fnn.Layer):
    """y = w * x with dw off by a factor 2."""

    def init(self, key=0):
        return np.array([1.5]), ()

    def forward(self, params, state, x):
        return params * x, Cache(x=x, state=state)

    def backward(self, params, cache, dy):
        return params * dy, 2 * np.sum(cache.x * dy, keepdims=True).reshape(1)


X = np.array([[0.5, -1.5, 2.0]])


def test_check_gradients_accepts_correct_layer():
    assert set(check_gradients(Square(), (), (), X)) == {"dx"}
    check_purity(Square(), (), (), X)


def test_check_gradients_catches_wrong_backward():
    with pytest.raises(AssertionError, match="dx"):
        check_gradients(Square("wrong-backward"), (), (), X)
    with pytest.raises(AssertionError, match="params leaf 0"):
        check_gradients(BadParamGrad(), np.array([1.5]), (), X)


@pytest.mark.parametrize("how, message", [
    ("mutates", "read-only"), ("writes-back", "changed"), ("aliases", "y shares memory"),
    ("backward-alias", "dx shares memory"), ("nondeterministic", "differ")])
def test_check_purity_catches_impure_layers(how, message):
    with pytest.raises(AssertionError, match=message):
        check_purity(Square(how), (), (), X)


# --- check_layer --------------------------------------------------------------------------

@attrs.frozen
class BiasParams:
    b: np.ndarray  # (n,)


@attrs.frozen
class BiasCache:
    state: Any = ()


@attrs.frozen
class Bias(fnn.Layer):
    """The docs/contract.md example, y = x + b, with ``how`` naming the way it is broken."""

    n: int
    how: str = "ok"

    def init(self, key):
        b = fnn.generator(key).uniform(-1, 1, self.n)
        return BiasParams(b=b), ()

    def param_shapes(self):
        return BiasParams(b=ShapeDtype((self.n + (self.how == "param-shapes"),), "float64"))

    def output_shape(self, input_shape):
        n, *rest = input_shape
        return (n + (self.how == "output-shape"), *rest)

    def forward(self, params, state, x):
        if self.how == "mutates":
            x += 0.0
        if self.how == "returns-view":
            return x.reshape(x.shape), BiasCache(state=state)  # y is a view of x
        if self.how == "upcasts":
            # a float64 constant: float32 x comes out float64
            return x + params.b.astype(x.dtype) + np.zeros(1), BiasCache(state=state)
        y = x + params.b.astype(x.dtype)
        if self.how == "couples":
            y = y + x.mean(axis=0)  # a batch statistic, not declared batch_coupled
        return y, BiasCache(state=state)

    def backward(self, params, cache, dy):
        if self.how == "aliases":
            return dy, BiasParams(b=dy.sum(axis=0).astype(params.b.dtype))
        if self.how == "wrong-gradient":
            return dy.copy(), BiasParams(b=2 * dy.sum(axis=0).astype(params.b.dtype))
        dx = dy + dy.mean(axis=0) if self.how == "couples" else dy.copy()
        return dx, BiasParams(b=dy.sum(axis=0).astype(params.b.dtype))

    def backward_params(self, params, cache, dy):
        dparams = self.backward(params, cache, dy)[1]
        if self.how == "backward-params":  # a shortcut that forgot the dtype
            return BiasParams(b=dparams.b.astype(np.float32))
        return dparams


def test_check_layer_passes_the_bias_example():
    report = check_layer(Bias(3), (4, 3))
    assert report["checks"] == ["init_shapes", "modes", "shapes", "purity", "dtypes",
                                "batch_consistency", "backward_params", "gradients"]
    assert set(report["gradients"]) == {"dx", "params[0]"}
    assert max(report["gradients"].values()) < 1e-7
    # N = 1: no batch check; an eval-mode run works on a stateless layer
    assert "batch_consistency" not in check_layer(Bias(3), (1, 3), mode="eval")["checks"]
    # a batch-coupled layer passes when it says so
    check_layer(Bias(3, "couples"), (4, 3), batch_coupled=True)


@pytest.mark.parametrize("how, message", [
    ("wrong-gradient", "params leaf 0"), ("aliases", "dx shares memory"),
    ("returns-view", "y shares memory"), ("backward-params", "backward_params differs"),
    ("mutates", "read-only"), ("upcasts", "float32 in gives dtypes"),
    ("output-shape", "output_shape says"), ("param-shapes", "param_shapes"),
    ("couples", "batch_coupled=True")])
def test_check_layer_fails_broken_layers(how, message):
    with pytest.raises(AssertionError, match=message):
        check_layer(Bias(3, how), (4, 3))


@attrs.frozen
class Abs(fnn.Layer):
    """y = |x|, kink at 0: declares it with kink_distance."""

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def forward(self, params, state, x):
        return np.abs(x), BiasCache(state=state)

    def backward(self, params, cache, dy):
        raise AssertionError("not reached")

    def kink_distance(self, params, state, x):
        return 0.0


def test_check_layer_redraws_near_kinks_and_uses_a_layer_kink_distance():
    x = np.array([[0.5, -2e-6]])
    assert kink_distance(fnn.ReLU(), (), (), x) == 2e-6
    assert kink_distance(fnn.Sequential([fnn.Identity(), fnn.ELU(alpha=0.5)]), ((), ()),
                         ((), ()), x) == 2e-6
    assert kink_distance(fnn.ELU(), (), (), x) == np.inf  # alpha = 1: smooth
    assert kink_distance(Abs(), (), (), x) == 0.0
    with pytest.raises(ValueError, match="farther than 1e-05 from a kink of Abs"):
        check_layer(Abs(), (2, 3), max_draws=3)


@pytest.mark.parametrize("shape, mode, message", [
    ((), "train", "input_shape must be"), ((2, 0), "train", "input_shape must be"),
    (3, "train", "input_shape must be"), ((2, 3), "test", "mode must be")])
def test_check_layer_rejects_bad_arguments(shape, mode, message):
    with pytest.raises(ValueError, match=message):
        check_layer(Bias(3), shape, mode=mode)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@settings(max_examples=3)
@given(data=st.data())
def test_check_layer_on_every_row(case, data):
    """check_layer itself, on every row of the table, as a user would call it."""
    layer, sample_shape = case.setup(data.draw)
    shape = (data.draw(batch_sizes(1, 3)), *sample_shape)
    make_input = None
    if case.integer_input:  # valid indices, never the frozen padding row (as the table)
        def make_input(k, shape):
            return fnn.generator(k).choice(_valid_indices(layer), shape)
    check_layer(layer, shape, key=data.draw(keys()), mode=case.mode,
                batch_coupled=case.batch_coupled, unique_values=case.unique_values,
                make_input=make_input)


def _valid_indices(layer) -> np.ndarray:
    """The indices of the Embedding that ``layer`` is or starts with, less its padding_idx."""
    while isinstance(layer, fnn.Sequential):
        layer = layer.layers[0]
    pad = None if layer.padding_idx is None else layer.padding_idx % layer.num_embeddings
    return np.array([i for i in range(layer.num_embeddings) if i != pad])


# --- strategies and inputs ------------------------------------------------------------------

@given(data=st.data(), dtype=st.sampled_from([np.float32, np.float64]),
       shape=st.lists(st.integers(1, 4), max_size=3).map(tuple))
def test_arrays_draw_what_they_document(data, dtype, shape):
    x = data.draw(arrays(shape, dtype))
    assert x.shape == shape and x.dtype == dtype
    assert np.all((np.abs(x) >= dtype(0.05)) & (np.abs(x) <= 3.0))
    u = data.draw(arrays(shape, unique=True))
    assert len(np.unique(u)) == u.size and np.all(np.abs(u) <= 4.1)
    if u.size > 1:
        assert np.diff(np.sort(u.ravel())).min() >= 1 / (250 * u.size) - 1e-12  # rounding


@given(data=st.data())
def test_layer_examples_and_input_array(data):
    layer = fnn.BatchNormalization(3)
    params, state, x = data.draw(layer_examples(layer, (3,), mode="eval", dtype=np.float32,
                                                min_batch=2, max_batch=2))
    assert x.shape == (2, 3) and x.dtype == np.float32 and not state.training
    assert state.moving_mean.dtype == np.float32 and np.any(state.moving_mean != 0)
    a = input_array(0, (5, 4))
    assert np.all((np.abs(a) >= 0.05) & (np.abs(a) <= 3)) and np.array_equal(
        a, input_array(0, (5, 4)))
    assert len(np.unique(input_array(1, (5, 4), unique=True))) == 20


def test_fnn_testing_imports_without_hypothesis():
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "hypothesis" or name.startswith("hypothesis."):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import fnn, fnn.testing
assert "hypothesis" not in sys.modules
fnn.testing.check_gradients(fnn.Tanh(), (), (), fnn.testing.input_array(0, (2, 3)))
try:
    import fnn.testing.strategies
except ImportError as err:
    print(err)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[2]).stdout
    assert "fnn.testing.strategies needs hypothesis" in out and "pip install" in out

