"""Rows of the layer table (tests/cases/__init__.py) for the sequence layers: N-d Linear, Embedding,
positions, MultiHeadAttention, TransformerEncoderLayer and a token model. Each row is
``(name, setup, flags)``; cases/__init__.py makes them LayerCase rows (see its docstring)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
from hypothesis import strategies as st

import fnn

__all__ = ["SEQUENCE_ROWS", "indices"]

Setup = Callable[[st.DrawFn], tuple[Any, tuple[int, ...]]]

EPS = st.sampled_from([1e-3, 1e-2, 0.5])  # LayerNorm eps, as the LayerNorm row of cases/__init__.py


def indices(draw: st.DrawFn, shape: tuple[int, ...], layer: Any) -> np.ndarray:
    """Valid int64 indices of ``shape`` for the Embedding that ``layer`` is or starts with,
    never its padding_idx: that row is frozen (no gradient, as torch), which finite differences
    cannot know; tests/layers/test_attention.py and the PyTorch tests check it."""
    while isinstance(layer, fnn.Sequential):
        layer = layer.layers[0]
    n, pad = layer.num_embeddings, layer.padding_idx
    valid = st.integers(0, n - 1).filter(lambda i: pad is None or i != pad % n)
    return draw(hnp.arrays(np.int64, shape, elements=valid))


def _int(draw: st.DrawFn, hi: int = 4) -> int:
    return draw(st.integers(1, hi))


def _linear_nd(draw: st.DrawFn):
    """Linear over the last axis of a sample of rank 2 or 3."""
    n_in, n_out = _int(draw), _int(draw)
    lead = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))
    return fnn.Linear(n_in, n_out), (*lead, n_in)


def _embedding(draw: st.DrawFn):
    """Embedding with or without padding_idx, on (N,) or (N, T) indices."""
    n = _int(draw, 5)
    pad = draw(st.none() | st.integers(-n, n - 1)) if n > 1 else None
    return (fnn.Embedding(n, _int(draw), padding_idx=pad),
            tuple(draw(st.lists(st.integers(1, 4), max_size=1))))


def _attention(dropout: float) -> Setup:
    def setup(draw: st.DrawFn):
        heads = _int(draw, 2)
        layer = fnn.MultiHeadAttention(heads * _int(draw, 3), heads, causal=draw(st.booleans()),
                                       dropout=dropout, bias=draw(st.booleans()))
        return layer, (_int(draw), layer.dim)
    return setup


def _transformer(dropout: float) -> Setup:
    """TransformerEncoderLayer, both norm orders and activations; layer_norm_eps of at least
    1e-3 (as the LayerNorm row: 1 / sqrt(eps) bounds the curvature)."""
    def setup(draw: st.DrawFn):
        heads = _int(draw, 2)
        layer = fnn.TransformerEncoderLayer(
            heads * _int(draw, 2), heads, _int(draw), dropout=dropout,
            activation=draw(st.sampled_from(["relu", "gelu"])), norm_first=draw(st.booleans()),
            causal=draw(st.booleans()), layer_norm_eps=draw(EPS))
        return layer, (_int(draw), layer.dim)
    return setup


def _positions(draw: st.DrawFn):
    t, dim = _int(draw), _int(draw)
    if draw(st.booleans()):
        return fnn.SinusoidalPositions(dim), (t, dim)
    return fnn.PositionalEmbedding(t + draw(st.integers(0, 2)), dim), (t, dim)


def _token_model(draw: st.DrawFn):
    """Embedding -> SinusoidalPositions -> causal TransformerEncoderLayer -> Linear: a tiny
    language model on (N, T) indices (dx = None from the Embedding, through Sequential)."""
    n, dim = 1 + _int(draw, 4), 2 * _int(draw, 2)
    net = fnn.Sequential([
        fnn.Embedding(n, dim, padding_idx=0), fnn.SinusoidalPositions(dim),
        fnn.TransformerEncoderLayer(dim, 2, 3, activation="gelu", causal=True,
                                    layer_norm_eps=0.5),
        fnn.Linear(dim, n)])
    return net, (_int(draw),)


SEQUENCE_ROWS = [
    ("linear-nd", _linear_nd, {}),
    ("embedding", _embedding, dict(integer_input=True)),
    ("positions", _positions, {}),
    ("attention", _attention(0.0), {}),
    ("attention-dropout-train", _attention(0.3), dict(batch_coupled=True)),
    ("attention-dropout-eval", _attention(0.3), dict(mode="eval")),
    ("transformer", _transformer(0.0), {}),
    ("transformer-dropout-train", _transformer(0.2), dict(batch_coupled=True)),
    ("transformer-dropout-eval", _transformer(0.2), dict(mode="eval")),
    ("token-model", _token_model, dict(integer_input=True)),
]
