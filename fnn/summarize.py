"""``fnn.summary``: a table of a model's layers, output shapes and parameter counts."""

from __future__ import annotations

import numbers
from typing import Any

from . import tree
from .core import ShapeDtype
from .sequential import Sequential

__all__ = ["summary", "count"]


def count(shapes: Any) -> int:
    """The number of array elements in a tree of :class:`ShapeDtype` leaves (e.g.
    ``layer.param_shapes()``)."""
    return sum(leaf.size for leaf in tree.leaves(shapes) if isinstance(leaf, ShapeDtype))


def _rows(layer: Any, shape: tuple, depth: int) -> tuple[list[tuple], tuple]:
    """(name, output shape, params, state) per layer, children of a Sequential indented."""
    if isinstance(layer, Sequential):
        rows: list[tuple] = [("  " * depth + "Sequential", None, None, None)]
        for child in layer.layers:
            child_rows, shape = _rows(child, shape, depth + 1)
            rows += child_rows
        return rows, shape
    shape = tuple(layer.output_shape(shape))
    return [("  " * depth + repr(layer).replace("\n", " "), shape,
             count(layer.param_shapes()), count(layer.state_shapes()))], shape


def summary(net: Any, input_shape: tuple, *, print_fn: Any = print) -> str:
    """A table of ``net``'s layers (a Sequential's children one per row, nested ones indented)
    with each output shape, the number of parameters and of state values (BatchNorm's moving
    statistics), and the totals, computed from ``output_shape``, ``param_shapes`` and
    ``state_shapes`` without allocating anything.

    Inputs: ``net``, any fnn layer; ``input_shape``, the input's shape with the batch axis
    first (``None`` allowed there, e.g. ``(None, 64)``); ``print_fn`` (default ``print``; None
    prints nothing). Returns the table as a string. A layer that does not fit raises
    ValueError naming it (and, inside a Sequential, its index).
    """
    if not isinstance(input_shape, (tuple, list)) or not all(
            d is None or (isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 0)
            for d in input_shape):
        raise ValueError(f"summary: input_shape must be a tuple of non-negative ints (None "
                         f"allowed for the batch axis), got {input_shape!r}")
    if not callable(getattr(net, "output_shape", None)):
        raise TypeError(f"summary: net must be an fnn layer (with output_shape), got {net!r}")
    net.output_shape(tuple(input_shape))  # a layer that does not fit is named, with its index
    rows, _ = _rows(net, tuple(input_shape), 0)
    header = ("layer", "output shape", "params", "state")
    table = [header] + [(name, "" if out is None else str(out),
                         "" if p is None else f"{p:,}", "" if s is None else f"{s:,}")
                        for name, out, p, s in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    rule = "-" * (sum(widths) + 6)

    def line(row: tuple) -> str:
        return "  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]),
                          row[2].rjust(widths[2]), row[3].rjust(widths[3])]).rstrip()

    n_params, n_state = count(net.param_shapes()), count(net.state_shapes())
    text = "\n".join([line(header), rule, *map(line, table[1:]), rule,
                      f"input shape {tuple(input_shape)}, output shape "
                      f"{tuple(net.output_shape(tuple(input_shape)))}",
                      f"total params: {n_params:,}   state values: {n_state:,}"])
    if print_fn is not None:
        print_fn(text)
    return text
