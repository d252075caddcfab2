"""fnn.train: the step, evaluation, and fit (the loss decreases; same arguments, same run)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fnn
from fnn import train, tree
from fnn.testing import read_only


def _blobs(n=240, seed=0, dtype=np.float64):
    """Three Gaussian blobs in 6-D: a problem a small MLP learns in a few epochs."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centres = rng.normal(scale=2.0, size=(3, 6))
    return (centres[labels] + rng.normal(size=(n, 6))).astype(dtype), labels


def _net():
    return fnn.Sequential([fnn.Linear(6, 16), fnn.BatchNormalization(16, alpha=0.9),
                           fnn.ChannelwiseScaling(16), fnn.ReLU(), fnn.Dropout(0.2),
                           fnn.Linear(16, 3), fnn.LogSoftMax()])


def _fit(x, labels, key=0, epochs=6, **kwargs):
    net, crit, opt = _net(), fnn.ClassNLLCriterion(), fnn.Adam(0.01)
    params, state = net.init(1)
    return train.fit(net, crit, opt, params, state, opt.init(params), x=x, labels=labels,
                     epochs=epochs, batch_size=32, key=key, **kwargs)


def test_train_step_is_the_functional_step_and_pure():
    x, labels = _blobs(16)
    net, crit, opt = _net(), fnn.ClassNLLCriterion(), fnn.SGDMomentum(0.1, momentum=0.9)
    params, state = net.init(0)
    opt_state = opt.init(params)
    t = fnn.data.one_hot(labels, 3)
    got = train.train_step(net, crit, opt, *read_only((params, state, opt_state, x, t)))
    # the five lines of design.md, written out
    y, cache = net.forward(params, state, x)
    loss, lcache = crit.forward(y, t)
    _, grads = net.backward(params, cache, crit.backward(lcache))
    new_params, new_opt_state = opt.update(params, grads, opt_state)
    want = (new_params, cache.state, new_opt_state, loss, y)
    for a, b in zip(tree.leaves(got), tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)
    assert got[1][4].key != state[4].key  # the Dropout key advanced


def test_fit_decreases_the_loss_and_learns():
    x_all, y_all = _blobs(330)
    x, labels, x_val, y_val = x_all[:240], y_all[:240], x_all[240:], y_all[240:]
    result = _fit(x, labels, validation=(x_val, y_val))
    h = result.history
    assert set(h) == set(train.HISTORY_KEYS)
    assert all(len(v) == 6 for v in h.values())
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    assert h["val_loss"][-1] < h["val_loss"][0]
    assert h["val_accuracy"][-1] > 0.9
    assert all(s > 0 for s in h["seconds"])
    loss, acc = train.evaluate(_net(), fnn.ClassNLLCriterion(), result.params, result.state,
                               x_val, y_val)
    assert (loss, acc) == (h["val_loss"][-1], h["val_accuracy"][-1])


def test_fit_is_deterministic_in_its_key():
    x, labels = _blobs()
    a, b, c = _fit(x, labels), _fit(x, labels), _fit(x, labels, key=1)
    for u, v in zip(tree.leaves((a.params, a.state, a.opt_state)),
                    tree.leaves((b.params, b.state, b.opt_state)), strict=True):
        np.testing.assert_array_equal(u, v)
    assert a.history["loss"] == b.history["loss"]
    assert a.history["loss"] != c.history["loss"]


def test_fit_without_validation_and_with_a_callback():
    x, labels = _blobs(64)
    seen = []
    result = _fit(x, labels, epochs=3,
                  on_epoch=lambda epoch, h: seen.append((epoch, len(h["loss"]))))
    assert seen == [(1, 1), (2, 2), (3, 3)]
    assert result.history["val_loss"] == [] and result.history["val_accuracy"] == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fit_keeps_the_dtype(dtype):
    x, labels = _blobs(64, dtype=dtype)
    net, crit, opt = _net(), fnn.ClassNLLCriterion(), fnn.Adam(0.01)
    params, state = (tree.cast(t, dtype) for t in net.init(0))
    result = train.fit(net, crit, opt, params, state, opt.init(params), x=x, labels=labels,
                       epochs=1, batch_size=16, key=0)
    floats = [a for a in tree.leaves((result.params, result.state, result.opt_state))
              if isinstance(a, np.ndarray)]
    assert floats and all(a.dtype == dtype for a in floats)


def test_progress_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    x, labels = _blobs(64)
    assert len(_fit(x, labels, epochs=2, progress=True).history["loss"]) == 2
    assert capsys.readouterr() == ("", "")  # the quiet fallback


def test_predict_is_eval_mode_and_batched():
    x, _ = _blobs(50)
    net = _net()
    params, state = net.init(0)
    _, cache = net.forward(params, state, x)  # moving statistics away from their init
    state = cache.state
    y = train.predict(net, params, state, x, batch_size=7)
    y_ref, _ = net.forward(params, fnn.eval_mode(state), x)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(train.predict(net, params, state, x), y_ref)


REPO = Path(__file__).resolve().parents[2]


def _python(*args: str) -> str:
    """stdout of ``python *args`` (which must succeed)."""
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_functional_example_runs():
    pytest.importorskip("sklearn")
    out = _python(str(REPO / "examples" / "functional_digits.py"), "1")
    assert "cnn: test accuracy" in out and "same predictions" in out


def test_the_readme_loop_runs():
    pytest.importorskip("sklearn")
    code = (REPO / "README.md").read_text().split("```python\n", 1)[1].split("```", 1)[0]
    assert float(_python("-c", code).split()[-1]) > 0.9


# --- bad arguments: a ValueError naming the function and the argument, before any training ---


def _args(**change):
    x, labels = _blobs(40)
    net, crit, opt = _net(), fnn.ClassNLLCriterion(), fnn.Adam(0.01)
    params, state = net.init(1)
    kwargs = dict(x=x, labels=labels, epochs=1, batch_size=8, key=0) | change
    return (net, crit, opt, params, state, opt.init(params)), kwargs


@pytest.mark.parametrize("change, match", [
    ({"batch_size": 0}, "fit: batch_size must be a positive integer, got 0"),
    ({"batch_size": 2.0}, "fit: batch_size must be a positive integer"),
    ({"epochs": -1}, "fit: epochs must be a positive integer, got -1"),
    ({"epochs": True}, "fit: epochs must be a positive integer"),
    ({"x": np.zeros((0, 6)), "labels": np.zeros(0, np.int64)}, "fit: x must be a non-empty"),
    ({"x": np.ones((40, 6), np.bool_)}, "fit: x must be a non-empty float"),
    ({"x": np.ones((40, 6), np.complex128)}, "fit: x must be a non-empty float"),
    ({"labels": np.eye(3)[_blobs(40)[1]]}, r"fit: labels must be integer classes .*one-hot"),
    ({"labels": np.zeros(39, np.int64)}, r"integer classes of shape \(40,\)"),
    ({"labels": np.zeros(40)}, "fit: labels must be integer classes"),
    ({"n_classes": 0}, "fit: n_classes must be a positive integer"),
    ({"validation": (np.ones((5, 6)), np.eye(3)[[0, 1, 2, 0, 1]])},
     "fit: validation labels must be integer classes .*one-hot"),
    ({"validation": np.ones((5, 6))}, r"fit: validation must be a pair \(x, labels\)"),
])
def test_fit_refuses_bad_arguments_before_training(change, match):
    args, kwargs = _args(**change)
    calls = []
    with pytest.raises(ValueError, match=match):
        train.fit(*args, **kwargs, on_epoch=lambda *a: calls.append(a))
    assert calls == []


def test_fit_on_integer_x_for_an_embedding_network():
    """Integer x is token indices: fit trains a network that starts with an Embedding, and a
    network that wants floats refuses it at its first layer, before any update."""
    rng = np.random.default_rng(0)
    tokens, labels = rng.integers(0, 5, (40, 3)), rng.integers(0, 2, 40)
    net = fnn.Sequential([fnn.Embedding(5, 4), fnn.Flatten(), fnn.Linear(12, 2), fnn.LogSoftMax()])
    opt = fnn.Adam(learning_rate=0.01)
    params, state = net.init(0)
    result = train.fit(net, fnn.ClassNLLCriterion(), opt, params, state, opt.init(params),
                       x=tokens, labels=labels, epochs=2, batch_size=8, key=0)
    assert len(result.history["loss"]) == 2
    (net, crit, opt, params, state, opt_state), kwargs = _args(x=np.ones((40, 6), np.int64))
    with pytest.raises(TypeError, match="expected a floating-point input, got dtype int64"):
        train.fit(net, crit, opt, params, state, opt_state, **kwargs)


def test_fit_arguments_after_opt_state_are_keyword_only():
    """Forgetting opt_state is named as such (positional x and labels would shift into it)."""
    (net, crit, opt, params, state, _), kwargs = _args()
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'opt_state'"):
        train.fit(net, crit, opt, params, state, **kwargs)
    with pytest.raises(TypeError, match="takes 6 positional arguments"):
        train.fit(net, crit, opt, params, state, opt.init(params), kwargs["x"],
                  kwargs["labels"], epochs=1, batch_size=8, key=0)


@pytest.mark.parametrize("batch_size", [0, -3, 1.5, None])
def test_predict_and_evaluate_refuse_a_bad_batch_size(batch_size):
    net, (x, labels) = _net(), _blobs(10)
    params, state = net.init(0)
    with pytest.raises(ValueError, match="predict: batch_size must be a positive integer"):
        train.predict(net, params, state, x, batch_size)
    with pytest.raises(ValueError, match="predict: batch_size must be a positive integer"):
        train.evaluate(net, fnn.ClassNLLCriterion(), params, state, x, labels, batch_size)


def test_predict_on_no_samples_gives_an_empty_output():
    net = _net()
    params, state = net.init(0)
    y = train.predict(net, params, state, np.zeros((0, 6)))
    assert y.shape == (0, 3) and y.dtype == np.float64
