"""fit's validation data checked before training (adversarial pass): a validation set that
cannot be evaluated failed only after the whole first epoch had trained."""

from __future__ import annotations

import numpy as np
import pytest

import fnn
from fnn import train


@pytest.mark.parametrize("validation, match", [
    ((np.ones((5, 4)), np.zeros(5, np.int64)),
     r"fit: validation x has samples of shape \(4,\), x has samples of shape \(6,\)"),
    ((np.ones((5, 6)), np.full(5, 7)), r"fit: validation labels must be in \[0, 3\)"),
    ((np.ones((5, 6)), np.full(5, -1)), r"fit: validation labels must be in \[0, 3\)"),
])
def test_fit_checks_validation_before_the_first_step(monkeypatch, validation, match):
    steps = []
    real_step = train.train_step

    def counting_step(*args, **kwargs):
        steps.append(1)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train, "train_step", counting_step)
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((40, 6)), rng.integers(0, 3, 40)
    net, opt = fnn.Sequential([fnn.Linear(6, 3), fnn.LogSoftMax()]), fnn.SGD(0.1)
    params, state = net.init(0)
    with pytest.raises(ValueError, match=match):
        train.fit(net, fnn.ClassNLLCriterion(), opt, params, state, opt.init(params), x=x,
                  labels=labels, epochs=1, batch_size=8, key=0, n_classes=3,
                  validation=validation)
    assert steps == []


def test_fit_checks_on_epoch_before_the_first_step(monkeypatch):
    """on_epoch=3 failed with "'int' object is not callable" after the first epoch's steps."""
    steps = []
    real_step = train.train_step
    monkeypatch.setattr(train, "train_step",
                        lambda *a, **k: steps.append(1) or real_step(*a, **k))
    rng = np.random.default_rng(0)
    net, opt = fnn.Sequential([fnn.Linear(6, 3), fnn.LogSoftMax()]), fnn.SGD(0.1)
    params, state = net.init(0)
    with pytest.raises(TypeError, match="fit: on_epoch must be a function"):
        train.fit(net, fnn.ClassNLLCriterion(), opt, params, state, opt.init(params),
                  x=rng.standard_normal((40, 6)), labels=rng.integers(0, 3, 40), epochs=1,
                  batch_size=8, key=0, on_epoch=3)
    assert steps == []
