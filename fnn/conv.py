"""2-D convolution (cross-correlation) with stride, padding, dilation, groups and optional bias.

Two kernels compute it. The classic configuration (stride 1, dilation 1, groups 1, a square odd
kernel padded by k // 2 on every side: the default ``padding="same"``) has a tuned one, below.
Every other configuration goes through a general im2col on an explicitly zero-padded input:
a strided read-only view (N, groups, C/groups, kh, kw, Ho, Wo) of it is copied block by block
into columns and multiplied by the kernel of each group (one batched matrix product); backward
adds the column gradients back with one strided addition per kernel offset (kh*kw of them).

Classic kernel layout (see docs/performance.md). With p = k // 2, each input channel image is
stored flattened and zero-padded by g = p*W + p elements at both ends ("flat padding"). A kernel
offset (i, j) is then a flat shift d = (i - p)*W + (j - p), so the k*k shifted copies of the
input are one strided view; only the columns where a shift wraps across an image row need
zeroing. The batch is processed in blocks whose column buffer fits in the L2 cache: per block
one strided copy (im2col) and one batched matrix product per pass, no loop over samples or
channels. The input gradient adds the k*k shifted column gradients with one reduction over a
strided view.
"""

from __future__ import annotations

import numbers
from typing import Any

import attrs
import numpy as np
from numpy.lib.stride_tricks import as_strided

from .core import (
    Key,
    Layer,
    as_float_array,
    boolean,
    cast_like,
    dtype_field,
    expect_shape,
    initializer_field,
    positive_int,
    split_key,
)
from .init import init_param

__all__ = ["Conv2d", "ConvParams", "ConvParamsNoBias", "ConvCache"]

# Bytes of im2col columns per batch block: small enough that a block's columns, its output and
# its column gradient stay in a core's L2 cache, large enough that the products stay efficient.
BLOCK_BYTES = 1 << 20


# --- int-or-pair hyperparameters (shared with pooling) ---------------------------------------

def _tuple(value: Any) -> Any:
    """Converter: a list as a tuple (specs stay hashable and save as tuples); else unchanged."""
    return tuple(value) if isinstance(value, list) else value


def pair(value: int | tuple[int, int]) -> tuple[int, int]:
    """An int-or-pair hyperparameter as (rows, columns)."""
    return (int(value[0]), int(value[1])) if isinstance(value, tuple) else (int(value),) * 2


def int_or_pair(minimum: int, *words: str):
    """Validator: an integer >= ``minimum`` or a tuple of two of them (or one of ``words``)."""

    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        items = value if isinstance(value, tuple) and len(value) == 2 else (value,)
        if not (isinstance(value, str) and value in words) and not all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= minimum
                for v in items):
            alternatives = "".join(f", {w!r}" for w in words)
            raise ValueError(f"{type(instance).__name__}: {attribute.name} must be an integer "
                             f">= {minimum}, a pair of them{alternatives}, got {value!r}")

    return check


def int_or_pair_field(default: Any, minimum: int, *words: str, kw_only: bool = True) -> Any:
    """An int-or-pair hyperparameter (lists become tuples); with default None, None is valid."""
    check = int_or_pair(minimum, *words)
    return attrs.field(default=default, kw_only=kw_only, converter=_tuple,
                       validator=attrs.validators.optional(check) if default is None else check)


def out_size(size: int, k: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Output length along one axis (PyTorch's floor rule):
    (size + 2*pad - dilation*(k - 1) - 1) // stride + 1; < 1 when no window fits."""
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def check_out_size(owner: Any, x_shape: tuple, hw: tuple[int, int], extra: str = "") -> None:
    """ValueError naming ``owner`` when an output size ``hw`` is not positive."""
    if min(hw) < 1:
        raise ValueError(f"{owner!r}: input of shape {tuple(x_shape)} is too small: the output "
                         f"would be {hw[0]} x {hw[1]}{extra}")


# --- records ----------------------------------------------------------------------------------

@attrs.frozen
class ConvParams:
    W: np.ndarray  # (out_channels, in_channels // groups, kh, kw)
    b: np.ndarray  # (out_channels,)


@attrs.frozen
class ConvParamsNoBias:
    W: np.ndarray  # (out_channels, in_channels // groups, kh, kw): Conv2d(..., bias=False)


@attrs.frozen
class ConvCache:
    # classic kernel: the input flat-padded, (N, in_channels, H*W + 2*g), g = (k//2)*(W + 1);
    # general kernel: the input zero-padded, (N, in_channels, H + 2*ph, W + 2*pw)
    xpad: np.ndarray
    x_shape: tuple
    state: Any = ()


def _flat_pad(x: np.ndarray, g: int) -> np.ndarray:
    """(N, C, H, W) -> (N, C, g + H*W + g): each channel image flattened between zero margins."""
    n, c, h, w = x.shape
    xpad = np.zeros((n, c, h * w + 2 * g), dtype=x.dtype)
    xpad[:, :, g:g + h * w] = x.reshape(n, c, h * w)
    return xpad


def _windows(xpad: np.ndarray, k: int, w: int, hw: int) -> np.ndarray:
    """Read-only view (N, C, k, k, H*W) of a flat-padded input:
    win[n, c, i, j, q] = xpad[n, c, i*w + j + q] = x[n, c, r + i - p, s + j - p] for q = r*w + s
    (a wrapped column where s + j - p falls outside [0, w) still needs zeroing)."""
    sn, sc, e = xpad.strides
    return as_strided(xpad, xpad.shape[:2] + (k, k, hw), (sn, sc, w * e, e, e), writeable=False)


def _zero_wrapped(a: np.ndarray, k: int, h: int, w: int) -> None:
    """Zero a[..., i, j, q] (shape (m, C, k, k, h*w)) where column s + j - p of q = r*w + s lies
    outside the image: there a flat shift reads the neighbouring row, not the zero padding."""
    p = k // 2
    a6 = a.reshape(a.shape[:4] + (h, w))
    for j in range(k):
        if j < p:
            a6[:, :, :, j, :, :p - j] = 0
        elif j > p:
            a6[:, :, :, j, :, max(0, w - (j - p)):] = 0


def _im2col(win: np.ndarray, out: np.ndarray, k: int, h: int, w: int) -> np.ndarray:
    """Columns of one block into ``out`` (m, C, k, k, h*w); returned as (m, C*k*k, h*w)."""
    np.copyto(out, win)
    _zero_wrapped(out, k, h, w)
    return out.reshape(out.shape[0], -1, h * w)


def _block(n: int, sample_bytes: int) -> int:
    return max(1, min(n, BLOCK_BYTES // max(1, sample_bytes)))


def _conv_windows(xpad: np.ndarray, groups: int, k: tuple[int, int], out: tuple[int, int],
                  stride: tuple[int, int], dilation: tuple[int, int]) -> np.ndarray:
    """Read-only view (N, G, C/G, kh, kw, Ho, Wo) of a zero-padded input (N, C, Hp, Wp):
    win[n, g, c, i, j, r, s] = xpad[n, g*C/G + c, r*sh + i*dh, s*sw + j*dw]."""
    n, c = xpad.shape[:2]
    sn, sc, sh, sw = xpad.strides
    return as_strided(xpad, (n, groups, c // groups, *k, *out),
                      (sn, sc * (c // groups), sc, dilation[0] * sh, dilation[1] * sw,
                       stride[0] * sh, stride[1] * sw), writeable=False)


@attrs.frozen(repr=False)
class Conv2d(Layer):
    """y[n, o] = b[o] + sum_c correlate(xpad[n, c], W[o, c]) over the input channels c of the
    group of o, sampled with ``stride`` and with the kernel spread by ``dilation``.

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

    Computed as im2col + a batched matrix product per block of the batch; backward:
    dW = sum_n dy cols^T per group, dx = col2im(W^T dy) (the adjoint of im2col), db = sum of
    dy over batch and pixels. The cache holds the padded input (about x's size); backward
    rebuilds the columns block by block. Computation is in x's dtype (the promoted dtype of x
    and dy in backward); dparams come back in the params' dtypes.
    """

    in_channels: int = attrs.field(validator=positive_int)
    out_channels: int = attrs.field(validator=positive_int)
    kernel_size: int | tuple[int, int] = int_or_pair_field(attrs.NOTHING, 1, kw_only=False)
    stride: int | tuple[int, int] = int_or_pair_field(1, 1)
    padding: int | tuple[int, int] | str = int_or_pair_field("same", 0, "same", "valid")
    dilation: int | tuple[int, int] = int_or_pair_field(1, 1)
    groups: int = attrs.field(default=1, kw_only=True, validator=positive_int)
    bias: bool = attrs.field(default=True, kw_only=True, validator=boolean)
    w_init: Any = initializer_field()
    b_init: Any = initializer_field()
    dtype: str = dtype_field()

    def __attrs_post_init__(self) -> None:
        name = type(self).__name__
        if self.padding == "same":
            if any(k % 2 == 0 for k in pair(self.kernel_size)):
                raise ValueError(f"{name}: kernel_size must be odd (\"same\" padding needs a "
                                 f"centre), got {self.kernel_size!r}; for an even kernel pass "
                                 f"an explicit padding (an int or a pair)")
            if pair(self.stride) != (1, 1):
                raise ValueError(f"{name}: padding=\"same\" needs stride 1, got stride="
                                 f"{self.stride!r}; pass an explicit padding")
        for channels in ("in_channels", "out_channels"):
            if getattr(self, channels) % self.groups:
                raise ValueError(f"{name}: {channels}={getattr(self, channels)} is not "
                                 f"divisible by groups={self.groups}")
        if not self.bias and self.b_init is not None:
            raise ValueError(f"{name}: b_init given but bias=False")

    def pads(self) -> tuple[int, int]:
        """The zeros added on each side of the rows and of the columns: (ph, pw)."""
        if self.padding == "same":
            return tuple((d * (k - 1)) // 2 for k, d in zip(pair(self.kernel_size),
                                                               pair(self.dilation)))
        return (0, 0) if self.padding == "valid" else pair(self.padding)

    def _classic(self) -> bool:
        """Stride 1, dilation 1, groups 1, a square odd kernel padded by k // 2: the tuned
        flat-padding kernel computes it."""
        kh, kw = pair(self.kernel_size)
        return (kh == kw and kh % 2 == 1 and self.pads() == (kh // 2, kh // 2) and self.groups == 1
                and pair(self.stride) == pair(self.dilation) == (1, 1))

    def init(self, key: int | Key = 0) -> tuple[ConvParams | ConvParamsNoBias, tuple]:
        kw, kb = split_key(key, 2)
        fan = self.in_channels // self.groups
        W = init_param(self.w_init, kw, (self.out_channels, fan, *pair(self.kernel_size)),
                       self.dtype, fan)
        if not self.bias:
            return ConvParamsNoBias(W=W), ()
        return ConvParams(W=W, b=init_param(self.b_init, kb, (self.out_channels,), self.dtype,
                                            fan)), ()

    def _grads(self, params: Any, dW: np.ndarray, dy: np.ndarray) -> Any:
        """dparams in the params' record and dtypes; db = sum of dy over batch and pixels."""
        dW = cast_like(dW, params.W)
        if not self.bias:
            return ConvParamsNoBias(W=dW)
        return ConvParams(W=dW, b=cast_like(dy.sum(axis=(0, 2, 3)), params.b))

    def forward(self, params: ConvParams | ConvParamsNoBias, state: Any, x: np.ndarray
                ) -> tuple[np.ndarray, ConvCache]:
        x = as_float_array(self, x)
        expect_shape(self, x, ("N", self.in_channels, "H", "W"))
        if self._classic():
            return self._forward_flat(params, state, x)
        return self._forward_general(params, state, x)

    def backward(self, params: ConvParams | ConvParamsNoBias, cache: ConvCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, ConvParams | ConvParamsNoBias]:
        dy = as_float_array(self, dy, "gradient")
        n, _, h, w = cache.x_shape
        expect_shape(self, dy, (n, self.out_channels, *self._out_hw(h, w)), "gradient")
        if self._classic():
            return self._backward_flat(params, cache, dy)
        return self._backward_general(params, cache, dy)

    def _out_hw(self, h: int, w: int) -> tuple[int, int]:
        return tuple(out_size(*a) for a in zip((h, w), pair(self.kernel_size), pair(self.stride),
                                               self.pads(), pair(self.dilation)))

    # --- the classic configuration: flat padding ---------------------------------------------

    def _forward_flat(self, params: Any, state: Any, x: np.ndarray
                      ) -> tuple[np.ndarray, ConvCache]:
        n, c, h, w = x.shape
        k, o, hw = pair(self.kernel_size)[0], self.out_channels, h * w
        xpad = _flat_pad(x, (k // 2) * (w + 1))
        win = _windows(xpad, k, w, hw)
        W2 = cast_like(params.W, x).reshape(o, -1)
        b = cast_like(params.b, x)[:, None] if self.bias else None
        y = np.empty((n, o, hw), dtype=x.dtype)
        m = _block(n, W2.shape[1] * hw * x.itemsize)
        cols = np.empty((m, c, k, k, hw), dtype=x.dtype)
        for s in range(0, n, m):
            e = min(n, s + m)
            yb = np.matmul(W2, _im2col(win[s:e], cols[:e - s], k, h, w), out=y[s:e])
            if b is not None:
                yb += b
        return y.reshape(n, o, h, w), ConvCache(xpad=xpad, x_shape=x.shape, state=state)

    def _backward_flat(self, params: Any, cache: ConvCache, dy: np.ndarray
                       ) -> tuple[np.ndarray, Any]:
        n, c, h, w = cache.x_shape
        k, o, hw = pair(self.kernel_size)[0], self.out_channels, h * w
        g = (k // 2) * (w + 1)
        dt = np.result_type(cache.xpad, dy)
        win = _windows(cache.xpad.astype(dt, copy=False), k, w, hw)
        W2T = params.W.astype(dt, copy=False).reshape(o, -1).T
        ckk = W2T.shape[0]
        dy2 = dy.reshape(n, o, hw)
        m = _block(n, ckk * hw * np.dtype(dt).itemsize)
        cols = np.empty((m, c, k, k, hw), dtype=dt)
        # Column gradients live in the middle of zero-margined slabs, so that the view `shifted`
        # (shifted[.., i, j, q] = dcols[.., i, j, q - d_ij], zero out of range) adds them back
        # into dx with one reduction over (i, j): col2im without scatter.
        dpad = np.zeros((m, c, k, k, hw + 2 * g), dtype=dt)
        dcols = dpad[..., g:g + hw]
        s0, s1, s2, s3, e_ = dpad.strides
        shifted = as_strided(dpad[..., 2 * g:], dcols.shape, (s0, s1, s2 - w * e_, s3 - e_, e_),
                             writeable=False)
        dx = np.empty((n, c, hw), dtype=dt)
        dWT = np.zeros((ckk, o), dtype=dt)
        part = np.empty((m, ckk, o), dtype=dt)
        for s in range(0, n, m):
            e = min(n, s + m)
            cb = _im2col(win[s:e], cols[:e - s], k, h, w)
            dWT += np.matmul(cb, dy2[s:e].transpose(0, 2, 1), out=part[:e - s]).sum(axis=0)
            np.matmul(W2T, dy2[s:e], out=dpad[:e - s].reshape(e - s, ckk, -1)[:, :, g:g + hw])
            _zero_wrapped(dcols[:e - s], k, h, w)
            np.sum(shifted[:e - s], axis=(2, 3), out=dx[s:e])
        return dx.reshape(n, c, h, w), self._grads(params, dWT.T.reshape(params.W.shape), dy)

    # --- any other configuration: explicit zero padding, strided windows ----------------------

    def _forward_general(self, params: Any, state: Any, x: np.ndarray
                         ) -> tuple[np.ndarray, ConvCache]:
        n, c, h, w = x.shape
        (ph, pw), k, G = self.pads(), pair(self.kernel_size), self.groups
        out = self._out_hw(h, w)
        check_out_size(self, x.shape, out, f" (kernel_size={self.kernel_size!r}, stride="
                                     f"{self.stride!r}, padding={self.padding!r}, dilation="
                                     f"{self.dilation!r})")
        xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
        win = _conv_windows(xpad, G, k, out, pair(self.stride), pair(self.dilation))
        kk, p = c // G * k[0] * k[1], out[0] * out[1]
        W3 = cast_like(params.W, x).reshape(G, -1, kk)
        y = np.empty((n, G, W3.shape[1], p), dtype=x.dtype)
        m = _block(n, c * k[0] * k[1] * p * x.itemsize)
        cols = np.empty((m, *win.shape[1:]), dtype=x.dtype)
        for s in range(0, n, m):
            e = min(n, s + m)
            np.copyto(cols[:e - s], win[s:e])
            np.matmul(W3, cols[:e - s].reshape(e - s, G, kk, p), out=y[s:e])
        y = y.reshape(n, self.out_channels, *out)
        if self.bias:
            y += cast_like(params.b, x)[:, None, None]
        return y, ConvCache(xpad=xpad, x_shape=x.shape, state=state)

    def _backward_general(self, params: Any, cache: ConvCache, dy: np.ndarray
                          ) -> tuple[np.ndarray, Any]:
        n, c, h, w = cache.x_shape
        (ph, pw), k, G = self.pads(), pair(self.kernel_size), self.groups
        (sh, sw), (dh, dw) = pair(self.stride), pair(self.dilation)
        out = dy.shape[2:]
        dt = np.result_type(cache.xpad, dy)
        win = _conv_windows(cache.xpad.astype(dt, copy=False), G, k, out, (sh, sw), (dh, dw))
        kk, p = c // G * k[0] * k[1], out[0] * out[1]
        W3T = params.W.astype(dt, copy=False).reshape(G, -1, kk).transpose(0, 2, 1)
        dy4 = dy.astype(dt, copy=False).reshape(n, G, -1, p)
        m = _block(n, c * k[0] * k[1] * p * np.dtype(dt).itemsize)
        cols = np.empty((m, *win.shape[1:]), dtype=dt)
        dcols = np.empty((m, G, kk, p), dtype=dt)
        part = np.empty((m, G, dy4.shape[2], kk), dtype=dt)
        dW = np.zeros((G, dy4.shape[2], kk), dtype=dt)
        dxpad = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dt)
        for s in range(0, n, m):
            e = min(n, s + m)
            cb = cols[:e - s]
            np.copyto(cb, win[s:e])
            cb = cb.reshape(e - s, G, kk, p)
            dW += np.matmul(dy4[s:e], cb.transpose(0, 1, 3, 2), out=part[:e - s]).sum(axis=0)
            dc = np.matmul(W3T, dy4[s:e], out=dcols[:e - s]).reshape(e - s, c, *k, *out)
            # col2im: window offset (i, j) of output pixel (r, q) read input pixel
            # (r*sh + i*dh, q*sw + j*dw); add each offset's gradients back there
            for i in range(k[0]):
                for j in range(k[1]):
                    dxpad[s:e, :, i * dh:i * dh + sh * (out[0] - 1) + 1:sh,
                          j * dw:j * dw + sw * (out[1] - 1) + 1:sw] += dc[:, :, i, j]
        dx = dxpad[:, :, ph:ph + h, pw:pw + w]
        return (np.ascontiguousarray(dx) if ph or pw else dx,
                self._grads(params, dW.reshape(params.W.shape), dy))
