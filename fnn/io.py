"""Save and load a model to one ``.npz`` file, without pickle.

A checkpoint holds up to five trees (see :mod:`fnn.tree`): ``params``, ``state``,
``opt_state`` and, optionally, the network spec ``model`` and the optimizer spec ``optimizer``
(frozen records too), plus a JSON-able ``meta`` dict. The file has

- ``__fnn__``: a uint8 array of UTF-8 JSON describing the trees: tuples and lists as JSON lists
  tagged with their kind, records as ``{"record": "fnn.linear:LinearParams", "fields": {...}}``,
  arrays as references ``{"array": i}`` to the entry ``a<i>``, and Python scalars (int of any
  size, float, bool, str, None) inline;
- ``__sha256__``: the SHA-256 of that JSON and of every array's dtype, shape and bytes;
- ``a0``, ``a1``, ...: the arrays, stored with ``numpy.save`` (exact dtype, byte order, shape).

Loading never imports anything: a record's class is looked up among the attrs classes of the
fnn modules already imported, and rebuilt through its constructor (so its validators run).
The file is read and checked in full before any tree is built, so a truncated, corrupted or
inconsistent file raises :class:`CheckpointError` and never gives a half-loaded model.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from . import tree

__all__ = ["save", "load", "Checkpoint", "CheckpointError", "FORMAT", "VERSION"]

FORMAT = "fnn-checkpoint"
VERSION = 1
_HEADER = "__fnn__"
_DIGEST = "__sha256__"
_TREES = ("params", "state", "opt_state", "model", "optimizer")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded: truncated, corrupted, or not what was expected."""


@attrs.frozen
class Checkpoint:
    """What :func:`load` returns. ``model`` and ``optimizer`` are ``None`` when not saved."""

    params: Any
    state: Any = ()
    opt_state: Any = None
    model: Any = None
    optimizer: Any = None
    meta: dict = attrs.field(factory=dict)


# --- encoding ---------------------------------------------------------------------------------

def _record_name(cls: type) -> str:
    name = f"{cls.__module__}:{cls.__qualname__}"
    if _record_class(name) is not cls:
        raise TypeError(f"fnn.save: cannot save a {cls.__qualname__} from module "
                        f"{cls.__module__}: only records defined at the top level of fnn modules "
                        f"can be saved (they are the only ones load will rebuild)")
    return name


def _record_class(name: str) -> type | None:
    """The attrs class named ``module:qualname`` if the module is an imported fnn module."""
    module_name, _, qualname = name.partition(":")
    if module_name != "fnn" and not module_name.startswith("fnn."):
        return None
    cls = getattr(sys.modules.get(module_name), qualname, None) if qualname.isidentifier() \
        else None
    return cls if isinstance(cls, type) and attrs.has(cls) else None


def _encode(node: Any, arrays: list[np.ndarray], where: str) -> Any:
    if isinstance(node, np.ndarray):
        if node.dtype.hasobject:
            raise TypeError(f"fnn.save: {where} is an object array; only plain dtypes are saved")
        arrays.append(node)
        return {"array": len(arrays) - 1}
    if isinstance(node, np.generic):  # a numpy scalar: kept as a 0-d array of its dtype
        return {"scalar": _encode(np.asarray(node), arrays, where)["array"]}
    if node is None or isinstance(node, (bool, int, float, str)):
        return node  # json writes floats with repr, which round-trips exactly (nan, inf too)
    if type(node) in (tuple, list):
        return {type(node).__name__: [_encode(c, arrays, f"{where}[{i}]")
                                      for i, c in enumerate(node)]}
    if attrs.has(type(node)):
        fields = attrs.fields(type(node))
        if not all(f.init for f in fields):
            raise TypeError(f"fnn.save: {where}: {type(node).__qualname__} has fields that its "
                            f"constructor does not take")
        return {"record": _record_name(type(node)),
                "fields": {f.name: _encode(getattr(node, f.name), arrays, f"{where}.{f.name}")
                           for f in fields}}
    raise TypeError(f"fnn.save: {where} is a {type(node).__name__}; checkpoints hold tuples, "
                    f"lists, fnn records, numpy arrays and Python scalars")


def _digest(body: bytes, arrays: list[np.ndarray]) -> str:
    h = hashlib.sha256(body)
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def save(path: str | os.PathLike, params: Any, state: Any = (), opt_state: Any = None, *,
         model: Any = None, optimizer: Any = None, meta: dict | None = None) -> Path:
    """Write a checkpoint to ``path`` (one ``.npz``, no pickle) and return the path.

    Arrays keep their exact dtype and values; keys (``fnn.Key``) their integer seed; so
    ``load`` gives back equal trees. ``meta`` is any JSON-able dict (e.g. a training history).
    The trees must fit together as :func:`load` checks (else :class:`CheckpointError`, and
    nothing is written). The file is written to a temporary name and renamed, so ``path``
    never holds half a file.
    """
    path = Path(path)
    values = dict(zip(_TREES, (params, state, opt_state, model, optimizer)))
    _check_fit(path, values)
    arrays: list[np.ndarray] = []
    trees = {name: _encode(value, arrays, name) for name, value in values.items()}
    body = json.dumps({"format": FORMAT, "version": VERSION, "trees": trees,
                       "meta": meta if meta is not None else {}, "n_arrays": len(arrays)},
                      sort_keys=True).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **{_HEADER: np.frombuffer(body, np.uint8),
                           _DIGEST: np.frombuffer(_digest(body, arrays).encode(), np.uint8)},
                     **{f"a{i}": a for i, a in enumerate(arrays)})
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# --- decoding ---------------------------------------------------------------------------------

def _decode(node: Any, arrays: list[np.ndarray], where: str) -> Any:
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, dict) and len(node) == 1:
        (kind, value), = node.items()
        if kind == "array" and type(value) is int and 0 <= value < len(arrays):
            return arrays[value]
        if kind == "scalar" and type(value) is int and 0 <= value < len(arrays) \
                and arrays[value].ndim == 0:
            return arrays[value][()]
        if kind in ("tuple", "list") and isinstance(value, list):
            items = [_decode(c, arrays, f"{where}[{i}]") for i, c in enumerate(value)]
            return tuple(items) if kind == "tuple" else items
    if isinstance(node, dict) and set(node) == {"record", "fields"}:
        cls = _record_class(node["record"]) if isinstance(node["record"], str) else None
        if cls is None:
            raise CheckpointError(f"{where}: unknown record type {node['record']!r} "
                                  f"(not a record class of fnn)")
        fields = node["fields"]
        names = [f.name for f in attrs.fields(cls)]
        if not isinstance(fields, dict) or sorted(fields) != sorted(names):
            raise CheckpointError(f"{where}: {node['record']} has fields {names}, the file has "
                                  f"{sorted(fields) if isinstance(fields, dict) else fields!r}")
        kwargs = {f.alias: _decode(fields[f.name], arrays, f"{where}.{f.name}")
                  for f in attrs.fields(cls)}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{where}: cannot rebuild {node['record']}: {err}") from err
    raise CheckpointError(f"{where}: malformed tree description {str(node)[:80]!r}")


def _read(path: Path) -> tuple[dict, list[np.ndarray]]:
    """The checked JSON body and all arrays of the file (everything read and verified)."""
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            if _HEADER not in z.files or _DIGEST not in z.files:
                raise CheckpointError(f"{path}: not an fnn checkpoint (no {_HEADER} entry)")
            body, digest = z[_HEADER].tobytes(), z[_DIGEST].tobytes().decode()
            content = json.loads(body)
            if content.get("format") != FORMAT or content.get("version") != VERSION:
                raise CheckpointError(f"{path}: unsupported format {content.get('format')!r} "
                                      f"version {content.get('version')!r} (this fnn reads "
                                      f"{FORMAT} version {VERSION})")
            n = content["n_arrays"]
            expected = {_HEADER, _DIGEST, *(f"a{i}" for i in range(n))}
            if set(z.files) != expected:
                raise CheckpointError(f"{path}: entries {sorted(set(z.files) ^ expected)} are "
                                      f"missing or unexpected (truncated or altered file)")
            arrays = [z[f"a{i}"] for i in range(n)]
    except CheckpointError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError, TypeError,
            AttributeError, UnicodeDecodeError, NotImplementedError, RuntimeError, zlib.error,
            struct.error, MemoryError) as err:
        # zipfile raises NotImplementedError/RuntimeError for a corrupted method or flag field
        raise CheckpointError(f"{path}: unreadable checkpoint (truncated or corrupted): "
                              f"{type(err).__name__}: {err}") from err
    if _digest(body, arrays) != digest:
        raise CheckpointError(f"{path}: checksum mismatch: the arrays or the description were "
                              f"altered after saving")
    return content, arrays


def load(path: str | os.PathLike, *, model: Any = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save`.

    Raises FileNotFoundError for a missing file and :class:`CheckpointError` (a ValueError)
    for a truncated, corrupted or altered file, or one whose trees do not fit together: the
    params and state must have the structure and shapes of the saved model's ``init``, and the
    optimizer state the structure of the params. With ``model`` given, the file must hold
    params and state for that model (and, if it saved a model, the same one).
    """
    path = Path(path)
    content, arrays = _read(path)
    try:
        trees = {name: _decode(content["trees"][name], arrays, name) for name in _TREES}
        meta = content["meta"]
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: malformed description: {type(err).__name__}: {err}"
                              ) from err
    if model is not None:
        if trees["model"] is not None and trees["model"] != model:
            raise CheckpointError(f"{path}: saved for model {trees['model']!r}, not {model!r}")
        trees["model"] = model
    _check_fit(path, trees)
    return Checkpoint(**trees, meta=meta)


# --- consistency ------------------------------------------------------------------------------

def _items(node: Any) -> list[tuple[str, Any]]:
    """A container's children labelled as in an access path: ``[i]`` or ``.name``."""
    if isinstance(node, (tuple, list)):
        return [(f"[{i}]", c) for i, c in enumerate(node)]
    return [(f".{f.name}", getattr(node, f.name)) for f in attrs.fields(type(node))]


def _mismatch(got: Any, like: Any, where: str) -> str | None:
    """Where ``got`` differs from ``like`` in structure or array shapes, or None."""
    if isinstance(like, np.ndarray):
        if isinstance(got, np.ndarray) and got.shape == like.shape:
            return None
        found = f"shape {got.shape}" if isinstance(got, np.ndarray) else type(got).__name__
        return f"{where}: expected an array of shape {like.shape}, the file has {found}"
    if tree.is_leaf(like) and tree.is_leaf(got):
        return None
    if type(got) is not type(like):
        return f"{where}: expected {type(like).__name__}, the file has {type(got).__name__}"
    kids_got, kids_like = _items(got), _items(like)
    if len(kids_got) != len(kids_like):
        return f"{where}: expected {len(kids_like)} entries, the file has {len(kids_got)}"
    for (label, g), (_, k) in zip(kids_got, kids_like):
        if (msg := _mismatch(g, k, where + label)) is not None:
            return msg
    return None


def _check_fit(path: Path, trees: dict) -> None:
    checks = []
    if trees["model"] is not None and hasattr(trees["model"], "init"):
        params, state = trees["model"].init(0)
        checks += [(trees["params"], params, "params"), (trees["state"], state, "state")]
    opt_state = trees["opt_state"]
    if opt_state is not None and attrs.has(type(opt_state)):
        for f in attrs.fields(type(opt_state)):
            value = getattr(opt_state, f.name)
            if not tree.is_leaf(value):  # a tree like params (moments, accumulated grads)
                checks.append((value, trees["params"], f"opt_state.{f.name}"))
    for got, like, where in checks:
        if (msg := _mismatch(got, like, where)) is not None:
            raise CheckpointError(f"{path}: mismatched checkpoint: {msg}")
