"""The command line (python -m fnn) on tiny runs: what it prints and the files it writes."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

import fnn
from fnn import cli, data, train, tree


def _run(capsys, *args):
    assert cli.main([*args, "--quiet"]) == 0
    return capsys.readouterr().out


def _outputs(out_dir):
    record = json.loads((out_dir / "history.json").read_text())
    return record, fnn.load(out_dir / "model.npz")


def _has(module):
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_one_epoch_on_the_digits(tmp_path, capsys, model):
    pytest.importorskip("sklearn")
    out = _run(capsys, "--model", model, "--epochs", "1", "--out", str(tmp_path))
    assert f"fnn: {model} on digits (1438 train / 359 test, float32)" in out
    assert "final: train accuracy" in out and "s/epoch" in out
    record, ckpt = _outputs(tmp_path)
    assert record["config"]["model"] == model and record["dataset"] == "digits"
    assert all(len(record["history"][k]) == 1 for k in train.HISTORY_KEYS)
    assert ckpt.meta == record
    assert isinstance(ckpt.model, fnn.Sequential) and isinstance(ckpt.optimizer, fnn.Adam)
    assert ckpt.opt_state.t == 23  # ceil(1438 / 64) steps
    # the saved model is the trained one: it gives the reported test accuracy
    x, labels = data.load_digits(np.float32, images=model == "cnn")
    _, x_test, _, y_test = data.train_test_split(x, labels, 0.2, key=fnn.split_key(0, 3)[0])
    _, acc = train.evaluate(ckpt.model, fnn.ClassNLLCriterion(), ckpt.params, ckpt.state,
                            x_test, y_test)
    assert acc == record["final"]["test_accuracy"] > 0.5
    if _has("matplotlib"):
        assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_same_numbers(tmp_path, capsys):
    pytest.importorskip("sklearn")
    runs = []
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        _run(capsys, "--epochs", "2", "--seed", seed, "--out", str(tmp_path / name))
        runs.append(_outputs(tmp_path / name))
    (ra, ca), (rb, cb), (rc, _) = runs
    for k in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert ra["history"][k] == rb["history"][k]
    assert ra["history"]["loss"] != rc["history"]["loss"]
    for u, v in zip(tree.leaves((ca.params, ca.state, ca.opt_state)),
                    tree.leaves((cb.params, cb.state, cb.opt_state)), strict=True):
        np.testing.assert_array_equal(u, v)


def _write_mnist(directory, n_train=40, n_test=12, side=8):
    rng = np.random.default_rng(0)
    for kind, n in (("train", n_train), ("t10k", n_test)):
        data.write_idx(directory / f"{kind}-images-idx3-ubyte.gz",
                       rng.integers(0, 256, (n, side, side), dtype=np.uint8))
        data.write_idx(directory / f"{kind}-labels-idx1-ubyte.gz",
                       rng.integers(0, 10, n).astype(np.uint8))


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_mnist_files(tmp_path, capsys, model, monkeypatch):
    """--mnist DIR trains on IDX files (here tiny generated ones); no scikit-learn needed."""
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    _write_mnist(tmp_path)
    out = _run(capsys, "--mnist", str(tmp_path), "--model", model, "--epochs", "1",
               "--optimizer", "sgd", "--dtype", "float64", "--out", str(tmp_path / "run"))
    assert f"fnn: {model} on mnist (40 train / 12 test, float64), sgd lr=0.05" in out
    record, ckpt = _outputs(tmp_path / "run")
    assert isinstance(ckpt.optimizer, fnn.SGDMomentum) and record["dataset"] == "mnist"
    assert all(a.dtype == np.float64 for a in tree.leaves(ckpt.params))


def test_without_matplotlib(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    _write_mnist(tmp_path)
    out = _run(capsys, "--mnist", str(tmp_path), "--epochs", "1", "--out", str(tmp_path / "r"))
    assert "matplotlib is not installed: no curves.png" in out
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["history.json", "model.npz"]


def test_epoch_lines_when_not_quiet(tmp_path, capsys):
    _write_mnist(tmp_path)
    assert cli.main(["--mnist", str(tmp_path), "--epochs", "2", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("epoch")] == ["1/2", "2/2"]


@pytest.mark.parametrize("args, match", [
    (["--epochs", "0"], "--epochs, --batch-size and --threads must be positive"),
    (["--model", "rnn"], "argument --model: invalid choice: 'rnn'"),
    (["--batch-size", "-1"], "--epochs, --batch-size and --threads must be positive"),
    (["--lr", "-1"], "--lr must be a positive number, got -1.0"),
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--lr", "0"], "--lr must be a positive number"),
    (["--seed", "-1"], "--seed must be a non-negative integer, got -1"),
    (["--test-fraction", "0"], r"--test-fraction must be in \(0, 1\), got 0.0"),
    (["--test-fraction", "1.5"], r"--test-fraction must be in \(0, 1\), got 1.5"),
    (["--augment"], "--augment works on images: use it with --model cnn, not mlp"),
    (["--mnist", "/nonexistent/mnist"], "--mnist: no directory /nonexistent/mnist"),
])
def test_bad_arguments(args, match, capsys, tmp_path, monkeypatch):
    """Each gives argparse's usage error at once: nothing loaded, trained or written."""
    monkeypatch.setattr(data, "load_digits", _never)
    monkeypatch.setattr(data, "load_mnist", _never)
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*args, "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: fnn") and re.search("fnn: error: " + match, err), err
    assert not (tmp_path / "out").exists()


def _never(*args, **kwargs):
    raise AssertionError("loaded data before checking the arguments")


def test_mnist_directory_without_the_files(tmp_path, capsys):
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--mnist", str(tmp_path), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "--mnist: MNIST file t10k-labels-idx1-ubyte (or t10k-labels-idx1-ubyte.gz) not " \
           "found" in capsys.readouterr().err


def test_out_naming_a_file_or_an_unwritable_place(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(data, "load_digits", _never)
    (tmp_path / "f").write_text("keep me")
    for out, match in ((tmp_path / "f", "is a file, not a directory"),
                       (tmp_path / "f" / "sub", "--out: cannot write to")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["--out", str(out)])
        assert exit_info.value.code == 2 and match in capsys.readouterr().err
    assert (tmp_path / "f").read_text() == "keep me"


def test_output_directory_is_made_before_training(tmp_path, capsys, monkeypatch):
    """The directory exists (and was checked writable) when the first epoch starts."""
    _write_mnist(tmp_path)
    out = tmp_path / "new" / "run"
    seen = []
    fit = train.fit

    def spy(*args, **kwargs):
        seen.append(out.is_dir() and not any(out.iterdir()))
        return fit(*args, **kwargs)

    monkeypatch.setattr(train, "fit", spy)
    _run(capsys, "--mnist", str(tmp_path), "--epochs", "1", "--out", str(out))
    assert seen == [True] and (out / "model.npz").is_file()


def test_augment_trains_the_cnn_on_new_images_each_epoch(tmp_path, capsys, monkeypatch):
    _write_mnist(tmp_path)
    calls = []
    augment = data.augment

    def spy(x, key, **kwargs):
        calls.append((x.shape, key, kwargs))
        return augment(x, key, **kwargs)

    monkeypatch.setattr(data, "augment", spy)
    runs = []
    for name in ("a", "b"):
        out = _run(capsys, "--mnist", str(tmp_path), "--model", "cnn", "--augment", "--epochs",
                   "2", "--out", str(tmp_path / name))
        runs.append(_outputs(tmp_path / name))
    assert "fnn: cnn on mnist" in out
    assert [c[0] for c in calls] == [(40, 1, 8, 8)] * 4 and calls[0][2] == cli.AUGMENT
    assert calls[0][1] != calls[1][1] and calls[:2] == calls[2:]  # new keys per epoch; seeded
    (ra, ca), (rb, _) = runs
    assert ra["config"]["augment"] is True and ca.opt_state.t == 2 * 1  # one batch per epoch
    assert all(len(ra["history"][k]) == 2 for k in train.HISTORY_KEYS)
    assert ra["history"]["loss"] == rb["history"]["loss"]
    plain, _ = _outputs_of(capsys, tmp_path)
    assert plain["history"]["loss"] != ra["history"]["loss"]


def _outputs_of(capsys, tmp_path):
    _run(capsys, "--mnist", str(tmp_path), "--model", "cnn", "--epochs", "2", "--out",
         str(tmp_path / "plain"))
    return _outputs(tmp_path / "plain")


def test_curves_have_a_title(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    titles = []
    monkeypatch.setattr(Figure, "suptitle", lambda self, t, **kw: titles.append(t))
    history = {"loss": [1.0, 0.5], "accuracy": [0.5, 0.9], "val_loss": [], "val_accuracy": []}
    assert cli.plot_history(history, tmp_path / "c.png", "fnn cnn: test accuracy 99.00%")
    assert titles == ["fnn cnn: test accuracy 99.00%"]


def test_the_run_titles_its_curves(tmp_path, capsys, monkeypatch):
    _write_mnist(tmp_path)
    titles = []
    monkeypatch.setattr(cli, "plot_history", lambda h, path, title: titles.append(title))
    _run(capsys, "--mnist", str(tmp_path), "--epochs", "1", "--optimizer", "sgd", "--out",
         str(tmp_path / "r"))
    record = json.loads((tmp_path / "r" / "history.json").read_text())
    acc = record["final"]["test_accuracy"]
    assert titles == [f"fnn mlp on mnist, sgd lr=0.05: test accuracy {acc:.2%}"]


def test_python_dash_m(tmp_path):
    _write_mnist(tmp_path)
    done = subprocess.run([sys.executable, "-m", "fnn", "--mnist", str(tmp_path), "--epochs",
                           "1", "--out", str(tmp_path / "r")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "final: train accuracy" in done.stdout and (tmp_path / "r" / "model.npz").is_file()


@pytest.mark.parametrize("model", ["lstm", "gru"])
def test_recurrent_models_read_the_images_as_rows(tmp_path, capsys, model):
    """--model lstm|gru: each image as a sequence of its rows (digits: 8 steps of 8 pixels;
    MNIST: 28 of 28); the saved model gives the reported test accuracy on that view; 60
    epochs by default."""
    pytest.importorskip("sklearn")
    out = _run(capsys, "--model", model, "--epochs", "1", "--out", str(tmp_path / "d"))
    assert f"fnn: {model} on digits (1438 train / 359 test, float32)" in out
    record, ckpt = _outputs(tmp_path / "d")
    assert ckpt.model[0] == fnn.Bidirectional({"lstm": fnn.LSTM, "gru": fnn.GRU}[model](8, 64))
    x, labels = data.load_digits(np.float32)
    _, x_test, _, y_test = data.train_test_split(data.as_sequences(x), labels, 0.2,
                                                 key=fnn.split_key(0, 3)[0])
    _, acc = train.evaluate(ckpt.model, fnn.ClassNLLCriterion(), ckpt.params, ckpt.state,
                            x_test, y_test)
    assert acc == record["final"]["test_accuracy"] > 0.3
    out = ["--out", str(tmp_path / "defaults")]  # parse_args creates the output directory
    assert cli.parse_args(["--model", model, *out]).epochs == 60
    assert cli.parse_args(out).epochs == 30
    _write_mnist(tmp_path, side=6)
    _run(capsys, "--mnist", str(tmp_path), "--model", model, "--epochs", "1", "--out",
         str(tmp_path / "m"))
    assert fnn.load(tmp_path / "m" / "model.npz").model[0].layer.input_size == 6


def test_the_command_line_keeps_freed_memory(tmp_path, capsys, monkeypatch):
    """python -m fnn owns its process: it calls fnn.memory.keep_freed_memory before training."""
    calls = []
    monkeypatch.setattr(cli.memory, "keep_freed_memory", lambda: calls.append(1) or True)
    _write_mnist(tmp_path)
    assert cli.main(["--mnist", str(tmp_path), "--epochs", "1", "--quiet",
                     "--out", str(tmp_path / "r")]) == 0
    assert calls == [1]
