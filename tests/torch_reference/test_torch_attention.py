"""PyTorch reference tests for the sequence layers: MultiHeadAttention against
nn.MultiheadAttention(batch_first=True) (with and without the causal mask, 1 and 4 heads, with
and without bias, with a key_padding_mask, dropout 0 in training and dropout 0.2 in
evaluation), TransformerEncoderLayer against nn.TransformerEncoderLayer(batch_first=True)
(both norm orders, relu and gelu, causal, evaluation mode with dropout and training mode with
dropout 0), Embedding with padding_idx against nn.Embedding, and Linear on 3-D and 4-D input
against nn.Linear.

Parameters are copied across by name: our AttentionParams fields are torch's names with the dot
dropped (``out_proj_weight`` is ``out_proj.weight``); the TransformerEncoderLayer's leaves map
to torch's names by :data:`ENCODER_NAMES`. Each case compares y, dx and every gradient, using
the plumbing of torch_kit.py; tolerances: float64 atol = rtol = 1e-10, float32 atol 1e-5 scaled
by the array's largest magnitude, rtol 1.3e-6. ``PYTHONPATH=tests python
tests/torch_reference/test_torch_attention.py`` prints the largest
absolute difference per case and dtype."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import WithPadding
from torch_kit import (
    DTYPES,
    SIZES,
    TORCH_DTYPE,
    Case,
    Compared,
    assert_matches,
    dims,
    init,
    nn,
    print_report,
    seeded,
    tensor,
    torch,
    versus,
)
from torch_kit import TOL_LOOSE as TOL

import fnn
from fnn import tree

ATTENTION_NAMES = ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
ENCODER_NAMES = {  # our leaf order -> torch's parameter names
    False: [*(f"self_attn.{n}" for n in ATTENTION_NAMES), "norm1.weight", "norm1.bias",
            "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
            "norm2.weight", "norm2.bias"],
    True: ["norm1.weight", "norm1.bias", *(f"self_attn.{n}" for n in ATTENTION_NAMES),
           "norm2.weight", "norm2.bias", "linear1.weight", "linear1.bias", "linear2.weight",
           "linear2.bias"],
}


def perturbed(params: Any, rng: np.random.Generator) -> Any:
    """params plus N(0, 0.1^2) noise: zero biases and unit LayerNorm weights would hide a
    gradient that ignores them."""
    return tree.map(lambda a: a + (0.1 * rng.standard_normal(a.shape)).astype(a.dtype), params)


def causal_mask(t: int) -> torch.Tensor:
    """torch's boolean attn_mask: True where key s > query t is NOT allowed to attend."""
    return torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)


class SelfAttention(nn.Module):
    """nn.MultiheadAttention(batch_first=True) called as self-attention on x."""

    def __init__(self, layer: fnn.MultiHeadAttention, dtype: type) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(layer.dim, layer.num_heads, dropout=layer.dropout,
                                         bias=layer.bias, batch_first=True,
                                         dtype=TORCH_DTYPE[dtype])
        self.causal = layer.causal

        self.padding = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = causal_mask(x.shape[1]) if self.causal else None
        return self.mha(x, x, x, need_weights=False, attn_mask=mask,
                        key_padding_mask=self.padding)[0]


def attention(heads: int, causal: bool, bias: bool = True, dropout: float = 0.0,
              padding: bool = False) -> Case:
    """MultiHeadAttention(heads * (1..3), heads, causal, dropout, bias) on (N, 1..6, dim);
    with dropout, in evaluation mode (both sides), else in training mode; with ``padding``, a
    key_padding_mask hiding the keys past a random length >= 1 of each sample."""

    def case(dtype: type, rng: np.random.Generator, n: int) -> Compared:
        d, t = dims(rng, (1, 3), (1, 6))
        layer = fnn.MultiHeadAttention(heads * d, heads, causal=causal, dropout=dropout,
                                       bias=bias)
        params, state = init(layer, dtype, rng)
        ref = SelfAttention(layer, dtype)
        if dropout:
            state, ref = fnn.eval_mode(state), ref.eval()
        if padding:
            mask = np.arange(t) >= rng.integers(1, t + 1, (n, 1))
            layer, ref.padding = WithPadding(layer, mask), torch.tensor(mask)
        x = rng.standard_normal((n, t, heads * d)).astype(dtype)
        return versus(layer, perturbed(params, rng), state, x, ref, rng)[0]

    return case


def encoder(norm_first: bool, activation: str, causal: bool, training: bool) -> Case:
    """TransformerEncoderLayer(dim = 2 heads * 2..3, 2, ff 1..8, activation, norm_first,
    causal) against nn.TransformerEncoderLayer with the same parameters (by name); in training
    mode with dropout 0, in evaluation mode with dropout 0.3. Not dim = 2: a LayerNorm over 2
    features is ill-conditioned, and in float32 torch's dx was then 4.4e-5 off the float64
    value (ours 1.9e-5), beyond the tolerance."""

    def case(dtype: type, rng: np.random.Generator, n: int) -> Compared:
        d, ff, t = dims(rng, (2, 3), (1, 8), (1, 6))
        dropout = 0.0 if training else 0.3
        layer = fnn.TransformerEncoderLayer(2 * d, 2, ff, dropout=dropout, activation=activation,
                                            norm_first=norm_first, causal=causal)
        params, state = init(layer, dtype, rng)
        module = nn.TransformerEncoderLayer(2 * d, 2, ff, dropout=dropout, activation=activation,
                                            batch_first=True, norm_first=norm_first,
                                            dtype=TORCH_DTYPE[dtype]).train(training)
        if not training:
            state = fnn.eval_mode(state)
        names = ENCODER_NAMES[norm_first]
        assert sorted(names) == sorted(dict(module.named_parameters()))

        def ref(x: torch.Tensor, *leaves: torch.Tensor) -> torch.Tensor:
            mask = causal_mask(x.shape[1]) if causal else None
            return torch.func.functional_call(module, dict(zip(names, leaves, strict=True)),
                                              (x,), {"src_mask": mask, "is_causal": causal})

        x = rng.standard_normal((n, t, 2 * d)).astype(dtype)
        return versus(layer, perturbed(params, rng), state, x, ref, rng)[0]

    return case


def case_embedding(dtype: type, rng: np.random.Generator, n: int) -> Compared:
    """Embedding(1..9 rows, 1..5, padding_idx) on (N, T) indices, padding included, against
    nn.Embedding(padding_idx) with the same weight, whose padding row is NOT zero here (torch
    looks it up all the same and gives it no gradient)."""
    num, dim, t = dims(rng, (2, 9), (1, 5), (1, 6))
    pad = int(rng.integers(-num, num))
    layer = fnn.Embedding(num, dim, padding_idx=pad)
    params = perturbed(init(layer, dtype, rng)[0], rng)
    ref = nn.Embedding(num, dim, padding_idx=pad, dtype=TORCH_DTYPE[dtype])
    with torch.no_grad():
        ref.weight.copy_(tensor(params.W))
    x = rng.integers(0, num, (n, t))
    x[0, 0] = pad % num
    y, cache = layer.forward(params, (), x)
    yt = ref(torch.tensor(x))
    dy = rng.standard_normal(y.shape).astype(dtype)
    yt.backward(tensor(dy))
    dx, grads = layer.backward(params, cache, dy)
    assert dx is None
    return [("y", y, yt), ("dW", grads.W, ref.weight.grad)]


def linear(rank: int) -> Case:
    """Linear(1..9, 1..9) on x (N, 1..3, ..., n_in) of ``rank`` axes against nn.Linear."""

    def case(dtype: type, rng: np.random.Generator, n: int) -> Compared:
        n_in, n_out = dims(rng, (1, 9), (1, 9))
        layer = fnn.Linear(n_in, n_out)
        x = rng.standard_normal((n, *dims(rng, *[(1, 3)] * (rank - 2)), n_in)).astype(dtype)
        ref = nn.Linear(n_in, n_out, dtype=TORCH_DTYPE[dtype])
        return versus(layer, *init(layer, dtype, rng), x, ref, rng)[0]

    return case


LAYER_CASES: dict[str, Case] = {
    **{f"MultiHeadAttention heads={h}{' causal' if c else ''}": attention(h, c)
       for h in (1, 4) for c in (False, True)},
    "MultiHeadAttention heads=2 causal bias=False": attention(2, True, bias=False),
    "MultiHeadAttention heads=2 dropout=0.2 eval": attention(2, False, dropout=0.2),
    "MultiHeadAttention heads=2 key_padding_mask": attention(2, False, padding=True),
    "MultiHeadAttention heads=4 causal key_padding_mask": attention(4, True, padding=True),
    **{f"TransformerEncoderLayer norm_first={nf} {act}{' causal' if c else ''} "
       f"{'train dropout=0' if tr else 'eval dropout=0.3'}": encoder(nf, act, c, tr)
       for nf, act, c, tr in ((False, "relu", False, True), (True, "relu", False, True),
                              (False, "gelu", True, True), (True, "gelu", True, False),
                              (False, "relu", False, False))},
    "Embedding padding_idx": case_embedding,
    "Linear 3-D": linear(3),
    "Linear 4-D": linear(4),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name", LAYER_CASES)
def test_layer_matches_torch(name: str, n: int, dtype: type) -> None:
    assert_matches(LAYER_CASES[name](dtype, seeded(name, dtype, n), n), dtype, TOL)


if __name__ == "__main__":
    print_report(LAYER_CASES)
