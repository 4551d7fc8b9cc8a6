"""Open the right runner for an artifact: checkpoint, ONNX file or TensorRT engine."""

from __future__ import annotations

from pathlib import Path

from edgehal.errors import EdgehalError
from edgehal.runtime.base import Runner

#: Backend name -> the artifact suffixes it runs; the first backend of a suffix is its default.
BACKEND_SUFFIXES: dict[str, tuple[str, ...]] = {
    "torch": (".pt", ".pth"),
    "torch-compile": (".pt", ".pth"),
    "ort-cpu": (".onnx",),
    "ort-cuda": (".onnx",),
    "ort-tensorrt": (".onnx",),
    "tensorrt": (".plan", ".engine"),
}
BACKENDS = tuple(BACKEND_SUFFIXES)
_SUFFIX_BACKENDS = {sfx: tuple(b for b, sfxs in BACKEND_SUFFIXES.items() if sfx in sfxs)
                    for sfx in sorted({s for v in BACKEND_SUFFIXES.values() for s in v})}


def artifact_kind(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIX_BACKENDS:
        raise EdgehalError(f"artifact {path}", f"has an unknown suffix {suffix!r}",
                           "a checkpoint (.pt), an ONNX file (.onnx) or a TensorRT engine (.plan/.engine)")
    return suffix


def default_backend(path: str | Path) -> str:
    return _SUFFIX_BACKENDS[artifact_kind(path)][0]


def open_runner(path: str | Path, *, backend: str | None = None, threads: int | None = None,
                device: str | None = None) -> Runner:
    """A runner (not yet activated) for ``path``. ``backend`` defaults to the file type's first."""
    p = Path(path)
    kind = artifact_kind(p)
    backend = backend or default_backend(p)
    if backend not in BACKENDS:
        raise EdgehalError(f"backend {backend!r}", "is unknown", f"one of {list(BACKENDS)}")
    if backend not in _SUFFIX_BACKENDS[kind]:
        raise EdgehalError(f"backend {backend!r}", f"cannot run a {kind} file ({p.name})",
                           f"one of {list(_SUFFIX_BACKENDS[kind])}")
    if not p.is_file():
        raise EdgehalError(f"artifact {p}", "file not found")
    if backend in ("torch", "torch-compile"):
        from edgehal.runtime.torch import TorchRunner
        return TorchRunner(p, device=device, compile=backend == "torch-compile", threads=threads)
    if backend.startswith("ort-"):
        from edgehal.runtime.onnxruntime import OnnxRuntimeRunner
        return OnnxRuntimeRunner(p, providers=[backend[4:]], threads=threads)
    from edgehal.runtime.tensorrt import TensorRTRunner
    return TensorRTRunner(p)
