"""onnxruntime runner: CPU here; CUDA or TensorRT execution providers where present."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from edgehal.errors import EdgehalError
from edgehal.artifact import ArtifactMetadata, onnx_metadata
from edgehal.hierarchy import HeadManifest
from edgehal.runtime.base import Runner, TensorSpec

_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(bool)": "bool",
}


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise EdgehalError("onnxruntime", "is not installed",
                           "pip install 'edgehal[cpu]' (or 'edgehal[gpu]' on an NVIDIA GPU, never both)") from None
    return onnxruntime


def choose_providers(requested: Sequence[str] | None = None, *,
                     cache_dir: str | Path | None = None) -> list:
    """Execution providers in priority order: TensorRT, CUDA, CPU, as available.

    ``requested`` names providers (``cpu``, ``cuda``, ``tensorrt`` or full ORT
    names); an unavailable one is an error rather than a silent CPU fallback.
    Defaults to every available one of TensorRT, CUDA and CPU. The TensorRT
    provider caches its engines under ``cache_dir`` (defaults to
    ``.edgehal-cache/trt``).
    """
    ort = import_onnxruntime()
    available = ort.get_available_providers()
    aliases = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
               "tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider"}
    if requested:
        names = [aliases.get(r.lower(), r) for r in requested]
        for n in names:
            if n not in available:
                raise EdgehalError(f"execution provider {n}", "is not available in this onnxruntime",
                                   f"one of {available}")
    else:
        names = [n for n in ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
                 if n in available]
    providers: list = []
    for n in names:
        if n == "TensorrtExecutionProvider":
            cache = Path(cache_dir or ".edgehal-cache/trt")
            cache.mkdir(parents=True, exist_ok=True)
            providers.append((n, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                                  "trt_timing_cache_enable": True}))
        else:
            providers.append(n)
    if "CPUExecutionProvider" not in names:
        providers.append("CPUExecutionProvider")
    return providers


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX file (or bytes) with onnxruntime.

    ``threads`` sets intra-op threads (defaults to onnxruntime's choice, all
    cores); ``providers`` as for :func:`choose_providers`.
    """

    name = "onnxruntime"

    def __init__(self, model: str | Path | bytes, *, providers: Sequence[str] | None = None,
                 threads: int | None = None, optimization: str = "all") -> None:
        super().__init__()
        self.model = model
        self.requested_providers = providers
        self.threads = threads
        self.optimization = optimization
        self.session = None
        self._metadata: ArtifactMetadata | None = None
        label = "<bytes>" if isinstance(model, bytes) else str(model)
        self.what = f"ONNX model {label}"

    def _activate(self) -> None:
        ort = import_onnxruntime()
        if not isinstance(self.model, bytes) and not Path(self.model).is_file():
            raise EdgehalError(self.what, "file not found")
        opts = ort.SessionOptions()
        if self.threads is not None:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = {
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.optimization]
        opts.log_severity_level = 3
        source = self.model if isinstance(self.model, bytes) else str(self.model)
        try:
            self.session = ort.InferenceSession(source, sess_options=opts,
                                                providers=choose_providers(self.requested_providers))
        except EdgehalError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else exc.__class__.__name__
            raise EdgehalError(self.what, f"onnxruntime cannot load it ({first})",
                               "a valid ONNX file, e.g. one written by `edgehal export`") from None
        self._metadata = onnx_metadata(self.session.get_modelmeta(), what=self.what)

    def _deactivate(self) -> None:
        self.session = None

    @property
    def metadata(self) -> ArtifactMetadata | None:
        return self._metadata

    @property
    def manifest(self) -> HeadManifest | None:
        return self._metadata.manifest if self._metadata else None

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers()) if self.session else []

    def input_specs(self) -> list[TensorSpec]:
        return [TensorSpec(i.name, _ORT_TYPES.get(i.type, i.type),
                           tuple(d if isinstance(d, int) else -1 for d in i.shape))
                for i in self.session.get_inputs()]

    def output_specs(self) -> list[TensorSpec]:
        return [TensorSpec(o.name, _ORT_TYPES.get(o.type, o.type),
                           tuple(d if isinstance(d, int) else -1 for d in o.shape))
                for o in self.session.get_outputs()]

    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def _infer(self, feed: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        results = self.session.run(outputs, feed)
        return dict(zip(outputs, results))
