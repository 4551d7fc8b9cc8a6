"""Model registry: small builders registered by name (timm's ``_registry``/``_factory``).

A builder is a function with keyword-only parameters returning an
``EdgehalModel``. ``create_model`` checks the keyword arguments against the
builder's signature first, so a typo in a config names the valid keys instead
of failing deep inside a constructor.

Some arguments only initialise a model (``weights``: a pretrained file read
once before training). A builder declares them ``init_only``, and a model
rebuilt from a checkpoint (``create_model(..., initialise=False)``) is built
without them, so the checkpoint's own state dict is all it needs.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

from edgehal.errors import EdgehalError
from edgehal.registry import Registry

MODELS: Registry[Callable[..., Any]] = Registry("model", builtin=(
    "edgehal.nets.hal", "edgehal.nets.localization", "edgehal.nets.rnn_models", "edgehal.nets.hdcnn",
    "edgehal.nets.rnn_localization", "edgehal.nets.torchvision_models"))
# model name -> the builder arguments that only initialise it (left out when a checkpoint rebuilds it)
_INIT_ONLY: dict[str, tuple[str, ...]] = {}


def register_model(name: str, *, init_only: Sequence[str] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a model builder; a name registered twice is refused, naming both builders.

    ``init_only`` names keyword arguments (with defaults) that only initialise the weights,
    such as a pretrained file: ``create_model(..., initialise=False)`` leaves them out.
    """
    def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
        params = inspect.signature(builder).parameters
        lacking = [a for a in init_only if a not in params or params[a].default is inspect.Parameter.empty]
        if lacking:
            raise EdgehalError(f"model {name!r}", f"init-only argument {lacking[0]!r} is not an optional "
                               "keyword of its builder", "init_only names builder keywords that have a default")
        MODELS.register(name)(builder)
        _INIT_ONLY[name] = tuple(init_only)
        return builder
    return decorator


def list_models() -> list[str]:
    return MODELS.names()


def get_builder(name: str) -> Callable[..., Any]:
    return MODELS.get(name)


def model_parameters(name: str) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(get_builder(name)).parameters)


def init_only_parameters(name: str) -> tuple[str, ...]:
    """The arguments of model ``name`` that only initialise it (see ``register_model``)."""
    get_builder(name)
    return _INIT_ONLY.get(name, ())


def create_model(name: str, /, *, initialise: bool = True, **kwargs: Any):
    """Build a registered model; unknown keyword arguments are refused by name.

    ``initialise=False`` leaves out the builder's init-only arguments: the model is about to
    receive a state dict (a checkpoint), so a pretrained file it was first built from is not read.
    """
    builder = get_builder(name)
    if not initialise:
        kwargs = {k: v for k, v in kwargs.items() if k not in _INIT_ONLY.get(name, ())}
    params = inspect.signature(builder).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise EdgehalError(f"model {name!r}", f"unknown option {unknown[0]!r}",
                           f"options of {name}: {sorted(params)}")
    missing = [p for p, v in params.items() if v.default is inspect.Parameter.empty and p not in kwargs]
    if missing:
        raise EdgehalError(f"model {name!r}", f"option {missing[0]!r} is required")
    return builder(**kwargs)
