"""The thin TensorRT module: every call into TensorRT lives here, nowhere else.

Written against the TensorRT 10 Python API (tensor names, not binding
indices; ``build_serialized_network``; memory pools; ``execute_async_v3``).
Everything decidable without TensorRT is in :mod:`edgehal.export.tensorrt_plan`
and runs before anything here, so a bad request never reaches TensorRT.

``tensorrt`` is imported lazily: importing this module works on any machine;
calling into it without TensorRT is one ``EdgehalError``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from edgehal.errors import EdgehalError
from edgehal.export.tensorrt_plan import BuildPlan, EngineOptions, TensorInfo, plan_build
from edgehal.export.tensorrt_provenance import (
    EngineProvenance,
    HostInfo,
    check_compatibility,
    check_engine_file,
    parse_jetpack_version,
    parse_l4t_release,
    read_sidecar,
    write_sidecar,
)
from edgehal.fileio import atomic_write_bytes

INSTALL_HINT = ("install edgehal[tensorrt] on a machine with an NVIDIA GPU "
                "(pip install 'edgehal[gpu,tensorrt]'); on a Jetson, TensorRT ships with JetPack")
NV_TEGRA_RELEASE = Path("/etc/nv_tegra_release")


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


def _make_logger(trt: Any) -> Any:
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


# --------------------------------------------------------------------------
# The host


def _gpu_info(device_index: int) -> tuple[str, str]:
    """(name, compute capability "8.6") of the CUDA device, through torch (always installed)."""
    import torch

    if not torch.cuda.is_available():
        raise EdgehalError("CUDA GPU", "none is visible to this process",
                           "TensorRT engines are built and run on an NVIDIA GPU; check `nvidia-smi` "
                           "and CUDA_VISIBLE_DEVICES")
    count = torch.cuda.device_count()
    if not 0 <= device_index < count:
        raise EdgehalError(f"GPU {device_index}", f"does not exist ({count} visible)",
                           f"a device index 0..{count - 1}")
    major, minor = torch.cuda.get_device_capability(device_index)
    return torch.cuda.get_device_name(device_index), f"{major}.{minor}"


def _jetson_info() -> tuple[str | None, str | None]:
    """(L4T release, JetPack version) on a Jetson; (None, None) elsewhere."""
    try:
        l4t = parse_l4t_release(NV_TEGRA_RELEASE.read_text(errors="replace"))
    except OSError:
        return None, None
    jetpack = None
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"],
                             capture_output=True, text=True, timeout=10, check=False)
        jetpack = parse_jetpack_version(out.stdout) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return l4t, jetpack


def host_info(*, device_index: int = 0) -> HostInfo:
    """TensorRT version, GPU and (on a Jetson) L4T/JetPack release of this machine."""
    trt = import_tensorrt()
    name, cc = _gpu_info(device_index)
    l4t, jetpack = _jetson_info()
    return HostInfo(str(trt.__version__), name, cc, l4t, jetpack)


# --------------------------------------------------------------------------
# Building


@dataclass(frozen=True)
class BuildResult:
    engine: Path
    sidecar: Path
    provenance: EngineProvenance
    timing_cache: Path | None = None


def build_engine(onnx_path: str | Path, output: str | Path, options: EngineOptions, *,
                 device_index: int = 0) -> BuildResult:
    """Plan (anywhere), then build with TensorRT and write the engine and its sidecar."""
    plan = plan_build(onnx_path, options)
    return build_from_plan(plan, output, device_index=device_index)


def _check_host(plan: BuildPlan, host: HostInfo) -> None:
    opts = plan.options
    if opts.hardware_compatible and host.l4t_release:
        raise EdgehalError("--hardware-compatible", "is not supported on Jetson",
                           "build without it on the Jetson that will run the engine")
    major = int(host.compute_capability.split(".")[0])
    if opts.hardware_compatible and major < 8:
        raise EdgehalError("--hardware-compatible", f"needs an Ampere (sm_80) or newer GPU; this is {host.sm}",
                           "build without it, on the target GPU")


def build_from_plan(plan: BuildPlan, output: str | Path, *, device_index: int = 0) -> BuildResult:
    trt = import_tensorrt()
    host = host_info(device_index=device_index)
    _check_host(plan, host)
    import torch

    torch.cuda.set_device(device_index)  # TensorRT builds on the current CUDA device
    opts = plan.options
    src = plan.source.path
    logger = _make_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if opts.version_compatible or opts.hardware_compatible:
        parser.set_flag(trt.OnnxParserFlag.NATIVE_INSTANCENORM)
    if not parser.parse_from_file(str(src)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise EdgehalError(f"ONNX model {src.name}",
                           f"TensorRT's ONNX parser refused it ({(errors or [logger.last_error()])[0][:300]})",
                           f"run `edgehal inspect {src} --target tensorrt`")

    config = builder.create_builder_config()
    if plan.workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    if opts.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif opts.precision == "int8":
        # Explicit quantization: the Q/DQ nodes carry the scales, no calibrator.
        config.set_flag(trt.BuilderFlag.INT8)
    if opts.dla_core is not None:
        if builder.num_DLA_cores <= opts.dla_core:
            raise EdgehalError(f"--dla-core {opts.dla_core}",
                               f"this device has {builder.num_DLA_cores} DLA core(s)",
                               "a DLA core index on a Jetson with DLA (e.g. AGX Orin: 0 or 1), "
                               "or leave --dla-core out")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = opts.dla_core
        if opts.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if opts.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if opts.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS

    dynamic = [p for p in plan.profiles if any(d < 0 for t in plan.source.inputs if t.name == p.input
                                                for d in t.shape)]
    if dynamic:  # a network without dynamic inputs needs no profile
        names = {network.get_input(i).name for i in range(network.num_inputs)}
        profile = builder.create_optimization_profile()
        for p in dynamic:
            if p.input in names:
                profile.set_shape(p.input, p.min, p.opt, p.max)
        config.add_optimization_profile(profile)

    cache_path = opts.timing_cache
    if cache_path is not None:
        cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
        cache = config.create_timing_cache(cache_bytes)
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            raise EdgehalError(f"--timing-cache {cache_path}",
                               f"TensorRT cannot use it ({logger.last_error()})",
                               "a cache from the same TensorRT version and GPU; delete it to start a new one")

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgehalError(f"ONNX model {src.name}",
                           f"TensorRT could not build an engine ({logger.last_error()})",
                           f"run `edgehal inspect {src} --target tensorrt`, or try another --precision")
    out = Path(output)
    data = bytes(memoryview(serialized))
    atomic_write_bytes(out, data)
    if cache_path is not None:
        atomic_write_bytes(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))

    import edgehal

    provenance = EngineProvenance(
        tensorrt_version=host.tensorrt_version, gpu_name=host.gpu_name,
        compute_capability=host.compute_capability, l4t_release=host.l4t_release, jetpack=host.jetpack,
        precision=opts.precision, profiles=plan.profiles, inputs=plan.source.inputs,
        outputs=_ordered_outputs(plan), source_onnx=src.name, source_onnx_sha256=plan.source.sha256,
        engine_sha256=hashlib.sha256(data).hexdigest(), manifest=plan.source.manifest, onnx_props=dict(plan.source.props),
        dla_core=opts.dla_core, gpu_fallback=opts.gpu_fallback, version_compatible=opts.version_compatible,
        hardware_compatible=opts.hardware_compatible, workspace_mib=opts.workspace_mib,
        built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        edgehal_version=edgehal.__version__,
    )
    sidecar = write_sidecar(out, provenance)
    return BuildResult(out, sidecar, provenance, cache_path)


def _ordered_outputs(plan: BuildPlan) -> tuple[TensorInfo, ...]:
    """Graph outputs in manifest head order (the order every runner reports them in)."""
    outs = plan.source.outputs
    if plan.source.manifest is None:
        return outs
    rank = {name: i for i, name in enumerate(plan.source.manifest.head_names)}
    return tuple(sorted(outs, key=lambda t: rank.get(t.name, len(rank))))


# --------------------------------------------------------------------------
# Loading and running


@dataclass
class LoadedEngine:
    """A deserialised engine and what keeps it alive."""

    engine: Any
    runtime: Any
    provenance: EngineProvenance
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    warnings: tuple[str, ...] = ()
    logger: Any = field(default=None, repr=False)


def load_engine(path: str | Path, *, device_index: int = 0) -> LoadedEngine:
    """Check the sidecar against this machine, then deserialise the engine.

    An engine from another TensorRT version or GPU is refused here, with what
    differs and the ``edgehal build-engine`` line that rebuilds it, before
    TensorRT ever sees it.
    """
    p = Path(path)
    trt = import_tensorrt()
    provenance = read_sidecar(p)
    check_engine_file(provenance, p)
    host = host_info(device_index=device_index)
    warnings = check_compatibility(provenance, host, engine=p)
    import torch

    torch.cuda.set_device(device_index)
    logger = _make_logger(trt)
    runtime = trt.Runtime(logger)
    if provenance.version_compatible:
        runtime.engine_host_code_allowed = True  # version-compatible plans embed the lean runtime
    if provenance.dla_core is not None:
        runtime.DLA_core = provenance.dla_core
    engine = runtime.deserialize_cuda_engine(p.read_bytes())
    if engine is None:
        raise EdgehalError(f"TensorRT engine {p.name}", f"TensorRT could not load it ({logger.last_error()})",
                           f"rebuild the engine on the target with `{provenance.rebuild_command(p)}`")
    inputs, outputs = engine_io(trt, engine)
    return LoadedEngine(engine, runtime, provenance, inputs, outputs, tuple(warnings), logger)


def engine_io(trt: Any, engine: Any) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    """The engine's input and output tensors, by name (TensorRT 10 has no binding indices)."""
    import numpy as np

    inputs, outputs = [], []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name
        info = TensorInfo(name, dtype, tuple(int(d) for d in engine.get_tensor_shape(name)))
        (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(info)
    return tuple(inputs), tuple(outputs)


def create_context(loaded: LoadedEngine) -> Any:
    context = loaded.engine.create_execution_context()
    if context is None:
        raise EdgehalError("TensorRT engine", f"could not create an execution context ({loaded.logger.last_error()})",
                           "free GPU memory, or build the engine with a smaller --max-batch")
    return context


def bind(loaded: LoadedEngine, context: Any, feed: Mapping[str, Any], *,
         outputs: Sequence[TensorInfo], device: Any) -> dict[str, Any]:
    """Set input shapes and every I/O tensor's address; returns the output buffers.

    ``feed`` holds torch CUDA tensors; each output gets a torch CUDA buffer
    (TensorRT writes them all; the caller picks). Tensors must outlive the run.
    """
    import torch

    for name, tensor in feed.items():
        if not context.set_input_shape(name, tuple(tensor.shape)):
            raise EdgehalError(f"TensorRT engine: input {name!r}",
                               f"shape {tuple(tensor.shape)} is outside the engine's profile",
                               "a shape inside the profile recorded in the engine's sidecar")
        context.set_tensor_address(name, tensor.data_ptr())
    results: dict[str, Any] = {}
    for out in outputs:
        shape = tuple(int(d) for d in context.get_tensor_shape(out.name))
        buf = torch.empty(shape, dtype=_torch_dtype(out.dtype), device=device)
        context.set_tensor_address(out.name, buf.data_ptr())
        results[out.name] = buf
    return results


def enqueue(loaded: LoadedEngine, context: Any, stream_handle: int) -> None:
    """Enqueue one run on a CUDA stream; returns without synchronising."""
    if not context.execute_async_v3(stream_handle):
        raise EdgehalError("TensorRT engine", f"execution failed ({loaded.logger.last_error()})")


def execute(loaded: LoadedEngine, context: Any, feed: Mapping[str, Any], *,
            outputs: Sequence[TensorInfo], device: Any, stream: Any) -> dict[str, Any]:
    """Bind, run on ``stream`` and wait: torch CUDA tensors in, torch CUDA tensors out."""
    results = bind(loaded, context, feed, outputs=outputs, device=device)
    enqueue(loaded, context, stream.cuda_stream)
    stream.synchronize()
    return results


def _torch_dtype(numpy_dtype: str) -> Any:
    import numpy as np
    import torch

    return torch.from_numpy(np.empty(0, dtype=numpy_dtype)).dtype
