"""Command-line edge cases found by an adversarial pass."""

from __future__ import annotations

from fnn import cli


def test_test_fraction_leaving_an_empty_part_is_a_one_line_error(capsys, tmp_path):
    """--test-fraction 0.9999 passed the (0, 1) check, then train_test_split's ValueError
    ended the run with a traceback (exit 1)."""
    assert cli.main(["--test-fraction", "0.9999", "--quiet", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fnn: error: train_test_split: test_fraction=0.9999") and \
        "Traceback" not in err
    assert not (tmp_path / "model.npz").exists()


def test_a_corrupt_idx_file_is_a_one_line_error(capsys, tmp_path):
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01")  # truncated
    assert cli.main(["--mnist", str(tmp_path), "--quiet", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("fnn: error: ")
