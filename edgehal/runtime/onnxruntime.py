"""onnxruntime runner: CPU here; CUDA or TensorRT execution providers where present."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from edgehal.errors import EdgehalError
from edgehal.artifact import ArtifactMetadata, onnx_metadata
from edgehal.manifest import HeadManifest
from edgehal.runtime.base import Runner, check_feed
from edgehal.tensors import TensorSpec, dtype_from_ort

# Providers that compute on an NVIDIA GPU; the first provider of a session is where it runs.
_CUDA_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


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
        self._threads = threads
        self.optimization = optimization
        self.session = None
        self._metadata: ArtifactMetadata | None = None
        self._output_names: list[str] = []
        self._input_specs: list[TensorSpec] | None = None
        label = "<bytes>" if isinstance(model, bytes) else str(model)
        self.what = f"ONNX model {label}"

    def _activate(self) -> None:
        ort = import_onnxruntime()
        if not isinstance(self.model, bytes) and not Path(self.model).is_file():
            raise EdgehalError(self.what, "file not found")
        opts = ort.SessionOptions()
        if self._threads is not None:
            opts.intra_op_num_threads = self._threads
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
        # Asked on every infer(): session.get_outputs() builds new NodeArgs each time (microseconds).
        self._output_names = [o.name for o in self.session.get_outputs()]

    def _deactivate(self) -> None:
        self.session = None
        self._output_names = []
        self._input_specs = None

    @property
    def metadata(self) -> ArtifactMetadata | None:
        return self._metadata

    @property
    def manifest(self) -> HeadManifest | None:
        return self._metadata.manifest if self._metadata else None

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers()) if self.session else []

    @property
    def precision(self) -> str:
        """From the model's edgehal metadata; fp32 for a plain ONNX model."""
        self._require_active()
        return self._metadata.precision if self._metadata is not None else "fp32"

    @property
    def device(self) -> str:
        """``cuda:N`` when the session's first provider is the CUDA or TensorRT one, else ``cpu``."""
        self._require_active()
        first = self.session.get_providers()[0]
        if first not in _CUDA_PROVIDERS:
            return "cpu"
        options = self.session.get_provider_options().get(first, {})
        return f"cuda:{int(options.get('device_id', 0))}"

    @property
    def threads(self) -> int | None:
        """Intra-op threads as requested; None leaves them to onnxruntime (all cores)."""
        return self._threads

    def input_specs(self) -> list[TensorSpec]:
        # Described once per activation: infer() checks every feed against them.
        if self._input_specs is None:
            self._input_specs = [self._spec(i, "input") for i in self.session.get_inputs()]
        return list(self._input_specs)

    def output_specs(self) -> list[TensorSpec]:
        return [self._spec(o, "output") for o in self.session.get_outputs()]

    def _spec(self, arg, kind: str) -> TensorSpec:
        """A session NodeArg; named dims (``"batch"``) and unknown ones are dynamic. A type numpy
        cannot hold (FLOAT8E4M3FN) is an EdgehalError: the runner feeds and returns numpy arrays."""
        what = f"{self.what}: {kind} {arg.name!r}"
        dtype = dtype_from_ort(arg.type, what=what).require_numpy(what=what)
        return TensorSpec(arg.name, dtype, tuple(d if isinstance(d, int) else -1 for d in arg.shape))

    def output_names(self) -> list[str]:
        return list(self._output_names)

    def _infer(self, feed: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        results = self.session.run(outputs, feed)
        return dict(zip(outputs, results))

    def device_timer(self, feed: Mapping[str, np.ndarray], *,
                     outputs: Sequence[str] | None = None) -> Callable[[], int] | None:
        """Host time around ``run_with_iobinding`` with inputs and outputs resident on the GPU.

        onnxruntime synchronises the device at the end of an IOBinding run, so
        the host time around it is the model's device time plus the launch,
        without host-device copies. None on the CPU provider.
        """
        self._require_active()
        device = self.device
        if device == "cpu":
            return None
        names = self._output_list(outputs)
        checked = check_feed(feed, self.input_specs(), max_batch=self.max_batch, what=f"runner {self.name}")
        ort = import_onnxruntime()
        index = int(device.partition(":")[2])
        binding = self.session.io_binding()
        inputs = [ort.OrtValue.ortvalue_from_numpy(arr, "cuda", index) for arr in checked.values()]
        for name, value in zip(checked, inputs):
            binding.bind_ortvalue_input(name, value)
        for name in names:
            binding.bind_output(name, "cuda", index)
        return _IOBindingTimer(self.session, binding, inputs)


class _IOBindingTimer:
    """One timed ``run_with_iobinding``; holds the device-resident inputs as long as the binding."""

    def __init__(self, session, binding, inputs: list) -> None:
        self.session, self.binding, self.inputs = session, binding, inputs

    def __call__(self) -> int:
        t0 = time.perf_counter_ns()
        self.session.run_with_iobinding(self.binding)
        return time.perf_counter_ns() - t0
