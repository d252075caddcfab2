"""Options shared by the layers: initializer and dtype options of Linear and ChannelwiseScaling,
float32 end to end, the layer repr, spec equality and evolve, and hyperparameter validation."""

from __future__ import annotations

import functools
import math

import attrs
import numpy as np
import pytest

import fnn
from fnn import tree
from fnn.core import split_key

# --- initializer and dtype options ------------------------------------------------------------

def test_linear_default_init_is_classic_from_split_keys():
    params, _ = fnn.Linear(4, 3).init(5)
    kw, kb = split_key(5, 2)
    np.testing.assert_array_equal(params.W, fnn.init.classic_uniform(kw, (3, 4), fan=4))
    np.testing.assert_array_equal(params.b, fnn.init.classic_uniform(kb, (3,), fan=4))
    assert np.abs(params.W).max() <= 0.5 and params.W.dtype == np.float64


def test_linear_and_scaling_initializers_and_dtype():
    w_init = functools.partial(fnn.init.kaiming_normal, nonlinearity="relu")
    layer = fnn.Linear(4, 3, w_init=w_init, b_init=fnn.init.zeros, dtype=np.float32)
    params, _ = layer.init(5)
    kw, _ = split_key(5, 2)
    np.testing.assert_array_equal(params.W, w_init(kw, (3, 4), np.float32))
    assert params.W.dtype == params.b.dtype == np.float32 and not params.b.any()
    scaling = fnn.ChannelwiseScaling(3, gamma_init=fnn.init.ones, dtype="float32")
    params, _ = scaling.init(1)
    np.testing.assert_array_equal(params.gamma, np.ones(3))
    assert params.beta.dtype == np.float32 and np.abs(params.beta).max() <= 1 / math.sqrt(3)


def test_initializer_returning_the_wrong_shape_raises():
    with pytest.raises(ValueError, match=r"returned shape \(2,\), expected \(3, 4\)"):
        fnn.Linear(4, 3, w_init=lambda key, shape, dtype: np.zeros(2)).init(0)


def test_float32_end_to_end():
    """Layers created with dtype float32 give float32 params and state, and a training step on
    float32 data keeps everything float32."""
    net = fnn.Sequential([
        fnn.Residual(fnn.Sequential([fnn.Conv2d(2, 2, 3, dtype="float32"),
                                     fnn.BatchNorm2d(2, affine=True, dtype="float32")])),
        fnn.Flatten(), fnn.BatchNormalization(18, alpha=0.5, dtype="float32"),
        fnn.Dropout(0.2), fnn.LayerNorm(2 * 3 * 3, dtype="float32"),
        fnn.Linear(18, 4, dtype="float32"), fnn.GELU(), fnn.ChannelwiseScaling(4,
                                                                               dtype="float32"),
        fnn.LogSoftMax()])
    params, state = net.init(0)
    assert all(a.dtype == np.float32 for a in tree.leaves((params, state))
               if isinstance(a, np.ndarray))
    x = fnn.generator(0).standard_normal((5, 2, 3, 3)).astype(np.float32)
    t = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]]
    opt = fnn.Adam(1e-2)
    params, state, opt_state, loss, y = fnn.train.train_step(
        net, fnn.ClassNLLCriterion(), opt, params, state, opt.init(params), x, t)
    arrays = [a for a in tree.leaves((params, state, opt_state, y)) if isinstance(a, np.ndarray)]
    assert len(arrays) > 20 and all(a.dtype == np.float32 for a in arrays)
    assert loss.dtype == np.float32


# --- repr and hyperparameter validation -------------------------------------------------------

def test_repr_shows_required_and_changed_options_only():
    assert repr(fnn.Linear(3, 4)) == "Linear(n_in=3, n_out=4)"
    assert (repr(fnn.Linear(3, 4, w_init=fnn.init.xavier_uniform, dtype=np.float32))
            == "Linear(n_in=3, n_out=4, w_init=fnn.init.xavier_uniform, dtype='float32')")
    assert (repr(fnn.Linear(3, 4, b_init=functools.partial(fnn.init.uniform, high=0.1)))
            == "Linear(n_in=3, n_out=4, b_init=partial(fnn.init.uniform, high=0.1))")
    assert repr(fnn.BatchNormalization(3)) == "BatchNormalization(n_features=3)"
    assert (repr(fnn.BatchNorm2d(3, alpha=0.9, affine=True))
            == "BatchNorm2d(n_channels=3, alpha=0.9, affine=True)")
    assert repr(fnn.LayerNorm(5, eps=1e-3)) == "LayerNorm(normalized_shape=(5,), eps=0.001)"
    # one policy for every spec: defaults hidden everywhere
    assert repr(fnn.GELU()) == "GELU()"
    assert repr(fnn.GELU("tanh")) == "GELU(approximate='tanh')"
    assert repr(fnn.LeakyReLU()) == "LeakyReLU()" and repr(fnn.Dropout(0.2)) == "Dropout(p=0.2)"
    assert repr(fnn.Residual(fnn.Tanh())) == "Residual(layer=Tanh())"


def test_specs_compare_and_evolve_with_options():
    assert fnn.Linear(3, 4, dtype=np.float32) == fnn.Linear(3, 4, dtype="float32")
    assert fnn.Linear(3, 4) != fnn.Linear(3, 4, dtype="float32")
    assert attrs.evolve(fnn.BatchNorm2d(2), affine=True).affine is True


BAD_HYPER = [
    ("GELU", lambda: fnn.GELU("erf")),
    ("BatchNormalization", lambda: fnn.BatchNormalization(3, eps=-1e-5)),
    ("BatchNormalization", lambda: fnn.BatchNormalization(3, eps=float("nan"))),
    ("BatchNormalization", lambda: fnn.BatchNormalization(3, eps=0.0)),
    ("BatchNorm2d", lambda: fnn.BatchNorm2d(2, eps=0)),
    ("LayerNorm", lambda: fnn.LayerNorm(2, eps=0.0)),
    ("BatchNorm2d", lambda: fnn.BatchNorm2d(0)),
    ("BatchNorm2d", lambda: fnn.BatchNorm2d(2, alpha=1.5)),
    ("BatchNorm2d", lambda: fnn.BatchNorm2d(2, affine=1)),
    ("BatchNorm2d", lambda: fnn.BatchNorm2d(2, dtype="int32")),
    ("LayerNorm", lambda: fnn.LayerNorm(0)),
    ("LayerNorm", lambda: fnn.LayerNorm(())),
    ("LayerNorm", lambda: fnn.LayerNorm((2, True))),
    ("LayerNorm", lambda: fnn.LayerNorm(2.0)),
    ("LayerNorm", lambda: fnn.LayerNorm(3, eps=-1.0)),
    ("LayerNorm", lambda: fnn.LayerNorm(3, elementwise_affine="yes")),
    ("Linear", lambda: fnn.Linear(3, 4, dtype="int64")),
    ("Linear", lambda: fnn.Linear(3, 4, dtype=None)),
    ("Linear", lambda: fnn.Linear(3, 4, dtype="complex128")),
    ("Linear", lambda: fnn.Linear(3, 4, dtype="no-such-dtype")),
    ("Linear", lambda: fnn.Linear(3, 4, w_init="kaiming")),
    ("ChannelwiseScaling", lambda: fnn.ChannelwiseScaling(3, beta_init=0.0)),
]


@pytest.mark.parametrize("name, make", BAD_HYPER, ids=[f"{n}-{i}" for i, (n, _) in
                                                       enumerate(BAD_HYPER)])
def test_invalid_hyperparameters_raise_at_construction(name, make):
    with pytest.raises(ValueError, match=rf"^{name}: "):
        make()


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        fnn.Linear(3, 4, None)  # type: ignore[misc]
