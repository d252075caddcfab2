"""Semantics of the sequence layers beyond the generic table: the causal mask, the softmax on
large scores, attention dropout's key, Embedding's indices and padding row, dx = None through
Sequential, the positions, N-d Linear against the 2-D path, and bad hyperparameters."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from helpers import WithPadding
from hypothesis import given
from hypothesis import strategies as st

import fnn
from fnn.attention import AttentionParams
from fnn.core import ShapeDtype
from fnn.testing import check_gradients, check_purity


def test_causal_output_does_not_see_the_future():
    layer = fnn.MultiHeadAttention(8, 2, causal=True)
    params, state = layer.init(0)
    x = fnn.generator(1).standard_normal((2, 6, 8))
    y, _ = layer.forward(params, state, x)
    x2 = x.copy()
    x2[:, 4:] += 10.0  # change the last two positions only
    y2, _ = layer.forward(params, state, x2)
    np.testing.assert_array_equal(y[:, :4], y2[:, :4])
    assert not np.allclose(y[:, 4:], y2[:, 4:])
    y_full, _ = fnn.MultiHeadAttention(8, 2).forward(params, (), x2)
    assert not np.allclose(y_full[:, :4], y2[:, :4])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
def test_softmax_is_stable_on_huge_scores(dtype, causal):
    """Scores of order 1e8 overflow exp without the max subtraction; the causal -inf entries
    must not turn into NaN (inf - inf) either."""
    layer = fnn.MultiHeadAttention(4, 1, causal=causal)
    params, state = layer.init(0)
    params = AttentionParams(params.in_proj_weight * 1e4, params.in_proj_bias,
                             params.out_proj_weight, params.out_proj_bias)
    x = fnn.generator(2).standard_normal((2, 5, 4)).astype(dtype)
    y, cache = layer.forward(params, state, x)
    dx, grads = layer.backward(params, cache, np.ones_like(y))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    assert all(np.all(np.isfinite(g)) for g in fnn.tree.leaves(grads))
    np.testing.assert_allclose(cache.weights.sum(axis=-1), 1.0, rtol=1e-6)
    if causal:
        assert np.all(cache.weights[..., np.triu_indices(5, 1)[0], np.triu_indices(5, 1)[1]]
                      == 0)


def test_attention_dropout_advances_its_key_and_eval_is_deterministic():
    layer = fnn.MultiHeadAttention(4, 2, dropout=0.5)
    params, state = layer.init(3)
    x = fnn.generator(3).standard_normal((2, 6, 4))
    y1, c1 = layer.forward(params, state, x)
    y2, c2 = layer.forward(params, c1.state, x)
    assert c1.state.key != state.key and c2.state.key != c1.state.key
    assert not np.allclose(y1, y2)
    eval_state = fnn.eval_mode(state)
    y_eval, c_eval = layer.forward(params, eval_state, x)
    assert c_eval.state == eval_state
    y_no_dropout, _ = fnn.MultiHeadAttention(4, 2).forward(params, (), x)
    np.testing.assert_allclose(y_eval, y_no_dropout, rtol=1e-13)
    assert fnn.MultiHeadAttention(4, 2).init(0)[1] == ()  # no dropout, no state


def test_embedding_lookup_and_padding_row():
    layer = fnn.Embedding(5, 3, padding_idx=-1)
    params, _ = layer.init(0)
    np.testing.assert_array_equal(params.W[4], 0)  # the padding row starts at zero
    assert params.W[:4].std() > 0.5  # N(0, 1) elsewhere
    x = np.array([[0, 4, 2, 0], [1, 1, 4, 3]])
    y, cache = layer.forward(params, (), x)
    np.testing.assert_array_equal(y, params.W[x])
    dy = np.ones(y.shape)
    dx, grads = layer.backward(params, cache, dy)
    assert dx is None
    np.testing.assert_array_equal(grads.W[:, 0], [2, 2, 1, 1, 0])  # counts; padding: none
    y1, _ = layer.forward(params, (), np.array([2, 3]))
    assert y1.shape == (2, 3)


@pytest.mark.parametrize("x, error, message", [
    (np.array([[0, 5]]), ValueError, r"indices must be in \[0, 5\), got 5"),
    (np.array([[-1, 0]]), ValueError, r"got -1"),
    (np.array([[0.0, 1.0]]), TypeError, "expected integer indices, got dtype float64"),
    (np.array([[True]]), TypeError, "got dtype bool"),
    (np.zeros((1, 2, 3), int), ValueError, r"shape \(N,\) or \(N, T\), got shape \(1, 2, 3\)"),
])
def test_embedding_rejects_bad_indices(x, error, message):
    layer = fnn.Embedding(5, 2)
    params, _ = layer.init(0)
    with pytest.raises(error, match=message) as info:
        layer.forward(params, (), x)
    assert "Embedding(num_embeddings=5, dim=2)" in str(info.value)


def test_sequential_takes_dx_none_from_its_first_layer_only():
    net = fnn.Sequential([fnn.Embedding(6, 4), fnn.Linear(4, 3)])
    params, state = net.init(0)
    x = np.array([[1, 2, 5]])
    y, cache = net.forward(params, state, x)
    dx, grads = net.backward(params, cache, np.ones(y.shape))
    assert dx is None and grads[0].W.shape == (6, 4)
    bad = fnn.Sequential([fnn.Linear(4, 4), NoGradient()])
    p, s = bad.init(0)
    y, cache = bad.forward(p, s, np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"Sequential layer 1, NoGradient\(\), returned dx = "
                                         r"None \(a layer of integer inputs"):
        bad.backward(p, cache, np.ones((2, 4)))


@attrs.frozen
class NoGradient(fnn.Layer):
    """y = x, dx = None: a later layer must not do that."""

    def forward(self, params, state, x):
        return x.copy(), fnn.embedding.PositionsCache(x_shape=x.shape, state=state)

    def backward(self, params, cache, dy):
        return None, ()


def test_positions():
    table = fnn.embedding.sinusoidal_table(50, 6)
    t, i = 37, 2  # P[t, 2i] = sin(t / 10000^(2i/d)), P[t, 2i+1] = cos(...)
    assert table[t, 2 * i] == pytest.approx(np.sin(t / 10000 ** (2 * i / 6)), rel=1e-12)
    assert table[t, 2 * i + 1] == pytest.approx(np.cos(t / 10000 ** (2 * i / 6)), rel=1e-12)
    assert fnn.embedding.sinusoidal_table(4, 5).shape == (4, 5)  # odd dim
    x = np.zeros((2, 7, 6), np.float32)
    y, _ = fnn.SinusoidalPositions(6).forward((), (), x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[1], table[:7], atol=1e-7)
    layer = fnn.PositionalEmbedding(5, 6)
    params, _ = layer.init(0)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, T <= 5, 6\), got shape "
                                         r"\(2, 7, 6\)"):
        layer.forward(params, (), x)
    y, cache = layer.forward(params, (), x[:, :3])
    _, grads = layer.backward(params, cache, np.ones((2, 3, 6), np.float32))
    np.testing.assert_array_equal(grads.W[:, 0], [2, 2, 2, 0, 0])


@given(lead=st.lists(st.integers(1, 4), min_size=1, max_size=3), seed=st.integers(0, 99))
def test_linear_nd_equals_the_2d_path_on_the_flattened_rows(lead, seed):
    layer = fnn.Linear(3, 2)
    params, _ = layer.init(seed)
    x = fnn.generator(seed).standard_normal((*lead, 3))
    y, cache = layer.forward(params, (), x)
    y2, cache2 = layer.forward(params, (), x.reshape(-1, 3))
    np.testing.assert_array_equal(y, y2.reshape(*lead, 2))
    dy = fnn.generator(seed + 1).standard_normal(y.shape)
    dx, grads = layer.backward(params, cache, dy)
    dx2, grads2 = layer.backward(params, cache2, dy.reshape(-1, 2))
    np.testing.assert_array_equal(dx, dx2.reshape(x.shape))
    np.testing.assert_array_equal(grads.W, grads2.W)
    assert layer.output_shape((*lead, 3)) == (*lead, 2)


def test_transformer_is_composed_of_fnn_layers():
    post = fnn.TransformerEncoderLayer(8, 2, 16)
    assert [type(c).__name__ for c in post.block] == ["Residual", "LayerNorm", "Residual",
                                                      "LayerNorm"]
    pre = fnn.TransformerEncoderLayer(8, 2, 16, norm_first=True, activation="gelu")
    assert [type(c).__name__ for c in pre.block[1].layer] == [
        "LayerNorm", "Linear", "GELU", "Dropout", "Linear", "Dropout"]
    params, state = post.init(0)
    x = fnn.generator(0).standard_normal((3, 5, 8))
    y, cache = post.forward(params, state, x)
    np.testing.assert_array_equal(y, post.block.forward(params, state, x)[0])
    assert post.output_shape((3, 5, 8)) == (3, 5, 8)


@pytest.mark.parametrize("make, message", [
    (lambda: fnn.MultiHeadAttention(6, 4), "dim must be divisible by num_heads"),
    (lambda: fnn.MultiHeadAttention(6, 0), "num_heads must be a positive integer"),
    (lambda: fnn.MultiHeadAttention(4, 2, dropout=1.0), "dropout must be in"),
    (lambda: fnn.MultiHeadAttention(4, 2, causal=1), "causal must be True or False"),
    (lambda: fnn.TransformerEncoderLayer(8, 2, 16, activation="tanh"), "activation must be"),
    (lambda: fnn.TransformerEncoderLayer(8, 3, 16), "divisible by num_heads"),
    (lambda: fnn.Embedding(0, 3), "num_embeddings must be a positive integer"),
    (lambda: fnn.Embedding(4, 3, padding_idx=4), r"padding_idx must be None or an int in"),
    (lambda: fnn.PositionalEmbedding(5, 0), "dim must be a positive integer"),
])
def test_bad_hyperparameters(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_attention_wrong_shapes_name_the_layer():
    layer = fnn.MultiHeadAttention(4, 2)
    params, _ = layer.init(0)
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(dim=4, num_heads=2\): expected "
                                         r"input of shape \(N, T, 4\), got shape \(2, 4\)"):
        layer.forward(params, (), np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"\(N, T, 4\), got shape \(2, 3, 5\)"):
        fnn.TransformerEncoderLayer(4, 2, 8).forward(
            fnn.TransformerEncoderLayer(4, 2, 8).init(0)[0], fnn.TransformerEncoderLayer(
                4, 2, 8).init(0)[1], np.zeros((2, 3, 5)))


def test_command_line_transformer_one_epoch(tmp_path, capsys):
    """python -m fnn --model transformer: the digits as 8 steps of 8 pixels; the saved model
    gives the reported test accuracy."""
    pytest.importorskip("sklearn")
    from fnn import cli, data, train

    assert cli.main(["--model", "transformer", "--epochs", "1", "--quiet",
                     "--out", str(tmp_path)]) == 0
    assert "fnn: transformer on digits (1438 train / 359 test" in capsys.readouterr().out
    ckpt = fnn.load(tmp_path / "model.npz")
    assert any(isinstance(c, fnn.TransformerEncoderLayer) for c in ckpt.model)
    x, labels = data.load_digits(np.float32, images=True)
    _, x_test, _, y_test = data.train_test_split(x.reshape(-1, 8, 8), labels, 0.2,
                                                 key=fnn.split_key(0, 3)[0])
    _, acc = train.evaluate(ckpt.model, fnn.ClassNLLCriterion(), ckpt.params, ckpt.state,
                            x_test, y_test)
    assert acc == ckpt.meta["final"]["test_accuracy"] > 0.3


def test_example_reverse_runs():
    """examples/transformer_reverse.py, a few steps: the loop runs and decoding works."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "examples" / "transformer_reverse.py"
    spec = importlib.util.spec_from_file_location("transformer_reverse", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert 0.0 <= module.main(steps=3, batch=8) <= 1.0


@pytest.mark.parametrize("causal", [False, True])
def test_key_padding_mask(causal):
    """Padded keys get weight 0 and no gradient reaches them through the weights; a query with
    no key left (here, sample 1 with every key padded) gets zero weights, y = out_proj_bias,
    and nothing is NaN. Gradients against finite differences, purity as every layer."""
    layer = fnn.MultiHeadAttention(4, 2, causal=causal)
    params, state = layer.init(0)
    x = fnn.generator(4).standard_normal((3, 5, 4))
    mask = np.zeros((3, 5), bool)
    mask[0, 3:] = True
    mask[1, :] = True
    y, cache = layer.forward(params, state, x, key_padding_mask=mask)
    assert np.all(np.isfinite(y))
    assert np.all(cache.weights[0, ..., 3:] == 0) and np.all(cache.weights[1] == 0)
    np.testing.assert_allclose(y[1], np.broadcast_to(params.out_proj_bias, (5, 4)), atol=1e-15)
    # the unpadded part of sample 0 alone gives the same outputs for its queries
    y0, _ = layer.forward(params, state, x[:1, :3])
    np.testing.assert_allclose(y[0, :3], y0[0], rtol=1e-12, atol=1e-12)
    check_gradients(WithPadding(layer, mask), params, state, x)
    check_purity(WithPadding(layer, mask), params, state, x)
    with pytest.raises(TypeError, match="boolean key_padding_mask, got dtype int64"):
        layer.forward(params, state, x, key_padding_mask=mask.astype(np.int64))
    with pytest.raises(ValueError, match=r"expected key_padding_mask of shape \(3, 5\), got "
                                         r"shape \(3, 4\)"):
        layer.forward(params, state, x, key_padding_mask=mask[:, :4])


@pytest.mark.parametrize("layer", [
    fnn.Linear(3, 5, dtype="float32"), fnn.Embedding(7, 3, padding_idx=2),
    fnn.PositionalEmbedding(6, 4), fnn.SinusoidalPositions(4), fnn.MultiHeadAttention(4, 2),
    fnn.MultiHeadAttention(4, 1, bias=False, dropout=0.1, dtype="float32"),
    fnn.TransformerEncoderLayer(4, 2, 8, norm_first=True)], ids=repr)
def test_param_shapes_match_init(layer):
    if (isinstance(layer, fnn.TransformerEncoderLayer)
            and type(layer.block).param_shapes is fnn.Layer.param_shapes):
        pytest.skip("Sequential.param_shapes has not landed on this branch")
    params, _ = layer.init(0)
    assert layer.param_shapes() == fnn.tree.map(lambda a: ShapeDtype(a.shape, a.dtype), params)
