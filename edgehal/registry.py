"""One registry for everything edgehal looks up by name: models, data sets, evaluators.

A name is registered once (timm silently lets a second registration win;
here it is an error that names both places), an unknown name is answered with
the known ones, and the built-in entries register themselves when their
modules are imported: the registry imports a declared list of them the first
time it is asked. A built-in module that fails to import is an error with its
traceback (a broken install or a bug), never a name quietly missing from the
list.
"""

from __future__ import annotations

import importlib
from typing import Callable, Generic, Iterator, Sequence, TypeVar

from edgehal.errors import EdgehalError

T = TypeVar("T")


def place_of(obj: object) -> str:
    """``module.qualname`` of a function or class: where a registration came from."""
    module = getattr(obj, "__module__", None) or "?"
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{name}"


class Registry(Generic[T]):
    """Name -> entry (a builder, an evaluator), with the built-in modules that fill it.

    ``kind`` is what an entry is, for messages ("model", "data set").
    ``builtin`` lists the modules (full dotted names) whose import registers
    the built-in entries.
    """

    def __init__(self, kind: str, *, builtin: Sequence[str] = ()) -> None:
        self.kind = kind
        self.builtin = tuple(builtin)
        self._entries: dict[str, T] = {}
        self._places: dict[str, str] = {}
        self._loaded = False
        self._loading = False

    # -- filling ------------------------------------------------------------
    def add(self, name: str, entry: T, *, place: str | None = None) -> T:
        """Register ``entry`` under ``name``; ``place`` (defaults to the entry's module.qualname) is
        named in the error a second registration of ``name`` gets."""
        if not isinstance(name, str) or not name:
            raise EdgehalError(f"{self.kind} name", f"{name!r} is not a non-empty string")
        where = place or place_of(entry)
        if name in self._entries and self._places[name] != where:
            raise EdgehalError(f"{self.kind} {name!r}", f"is registered twice: by {self._places[name]} and by {where}",
                               "one registration per name; pick another name for the new one")
        # The same place registering again is its module being imported again (a reload), not a duplicate.
        self._entries[name] = entry
        self._places[name] = where
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@registry.register("name")`` above the builder."""
        def decorator(entry: T) -> T:
            return self.add(name, entry)
        return decorator

    def load_builtin(self) -> None:
        """Import the built-in modules once; an ImportError there propagates with its traceback."""
        if self._loaded or self._loading:
            return  # _loading: a built-in module asked the registry while being imported
        self._loading = True
        try:
            for module in self.builtin:
                try:
                    importlib.import_module(module)
                except ImportError as exc:
                    raise type(exc)(f"{self.kind} registry: the built-in module {module} failed to import "
                                      f"({exc})", name=exc.name, path=exc.path) from exc
            self._loaded = True
        finally:
            self._loading = False

    # -- looking up ---------------------------------------------------------
    def names(self) -> list[str]:
        self.load_builtin()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        self.load_builtin()
        if name not in self._entries:
            raise EdgehalError(f"{self.kind} {name!r}", f"is not a known {self.kind}",
                               f"one of {sorted(self._entries)}")
        return self._entries[name]

    def place(self, name: str) -> str:
        """Where ``name`` was registered (module.qualname)."""
        self.get(name)
        return self._places[name]

    def __contains__(self, name: object) -> bool:
        self.load_builtin()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
