"""PyTorch reference tests for the recurrent layers: RNN (tanh, relu), LSTM and GRU, left to right,
reversed and Bidirectional, over T = 1, 2 and 7 steps, and an LSTM -> LastStep -> Linear
classifier.

Each case copies our params into ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` (one layer,
``batch_first=True``; ``bidirectional=True`` for Bidirectional) in parameter order (W_ih =
weight_ih_l0, W_hh = weight_hh_l0, b_ih, b_hh, then the ``_reverse`` ones) and compares y, dx
and every dparams leaf with torch autograd, using the plumbing of torch_kit.py. A reversed layer
is compared with torch on the time-flipped input, its output flipped back (torch has no
unidirectional right-to-left RNN). Tolerances: float64 atol = rtol = 1e-10; float32 atol = 1e-5
(scaled by the array's largest magnitude when that exceeds 1), rtol = 1.3e-6. ``python
tests/torch_reference/test_torch_recurrent.py`` prints the largest absolute difference per case
and dtype over all batch sizes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
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
    torch,
    versus,
)
from torch_kit import (
    TOL_LOOSE as TOL,
)

import fnn

STEPS = (1, 2, 7)

# fnn layer -> torch module class and keyword arguments
CELLS = {
    "RNN tanh": (lambda f, h, **kw: fnn.RNN(f, h, "tanh", **kw), nn.RNN, {"nonlinearity": "tanh"}),
    "RNN relu": (lambda f, h, **kw: fnn.RNN(f, h, "relu", **kw), nn.RNN, {"nonlinearity": "relu"}),
    "LSTM": (fnn.LSTM, nn.LSTM, {}),
    "GRU": (fnn.GRU, nn.GRU, {}),
}


class Outputs(nn.Module):
    """The all-steps output of a torch recurrent module (of the time-flipped input, flipped back,
    when ``flip``); optionally followed by the last step and a Linear head."""

    def __init__(self, rnn: Any, flip: bool = False, head: Any = None) -> None:
        super().__init__()
        self.rnn, self.flip, self.head = rnn, flip, head

    def forward(self, x: Any) -> Any:
        y = self.rnn(x.flip(1) if self.flip else x)[0]
        y = y.flip(1) if self.flip else y
        return y if self.head is None else self.head(y[:, -1])


def recurrent(cell: str, steps: int, direction: str) -> Case:
    """``cell`` over ``steps`` steps; ``direction`` "forward", "reverse" or "bidirectional"."""
    make, ref_cls, options = CELLS[cell]

    def case(dtype: type, rng: np.random.Generator, n: int) -> Compared:
        f, h = dims(rng, (1, 5), (1, 5))
        layer = make(f, h, reverse=direction == "reverse")
        if direction == "bidirectional":
            layer = fnn.Bidirectional(layer)
        ref = ref_cls(f, h, batch_first=True, bidirectional=direction == "bidirectional",
                      dtype=TORCH_DTYPE[dtype], **options)
        x = rng.standard_normal((n, steps, f)).astype(dtype)
        return versus(layer, *init(layer, dtype, rng), x,
                      Outputs(ref, flip=direction == "reverse"), rng)[0]

    return case


def classifier(steps: int) -> Case:
    """Sequential([LSTM(F, H), LastStep(), Linear(H, C)]) against lstm(x)[0][:, -1] -> Linear."""

    def case(dtype: type, rng: np.random.Generator, n: int) -> Compared:
        f, h, c = dims(rng, (1, 5), (1, 5), (1, 4))
        layer = fnn.Sequential([fnn.LSTM(f, h), fnn.LastStep(), fnn.Linear(h, c)])
        td = TORCH_DTYPE[dtype]
        ref = Outputs(nn.LSTM(f, h, batch_first=True, dtype=td), head=nn.Linear(h, c, dtype=td))
        x = rng.standard_normal((n, steps, f)).astype(dtype)
        return versus(layer, *init(layer, dtype, rng), x, ref, rng)[0]

    return case


LAYER_CASES: dict[str, Case] = {
    **{f"{cell} {direction} T={t}": recurrent(cell, t, direction)
       for cell in CELLS for direction in ("forward", "reverse", "bidirectional")
       for t in STEPS},
    **{f"LSTM-LastStep-Linear T={t}": classifier(t) for t in STEPS},
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name", LAYER_CASES)
def test_recurrent_matches_torch(name: str, n: int, dtype: type) -> None:
    assert_matches(LAYER_CASES[name](dtype, seeded(name, dtype, n), n), dtype, TOL)


@pytest.mark.parametrize("cell", CELLS)
def test_long_sequence_float32(cell: str) -> None:
    """T = 50 steps of a wider layer in float32 stay within the float32 tolerance of torch."""
    rng = seeded(cell, np.float32, 50)
    make, ref_cls, options = CELLS[cell]
    layer = make(6, 16)
    ref = ref_cls(6, 16, batch_first=True, dtype=torch.float32, **options)
    x = rng.standard_normal((4, 50, 6)).astype(np.float32)
    pairs = versus(layer, *init(layer, np.float32, rng), x, Outputs(ref), rng)[0]
    assert_matches(pairs, np.float32, TOL)


if __name__ == "__main__":
    print_report(LAYER_CASES)
