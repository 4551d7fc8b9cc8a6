"""The ``tensorrt`` Python package: imported only when called, and the logger edgehal gives it.

Importing any edgehal module works on a machine without TensorRT; the first
call that needs it either gets the module or one ``EdgehalError`` that says
how to install it. The engine build and the runner both go through here.
"""

from __future__ import annotations

from typing import Any, Callable

from edgehal.errors import EdgehalError

INSTALL_HINT = ("install edgehal[tensorrt] on a machine with an NVIDIA GPU "
                "(pip install 'edgehal[gpu,tensorrt]'); on a Jetson, TensorRT ships with JetPack")


def tensorrt_available() -> bool:
    """Whether ``import tensorrt`` would find a module (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


def import_tensorrt() -> Any:
    """``import tensorrt``, or one clear error where it is missing or broken."""
    try:
        import tensorrt
    except ImportError:
        raise EdgehalError("TensorRT", "is not installed", INSTALL_HINT) from None
    except OSError as exc:  # the wheel is there but libnvinfer or CUDA is not
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
        raise EdgehalError("TensorRT", f"is installed but cannot load its libraries ({first})",
                           INSTALL_HINT) from None
    return tensorrt


def make_logger(trt: Any, *, echo: Callable[[str], None] | None = None) -> Any:
    """A TensorRT logger that keeps warnings and errors, so failures can quote them.

    With ``echo``, each message at WARNING or above is also passed to it as
    one line (``TensorRT warning: ...``): ``build-engine`` shows them to the
    user, since TensorRT says there why an engine is slower or less precise
    than asked.
    """

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[tuple[Any, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.Logger.INTERNAL_ERROR, trt.Logger.ERROR, trt.Logger.WARNING):
                self.messages.append((severity, str(msg)))
                if echo is not None:
                    level = "warning" if severity == trt.Logger.WARNING else "error"
                    echo(f"TensorRT {level}: {str(msg).strip()}")

        def errors(self) -> list[str]:
            return [m for s, m in self.messages if s in (trt.Logger.INTERNAL_ERROR, trt.Logger.ERROR)]

        def last_error(self) -> str:
            text = (self.errors() or [m for _, m in self.messages] or ["no message"])[-1]
            return text.strip().splitlines()[0][:300]

    return _Logger()


# --------------------------------------------------------------------------
# The supported majors: every version difference edgehal cares about is decided here

SUPPORTED_MAJORS = (10, 11)
# TensorRT 11 removed weak typing: BuilderFlag.FP16/INT8 are gone and every network is strongly
# typed, so NetworkDefinitionCreationFlag.STRONGLY_TYPED is "retained for API compatibility but
# ignored" (the flag's docstring in the 11.4 bindings; NVIDIA's "Migrating from TensorRT 10.x to
# 11.x" guide). TensorRT 10 still builds weakly typed networks unless asked for STRONGLY_TYPED.
ALWAYS_STRONGLY_TYPED_FROM = 11


def version_major(version: str) -> int | None:
    """The major of a TensorRT version string (``"10.16.1.11"`` -> 10); None when it has none."""
    head = str(version).strip().split(".")[0]
    return int(head) if head.isdigit() else None


def tensorrt_major(trt: Any) -> int:
    """The major of the imported TensorRT; one clear error for a major edgehal does not support."""
    major = version_major(getattr(trt, "__version__", ""))
    if major not in SUPPORTED_MAJORS:
        raise EdgehalError("TensorRT", f"version {getattr(trt, '__version__', '?')} is not supported",
                           f"TensorRT {' or '.join(map(str, SUPPORTED_MAJORS))} (pip install "
                           "'tensorrt>=10.0,<12')")
    return major


def has_weak_typing(trt: Any) -> bool:
    """Whether this TensorRT can still build weakly typed networks (``BuilderFlag.FP16``/``INT8``): 10 only."""
    return tensorrt_major(trt) < ALWAYS_STRONGLY_TYPED_FROM


def network_flags(trt: Any, *, strongly_typed: bool = True) -> int:
    """The ``Builder.create_network`` flags: strongly typed, the one mode TensorRT 11 has.

    ``strongly_typed=False`` is TensorRT 10's weakly typed network, which its
    DLA builds need (DLA takes FP16/INT8 layers chosen by the builder flags);
    asking for it on TensorRT 11 is an error, not a silent strongly typed build.
    """
    if not has_weak_typing(trt):
        if not strongly_typed:
            raise EdgehalError(f"TensorRT {trt.__version__}", "has no weakly typed networks",
                               "a strongly typed build (TensorRT 11 removed BuilderFlag.FP16/INT8)")
        return 0  # always strongly typed; the deprecated flag would be ignored
    if not strongly_typed:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
