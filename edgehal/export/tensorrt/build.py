"""Building an engine: the thin module where ``edgehal build-engine`` calls TensorRT.

Written against the TensorRT 10 Python API (explicit batch, no
``max_batch_size``; ``build_serialized_network``; memory pools). Everything
decidable without TensorRT is in :mod:`edgehal.export.tensorrt.plan` and runs
before anything here, so a bad request never reaches TensorRT. Loading,
binding and running an engine is the runner's:
:mod:`edgehal.runtime.tensorrt`.

``tensorrt`` is imported lazily: importing this module works on any machine;
calling into it without TensorRT is one ``EdgehalError``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

from edgehal.errors import EdgehalError
from edgehal.export.tensorrt.library import import_tensorrt, make_logger
from edgehal.export.tensorrt.plan import BuildPlan, EngineOptions, plan_build
from edgehal.artifact import write_engine_sidecar
from edgehal.export.tensorrt.provenance import EngineProvenance, HostInfo, host_info
from edgehal.fileio import atomic_write_bytes


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
    logger = make_logger(trt)
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
        outputs=plan.outputs, source_onnx=src.name, source_onnx_sha256=plan.source.sha256,
        engine_sha256=hashlib.sha256(data).hexdigest(), metadata=plan.source.metadata.with_precision(opts.precision) if plan.source.metadata else None,
        dla_core=opts.dla_core, gpu_fallback=opts.gpu_fallback, version_compatible=opts.version_compatible,
        hardware_compatible=opts.hardware_compatible, workspace_mib=opts.workspace_mib,
        built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        edgehal_version=edgehal.__version__,
    )
    sidecar = write_engine_sidecar(out, provenance)
    return BuildResult(out, sidecar, provenance, cache_path)
