"""Model registry: small builders registered by name (timm's ``_registry``/``_factory``).

A builder is a function with keyword-only parameters returning an
``EdgehalModel``. ``create_model`` checks the keyword arguments against the
builder's signature first, so a typo in a config names the valid keys instead
of failing deep inside a constructor.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from edgehal.errors import EdgehalError

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_model(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn
    return decorator


def _load_builtin() -> None:
    # Importing the architecture modules registers their builders.
    import importlib

    for module in ("hal", "localization", "rnn_models", "hdcnn", "rnn_localization"):
        try:
            importlib.import_module(f"edgehal.nets.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"edgehal.nets.{module}":
                raise


def list_models() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def model_parameters(name: str) -> dict[str, inspect.Parameter]:
    _load_builtin()
    return dict(inspect.signature(get_builder(name)).parameters)


def get_builder(name: str) -> Callable[..., Any]:
    _load_builtin()
    if name not in _REGISTRY:
        raise EdgehalError(f"model {name!r}", "is not a known model", f"one of {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def create_model(name: str, **kwargs: Any):
    """Build a registered model; unknown keyword arguments are refused by name."""
    builder = get_builder(name)
    params = inspect.signature(builder).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise EdgehalError(f"model {name!r}", f"unknown option {unknown[0]!r}",
                           f"options of {name}: {sorted(params)}")
    missing = [p for p, v in params.items() if v.default is inspect.Parameter.empty and p not in kwargs]
    if missing:
        raise EdgehalError(f"model {name!r}", f"option {missing[0]!r} is required")
    return builder(**kwargs)
