"""Helpers of the fnn.io tests (test_io, test_io_hostile, test_io_register): a save/load round
trip, a small network, and reading and rewriting a checkpoint's npz entries."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

import fnn
from fnn import io


def round_trip(path, *args: Any, **kwargs: Any) -> Any:
    return io.load(io.save(path, *args, **kwargs))


def mlp() -> fnn.Sequential:
    return fnn.Sequential([fnn.Linear(5, 6), fnn.BatchNormalization(6, 0.9),
                           fnn.ChannelwiseScaling(6), fnn.ReLU(), fnn.Dropout(0.3),
                           fnn.Linear(6, 3), fnn.LogSoftMax()])


def read_entries(path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {name: z[name] for name in z.files}


def read_body(entries: dict) -> dict:
    return json.loads(entries["__fnn__"].tobytes())


def write_entries(path, entries: dict, body: dict | None = None) -> None:
    """Rewrite the npz, optionally with a new JSON body and a checksum that matches it."""
    if body is not None:
        raw = json.dumps(body).encode()
        entries["__fnn__"] = np.frombuffer(raw, np.uint8)
        arrays = [entries[f"a{i}"] for i in range(body["n_arrays"])]
        entries["__sha256__"] = np.frombuffer(io._digest(raw, arrays).encode(), np.uint8)
    np.savez(path, **entries)
