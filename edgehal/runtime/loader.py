"""Open the right runner for an artifact: checkpoint, ONNX file or TensorRT engine."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from edgehal.artifact import SUFFIXES, artifact_kind
from edgehal.errors import EdgehalError
from edgehal.runtime.base import Runner

#: Backend name -> the kind of artifact it runs; the first backend of a kind is its default.
BACKEND_KINDS: dict[str, str] = {
    "torch": "checkpoint",
    "torch-compile": "checkpoint",
    "ort-cpu": "onnx",
    "ort-cuda": "onnx",
    "ort-tensorrt": "onnx",
    "tensorrt": "engine",
}
BACKENDS = tuple(BACKEND_KINDS)
#: Backend name -> the file suffixes it runs.
BACKEND_SUFFIXES: dict[str, tuple[str, ...]] = {
    b: tuple(sfx for sfx, k in SUFFIXES.items() if k == kind) for b, kind in BACKEND_KINDS.items()}


def backends_for(kind: str) -> tuple[str, ...]:
    return tuple(b for b, k in BACKEND_KINDS.items() if k == kind)


def default_backend(path: str | Path) -> str:
    return backends_for(artifact_kind(path))[0]


def open_runner(path: str | Path, *, backend: str | None = None, threads: int | None = None,
                device: str | None = None, providers: Sequence[str] | None = None) -> Runner:
    """A runner (not yet activated) for ``path``. ``backend`` defaults to the file type's first.

    ``providers`` (ONNX files only) are onnxruntime execution providers in
    priority order (``cpu``, ``cuda``, ``tensorrt``) in place of the one an
    ``ort-*`` backend names; an empty sequence picks every available one
    (TensorRT, CUDA, CPU). Defaults to the backend's.
    """
    p = Path(path)
    kind = artifact_kind(p)
    backend = backend or default_backend(p)
    if backend not in BACKENDS:
        raise EdgehalError(f"backend {backend!r}", "is unknown", f"one of {list(BACKENDS)}")
    if BACKEND_KINDS[backend] != kind:
        raise EdgehalError(f"backend {backend!r}", f"cannot run a {kind} file ({p.name})",
                           f"one of {list(backends_for(kind))}")
    if providers is not None and kind != "onnx":
        raise EdgehalError(f"execution providers {list(providers)}", f"apply to ONNX files, not to {p.name}",
                           "no providers for a checkpoint or a TensorRT engine")
    if not p.is_file():
        raise EdgehalError(f"artifact {p}", "file not found")
    if backend in ("torch", "torch-compile"):
        from edgehal.runtime.torch import TorchRunner
        return TorchRunner(p, device=device, compile=backend == "torch-compile", threads=threads)
    if backend.startswith("ort-"):
        from edgehal.runtime.onnxruntime import OnnxRuntimeRunner
        return OnnxRuntimeRunner(p, providers=[backend[4:]] if providers is None else list(providers),
                                 threads=threads)
    from edgehal.runtime.tensorrt import TensorRTRunner
    return TensorRTRunner(p)
