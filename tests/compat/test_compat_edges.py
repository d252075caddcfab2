"""compat edge cases found by an adversarial pass."""

from __future__ import annotations

import numpy as np
import pytest

import fnn
from compat import Linear, MSECriterion, Sequential


@pytest.mark.parametrize("bad", [3, fnn.ReLU(), MSECriterion()], ids=repr)
def test_sequential_add_refuses_what_is_not_a_module(bad):
    """add accepted anything; the next forward then failed with a bare AttributeError ('int'
    object has no attribute 'forward') or a wrong-arity TypeError of fnn's forward."""
    net = Sequential()
    net.add(Linear(3, 4))
    with pytest.raises(TypeError, match="Sequential.add: expected a compat Module"):
        net.add(bad)
    assert len(net) == 1
    assert net.forward(np.zeros((2, 3))).shape == (2, 4)
