"""Self-attention: MultiHeadAttention and TransformerEncoderLayer (batch first, as PyTorch's
``batch_first=True``)."""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np

from .activations import GELU, ReLU
from .core import (
    Key,
    Layer,
    ShapeDtype,
    as_float_array,
    boolean,
    cast_like,
    dtype_field,
    expect_shape,
    in_range,
    one_of,
    positive_int,
    positive_real,
    real_float,
    spec,
    split_key,
)
from .dropout import Dropout
from .init import xavier_uniform, zeros
from .linear import Linear, affine, affine_backward
from .normalization import LayerNorm
from .sequential import Residual, Sequential

__all__ = ["MultiHeadAttention", "AttentionParams", "AttentionCache",
           "TransformerEncoderLayer"]


@attrs.frozen
class AttentionParams:
    """torch's names with the dot dropped: ``out_proj_weight`` is ``out_proj.weight``. Without
    bias, ``in_proj_bias`` and ``out_proj_bias`` are ``()`` (no leaves)."""

    in_proj_weight: np.ndarray  # (3 dim, dim): the rows of W_q, then W_k, then W_v
    in_proj_bias: np.ndarray | tuple  # (3 dim,)
    out_proj_weight: np.ndarray  # (dim, dim)
    out_proj_bias: np.ndarray | tuple  # (dim,)


@attrs.frozen
class AttentionCache:
    """What MultiHeadAttention's backward needs (shapes below); ``state`` the new state."""

    x: np.ndarray  # (N, T, dim)
    q: np.ndarray  # (N, H, T, d), already scaled by 1 / sqrt(d)
    k: np.ndarray  # (N, H, T, d)
    v: np.ndarray  # (N, H, T, d)
    weights: np.ndarray  # (N, H, T, T): the softmax, before dropout
    dropout: Any  # Dropout's cache on the weights; None without dropout or in evaluation
    heads: np.ndarray  # (N * T, dim): the heads' outputs, concatenated, before out_proj
    state: Any


def _bias(b: Any) -> np.ndarray | None:
    return None if isinstance(b, tuple) else b


def _split_heads(a: np.ndarray, n: int, t: int, h: int) -> np.ndarray:
    """(N * T, H * d) -> (N, H, T, d) (d given: an empty batch or sequence has no -1 to infer)."""
    return a.reshape(n, t, h, a.shape[1] // h).transpose(0, 2, 1, 3)


def _merge_heads(a: np.ndarray) -> np.ndarray:
    """(N, H, T, d) -> (N * T, H * d)."""
    n, h, t, d = a.shape
    return a.transpose(0, 2, 1, 3).reshape(n * t, h * d)


@spec
class MultiHeadAttention(Layer):
    """Multi-head scaled dot-product self-attention, as
    ``torch.nn.MultiheadAttention(dim, num_heads, dropout, bias, batch_first=True)`` called
    as ``mha(x, x, x, need_weights=False, attn_mask=causal mask)[0]``.

    With H = num_heads heads of d = dim / H features, and for each head h:
    [q, k, v] = x @ in_proj_weight.T + in_proj_bias, split into three (N, T, dim) then into
    the heads; A_h = softmax(q_h @ k_h.T / sqrt(d)) over the keys (max-subtracted; with
    ``causal``, key s > query t gets weight 0, via -inf before the softmax: no NaN since each
    query sees itself; likewise the keys of the optional ``key_padding_mask`` argument of
    :meth:`forward`); A_h = dropout(A_h) in training; out = concat_h(A_h @ v_h) @
    out_proj_weight.T + out_proj_bias.

    Inputs: x (N, T, dim). Returns y (N, T, dim) in x's dtype.
    Params: :class:`AttentionParams` (torch's layout and names): in_proj_weight (3 dim, dim)
    xavier-uniform, in_proj_bias (3 dim,) zeros, out_proj_weight (dim, dim) U(±1/sqrt(dim)),
    out_proj_bias (dim,) zeros (torch's init), in ``dtype``; the biases are ``()`` when
    ``bias`` is False.
    State: ``()`` when dropout == 0, else Dropout's state (``training``, ``key``); the
    attention weights' dropout is :class:`fnn.Dropout` (its key advances each training call).
    Backward: through the softmax dS = A * (dA - sum_s(dA * A)); the masked entries have
    A = 0 and so no gradient. The cache holds x, q, k, v, the weights and the heads' output.
    """

    dim: int = attrs.field(validator=positive_int)
    num_heads: int = attrs.field(validator=positive_int)
    causal: bool = attrs.field(default=False, validator=boolean)
    dropout: float = attrs.field(default=0.0, converter=real_float,
                                 validator=in_range(0.0, 1.0))
    bias: bool = attrs.field(default=True, validator=boolean)
    dtype: str = dtype_field()

    def __attrs_post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"MultiHeadAttention: dim must be divisible by num_heads, got "
                             f"dim={self.dim}, num_heads={self.num_heads}")

    def _dropout(self) -> Dropout | None:
        return Dropout(self.dropout) if self.dropout > 0 else None

    def param_shapes(self) -> AttentionParams:
        d, dt = self.dim, self.dtype
        return AttentionParams(
            in_proj_weight=ShapeDtype((3 * d, d), dt),
            in_proj_bias=ShapeDtype((3 * d,), dt) if self.bias else (),
            out_proj_weight=ShapeDtype((d, d), dt),
            out_proj_bias=ShapeDtype((d,), dt) if self.bias else ())

    def state_shapes(self) -> Any:
        drop = self._dropout()
        return () if drop is None else drop.state_shapes()

    def init(self, key: int | Key) -> tuple[AttentionParams, Any]:
        """Inputs: ``key`` (the projections' draws and the dropout key are split off it).

        Returns ``(AttentionParams, state)``: torch's initialisation (see the class), state
        ``()`` or Dropout's."""
        k_in, k_out, k_drop = split_key(key, 3)
        d = self.dim
        out_proj, _ = Linear(d, d, dtype=self.dtype).init(k_out)
        params = AttentionParams(
            in_proj_weight=xavier_uniform(k_in, (3 * d, d), self.dtype),
            in_proj_bias=zeros(k_in, (3 * d,), self.dtype) if self.bias else (),
            out_proj_weight=out_proj.W,
            out_proj_bias=zeros(k_out, (d,), self.dtype) if self.bias else ())
        drop = self._dropout()
        return params, (() if drop is None else drop.init(k_drop)[1])

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(N, T, dim) -> (N, T, dim)."""
        if len(input_shape) != 3 or input_shape[2] != self.dim:
            raise ValueError(f"{self!r}: expected input of shape (N, T, {self.dim}), got shape "
                             f"{tuple(input_shape)}")
        return tuple(input_shape)

    def forward(self, params: AttentionParams, state: Any, x: np.ndarray,
                key_padding_mask: np.ndarray | None = None) -> tuple[np.ndarray, AttentionCache]:
        """y, cache for x (N, T, dim). ``key_padding_mask``, optional: a boolean (N, T), True
        at the keys to ignore (padding), as torch's; a query left with no key at all gets zero
        weights (y = out_proj_bias there) where torch gives NaN."""
        self.check_spec(params, state)
        x = as_float_array(self, x)
        self.output_shape(x.shape)
        n, t, dim = x.shape
        h = self.num_heads
        ignored = self._ignored(x, key_padding_mask)
        qkv = affine(x.reshape(n * t, dim), params.in_proj_weight, _bias(params.in_proj_bias))
        q, k, v = (_split_heads(a, n, t, h) for a in np.split(qkv, 3, axis=1))
        q = q * x.dtype.type(1 / math.sqrt(dim // h))
        scores = q @ k.transpose(0, 1, 3, 2)  # (N, H, T, T)
        if ignored is not None:
            scores[np.broadcast_to(ignored, scores.shape)] = -np.inf
        top = scores.max(axis=-1, keepdims=True, initial=-np.inf)  # T = 0: no keys, no rows
        if key_padding_mask is not None:  # rows of -inf only: exp(-inf - 0) = 0, not NaN
            top[np.isneginf(top)] = 0
        scores -= top  # without a padding mask each query sees itself: top is finite
        weights = np.exp(scores, out=scores)
        total = weights.sum(axis=-1, keepdims=True)
        if key_padding_mask is not None:
            total[total == 0] = 1
        weights /= total
        drop, dcache, new_state = self._dropout(), None, state
        attended = weights
        if drop is not None:
            attended, dcache = drop.forward((), state, weights)
            new_state = dcache.state
            dcache = dcache if dcache.mask is not None else None  # None: evaluation mode
        heads = _merge_heads(attended @ v)
        y = affine(heads, params.out_proj_weight, _bias(params.out_proj_bias))
        return y.reshape(n, t, dim), AttentionCache(x=x, q=q, k=k, v=v, weights=weights,
                                                    dropout=dcache, heads=heads,
                                                    state=new_state)

    def _ignored(self, x: np.ndarray, key_padding_mask: Any) -> np.ndarray | None:
        """The (N or 1, 1, T, T) boolean of the (query, key) pairs that get weight 0, or None."""
        n, t, _ = x.shape
        ignored = ~np.tri(t, dtype=bool)[None, None] if self.causal else None  # key s > query t
        if key_padding_mask is None:
            return ignored
        mask = np.asarray(key_padding_mask)
        if mask.dtype != np.bool_:
            raise TypeError(f"{self!r}: expected a boolean key_padding_mask, got dtype "
                            f"{mask.dtype}")
        expect_shape(self, mask, (n, t), "key_padding_mask")
        padded = mask[:, None, None, :]
        return padded if ignored is None else padded | ignored

    def backward(self, params: AttentionParams, cache: AttentionCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, AttentionParams]:
        """Inputs: params, the forward's cache, dy (N, T, dim).

        Returns dx (N, T, dim) and ``AttentionParams`` of the gradients (see the class)."""
        self.check_params(params)
        x = cache.x
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, x.shape, "gradient")
        n, t, dim = x.shape
        h = self.num_heads
        dheads, dWo, dbo = affine_backward(cache.heads, params.out_proj_weight,
                                           dy.reshape(n * t, dim))
        dout = _split_heads(dheads, n, t, h)  # (N, H, T, d)
        attended = cache.weights
        if cache.dropout is not None:
            attended = cache.weights * cache.dropout.mask
        dv = attended.transpose(0, 1, 3, 2) @ dout
        dA = dout @ cache.v.transpose(0, 1, 3, 2)
        if cache.dropout is not None:
            dA = self._dropout().backward((), cache.dropout, dA)[0]
        A = cache.weights
        dS = A * (dA - np.einsum("nhts,nhts->nht", dA, A)[..., None])
        scale = x.dtype.type(1 / math.sqrt(dim // h))
        dq = (dS @ cache.k) * scale
        dk = dS.transpose(0, 1, 3, 2) @ cache.q
        dqkv = np.concatenate([_merge_heads(a) for a in (dq, dk, dv)], axis=1)
        dx, dWi, dbi = affine_backward(x.reshape(n * t, dim), params.in_proj_weight, dqkv)
        grads = AttentionParams(
            in_proj_weight=cast_like(dWi, params.in_proj_weight),
            in_proj_bias=cast_like(dbi, params.in_proj_bias) if self.bias else (),
            out_proj_weight=cast_like(dWo, params.out_proj_weight),
            out_proj_bias=cast_like(dbo, params.out_proj_bias) if self.bias else ())
        return dx.reshape(x.shape), grads



@spec
class TransformerEncoderLayer(Layer):
    """A transformer encoder block, as ``torch.nn.TransformerEncoderLayer(dim, num_heads,
    ff_dim, dropout, activation, batch_first=True, norm_first)``, composed of fnn layers
    (:attr:`block` is the :class:`fnn.Sequential` it runs):

    - post-norm (``norm_first=False``, torch's default):
      x = LayerNorm(x + Dropout(MHA(x))); y = LayerNorm(x + FF(x));
    - pre-norm: x = x + Dropout(MHA(LayerNorm(x))); y = x + FF(LayerNorm(x));

    with FF = Linear(dim, ff_dim) -> ReLU | GELU -> Dropout -> Linear(ff_dim, dim) -> Dropout
    and the attention's own dropout ``dropout`` too (torch uses the one rate everywhere).
    ``causal`` masks future positions in the attention (torch's ``is_causal``);
    ``layer_norm_eps`` is torch's (1e-5). The Dropout layers are there even when dropout == 0, so
    the params tree does not depend on it.

    Inputs: x (N, T, dim). Returns y (N, T, dim) in x's dtype.
    Params and state: the block's (a tuple per Sequential, a Residual's are its inner
    layer's). post-norm: ((attn, ()), norm1, (linear1, (), (), linear2, ()), norm2);
    pre-norm: ((norm1, attn, ()), (norm2, linear1, (), (), linear2, ())). torch's
    ``self_attn.*`` are the :class:`AttentionParams`, ``linear1``/``linear2`` the
    ``LinearParams`` (W, b), ``norm1``/``norm2`` the ``ScalingParams`` (gamma = weight,
    beta = bias). Backward: the block's.
    """

    dim: int = attrs.field(validator=positive_int)
    num_heads: int = attrs.field(validator=positive_int)
    ff_dim: int = attrs.field(validator=positive_int)
    dropout: float = attrs.field(default=0.0, converter=real_float,
                                 validator=in_range(0.0, 1.0))
    activation: str = attrs.field(default="relu", validator=one_of("relu", "gelu"))
    norm_first: bool = attrs.field(default=False, validator=boolean)
    causal: bool = attrs.field(default=False, validator=boolean)
    layer_norm_eps: float = attrs.field(default=1e-5, converter=real_float,
                                        validator=positive_real)
    dtype: str = dtype_field()

    def __attrs_post_init__(self) -> None:
        self.block  # noqa: B018 - dim % num_heads is checked by MultiHeadAttention

    @property
    def block(self) -> Sequential:
        """The fnn layers this block is made of (see the class docstring)."""
        d, dt = self.dim, self.dtype
        attn = MultiHeadAttention(d, self.num_heads, causal=self.causal, dropout=self.dropout,
                                  dtype=dt)
        norm = LayerNorm(d, eps=self.layer_norm_eps, dtype=dt)
        feed = [Linear(d, self.ff_dim, dtype=dt), ReLU() if self.activation == "relu" else GELU(),
                Dropout(self.dropout), Linear(self.ff_dim, d, dtype=dt), Dropout(self.dropout)]
        if self.norm_first:
            return Sequential([
                Residual(Sequential([norm, attn, Dropout(self.dropout)])),
                Residual(Sequential([norm, *feed]))])
        return Sequential([Residual(Sequential([attn, Dropout(self.dropout)])),
                           norm, Residual(Sequential(feed)),
                           norm])

    def param_shapes(self) -> Any:
        return self.block.param_shapes()

    def state_shapes(self) -> Any:
        return self.block.state_shapes()

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(N, T, dim) -> (N, T, dim)."""
        return expect_shape(self, input_shape, ("N", "T", self.dim))

    def init(self, key: int | Key) -> tuple[Any, Any]:
        """Inputs: ``key``. Returns :attr:`block`'s ``init(key)``: tuples of its parts'."""
        return self.block.init(key)

    def forward(self, params: Any, state: Any, x: np.ndarray) -> tuple[np.ndarray, Any]:
        """Inputs: :attr:`block`'s params and state, x (N, T, dim). Returns y (N, T, dim) and
        the block's cache."""
        x = as_float_array(self, x)  # a wrong dtype or shape names this layer, not a part
        self.output_shape(x.shape)
        return self._in_block("forward", params, state, x)

    def backward(self, params: Any, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Any]:
        """Inputs: params, the forward's cache, dy (N, T, dim). Returns dx and the block's
        dparams."""
        return self._in_block("backward", params, cache, dy)

    def backward_params(self, params: Any, cache: Any, dy: np.ndarray) -> Any:
        """The block's dparams without the input gradient."""
        return self._in_block("backward_params", params, cache, dy)

    def _in_block(self, what: str, *args: Any) -> Any:
        """``self.block.<what>(*args)``; an error gets a note naming this layer (the user built
        a TransformerEncoderLayer, not the Sequential of Residuals inside)."""
        try:
            return getattr(self.block, what)(*args)
        except Exception as err:
            err.add_note(f"in the block of {self!r} ({what})")
            raise

    def kink_distance(self, params: Any, state: Any, x: np.ndarray) -> float:
        """How far x is from the kinks of the block's ReLU (see fnn.testing.kink_distance)."""
        from .testing import kink_distance
        return kink_distance(self.block, params, state, x)
