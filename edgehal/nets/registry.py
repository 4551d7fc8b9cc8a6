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
from edgehal.registry import Registry

MODELS: Registry[Callable[..., Any]] = Registry("model", builtin=(
    "edgehal.nets.hal", "edgehal.nets.localization", "edgehal.nets.rnn_models", "edgehal.nets.hdcnn",
    "edgehal.nets.rnn_localization"))


def register_model(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a model builder; a name registered twice is refused, naming both builders."""
    return MODELS.register(name)


def list_models() -> list[str]:
    return MODELS.names()


def get_builder(name: str) -> Callable[..., Any]:
    return MODELS.get(name)


def model_parameters(name: str) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(get_builder(name)).parameters)


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
