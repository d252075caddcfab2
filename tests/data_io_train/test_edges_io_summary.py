"""fnn.save / fnn.summary edge cases found by an adversarial pass."""

from __future__ import annotations

import numpy as np
import pytest

import fnn


def test_save_over_a_directory_names_the_path_before_writing(tmp_path):
    """Saving to a directory wrote the whole checkpoint to a temporary file in the parent
    directory, then failed at the rename with an error naming the temporary file."""
    target = tmp_path / "ckpt"
    target.mkdir()
    with pytest.raises(IsADirectoryError) as info:
        fnn.save(target, (np.ones(3),))
    assert info.value.filename == str(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_save_into_a_missing_directory_names_the_directory(tmp_path):
    """The error named the temporary file ('.x.npz.w0x1jyeb.tmp'), not the directory."""
    with pytest.raises(FileNotFoundError, match="no directory .*missing") as info:
        fnn.save(tmp_path / "missing" / "x.npz", (np.ones(3),))
    assert info.value.filename == str(tmp_path / "missing" / "x.npz")
    with pytest.raises(FileNotFoundError, match="no directory .*missing"):
        fnn.data.write_idx(tmp_path / "missing" / "x.idx", np.zeros(3, np.uint8))


@pytest.mark.parametrize("shape", [(-1, 4), (2.5, 4), (2, 4.0), (True, 4), 4, "ab", (None, "4")],
                         ids=repr)
def test_summary_refuses_a_bad_input_shape(shape):
    """Negative or float sizes were printed as shapes ((-1, 3)); an int or a str gave a bare
    error from deep inside."""
    net = fnn.Sequential([fnn.Linear(4, 3), fnn.ReLU()])
    with pytest.raises(ValueError, match="summary: input_shape must be"):
        fnn.summary(net, shape, print_fn=None)


def test_summary_refuses_what_is_not_a_layer():
    with pytest.raises(TypeError, match="summary: net must be an fnn layer"):
        fnn.summary(3, (2, 4), print_fn=None)


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.float16, "bogus"], ids=repr)
def test_loaders_refuse_a_non_float_dtype(dtype, tmp_path):
    """load_digits(np.int32) truncated the pixels in [0, 1] to 0 and 1 silently; float16 gave
    data every layer refuses. load_mnist checks before reading the files."""
    with pytest.raises(ValueError, match="load_digits: dtype must be float32 or float64"):
        fnn.data.load_digits(dtype)
    with pytest.raises(ValueError, match="load_mnist: dtype must be float32 or float64"):
        fnn.data.load_mnist(tmp_path, dtype=dtype)  # no files there: the dtype comes first
