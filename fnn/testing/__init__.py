"""Checks for layers, yours included: one call runs every generic check the project runs on
its built-in layers.

    from fnn.testing import check_layer
    check_layer(Bias(3), (4, 3))   # {'checks': [...], 'gradients': {'dx': ..., 'params[0]': ...}}

:func:`check_layer` draws params and an input itself and runs the individual checks below
(each usable on its own, on an input of your choice); they raise ``AssertionError`` naming the
layer on failure. The hypothesis strategies that draw the inputs of the project's own tests are
in :mod:`fnn.testing.strategies` (imported on its own: hypothesis is a test dependency, not a
runtime one). docs/extending.md walks through adding a layer with them.
"""

from .checks import (
    check_backward_params,
    check_batch_consistency,
    check_dtypes,
    check_gradients,
    check_init_shapes,
    check_loss_gradients,
    check_modes,
    check_purity,
    check_shapes,
    draw_dy,
    numeric_gradient,
    read_only,
    training_flags,
)
from .layer import (
    AWAY_FROM_KINKS,
    KINK_MARGIN,
    check_layer,
    eval_state,
    input_array,
    kink_distance,
    unique_values,
)

__all__ = [
    "check_layer", "check_gradients", "check_loss_gradients", "check_purity", "check_shapes",
    "check_init_shapes", "check_dtypes", "check_batch_consistency", "check_modes",
    "check_backward_params",
    "kink_distance", "training_flags", "eval_state", "input_array", "unique_values",
    "numeric_gradient", "read_only", "draw_dy", "AWAY_FROM_KINKS", "KINK_MARGIN",
]
