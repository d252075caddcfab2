"""Edge cases of the sequence layers found by an adversarial pass: empty batches and empty
sequences through attention, outputs that must not alias the recurrent caches."""

from __future__ import annotations

import numpy as np
import pytest

import fnn

EMPTY_SHAPES = [(0, 3, 4), (2, 0, 4), (0, 0, 4)]


@pytest.mark.parametrize("shape", EMPTY_SHAPES)
@pytest.mark.parametrize("layer", [fnn.MultiHeadAttention(4, 2),
                                   fnn.MultiHeadAttention(4, 2, causal=True),
                                   fnn.TransformerEncoderLayer(4, 2, 8)], ids=repr)
def test_attention_empty_batch_or_sequence(layer, shape):
    """N = 0 or T = 0: the shape output_shape promises, an empty dx and zero dparams (was a
    bare "cannot reshape array of size 0" / "zero-size array to reduction")."""
    params, state = layer.init(0)
    x = np.zeros(shape)
    y, cache = layer.forward(params, state, x)
    assert y.shape == layer.output_shape(shape) == shape
    dx, dparams = layer.backward(params, cache, np.zeros(shape))
    assert dx.shape == shape
    assert all(np.all(g == 0) for g in fnn.tree.leaves(dparams) if isinstance(g, np.ndarray))


def test_attention_empty_sequence_with_padding_mask():
    layer = fnn.MultiHeadAttention(4, 2)
    params, state = layer.init(0)
    y, _ = layer.forward(params, state, np.zeros((2, 0, 4)),
                         key_padding_mask=np.zeros((2, 0), bool))
    assert y.shape == (2, 0, 4)


@pytest.mark.parametrize("shape", [(1, 3, 2), (3, 1, 2), (1, 1, 2), (2, 3, 2)])
@pytest.mark.parametrize("layer", [fnn.RNN(2, 3), fnn.LSTM(2, 3), fnn.GRU(2, 3),
                                   fnn.RNN(2, 3, reverse=True)], ids=repr)
def test_recurrent_output_does_not_alias_the_cache(layer, shape):
    """For N = 1 or T = 1, y was a writable view of the cached hidden states: `y *= 0` after
    forward silently changed the next backward's dx and dparams."""
    params, state = layer.init(0)
    x = np.random.default_rng(0).standard_normal(shape)
    y, cache = layer.forward(params, state, x)
    dy = np.random.default_rng(1).standard_normal(y.shape)
    dx, dparams = layer.backward(params, cache, dy)
    assert not any(np.shares_memory(y, a) for a in fnn.tree.leaves(cache)
                   if isinstance(a, np.ndarray))
    if y.flags.writeable:
        y *= 0
    dx2, dparams2 = layer.backward(params, cache, dy)
    np.testing.assert_array_equal(dx2, dx)
    for a, b in zip(fnn.tree.leaves(dparams2), fnn.tree.leaves(dparams)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("x", [np.zeros((1, 2, 4), np.float16), np.zeros((1, 2, 4), np.int64),
                               np.zeros((2, 4))], ids=["float16", "int64", "rank-2"])
@pytest.mark.parametrize("layer", [fnn.Bidirectional(fnn.GRU(4, 2)),
                                   fnn.TransformerEncoderLayer(4, 2, 8)], ids=repr)
def test_wrapper_input_errors_name_the_wrapper(layer, x):
    """The errors named only an inner part (GRU(...), a Residual of the block), not the layer
    the user built."""
    params, state = layer.init(0)
    with pytest.raises((TypeError, ValueError)) as info:
        layer.forward(params, state, x)
    assert type(layer).__name__ in " ".join([str(info.value), *getattr(info.value, "__notes__",
                                                                      [])])


@pytest.mark.parametrize("layer, shape, expected", [
    (fnn.LastStep(), (None, None, 3), (None, 3)),
    (fnn.PositionalEmbedding(4, 3), (None, None, 3), (None, None, 3)),
    (fnn.Sequential([fnn.LSTM(3, 2), fnn.LastStep(), fnn.Linear(2, 5)]), (None, None, 3),
     (None, 5)),
], ids=repr)
def test_sequence_output_shape_with_unknown_length(layer, shape, expected):
    """T = None (any length, as RNN and MultiHeadAttention take it) gave a bare TypeError
    ("'<' not supported between instances of 'NoneType' and 'int'"), so fnn.summary of an LSTM
    classifier over sequences of any length failed."""
    assert layer.output_shape(shape) == expected
    assert "output shape" in fnn.summary(layer, shape, print_fn=None)


@pytest.mark.parametrize("change", [lambda a: a[None], lambda a: a.astype(np.int64),
                                    lambda a: a.astype(np.float16)],
                         ids=["extra-axis", "int64", "float16"])
@pytest.mark.parametrize("layer, shape", [
    (fnn.MultiHeadAttention(4, 2), (2, 3, 4)), (fnn.PositionalEmbedding(5, 4), (2, 3, 4)),
    (fnn.LSTM(4, 3), (2, 3, 4)), (fnn.GRU(4, 3), (2, 3, 4)),
    (fnn.Bidirectional(fnn.RNN(4, 3)), (2, 3, 4)), (fnn.GroupNorm(2, 4), (2, 4, 3)),
], ids=repr)
def test_backward_checks_params_against_the_spec(layer, shape, change):
    """backward trusted its params: PositionalEmbedding returned a gradient of shape
    (1, 5, 4) for W of shape (5, 4) given W[None]; the others a bare numpy error."""
    params, state = layer.init(0)
    y, cache = layer.forward(params, state, np.ones(shape))
    leaves = fnn.tree.leaves(params)
    bad = fnn.tree.unflatten(params, [change(leaves[0]), *leaves[1:]])
    with pytest.raises((TypeError, ValueError), match=type(layer).__name__ + r".*: params\."):
        layer.backward(bad, cache, np.ones(y.shape))
    with pytest.raises((TypeError, ValueError), match=type(layer).__name__):
        fnn.core.backward_params(layer, bad, cache, np.ones(y.shape))


def test_embedding_backward_checks_params():
    layer = fnn.Embedding(5, 3)
    params, state = layer.init(0)
    y, cache = layer.forward(params, state, np.array([[1, 2]]))
    with pytest.raises(ValueError, match=r"Embedding.*params\.W must have shape \(5, 3\)"):
        layer.backward(fnn.embedding.EmbeddingParams(W=params.W[:4]), cache, np.ones(y.shape))


def test_transformer_errors_inside_the_block_name_the_transformer():
    """A wrong param or gradient inside the block named only a LayerNorm or a Dropout."""
    layer = fnn.TransformerEncoderLayer(4, 2, 8)
    params, state = layer.init(0)
    x = np.ones((2, 3, 4))
    leaves = fnn.tree.leaves(params)
    bad = fnn.tree.unflatten(params, [leaves[0][None], *leaves[1:]])
    for call in (lambda: layer.forward(bad, state, x),
                 lambda: layer.backward(params, layer.forward(params, state, x)[1],
                                        np.ones((2, 3, 5)))):
        with pytest.raises((TypeError, ValueError)) as info:
            call()
        assert any("TransformerEncoderLayer" in note for note in info.value.__notes__)
