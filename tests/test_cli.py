"""The command line (python -m fnn) on tiny runs: what it prints and the files it writes."""

import json
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


@pytest.mark.parametrize("args", [["--epochs", "0"], ["--model", "rnn"], ["--batch-size", "-1"]])
def test_bad_arguments(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


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
    assert cli.parse_args(["--model", model]).epochs == 60
    assert cli.parse_args([]).epochs == 30
    _write_mnist(tmp_path, side=6)
    _run(capsys, "--mnist", str(tmp_path), "--model", model, "--epochs", "1", "--out",
         str(tmp_path / "m"))
    assert fnn.load(tmp_path / "m" / "model.npz").model[0].layer.input_size == 6
