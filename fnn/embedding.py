"""Embeddings of integer tokens and of positions: Embedding, PositionalEmbedding,
SinusoidalPositions."""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np

from .core import (
    Key,
    Layer,
    ShapeDtype,
    as_float_array,
    as_key,
    cast_like,
    dtype_field,
    expect_shape,
    generator,
    initializer_field,
    positive_int,
    spec,
)
from .init import init_param

__all__ = ["Embedding", "EmbeddingParams", "EmbeddingCache", "PositionalEmbedding",
           "PositionsCache", "SinusoidalPositions", "sinusoidal_table"]


@attrs.frozen
class EmbeddingParams:
    """Embedding's params: the table W (num_embeddings, dim)."""

    W: np.ndarray  # (num_embeddings, dim): torch's ``weight``


@attrs.frozen
class EmbeddingCache:
    """Embedding's cache: the indices."""

    x: np.ndarray  # the integer indices
    state: Any = ()


def _standard_normal(key: int | Key, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """N(0, 1), torch's default for Embedding."""
    return generator(key).standard_normal(shape).astype(dtype)


def _padding_idx(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    n = instance.num_embeddings
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or not -n <= value < n):
        raise ValueError(f"{type(instance).__name__}: padding_idx must be None or an int in "
                         f"[-{n}, {n}), got {value!r}")


@spec
class Embedding(Layer):
    """A lookup table, as torch.nn.Embedding: y[..., :] = W[x[...], :].

    Inputs: x, integer indices of shape (N,) or (N, T) (any integer dtype, each in
    [0, num_embeddings)). Returns y (N, dim) or (N, T, dim) in W's dtype (the one layer whose
    output dtype is the params' dtype: its input has none).
    Params: ``EmbeddingParams(W)``, W (num_embeddings, dim) = torch's ``weight``; init N(0, 1)
    (torch's default) or ``w_init``, in ``dtype``; the row ``padding_idx`` (negative counts
    from the end, as torch) is zeroed at init and gets no gradient.
    Backward: dW[i] = sum of dy over the positions where x == i (0 for ``padding_idx``);
    **dx is None**: integer indices have no gradient (``Sequential`` accepts a None dx from
    its first layer only). Non-integer x raises TypeError, an index out of range ValueError.
    """

    num_embeddings: int = attrs.field(validator=positive_int)
    dim: int = attrs.field(validator=positive_int)
    padding_idx: int | None = attrs.field(default=None, validator=_padding_idx)
    w_init: Any = initializer_field()
    dtype: str = dtype_field()

    @property
    def _pad(self) -> int | None:
        return None if self.padding_idx is None else self.padding_idx % self.num_embeddings

    def init(self, key: int | Key) -> tuple[EmbeddingParams, tuple]:
        """Inputs: ``key``. Returns ``(EmbeddingParams(W (num_embeddings, dim)), ())``: W from
        ``w_init`` (None: N(0, 1), as torch) in ``dtype``, the padding_idx row zeroed."""
        W = init_param(self.w_init or _standard_normal, as_key(key),
                       (self.num_embeddings, self.dim), self.dtype, self.num_embeddings)
        if self._pad is not None:
            W[self._pad] = 0
        return EmbeddingParams(W=W), ()

    def param_shapes(self) -> EmbeddingParams:
        return EmbeddingParams(W=ShapeDtype((self.num_embeddings, self.dim), self.dtype))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(N,) -> (N, dim); (N, T) -> (N, T, dim)."""
        if len(input_shape) not in (1, 2):
            raise ValueError(f"{self!r}: expected indices of shape (N,) or (N, T), got shape "
                             f"{tuple(input_shape)}")
        return (*input_shape, self.dim)

    def _indices(self, x: Any) -> np.ndarray:
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.integer):
            raise TypeError(f"{self!r}: expected integer indices, got dtype {x.dtype}")
        self.output_shape(x.shape)
        if x.size and (x.min() < 0 or x.max() >= self.num_embeddings):
            bad = x[(x < 0) | (x >= self.num_embeddings)].flat[0]
            raise ValueError(f"{self!r}: indices must be in [0, {self.num_embeddings}), got "
                             f"{int(bad)}")
        return x

    def forward(self, params: EmbeddingParams, state: Any, x: np.ndarray
                ) -> tuple[np.ndarray, EmbeddingCache]:
        """Inputs: params (``EmbeddingParams(W (num_embeddings, dim))``), state ``()``,
        integer x (N,) or (N, T). Returns W[x] (x's shape + (dim,), W's dtype) and the cache."""
        self.check_spec(params, state)
        x = self._indices(x)
        return params.W[x], EmbeddingCache(x=x, state=state)

    def backward(self, params: EmbeddingParams, cache: EmbeddingCache, dy: np.ndarray
                 ) -> tuple[None, EmbeddingParams]:
        """Inputs: params, the cache, dy (x's shape + (dim,)).

        Returns ``(None, EmbeddingParams(dW))``: dW[i] = the sum of dy over the positions
        holding index i (0 for padding_idx); integer inputs have no gradient."""
        self.check_params(params)
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, (*cache.x.shape, self.dim), "gradient")
        dW = np.zeros(params.W.shape, dy.dtype)
        np.add.at(dW, cache.x.reshape(-1), dy.reshape(-1, self.dim))
        if self._pad is not None:
            dW[self._pad] = 0
        return None, EmbeddingParams(W=cast_like(dW, params.W))


@attrs.frozen
class PositionsCache:
    """The positional layers' cache: x's shape."""

    x_shape: tuple  # to check dy
    state: Any = ()


def _sequence_shape(layer: Any, shape: tuple[int, ...], max_len: int | None) -> None:
    if len(shape) != 3 or shape[2] != layer.dim or (
            max_len is not None and shape[1] is not None and shape[1] > max_len):  # None: any T
        t = "T" if max_len is None else f"T <= {max_len}"
        raise ValueError(f"{layer!r}: expected input of shape (N, {t}, {layer.dim}), got shape "
                         f"{tuple(shape)}")


@attrs.frozen
class PositionalParams:
    W: np.ndarray  # (max_len, dim)


@spec
class PositionalEmbedding(Layer):
    """A learned position embedding added to a sequence: y[:, t] = x[:, t] + W[t].

    Inputs: x (N, T, dim) with T <= max_len. Returns y (N, T, dim) in x's dtype.
    Params: ``PositionalParams(W)``, W (max_len, dim), init N(0, 1) or ``w_init``, in ``dtype``.
    Backward: dx = dy; dW[t] = sum over the batch of dy[:, t] for t < T, 0 beyond.
    """

    max_len: int = attrs.field(validator=positive_int)
    dim: int = attrs.field(validator=positive_int)
    w_init: Any = initializer_field()
    dtype: str = dtype_field()

    def init(self, key: int | Key) -> tuple[PositionalParams, tuple]:
        """Inputs: ``key``. Returns ``(PositionalParams(W (max_len, dim)), ())``, W from ``w_init``
        (None: N(0, 1)) in ``dtype``."""
        W = init_param(self.w_init or _standard_normal, as_key(key), (self.max_len, self.dim),
                       self.dtype, self.max_len)
        return PositionalParams(W=W), ()

    def param_shapes(self) -> PositionalParams:
        return PositionalParams(W=ShapeDtype((self.max_len, self.dim), self.dtype))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        _sequence_shape(self, input_shape, self.max_len)
        return tuple(input_shape)

    def forward(self, params: PositionalParams, state: Any, x: np.ndarray
                ) -> tuple[np.ndarray, PositionsCache]:
        """Inputs: params (``PositionalParams(W (max_len, dim))``), state ``()``, x (N, T, dim)
        with T <= max_len. Returns x + W[:T] and the cache."""
        self.check_spec(params, state)
        x = as_float_array(self, x)
        _sequence_shape(self, x.shape, self.max_len)
        return x + cast_like(params.W[:x.shape[1]], x), PositionsCache(x_shape=x.shape,
                                                                        state=state)

    def backward(self, params: PositionalParams, cache: PositionsCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, PositionalParams]:
        """Inputs: params, the cache, dy (N, T, dim). Returns dx = dy (a copy) and
        ``PositionalParams(dW)``: dW[:T] = dy summed over the batch, 0 beyond T."""
        self.check_params(params)
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, cache.x_shape, "gradient")
        dW = np.zeros(params.W.shape, params.W.dtype)
        dW[:dy.shape[1]] = dy.sum(axis=0)
        return dy.copy(), PositionalParams(W=dW)


def sinusoidal_table(length: int, dim: int, dtype: Any = np.float64) -> np.ndarray:
    """The fixed positions of "Attention is all you need", (length, dim):
    P[t, 2i] = sin(t / 10000^(2i/dim)), P[t, 2i+1] = cos(t / 10000^(2i/dim))."""
    t = np.arange(length, dtype=np.float64)[:, None]
    freq = np.exp(-math.log(10000.0) * np.arange(0, dim, 2, dtype=np.float64) / dim)
    table = np.empty((length, dim))
    table[:, 0::2] = np.sin(t * freq)
    table[:, 1::2] = np.cos(t * freq[:dim // 2])
    return table.astype(dtype)


@spec
class SinusoidalPositions(Layer):
    """Fixed sinusoidal positions added to a sequence: y[:, t] = x[:, t] + P[t], P from
    :func:`sinusoidal_table` (computed in float64, added in x's dtype). No params, no state.

    Inputs: x (N, T, dim), any T. Returns y (N, T, dim). Backward: dx = dy.
    """

    dim: int = attrs.field(validator=positive_int)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        _sequence_shape(self, input_shape, None)
        return tuple(input_shape)

    def forward(self, params: Any, state: Any, x: np.ndarray
                ) -> tuple[np.ndarray, PositionsCache]:
        """Inputs: params and state ``()``, x (N, T, dim). Returns x + P[:T] and the cache."""
        x = as_float_array(self, x)
        _sequence_shape(self, x.shape, None)
        return x + sinusoidal_table(x.shape[1], self.dim, x.dtype), PositionsCache(
            x_shape=x.shape, state=state)

    def backward(self, params: Any, cache: PositionsCache, dy: np.ndarray
                 ) -> tuple[np.ndarray, tuple]:
        """Inputs: params, the cache, dy (N, T, dim). Returns dx = dy (a copy) and ``()``."""
        dy = as_float_array(self, dy, "gradient")
        expect_shape(self, dy, cache.x_shape, "gradient")
        return dy.copy(), ()
