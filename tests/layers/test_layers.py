"""Generic checks on every row of the layer table (tests/cases/): shapes and records, modes,
purity, dtypes, float64 gradients, batch consistency, backward_params; numpy-scalar
hyperparameters keep float32. The semantics of each family: test_activations.py,
test_normalization.py, test_dropout.py, test_conv*.py, test_recurrent.py, test_attention.py,
test_sequential.py; fnn.testing's own tests (it catches broken layers):
tests/core/test_testing.py."""

from __future__ import annotations

import numpy as np
import pytest
from cases import CASE_IDS, CASES, examples
from helpers import float_leaves
from hypothesis import assume, given
from hypothesis import strategies as st

import fnn
from fnn import tree
from fnn.testing import (
    KINK_MARGIN,
    check_backward_params,
    check_batch_consistency,
    check_dtypes,
    check_gradients,
    check_modes,
    check_purity,
    check_shapes,
    kink_distance,
)
from fnn.testing.strategies import keys

ROWS = pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
UNCOUPLED = [case for case in CASES if not case.batch_coupled]


# --- the generic checks, one per acceptance item, each on every row: the public fnn.testing
# functions that fnn.testing.check_layer runs on a user's layer ----------------------------

@ROWS
@given(data=st.data())
def test_shapes_and_records(case, data):
    ex = data.draw(examples(case))
    check_shapes(ex.layer, ex.params, ex.state, ex.x)


@ROWS
@given(data=st.data())
def test_init_returns_training_mode(case, data):
    layer, _ = case.setup(data.draw)
    check_modes(layer, data.draw(keys()))


@ROWS
@given(data=st.data())
def test_purity(case, data):
    ex = data.draw(examples(case))
    check_purity(ex.layer, ex.params, ex.state, ex.x)


@ROWS
@given(data=st.data())
def test_dtype_preserved(case, data):
    ex = data.draw(examples(case))
    check_dtypes(ex.layer, ex.params, ex.state, ex.x)


@ROWS
@given(data=st.data())
def test_gradients_float64(case, data):
    ex = data.draw(examples(case))
    # central differences with step 1e-6 straddle no kink (ReLU at 0, a tie in a pool window)
    assume(kink_distance(ex.layer, ex.params, ex.state, ex.x) > KINK_MARGIN)
    check_gradients(ex.layer, ex.params, ex.state, ex.x)


@pytest.mark.parametrize("case", UNCOUPLED, ids=[c.name for c in UNCOUPLED])
@given(data=st.data())
def test_batch_consistency(case, data):
    ex = data.draw(examples(case, min_batch=2, max_batch=4))
    cut = data.draw(st.integers(1, ex.x.shape[0] - 1))
    check_batch_consistency(ex.layer, ex.params, ex.state, ex.x, cut)


# --- backward_params: the dparams without the input gradient ----------------------------------

@ROWS
@given(data=st.data())
def test_backward_params_equals_backward_dparams(case, data):
    """What a training step calls on its first layer gives the same bits as backward's
    dparams, for every row (Linear, Conv2d, Sequential and Residual skip dx; the rest use
    the default)."""
    ex = data.draw(examples(case))
    check_backward_params(ex.layer, ex.params, ex.state, ex.x)


@pytest.mark.parametrize("make", [
    lambda: fnn.LeakyReLU(slope=np.float64(0.1)), lambda: fnn.ELU(alpha=np.float64(0.5)),
    lambda: fnn.Dropout(p=np.float64(0.5)),
    lambda: fnn.BatchNormalization(3, alpha=np.float64(0.5))], ids=["leakyrelu", "elu",
                                                                     "dropout", "batchnorm"])
def test_numpy_scalar_hyperparameters_do_not_upcast(make):
    """A float64 numpy scalar as a hyperparameter must not turn float32 outputs into float64."""
    layer = make()
    params, state = layer.init(0)
    state = tree.cast(state, np.float32)
    x = -np.ones((2, 3), np.float32)
    y, cache = layer.forward(params, state, x)
    dx, _ = layer.backward(params, cache, x)
    assert y.dtype == dx.dtype == np.float32
    assert all(a.dtype == np.float32 for a in float_leaves(cache.state))
