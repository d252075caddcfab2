"""Convolutions (cross-correlations) over (N, C, L) and (N, C, H, W) inputs with stride,
padding, dilation, groups and optional bias, as PyTorch's ``nn.Conv1d`` and ``nn.Conv2d``.

This file holds the contract (hyperparameters, formulas, records, checks); the arrays are
computed by the private kernels in :mod:`fnn._kernels` (a 1-D convolution runs as a 2-D one
with H = 1).
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import numpy as np

from ._kernels import conv_flat, conv_im2col
from ._kernels.geometry import Window, as_4d, int_or_tuple_field
from .core import (
    Key,
    Layer,
    ShapeDtype,
    as_float_array,
    boolean,
    cast_like,
    dtype_field,
    expect_shape,
    initializer_field,
    positive_int,
    spec,
    split_key,
)
from .init import init_param

__all__ = ["Conv1d", "Conv2d", "ConvParams", "ConvParamsNoBias", "ConvCache"]


@attrs.frozen
class ConvParams:
    """Conv1d's / Conv2d's params: kernel W and bias b."""

    W: np.ndarray  # (out_channels, in_channels // groups, *kernel): kernel (kh, kw) or (k,)
    b: np.ndarray  # (out_channels,)


@attrs.frozen
class ConvParamsNoBias:
    """Conv1d's / Conv2d's params with ``bias=False``: the kernel W only."""

    W: np.ndarray  # as ConvParams.W: a convolution with bias=False


@attrs.frozen
class ConvCache:
    """Conv1d's / Conv2d's cache: the input x itself (backward recomputes its windows)."""

    x: np.ndarray  # the input as given, (N, in_channels, H, W) or (N, in_channels, L)
    state: Any = ()


@spec
class _Conv(Layer):
    """The hyperparameters, checks and computation shared by Conv1d and Conv2d (``ndim``
    spatial axes, named ``spatial``)."""

    ndim: ClassVar[int]
    spatial: ClassVar[tuple[str, ...]]

    in_channels: int = attrs.field(validator=positive_int)
    out_channels: int = attrs.field(validator=positive_int)
    kernel_size: int | tuple[int, ...] = int_or_tuple_field(attrs.NOTHING, 1, kw_only=False)
    stride: int | tuple[int, ...] = int_or_tuple_field(1, 1)
    padding: int | tuple[int, ...] | str = int_or_tuple_field("same", 0, "same", "valid")
    dilation: int | tuple[int, ...] = int_or_tuple_field(1, 1)
    groups: int = attrs.field(default=1, kw_only=True, validator=positive_int)
    bias: bool = attrs.field(default=True, kw_only=True, validator=boolean)
    w_init: Any = initializer_field()
    b_init: Any = initializer_field()
    dtype: str = dtype_field()

    def __attrs_post_init__(self) -> None:
        name, window = type(self).__name__, self.window()
        if self.padding == "same":
            sizes = "an int or a pair" if self.ndim == 2 else "an int"
            if any(k % 2 == 0 for k in window.kernel):
                raise ValueError(f"{name}: kernel_size must be odd (\"same\" padding needs a "
                                 f"centre), got {self.kernel_size!r}; for an even kernel pass "
                                 f"an explicit padding ({sizes})")
            if set(window.stride) != {1}:
                raise ValueError(f"{name}: padding=\"same\" needs stride 1, got stride="
                                 f"{self.stride!r}; pass an explicit padding")
        for channels in ("in_channels", "out_channels"):
            if getattr(self, channels) % self.groups:
                raise ValueError(f"{name}: {channels}={getattr(self, channels)} is not "
                                 f"divisible by groups={self.groups}")
        if not self.bias and self.b_init is not None:
            raise ValueError(f"{name}: b_init given but bias=False")

    def window(self) -> Window:
        """Kernel, stride, padding and dilation, one int per spatial axis each."""
        return Window.of(self.ndim, self.kernel_size, self.stride, self.padding, self.dilation)

    def pads(self) -> tuple[int, ...]:
        """The zeros added on each side of each spatial axis, e.g. (ph, pw)."""
        return self.window().padding

    def _tuned(self) -> bool:
        """Stride 1, dilation 1, groups 1, a square odd kernel padded by k // 2: the classic
        configuration, which the flat-padding kernel computes."""
        w = self.window().as_2d()
        (kh, kw), (ph, pw) = w.kernel, w.padding
        return (kh == kw and kh % 2 == 1 and ph == pw == kh // 2 and self.groups == 1
                and w.stride == w.dilation == (1, 1))

    def _W_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels // self.groups, *self.window().kernel)

    def init(self, key: int | Key) -> tuple[ConvParams | ConvParamsNoBias, tuple]:
        """Inputs: ``key``, an int seed or a :class:`fnn.Key` (W then b from keys split off
        it, so W is the same with or without bias).

        Returns ``(ConvParams(W, b), ())`` (``ConvParamsNoBias(W)`` when ``bias`` is False),
        W (out, in/G, *kernel) and b (out,) in ``dtype``."""
        kw, kb = split_key(key, 2)
        fan = self.in_channels // self.groups
        W = init_param(self.w_init, kw, self._W_shape(), self.dtype, fan)
        if not self.bias:
            return ConvParamsNoBias(W=W), ()
        return ConvParams(W=W, b=init_param(self.b_init, kb, (self.out_channels,), self.dtype,
                                            fan)), ()

    def param_shapes(self) -> ConvParams | ConvParamsNoBias:
        W = ShapeDtype(self._W_shape(), self.dtype)
        if not self.bias:
            return ConvParamsNoBias(W=W)
        return ConvParams(W=W, b=ShapeDtype((self.out_channels,), self.dtype))

    def _out_sizes(self, x_shape: tuple) -> tuple[int, ...]:
        """The output's spatial sizes; ValueError naming the layer when no window fits."""
        expect_shape(self, tuple(x_shape), ("N", self.in_channels, *self.spatial))
        return self.window().checked_out_sizes(
            self, x_shape, f" (kernel_size={self.kernel_size!r}, stride={self.stride!r}, "
                           f"padding={self.padding!r}, dilation={self.dilation!r})")

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (input_shape[0], self.out_channels, *self._out_sizes(tuple(input_shape)))

    def forward(self, params: ConvParams | ConvParamsNoBias, state: Any, x: np.ndarray
                ) -> tuple[np.ndarray, ConvCache]:
        """Inputs: params (``ConvParams`` or ``ConvParamsNoBias``), state ``()``, x
        (N, in_channels, *sizes).

        Returns y (N, out_channels, *output sizes) in x's dtype and ``ConvCache(x)``."""
        self.check_spec(params, state)
        x = as_float_array(self, x)
        out = self._out_sizes(x.shape)
        x4, W4 = as_4d(x), as_4d(cast_like(params.W, x))
        b = cast_like(params.b, x) if self.bias else None
        if self._tuned():
            y = conv_flat.forward(x4, W4, b)
        else:
            y = conv_im2col.forward(x4, W4, self.window().as_2d(), self.groups)
            if b is not None:
                y += b[:, None, None]
        return y.reshape(x.shape[0], self.out_channels, *out), ConvCache(x=x, state=state)

    def backward(self, params: ConvParams | ConvParamsNoBias, cache: ConvCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, ConvParams | ConvParamsNoBias]:
        """Inputs: params, the forward's cache, dy (N, out_channels, *output sizes).

        Returns dx (x's shape) computed in the promoted dtype of x and dy, and dparams in the
        params' record and dtypes: dW, and db = dy summed over the batch and the positions."""
        return self._gradients(params, cache, dy, need_dx=True)

    def backward_params(self, params: ConvParams | ConvParamsNoBias, cache: ConvCache,
                        dy: np.ndarray) -> ConvParams | ConvParamsNoBias:
        """``backward(params, cache, dy)[1]`` without computing dx (no W^T dy product, no
        col2im): what a training step calls on its first layer."""
        return self._gradients(params, cache, dy, need_dx=False)[1]

    def _gradients(self, params: ConvParams | ConvParamsNoBias, cache: ConvCache,
                   dy: np.ndarray, need_dx: bool
                   ) -> tuple[np.ndarray | None, ConvParams | ConvParamsNoBias]:
        x = cache.x
        self.check_params(params)
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, self.output_shape(x.shape), "gradient")
        dt = np.result_type(x, dy)
        x4, W4 = as_4d(x.astype(dt, copy=False)), as_4d(params.W.astype(dt, copy=False))
        if self._tuned():  # dy as given: the products promote it
            dx, dW = conv_flat.backward(x4, W4, as_4d(dy), need_dx)
        else:
            dx, dW = conv_im2col.backward(x4, W4, as_4d(dy.astype(dt, copy=False)),
                                          self.window().as_2d(), self.groups, need_dx)
        dx = None if dx is None else dx.reshape(x.shape)
        dW = cast_like(dW.reshape(params.W.shape), params.W)
        if not self.bias:
            return dx, ConvParamsNoBias(W=dW)
        db = cast_like(dy.sum(axis=(0, *range(2, dy.ndim))), params.b)
        return dx, ConvParams(W=dW, b=db)


@spec
class Conv2d(_Conv):
    """y[n, o, r, q] = b[o] + sum over the input channels c of o's group and the kernel
    offsets (i, j) of W[o, c, i, j] * xpad[n, c, r*sh + i*dh, q*sw + j*dw], xpad the input
    zero-padded by (ph, pw) on both sides (PyTorch's ``nn.Conv2d``; a cross-correlation).

    Hyperparameters (PyTorch's meaning; sizes are an int or a pair (rows, columns)):
    ``kernel_size`` k; ``stride`` s (1); ``padding`` p: zeros on both sides of each axis, an
    int, a pair, ``"valid"`` (0) or ``"same"`` (the default: d*(k - 1)/2, output size = input
    size; needs an odd kernel and stride 1 — an even kernel needs an explicit padding);
    ``dilation`` d (1); ``groups`` G (1; in and out channels split into G groups, group g's
    outputs see only group g's inputs; G = in_channels is a depthwise convolution); ``bias``.

    Shapes: x (N, in, H, W) -> y (N, out, Ho, Wo) with Ho = (H + 2p - d(k - 1) - 1) // s + 1
    (likewise Wo; an input giving Ho or Wo < 1 raises ValueError); W (out, in/G, kh, kw);
    b (out,). params: ``ConvParams(W, b)``, or ``ConvParamsNoBias(W)`` when ``bias`` is False.
    Init: W then b from ``w_init`` and ``b_init`` (keys split off the key in that order, the
    same W with or without bias), each None = the classic U(±1/sqrt(in/G)) (note: the fan of
    the classic rule is the channel count, not in*kh*kw as PyTorch's), in ``dtype``.

    Backward: dW[o, c, i, j] = sum over n, r, q of dy[n, o, r, q] xpad[n, c, r*sh + i*dh,
    q*sw + j*dw]; db = sum of dy over batch and pixels; dx the adjoint (each input pixel gets
    the W-weighted dy of every window that read it). The cache is ``ConvCache(x)``, the input.
    Computation is in x's dtype (the promoted dtype of x and dy in backward); dparams come back
    in the params' dtypes.
    """

    ndim: ClassVar[int] = 2
    spatial: ClassVar[tuple[str, ...]] = ("H", "W")


def _padding_default(value: Any):
    """attrs field transformer: the inherited ``padding`` field with another default."""
    def transform(cls: type, fields: list[attrs.Attribute]) -> list[attrs.Attribute]:
        return [f.evolve(default=value) if f.name == "padding" else f for f in fields]
    return transform


@spec(field_transformer=_padding_default(0))
class Conv1d(_Conv):
    """y[n, o, t] = b[o] + sum over the input channels c of o's group and the kernel offsets
    i of W[o, c, i] * xpad[n, c, t*s + i*d], xpad the input zero-padded by p on both sides
    (PyTorch's ``nn.Conv1d``, same arguments and defaults).

    Hyperparameters: ``kernel_size`` k; ``stride`` s (1); ``padding`` p (0): an int,
    ``"valid"`` (0) or ``"same"`` (d*(k - 1)/2: an odd kernel and stride 1 only); ``dilation``
    d (1); ``groups`` G (1); ``bias`` (True); each size an int or a tuple of one.

    Shapes: x (N, in, L) -> y (N, out, Lo), Lo = (L + 2p - d(k - 1) - 1) // s + 1 (Lo < 1
    raises ValueError); W (out, in/G, k); b (out,). params, init (fan in/G), backward, cache
    and dtypes as :class:`Conv2d`, which computes it with H = 1.
    """

    ndim: ClassVar[int] = 1
    spatial: ClassVar[tuple[str, ...]] = ("L",)
