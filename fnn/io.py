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
fnn modules already imported and the classes given to :func:`register` (your own layers and
records), and rebuilt through its constructor (so its validators run). The file is read and
checked in full before any tree is built, so a truncated, corrupted, inconsistent or crafted
file raises :class:`CheckpointError` and never gives a half-loaded model (see :func:`load`
for how a crafted file is bounded: the SHA-256 only detects accidents).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any, TypeVar

import attrs
import numpy as np

from . import tree
from ._files import write_atomic
from .core import Layer, ShapeDtype

__all__ = ["save", "load", "register", "Checkpoint", "CheckpointError", "FORMAT", "VERSION"]

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


# --- which records a checkpoint may hold -----------------------------------------------------

_T = TypeVar("_T", bound=type)
_REGISTERED: dict[str, type] = {}  # "module:qualname" -> a class given to register


def register(cls: _T) -> _T:
    """Let :func:`save` and :func:`load` handle records of ``cls``, an attrs class of your own
    (a layer spec, its params or state record, an optimizer state); returns ``cls``, so it
    works as a decorator::

        @fnn.io.register
        @attrs.frozen
        class BiasParams:
            b: np.ndarray

    A checkpoint names a record ``module:qualname``; ``load`` rebuilds it through the
    registered class's constructor (its validators run) and refuses a name that is neither an
    fnn record nor registered in the loading program (no import, no pickle). Registering
    another class under the same name (a class defined again, e.g. in a notebook) replaces it.
    ``save`` refuses a record with a field that the constructor does not take.
    """
    if not isinstance(cls, type) or not attrs.has(cls):
        raise TypeError(f"fnn.io.register: expected an attrs class, got {cls!r}")
    _REGISTERED[f"{cls.__module__}:{cls.__qualname__}"] = cls
    return cls


def _record_name(cls: type) -> str:
    name = f"{cls.__module__}:{cls.__qualname__}"
    if _record_class(name) is not cls:
        raise TypeError(f"fnn.save: cannot save a {cls.__qualname__} from module "
                        f"{cls.__module__}: only records of fnn modules and classes given to "
                        f"fnn.io.register can be saved (the only ones load will rebuild); "
                        f"register it, e.g. with @fnn.io.register on its class")
    return name


def _record_class(name: str) -> type | None:
    """The attrs class registered as ``module:qualname``, or defined at the top level of an
    imported fnn module under that name; None for anything else."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    module_name, _, qualname = name.partition(":")
    if module_name != "fnn" and not module_name.startswith("fnn."):
        return None
    cls = getattr(sys.modules.get(module_name), qualname, None) if qualname.isidentifier() \
        else None
    return cls if isinstance(cls, type) and attrs.has(cls) else None


# --- encoding ---------------------------------------------------------------------------------

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
    nothing is written). The file is written to a unique temporary name in the same directory,
    flushed to disk and renamed, so ``path`` always holds a complete checkpoint, the old or the
    new one, even when several threads or processes save to it at once; an existing file keeps
    its permission bits.
    """
    path = Path(path)
    values = dict(zip(_TREES, (params, state, opt_state, model, optimizer)))
    _check_fit(path, values)
    arrays: list[np.ndarray] = []
    trees = {name: _encode(value, arrays, name) for name, value in values.items()}
    body = json.dumps({"format": FORMAT, "version": VERSION, "trees": trees,
                       "meta": meta if meta is not None else {}, "n_arrays": len(arrays)},
                      sort_keys=True).encode()
    entries = {_HEADER: np.frombuffer(body, np.uint8),
               _DIGEST: np.frombuffer(_digest(body, arrays).encode(), np.uint8),
               **{f"a{i}": a for i, a in enumerate(arrays)}}
    write_atomic(path, lambda f: np.savez(f, **entries))
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
            raise CheckpointError(f"{where}: unknown record type {node['record']!r} (not a "
                                  f"record class of fnn, nor given to fnn.io.register)")
        fields = node["fields"]
        names = [f.name for f in attrs.fields(cls)]
        if not isinstance(fields, dict) or sorted(fields) != sorted(names):
            raise CheckpointError(f"{where}: {node['record']} has fields {names}, the file has "
                                  f"{sorted(fields) if isinstance(fields, dict) else fields!r}")
        kwargs = {f.alias: _decode(fields[f.name], arrays, f"{where}.{f.name}")
                  for f in attrs.fields(cls)}
        try:
            return cls(**kwargs)
        except Exception as err:  # a registered class's own validators may raise anything
            raise CheckpointError(f"{where}: cannot rebuild {node['record']}: {err}") from err
    raise CheckpointError(f"{where}: malformed tree description {str(node)[:80]!r}")


def _read(path: Path) -> tuple[dict, list[np.ndarray]]:
    """The checked JSON body and all arrays of the file (everything read and verified).

    Memory and time stay bounded by the file's size whatever it claims: the entries must be
    stored uncompressed within the file, and each entry's array header must declare exactly
    the entry's size, before anything is read or allocated.
    """
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file {path}")
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as z:
            entries = _entries(path, z, size)
            if _HEADER not in entries or _DIGEST not in entries:
                raise CheckpointError(f"{path}: not an fnn checkpoint (no {_HEADER} entry)")
            body = _read_entry(path, z, entries[_HEADER]).tobytes()
            digest = _read_entry(path, z, entries[_DIGEST]).tobytes().decode()
            content = json.loads(body)
            if content.get("format") != FORMAT or content.get("version") != VERSION:
                raise CheckpointError(f"{path}: unsupported format {content.get('format')!r} "
                                      f"version {content.get('version')!r} (this fnn reads "
                                      f"{FORMAT} version {VERSION})")
            n = content["n_arrays"]
            if type(n) is not int or not 0 <= n <= len(entries):  # bounds the names below
                raise CheckpointError(f"{path}: the description declares n_arrays={str(n)[:20]}"
                                      f", the archive holds {len(entries) - 2} arrays "
                                      f"(truncated or altered file)")
            expected = {_HEADER, _DIGEST, *(f"a{i}" for i in range(n))}
            if set(entries) != expected:
                raise CheckpointError(f"{path}: entries {sorted(set(entries) ^ expected)} are "
                                      f"missing or unexpected (truncated or altered file)")
            arrays = [_read_entry(path, z, entries[f"a{i}"]) for i in range(n)]
    except CheckpointError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError, TypeError,
            AttributeError, UnicodeDecodeError, NotImplementedError, RuntimeError, zlib.error,
            struct.error, MemoryError) as err:
        # zipfile raises NotImplementedError/RuntimeError for a corrupted method or flag field;
        # RecursionError (a RuntimeError) for JSON nested too deep
        raise CheckpointError(f"{path}: unreadable checkpoint (truncated or corrupted): "
                              f"{type(err).__name__}: {err}") from err
    if _digest(body, arrays) != digest:
        raise CheckpointError(f"{path}: checksum mismatch: the arrays or the description were "
                              f"altered after saving")
    return content, arrays


def _entries(path: Path, z: zipfile.ZipFile, size: int) -> dict[str, zipfile.ZipInfo]:
    """The archive's entries by name (without ``.npy``, as ``np.load`` names them), each
    checked to be stored (as ``save`` writes them: numpy's ``savez`` does not compress) and to
    lie within the file's ``size`` bytes."""
    infos = z.infolist()
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size \
                or info.header_offset + info.compress_size > size:
            raise CheckpointError(f"{path}: entry {info.filename[:40]!r} is compressed or "
                                  f"declares more bytes ({info.file_size}) than the file holds "
                                  f"({size}); fnn checkpoints store every entry uncompressed")
    entries = {info.filename.removesuffix(".npy"): info for info in infos}
    if len(entries) != len(infos):
        raise CheckpointError(f"{path}: the archive names an entry twice (altered file)")
    return entries


def _read_entry(path: Path, z: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One ``.npy`` entry as an array, after checking that its header declares exactly the
    entry's size (so a crafted shape cannot make numpy allocate more than the file holds)."""
    with z.open(info) as f:
        version = np.lib.format.read_magic(f)
        shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                           else np.lib.format.read_array_header_2_0(f))
        n_bytes = f.tell() + math.prod(shape) * dtype.itemsize
    if dtype.hasobject or any(d < 0 for d in shape) or n_bytes != info.file_size:
        raise CheckpointError(f"{path}: entry {info.filename[:40]!r} declares a {dtype} array "
                              f"of shape {shape} ({n_bytes} bytes with its header), the entry "
                              f"has {info.file_size} bytes")
    with z.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def load(path: str | os.PathLike, *, model: Any = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save`.

    Raises FileNotFoundError for a missing file and :class:`CheckpointError` (a ValueError)
    for a truncated, corrupted, altered or crafted file, or one whose trees do not fit
    together: the params and state must have the structure and shapes of the saved model's
    ``param_shapes()`` and ``state_shapes()``, and the optimizer state the structure of the
    params. With ``model`` given, the file must hold params and state for that model (and, if
    it saved a model, the same one). Records are rebuilt only from fnn's classes and those
    given to :func:`register`; nothing is imported, unpickled or drawn (no ``init``).
    """
    path = Path(path)
    content, arrays = _read(path)
    try:
        trees = {name: _decode(content["trees"][name], arrays, name) for name in _TREES}
        meta = content["meta"]
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    except (KeyError, TypeError, RecursionError) as err:
        raise CheckpointError(f"{path}: malformed description: {type(err).__name__}: "
                              f"{str(err)[:200]}") from err
    if model is not None:
        if trees["model"] is not None and trees["model"] != model:
            raise CheckpointError(f"{path}: saved for model {trees['model']!r}, not {model!r}")
        trees["model"] = model
    _check_fit(path, trees)
    return Checkpoint(**trees, meta=meta)


# --- consistency ------------------------------------------------------------------------------

def _same_shape(got: Any, like: Any) -> bool:
    """Leaves agree unless ``like`` is an array (or :class:`ShapeDtype`) and ``got`` is no
    array of its shape (only the shape: a model's params may be cast to another float dtype)."""
    return not isinstance(like, (np.ndarray, ShapeDtype)) or (
        isinstance(got, np.ndarray) and got.shape == tuple(like.shape))


def _mismatch(got: Any, like: Any, where: str) -> str | None:
    """Where ``got`` differs from ``like`` in structure or array shapes, or None."""
    found = tree.first_difference(got, like, _same_shape)
    if found is None:
        return None
    path, got, like = found
    where += tree.path_str(path)
    if isinstance(like, (np.ndarray, ShapeDtype)):
        has = f"shape {got.shape}" if isinstance(got, np.ndarray) else type(got).__name__
        return f"{where}: expected an array of shape {tuple(like.shape)}, the file has {has}"
    if type(got) is not type(like):
        return f"{where}: expected {type(like).__name__}, the file has {type(got).__name__}"
    return (f"{where}: expected {len(tree.children(like))} entries, the file has "
            f"{len(tree.children(got))}")


def _expected_trees(model: Any) -> tuple[Any, Any]:
    """``(params, state)`` to check a checkpoint's trees against, without drawing params:
    ``model.param_shapes()`` and ``model.state_shapes()`` (nothing allocated).

    Every fnn layer has them. A spec that is no :class:`Layer`, or that holds a layer with
    none of the shape methods of its own (a user's layer written before them: the base
    class's ``()`` would be wrong), is drawn with ``init(0)`` instead: only a class its
    program registered can be in a loaded spec, so this runs the user's own code.
    """
    shaped = ("output_shape", "param_shapes", "state_shapes")
    if isinstance(model, Layer) and all(
            any(getattr(type(layer), m) is not getattr(Layer, m) for m in shaped)
            for layer in _layers(model)):
        return model.param_shapes(), model.state_shapes()
    return model.init(0)


def _layers(node: Any) -> list:
    """Every layer in ``node`` (a layer, or a tuple or list of them) and in its fields."""
    if isinstance(node, (tuple, list)):
        return [x for child in node for x in _layers(child)]
    return [node, *(x for _, c in tree.children(node) for x in _layers(c))] \
        if isinstance(node, Layer) else []


def _check_fit(path: Path, trees: dict) -> None:
    checks = []
    model = trees["model"]
    if model is not None and hasattr(model, "init"):
        try:
            params, state = _expected_trees(model)
        except Exception as err:  # a model spec from a file: anything it raises is refused
            raise CheckpointError(f"{path}: the saved model {repr(model)[:200]} is not a usable "
                                  f"layer: {type(err).__name__}: {str(err)[:200]}") from err
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
