"""Optimizer edge cases found by an adversarial pass: the params' dtype checked for optimizers
without slots, 0-d params, user transformations that change shapes, clipping non-arrays."""

from __future__ import annotations

import numpy as np
import pytest

import fnn
from fnn import transforms

OPTIMIZERS = [fnn.SGD(0.1), fnn.SGD(0.1, momentum=0.9), fnn.SGDMomentum(0.1, 0.9), fnn.Adam(),
              fnn.AdamW(), fnn.AdamW(weight_decay=0.1), fnn.SGD(0.1, weight_decay=0.1),
              fnn.RMSprop(), fnn.Lion(), fnn.Lion(weight_decay=0.1),
              transforms.chain(transforms.ClipByGlobalNorm(1.0), fnn.SGD(0.1))]


@pytest.mark.parametrize("param", [np.ones(3, np.int64), np.ones(3, np.float16)],
                         ids=["int64", "float16"])
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=repr)
def test_update_refuses_non_float_params_even_without_slots(opt, param):
    """SGD without momentum has no slot tree, and the gradient check compared the leaves the
    wrong way round: int64 params were updated into float64 ones, float16 params kept."""
    state = opt.init((np.ones(3),))
    with pytest.raises(TypeError, match=r"params\[0\]"):
        opt.update((param,), (np.ones(3),), state)


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=repr)
def test_zero_d_param_stays_an_array_over_two_updates(opt):
    """A 0-d param came back as a numpy scalar (w - lr * g), which the next update refused."""
    params, grads = (np.array(1.0),), (np.array(0.5),)
    state = opt.init(params)
    for _ in range(2):
        params, state = opt.update(params, grads, state)
        assert isinstance(params[0], np.ndarray) and params[0].shape == ()
        assert params[0].dtype == np.float64


def test_chain_refuses_a_transformation_that_changes_shapes():
    """A user transformation returning grads of shape (1, 3) for a (3,) param silently turned
    the param into (1, 3)."""
    def broadcast(params, grads, lr):
        return params, fnn.tree.map(lambda g: g[None], grads)

    opt = transforms.chain(broadcast, fnn.SGD(0.1))
    params = (np.ones(3),)
    with pytest.raises(ValueError, match=r"SGD.update: after the transformation .*grads\[0\]"):
        opt.update(params, (np.ones(3),), opt.init(params))


@pytest.mark.parametrize("grads", [[[1.0, 2.0]], (np.ones(2), 3.0)])
def test_clip_by_global_norm_refuses_non_array_leaves(grads):
    """Numbers were left out of the norm and returned unclipped (norm 0.0 for [[1.0, 2.0]])."""
    with pytest.raises(TypeError, match="clip_by_global_norm: grads.* gradients are arrays"):
        fnn.clip_by_global_norm(grads, 1.0)
