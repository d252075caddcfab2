"""Shared plumbing for every layer: random keys, input checks and hyperparameter validators.

Keys
----
Randomness in fnn is explicit. A :class:`Key` is a frozen record holding one non-negative
integer seed; :func:`split_key` derives independent child keys from it and :func:`generator`
turns a key into a fresh ``numpy.random.Generator``. Both are pure: the same key always gives
the same children and the same numbers. Both go through ``numpy.random.SeedSequence`` with
distinct spawn keys, so a key's children and its own random stream never overlap.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

__all__ = [
    # keys
    "Key", "as_key", "split_key", "generator",
    # the layer base, the spec decorator, shape-only descriptions and their checks
    "Layer", "spec", "spec_repr", "ShapeDtype", "backward_params",
    # input checks
    "FLOAT_DTYPES", "as_float_array", "expect_shape", "shape_str", "cast_like",
    # hyperparameter converters, validators and fields (for specs of your own)
    "real_float", "positive_int", "positive_real", "boolean", "finite_real", "in_range", "one_of",
    "dtype_field", "initializer_field",
]


def _seed_validator(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"Key: seed must be a non-negative int, got {value!r}")


@attrs.frozen
class Key:
    """A random key: one non-negative integer seed. Build one with ``Key(0)`` or pass an int."""

    seed: int = attrs.field(converter=lambda s: int(s) if isinstance(s, np.integer) else s,
                            validator=_seed_validator)


def as_key(key: int | Key) -> Key:
    """Return ``key`` as a :class:`Key`; a plain int (or numpy integer) is a seed."""
    if isinstance(key, Key):
        return key
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return Key(int(key))
    raise TypeError(f"expected an int seed or an fnn.Key, got {type(key).__name__}: {key!r}")


def split_key(key: int | Key, n: int = 2) -> tuple[Key, ...]:
    """Derive ``n`` independent keys from ``key`` (pure: same key, same children); ``n`` a
    non-negative int (else ValueError naming split_key)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"split_key: n must be a non-negative int, got {n!r}")
    seq = np.random.SeedSequence(as_key(key).seed, spawn_key=(0,))
    return tuple(Key(int(w)) for w in seq.generate_state(n, dtype=np.uint64))


def generator(key: int | Key) -> np.random.Generator:
    """A new ``numpy.random.Generator`` whose stream is fixed by ``key``."""
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence(as_key(key).seed, spawn_key=(1,))))


def shape_str(shape: Sequence[int | str | None]) -> str:
    """Format an expected shape: ints as numbers, names (or None) as letters, e.g. ``(N, 784)``."""
    parts = ["*" if s is None else str(s) for s in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


# The dtypes fnn computes in. float16 (and longdouble) are refused with one message
# everywhere rather than half supported: scipy's special functions, BLAS and the finite
# differences all work in float32/float64, and a silently upcast float16 is a wrong result.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_array(owner: Any, x: Any, name: str = "input") -> np.ndarray:
    """``x`` as a float32 or float64 ndarray (no copy), or a TypeError naming ``owner``.

    Integer and boolean arrays are rejected rather than computed in integer arithmetic, and
    float16/longdouble rather than upcast; the message says how to convert explicitly.
    """
    x = np.asarray(x)
    if x.dtype not in FLOAT_DTYPES:
        kind = "floating-point" if not np.issubdtype(x.dtype, np.floating) else "float32 or float64"
        raise TypeError(
            f"{owner!r}: expected a {kind} {name}, got dtype {x.dtype}; fnn computes in float32 "
            f"or float64: convert it explicitly, e.g. {name}.astype(np.float32)")
    return x


def expect_shape(owner: Any, x: np.ndarray | tuple[int, ...],
                 expected: Sequence[int | str | None], name: str = "input") -> tuple[int, ...]:
    """Raise ValueError naming ``owner`` unless the shape of ``x`` (an array, or a shape
    tuple as ``output_shape`` gets) matches ``expected``; returns the shape as a tuple.

    ``expected`` holds ints (must match) and names such as ``"N"`` (any size).
    """
    shape = tuple(x) if isinstance(x, (tuple, list)) else tuple(x.shape)
    ok = len(shape) == len(expected) and all(
        not isinstance(e, int) or e == s for e, s in zip(expected, shape))
    if not ok:
        raise ValueError(f"{owner!r}: expected {name} of shape {shape_str(expected)}, "
                         f"got shape {shape}")
    return shape


# --- hyperparameter validators (attrs): the message names the class -----------------------

def real_float(value: Any) -> Any:
    """Converter: a real hyperparameter as a Python float (a numpy float64 scalar would turn
    float32 arithmetic into float64); anything else is left for the validator to reject."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def positive_int(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Validator: an integer > 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{type(instance).__name__}: {attribute.name} must be a positive "
                         f"integer, got {value!r}")


def boolean(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Validator: True or False (not 0/1)."""
    if not isinstance(value, bool):
        raise ValueError(f"{type(instance).__name__}: {attribute.name} must be True or False, "
                         f"got {value!r}")


def finite_real(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Validator: a finite real number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{type(instance).__name__}: {attribute.name} must be a finite real "
                         f"number, got {value!r}")


def in_range(low: float, high: float, *, high_open: bool = True):
    """Validator: ``low <= value < high`` (or ``<= high`` when ``high_open`` is False)."""

    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        finite_real(instance, attribute, value)
        ok = low <= value < high if high_open else low <= value <= high
        if not ok:
            bracket = ")" if high_open else "]"
            raise ValueError(f"{type(instance).__name__}: {attribute.name} must be in "
                             f"[{low}, {high}{bracket}, got {value!r}")

    return check


def one_of(*choices: Any):
    """Validator: the value is one of ``choices`` (e.g. ``one_of("mean", "sum", "none")``)."""

    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if not any(type(value) is type(c) and value == c for c in choices):
            raise ValueError(f"{type(instance).__name__}: {attribute.name} must be one of "
                             f"{', '.join(map(repr, choices))}, got {value!r}")

    return check


def positive_real(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Validator: a finite real number > 0 (e.g. a normalisation's eps)."""
    finite_real(instance, attribute, value)
    if value <= 0:
        raise ValueError(f"{type(instance).__name__}: {attribute.name} must be positive, "
                         f"got {value!r}")


def cast_like(a: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``a`` in ``like``'s dtype (no copy when it already is)."""
    return a.astype(like.dtype, copy=False)


def _dtype_name(value: Any) -> Any:
    """Converter: a dtype as its numpy name (``np.float32`` -> ``"float32"``); anything numpy
    does not read as a dtype (and None, which numpy would read as float64) is left for the
    validator to reject."""
    if value is None:
        return value
    try:
        return np.dtype(value).name
    except (TypeError, ValueError):
        return value


def _floating_dtype(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    try:
        # float32 or float64 only: params of another float dtype would be refused at forward
        ok = isinstance(value, str) and np.dtype(value) in FLOAT_DTYPES
    except TypeError:  # a string numpy does not read as a dtype
        ok = False
    if not ok:
        raise ValueError(f"{type(instance).__name__}: {attribute.name} must be a floating-point "
                         f"dtype, float32 or float64 (e.g. \"float32\", np.float64), got "
                         f"{value!r}")


def dtype_field() -> Any:
    """A keyword-only ``dtype`` hyperparameter: the dtype ``init`` creates params and state in,
    stored as its numpy name (a plain string, so specs compare, print and save simply);
    default ``"float64"``."""
    return attrs.field(default="float64", kw_only=True, converter=_dtype_name,
                       validator=_floating_dtype)


def _initializer(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and not callable(value):
        raise ValueError(f"{type(instance).__name__}: {attribute.name} must be an initializer "
                         f"(key, shape, dtype) -> array, or None, got {value!r}")


def initializer_field() -> Any:
    """A keyword-only initializer hyperparameter (``w_init``, ``gamma_init``, ...): a callable
    ``(key, shape, dtype) -> array`` such as ``fnn.init.kaiming_uniform``, or None for the
    layer's default."""
    return attrs.field(default=None, kw_only=True, validator=_initializer)


def _value_repr(value: Any) -> str:
    """repr of a hyperparameter; functions by dotted name, partials by their parts (no
    memory addresses)."""
    if isinstance(value, functools.partial):
        args = [_value_repr(value.func), *map(repr, value.args),
                *(f"{k}={v!r}" for k, v in value.keywords.items())]
        return f"partial({', '.join(args)})"
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{value.__module__}.{value.__qualname__}"
    return repr(value)


@attrs.frozen(repr=False)
class ShapeDtype:
    """The shape and dtype of an array that is not allocated: a leaf of the trees that
    :meth:`Layer.param_shapes` returns. ``repr`` is the short form ``float32[128, 64]``."""

    shape: tuple[int, ...] = attrs.field(converter=tuple)
    dtype: str = attrs.field(converter=lambda d: np.dtype(d).name)

    @property
    def size(self) -> int:
        """The number of elements."""
        return int(np.prod(self.shape, dtype=np.int64))

    def __repr__(self) -> str:
        return f"{self.dtype}[{', '.join(map(str, self.shape))}]"


def spec_repr(self: Any) -> str:
    """``Name(required fields, optional fields that differ from their defaults)``, e.g.
    ``Linear(n_in=3, n_out=4)`` or ``Linear(n_in=3, n_out=4, dtype='float32')``: the one repr
    policy of every fnn spec (layers, criteria, optimizers), installed by :func:`spec`."""
    parts = []
    for f in attrs.fields(type(self)):
        value = getattr(self, f.name)
        if f.repr and (f.default is attrs.NOTHING or not _is_default(value, f.default, self)):
            parts.append(f"{f.name}={_value_repr(value)}")
    return f"{type(self).__name__}({', '.join(parts)})"


def _is_default(value: Any, default: Any, instance: Any) -> bool:
    if isinstance(default, attrs.Factory):
        default = default.factory(instance) if default.takes_self else default.factory()
    return type(value) is type(default) and bool(value == default)


def spec(cls: type | None = None, **options: Any) -> Any:
    """Class decorator for every fnn spec (layer, criterion, optimizer): a frozen attrs class
    (hyperparameters only, hashable, compared by value) with the :func:`spec_repr` policy
    (defaults hidden) unless the class defines its own ``__repr__``. ``@spec`` or
    ``@spec(**options)`` with further ``attrs.frozen`` options (e.g. ``field_transformer``)."""
    if cls is None:
        return lambda c: spec(c, **options)
    own_repr = "__repr__" in cls.__dict__
    cls = attrs.frozen(cls, repr=False, **options)
    if not own_repr:
        cls.__repr__ = spec_repr
    return cls


def _check_unless_empty(owner: Any, name: str, value: Any, expected: Any) -> None:
    # a layer without params or state ignores what it is given (the contract says (), and
    # Sequential checks its tuples' lengths); fnn.tree imports this module, hence the import
    if not (type(expected) is tuple and len(expected) == 0):
        from .tree import check_tree
        check_tree(owner, name, value, expected)


def backward_params(layer: Any, params: Any, cache: Any, dy: np.ndarray) -> Any:
    """The dparams of ``layer.backward(params, cache, dy)`` without an input gradient that
    nobody uses: ``layer.backward_params(...)`` (see :meth:`Layer.backward_params`), or
    ``backward(...)[1]`` for a layer of your own that does not derive from :class:`Layer`."""
    method = getattr(layer, "backward_params", None)
    if method is None:
        return layer.backward(params, cache, dy)[1]
    return method(params, cache, dy)


class Layer:
    """Base of the fnn layers: the defaults for a layer with no params and no state.

    Subclasses are :func:`spec` classes holding hyperparameters only and define
    ``forward(params, state, x) -> (y, cache)``,
    ``backward(params, cache, dy) -> (dx, dparams)`` and
    ``output_shape(input_shape) -> shape``; a layer with params defines ``init`` and
    ``param_shapes()`` (the params tree with :class:`ShapeDtype` leaves, nothing allocated), a
    layer with state ``state_shapes()`` likewise, and its forward calls :meth:`check_spec`.
    """

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of ``forward``'s output for an input of ``input_shape`` (batch axis
        first), computed without allocating anything; a ValueError naming the layer when the
        input shape does not fit."""
        raise NotImplementedError(f"{type(self).__name__} does not define output_shape")

    def param_shapes(self) -> Any:
        """The params tree that ``init`` returns, with a :class:`ShapeDtype` at every array
        leaf (nothing allocated); here ``()``: no params."""
        return ()

    def state_shapes(self) -> Any:
        """The state tree that ``init`` returns, with a :class:`ShapeDtype` at every array
        leaf (nothing allocated); here ``()``: no state."""
        return ()

    def check_spec(self, params: Any, state: Any) -> None:
        """Raise TypeError / ValueError naming this layer and the field unless ``params`` and
        ``state`` fit :meth:`param_shapes` and :meth:`state_shapes` (containers, float32 or
        float64 arrays of the right shapes). Every layer's forward calls it first."""
        self.check_params(params)
        _check_unless_empty(self, "state", state, self.state_shapes())

    def check_params(self, params: Any) -> None:
        """The params half of :meth:`check_spec`, for ``backward``: params of another shape
        than the forward's would give gradients of the wrong shape or a bare numpy error."""
        _check_unless_empty(self, "params", params, self.param_shapes())

    def backward_params(self, params: Any, cache: Any, dy: Any) -> Any:
        """Only the ``dparams`` of ``backward(params, cache, dy)``, for a layer whose input
        gradient nobody uses (the first layer of a training step). Layers where dx costs real
        work (Linear, Conv2d, Sequential, Residual) skip computing it; here, the default,
        ``backward(params, cache, dy)[1]``."""
        return self.backward(params, cache, dy)[1]

    def init(self, key: int | Key) -> tuple[Any, Any]:
        """Inputs: ``key``, an int seed or a :class:`Key` (unused: nothing random).

        Returns ``(params, state)``, here ``((), ())``: nothing to learn, nothing to carry."""
        as_key(key)
        return (), ()

    __repr__ = spec_repr
