"""edgehal: hierarchical-auxiliary-learning models from PyTorch training to the edge.

The public API (:mod:`edgehal.api`) is loaded on first use (PEP 562), so
``import edgehal`` stays fast and imports neither torch nor onnx::

    import edgehal

    manifest = edgehal.HeadManifest.classifier(class_names=..., input_shape=(3, 32, 32))
    edgehal.export(module, "model.onnx", example_inputs=x, manifest=manifest)

``export``, ``bench``, ``parity`` and ``serve`` share their names with
subpackages (``edgehal.export.onnx``, ``edgehal.bench.run``, ...). Whichever
is imported first, the import system sets the package attribute to the
subpackage, so the subpackage is made callable instead: ``edgehal.export`` is
the package ``edgehal/export/`` and ``edgehal.export(...)`` calls
:func:`edgehal.api.export`. Both uses keep working side by side; ``inspect.signature``
shows the function's, ``help()`` the package's (``help(edgehal.api.export)`` for the function).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from edgehal.errors import EdgehalError

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first access.
_LAZY = {
    "export": "edgehal.api", "quantize": "edgehal.api", "parity": "edgehal.api", "bench": "edgehal.api",
    "serve": "edgehal.api", "load": "edgehal.api", "Server": "edgehal.api", "QuantizeReport": "edgehal.api",
    "Head": "edgehal.manifest", "HeadManifest": "edgehal.manifest", "Preprocessing": "edgehal.manifest",
}
# API functions named like a subpackage: the subpackage itself is made callable.
_CALLABLE_SUBPACKAGES = ("bench", "export", "parity", "serve")

__all__ = ["EdgehalError", "Head", "HeadManifest", "Preprocessing", "QuantizeReport", "Server", "__version__",
           "bench", "export", "load", "parity", "quantize", "serve"]

if TYPE_CHECKING:  # pragma: no cover - what type checkers see; at run time __getattr__ provides these
    from edgehal.api import (
        QuantizeReport,
        Server,
        bench,
        export,
        load,
        parity,
        quantize,
        serve,
    )
    from edgehal.manifest import Head, HeadManifest, Preprocessing


class _CallableSubpackage(types.ModuleType):
    """A subpackage whose call is the API function of the same name."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__wrapped__(*args, **kwargs)

    @property
    def __wrapped__(self) -> Any:  # inspect.signature and help() show the function's
        return getattr(importlib.import_module("edgehal.api"), self.__name__.rpartition(".")[2])


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        # The import system sets a subpackage as an attribute of its parent right after loading it.
        if name in _CALLABLE_SUBPACKAGES and type(value) is types.ModuleType:
            value.__class__ = _CallableSubpackage
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _CALLABLE_SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")  # sets the attribute through _Package
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    loaded = {k for k, v in globals().items() if isinstance(v, types.ModuleType) and v.__name__.startswith("edgehal.")}
    return sorted(set(__all__) | loaded)
