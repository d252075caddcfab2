"""Every public name has a docstring; every layer's init, forward and backward have their own
(none inherits the base's "nothing to learn" init while it has params)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import fnn
from fnn.core import Layer

MODULES = sorted({"fnn", *(f"fnn.{m.name}" for m in pkgutil.iter_modules(fnn.__path__)
                           if not m.name.startswith("_"))} - {"fnn.__main__"})


def _public(module_name: str) -> list[tuple[str, object]]:
    module = importlib.import_module(module_name)
    return [(f"{module_name}.{n}", getattr(module, n)) for n in getattr(module, "__all__", [])
            if not inspect.ismodule(getattr(module, n))]


@pytest.mark.parametrize("module_name", MODULES)
def test_public_names_have_docstrings(module_name):
    if module_name == "fnn.distributed":
        pytest.importorskip("distributed")
    module = importlib.import_module(module_name)
    assert (module.__doc__ or "").strip(), f"{module_name} has no module docstring"
    missing = [name for name, obj in _public(module_name)
               if (inspect.isclass(obj) or inspect.isfunction(obj))
               and not (obj.__doc__ or "").strip()]
    assert not missing, f"no docstring: {missing}"


LAYERS = sorted({obj for m in MODULES if m != "fnn.distributed" for _, obj in _public(m)
                 if inspect.isclass(obj) and issubclass(obj, Layer) and obj is not Layer},
                key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_layer_methods_have_their_own_docstrings(cls):
    for name in ("init", "forward", "backward"):
        assert (getattr(cls, name).__doc__ or "").strip(), f"{cls.__name__}.{name}"
    if cls.param_shapes is not Layer.param_shapes or cls.state_shapes is not Layer.state_shapes:
        assert cls.init is not Layer.init, f"{cls.__name__} has params or state but the base init"
    for name in ("output_shape",):
        assert getattr(cls, name) is not Layer.output_shape, f"{cls.__name__}.{name}"
