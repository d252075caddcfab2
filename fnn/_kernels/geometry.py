"""The window geometry of convolutions and pools, in one place.

A window is, per spatial axis, a kernel size k, a stride s, a padding p (zeros, or -inf for
max pooling, on both sides) and a dilation d. The output length along an axis of length L is
PyTorch's floor rule ``(L + 2p - d*(k - 1) - 1) // s + 1``; ``"same"`` padding is
``d*(k - 1) // 2`` and ``"valid"`` is 0; a stride of None is the kernel (pools).
"""

from __future__ import annotations

import numbers
from typing import Any

import attrs
import numpy as np


def _tuple(value: Any) -> Any:
    """Converter: a list as a tuple (specs stay hashable and save as tuples); else unchanged."""
    return tuple(value) if isinstance(value, list) else value


def _is_size(value: Any, minimum: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


def int_or_tuple_field(default: Any, minimum: int, *words: str, kw_only: bool = True) -> Any:
    """An attrs field for a size hyperparameter: an integer >= ``minimum``, a tuple of one per
    spatial axis of the layer (its class attribute ``ndim``), or one of ``words``; lists become
    tuples; with default None, None is valid too."""

    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        ndim = type(instance).ndim
        if isinstance(value, str) and value in words:
            return
        items = value if isinstance(value, tuple) and len(value) == ndim else (value,)
        if not all(_is_size(v, minimum) for v in items):
            alternatives = "".join(f", {w!r}" for w in words)
            several = "a pair of them" if ndim == 2 else f"a tuple of {ndim} of them"
            raise ValueError(f"{type(instance).__name__}: {attribute.name} must be an integer "
                             f">= {minimum}, {several}{alternatives}, got {value!r}")

    return attrs.field(default=default, kw_only=kw_only, converter=_tuple,
                       validator=attrs.validators.optional(check) if default is None else check)


def ntuple(value: int | tuple[int, ...], n: int) -> tuple[int, ...]:
    """A size hyperparameter as one int per axis: an int repeated n times, or the tuple."""
    return tuple(int(v) for v in value) if isinstance(value, tuple) else (int(value),) * n


def out_size(size: int, k: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Output length along one axis (PyTorch's floor rule):
    (size + 2*pad - dilation*(k - 1) - 1) // stride + 1; < 1 when no window fits."""
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


@attrs.frozen
class Window:
    """Kernel, stride, padding and dilation: one int per spatial axis each."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]

    @classmethod
    def of(cls, ndim: int, kernel_size: Any, stride: Any = None, padding: Any = 0,
           dilation: Any = 1) -> Window:
        """From hyperparameters as the layers take them: stride None = the kernel; padding
        ``"same"`` = d*(k - 1) // 2, ``"valid"`` = 0."""
        k, d = ntuple(kernel_size, ndim), ntuple(dilation, ndim)
        s = k if stride is None else ntuple(stride, ndim)
        if padding == "same":
            p = tuple(di * (ki - 1) // 2 for ki, di in zip(k, d))
        else:
            p = (0,) * ndim if padding == "valid" else ntuple(padding, ndim)
        return cls(k, s, p, d)

    def out_sizes(self, sizes: tuple[int, ...]) -> tuple[int, ...]:
        """Output size per axis for input ``sizes`` (the floor rule; may be < 1)."""
        return tuple(out_size(*a) for a in zip(sizes, self.kernel, self.stride, self.padding,
                                               self.dilation))

    def checked_out_sizes(self, owner: Any, x_shape: tuple, extra: str = "") -> tuple[int, ...]:
        """Output size per axis of an input (N, C, *sizes), or a ValueError naming ``owner``
        when no window fits."""
        out = self.out_sizes(tuple(x_shape[2:]))
        if min(out) < 1:
            raise ValueError(f"{owner!r}: input of shape {tuple(x_shape)} is too small: the "
                             f"output would be {' x '.join(map(str, out))}{extra}")
        return out

    def as_2d(self) -> Window:
        """The same window on (H, W) inputs: a 1-D window gets a first axis of size 1."""
        if len(self.kernel) == 2:
            return self
        return Window((1, *self.kernel), (1, *self.stride), (0, *self.padding),
                      (1, *self.dilation))


def as_4d(a: np.ndarray) -> np.ndarray:
    """A 1-D layer's array (A, B, L) as a view (A, B, 1, L), for the 2-D kernels; a 4-D array
    unchanged."""
    return a if a.ndim == 4 else a[:, :, None, :]


def shape_4d(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape :func:`as_4d` gives an array of ``shape``."""
    return tuple(shape) if len(shape) == 4 else (shape[0], shape[1], 1, shape[2])
