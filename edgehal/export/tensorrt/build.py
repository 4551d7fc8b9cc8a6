"""Building an engine: the thin module where ``edgehal build-engine`` calls TensorRT.

Written against the TensorRT 10 and 11 Python APIs, one code path: explicit
batch, ``build_serialized_network``, memory pools, and a strongly typed
network, the only kind TensorRT 11 builds. A strongly typed engine computes
in the ONNX's own types, so precision comes from the file, not from builder
flags: an fp16 engine is built from an FP16 ONNX (``edgehal export
--precision fp16`` writes one; an FP32 ONNX is converted here with the same
converter and the FP16 file kept beside the engine), an int8 engine from a
Q/DQ ONNX (``edgehal quantize``). The one exception is a DLA build on a
Jetson, which stays on TensorRT 10's weakly typed network with the FP16/INT8
builder flags; TensorRT 11 has neither weak typing nor JetPack support, so DLA
is refused there. The version rules live in
:mod:`edgehal.export.tensorrt.library`.

Everything decidable without TensorRT is in :mod:`edgehal.export.tensorrt.plan`
and runs before anything here, so a bad request never reaches TensorRT.
Loading, binding and running an engine is the runner's:
:mod:`edgehal.runtime.tensorrt`.

``tensorrt`` is imported lazily: importing this module works on any machine;
calling into it without TensorRT is one ``EdgehalError``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgehal.artifact import write_engine_sidecar
from edgehal.errors import EdgehalError
from edgehal.export.tensorrt.library import (
    has_weak_typing,
    import_tensorrt,
    make_logger,
    network_flags,
    tensorrt_major,
)
from edgehal.export.tensorrt.plan import BuildPlan, EngineOptions, plan_build
from edgehal.export.tensorrt.progress import BuildProgress
from edgehal.export.tensorrt.provenance import EngineProvenance, HostInfo, host_info
from edgehal.fileio import atomic_path, atomic_write_bytes, sha256_file


@dataclass(frozen=True)
class BuildResult:
    engine: Path
    sidecar: Path
    provenance: EngineProvenance
    timing_cache: Path | None = None
    fp16_onnx: Path | None = None  # the FP16 ONNX converted for the build, beside the engine


def build_engine(onnx_path: str | Path, output: str | Path, options: EngineOptions, *,
                 device_index: int = 0) -> BuildResult:
    """Plan (anywhere), then build with TensorRT and write the engine and its sidecar."""
    plan = plan_build(onnx_path, options)
    return build_from_plan(plan, output, device_index=device_index)


def fp16_onnx_path(engine: str | Path) -> Path:
    """Where the FP16 ONNX converted for an fp16 build goes: beside the engine (``m.plan`` -> ``m.fp16.onnx``)."""
    p = Path(engine)
    return p.with_name(p.stem + ".fp16.onnx")


def _check_host(plan: BuildPlan, host: HostInfo, trt: Any) -> None:
    opts = plan.options
    if opts.dla_core is not None and not has_weak_typing(trt):
        raise EdgehalError(f"--dla-core {opts.dla_core}",
                           f"needs TensorRT 10; this machine has TensorRT {trt.__version__}",
                           "a Jetson with JetPack's TensorRT 10 (DLA builds need weak typing, which TensorRT 11 "
                           "removed, and TensorRT 11 does not support JetPack), or leave --dla-core out")
    if opts.hardware_compatible and host.l4t_release:
        raise EdgehalError("--hardware-compatible", "is not supported on Jetson",
                           "build without it on the Jetson that will run the engine")
    major = int(host.compute_capability.split(".")[0])
    if opts.hardware_compatible and major < 8:
        raise EdgehalError("--hardware-compatible", f"needs an Ampere (sm_80) or newer GPU; this is {host.sm}",
                           "build without it, on the target GPU")


def build_from_plan(plan: BuildPlan, output: str | Path, *, device_index: int = 0) -> BuildResult:
    """Build the planned engine with TensorRT; write it, its sidecar and (converting) its FP16 ONNX.

    TensorRT's progress phases and its warnings are shown on stderr while it
    builds (:class:`~edgehal.export.tensorrt.progress.BuildProgress`); its
    errors are kept for the one ``EdgehalError`` a failed build raises.
    """
    trt = import_tensorrt()
    tensorrt_major(trt)  # an unsupported major is refused before anything else
    host = host_info(device_index=device_index)
    _check_host(plan, host, trt)
    import torch

    torch.cuda.set_device(device_index)  # TensorRT builds on the current CUDA device
    out = Path(output)
    if not plan.converts_to_fp16:
        return _build(trt, plan, out, host, parse=plan.source.path)
    final = fp16_onnx_path(out)
    if final.resolve() == plan.source.path.resolve():
        raise EdgehalError(f"-o {out}", f"would write the converted FP16 ONNX over the source {final.name}",
                           "another engine name (the FP16 ONNX goes to ENGINE-stem.fp16.onnx)")
    with atomic_path(final) as tmp:  # kept only when the engine was built from it
        _write_fp16_onnx(plan, tmp)
        result = _build(trt, plan, out, host, parse=tmp, fp16_onnx=(final.name, sha256_file(tmp)))
    return dataclasses.replace(result, fp16_onnx=final)


def _write_fp16_onnx(plan: BuildPlan, path: Path) -> None:
    """The plan's FP32 ONNX as FP16, with ``edgehal export --precision fp16``'s own converter."""
    import onnx

    from edgehal.artifact import write_onnx_metadata
    from edgehal.export.graph import load_onnx, to_fp16

    model = to_fp16(load_onnx(plan.source.path))
    if plan.source.metadata is not None:
        write_onnx_metadata(model, plan.source.metadata.with_precision("fp16"))
    onnx.save(model, str(path))


def _build(trt: Any, plan: BuildPlan, out: Path, host: HostInfo, *, parse: Path,
           fp16_onnx: tuple[str, str] | None = None) -> BuildResult:
    opts = plan.options
    src = plan.source.path
    # DLA (TensorRT 10 on a Jetson, checked in _check_host) is the one weakly typed build:
    # DLA runs the FP16/INT8 layers the builder flags allow.
    weak = opts.dla_core is not None
    with BuildProgress(trt) as progress:
        logger = make_logger(trt, echo=progress.write)
        builder = trt.Builder(logger)
        network = builder.create_network(network_flags(trt, strongly_typed=not weak))
        parser = trt.OnnxParser(network, logger)
        if opts.version_compatible or opts.hardware_compatible:
            parser.set_flag(trt.OnnxParserFlag.NATIVE_INSTANCENORM)
        if not parser.parse_from_file(str(parse)):
            errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
            raise EdgehalError(f"ONNX model {src.name}",
                               f"TensorRT's ONNX parser refused it ({(errors or [logger.last_error()])[0][:300]})",
                               f"run `edgehal inspect {src} --target tensorrt`")

        config = builder.create_builder_config()
        if progress.monitor is not None:
            config.progress_monitor = progress.monitor
        if plan.workspace_bytes:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
        if weak:
            _configure_dla(trt, builder, config, opts)
        if opts.version_compatible:
            config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        if opts.hardware_compatible:
            config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
        _add_profile(builder, network, config, plan)
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
        engine_sha256=hashlib.sha256(data).hexdigest(),
        metadata=plan.source.metadata.with_precision(opts.precision) if plan.source.metadata else None,
        dla_core=opts.dla_core, gpu_fallback=opts.gpu_fallback, version_compatible=opts.version_compatible,
        hardware_compatible=opts.hardware_compatible, workspace_mib=opts.workspace_mib,
        built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        edgehal_version=edgehal.__version__, strongly_typed=not weak,
        fp16_onnx=fp16_onnx[0] if fp16_onnx else None, fp16_onnx_sha256=fp16_onnx[1] if fp16_onnx else None,
    )
    sidecar = write_engine_sidecar(out, provenance)
    return BuildResult(out, sidecar, provenance, cache_path)


def _configure_dla(trt: Any, builder: Any, config: Any, opts: EngineOptions) -> None:
    """TensorRT 10's weakly typed DLA build: the precision flag, the core, the GPU fallback."""
    if builder.num_DLA_cores <= opts.dla_core:
        raise EdgehalError(f"--dla-core {opts.dla_core}",
                           f"this device has {builder.num_DLA_cores} DLA core(s)",
                           "a DLA core index on a Jetson with DLA (e.g. AGX Orin: 0 or 1), "
                           "or leave --dla-core out")
    # Explicit quantization for int8: the Q/DQ nodes carry the scales, no calibrator.
    config.set_flag(trt.BuilderFlag.FP16 if opts.precision == "fp16" else trt.BuilderFlag.INT8)
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = opts.dla_core
    if opts.gpu_fallback:
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def _add_profile(builder: Any, network: Any, config: Any, plan: BuildPlan) -> None:
    """One optimisation profile for the dynamic inputs; a network without any needs none."""
    dynamic = [p for p in plan.profiles if any(d < 0 for t in plan.source.inputs if t.name == p.input
                                                for d in t.shape)]
    if not dynamic:
        return
    names = {network.get_input(i).name for i in range(network.num_inputs)}
    profile = builder.create_optimization_profile()
    for p in dynamic:
        if p.input in names:
            profile.set_shape(p.input, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)
