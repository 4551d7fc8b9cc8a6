"""The ``tensorrt`` Python package: imported only when called, and the logger edgehal gives it.

Importing any edgehal module works on a machine without TensorRT; the first
call that needs it either gets the module or one ``EdgehalError`` that says
how to install it. The engine build and the runner both go through here.
"""

from __future__ import annotations

from typing import Any

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


def make_logger(trt: Any) -> Any:
    """A TensorRT logger that keeps warnings and errors, so failures can quote them."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[tuple[Any, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.Logger.INTERNAL_ERROR, trt.Logger.ERROR, trt.Logger.WARNING):
                self.messages.append((severity, str(msg)))

        def last_error(self) -> str:
            errors = [m for s, m in self.messages if s in (trt.Logger.INTERNAL_ERROR, trt.Logger.ERROR)]
            text = (errors or [m for _, m in self.messages] or ["no message"])[-1]
            return text.strip().splitlines()[0][:300]

    return _Logger()
