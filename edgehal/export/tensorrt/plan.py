"""Everything about a TensorRT engine that can be decided without TensorRT.

``edgehal build-engine`` turns an ONNX file and :class:`EngineOptions` into a
:class:`BuildPlan` here, on any machine: precision choices, the optimisation
profile checked against the ONNX input shapes, DLA options, and TensorRT's
parser support table (through :mod:`edgehal.export.inspect`). Only a valid
plan reaches :mod:`edgehal.export.tensorrt.build`, the thin module that calls
TensorRT, so an impossible request is one clear ``EdgehalError`` before
anything is built.

The profile rules shared with the sidecar and the runner are in
:mod:`edgehal.export.tensorrt.profile`; the engine's provenance sidecar and
the check before loading in :mod:`edgehal.export.tensorrt.provenance`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from edgehal.errors import EdgehalError
from edgehal.export.graph import (
    OnnxModelInfo,
    load_onnx,
    manifest_order,
    read_onnx_info,
)
from edgehal.export.inspect import inspect_model
from edgehal.export.tensorrt.profile import (
    DEFAULT_MAX_BATCH,
    ProfileShape,
    default_dim_range,
    derive_profiles,
    dim_keys,
)
from edgehal.manifest import HeadManifest
from edgehal.tensors import TensorSpec

PRECISIONS = ("fp32", "fp16", "int8")


# --------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class EngineOptions:
    """What the user asked ``build-engine`` for; ``None`` means "the default".

    ``min_batch`` defaults to 1, ``max_batch`` to 32 (or ``min_batch`` if
    larger), ``opt_batch`` to ``max_batch``; an ONNX input with a fixed batch
    fixes all three. ``workspace_mib`` defaults to TensorRT's own limit (the
    device's memory). ``dla_core`` runs layers on that DLA core of a Jetson,
    falling back to the GPU for the rest when ``gpu_fallback`` (the default).
    """

    precision: str = "fp32"
    min_batch: int | None = None
    opt_batch: int | None = None
    max_batch: int | None = None
    workspace_mib: int | None = None
    timing_cache: Path | None = None
    dla_core: int | None = None
    gpu_fallback: bool = True
    version_compatible: bool = False
    hardware_compatible: bool = False
    dims: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dims", {str(k): tuple(v) for k, v in dict(self.dims).items()})
        for key, rng in self.dims.items():
            if (len(rng) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in rng)
                    or not rng[0] <= rng[1] <= rng[2]):
                raise EdgehalError(f"--dim {key}={','.join(map(str, rng))}", "is not a valid range",
                                   "NAME=MIN,OPT,MAX with positive integers and MIN <= OPT <= MAX")
        if self.precision not in PRECISIONS:
            raise EdgehalError(f"--precision {self.precision!r}", "is not a choice",
                               f"one of {', '.join(PRECISIONS)}")
        for flag, value in (("min-batch", self.min_batch), ("opt-batch", self.opt_batch),
                            ("max-batch", self.max_batch), ("workspace", self.workspace_mib)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise EdgehalError(f"--{flag} {value!r}", "must be a positive integer")
        if self.dla_core is not None:
            if isinstance(self.dla_core, bool) or not isinstance(self.dla_core, int) or self.dla_core < 0:
                raise EdgehalError(f"--dla-core {self.dla_core!r}", "must be 0 or a positive integer",
                                   "the index of a DLA core (0 or 1 on Jetson AGX Orin)")
            if self.precision == "fp32":
                raise EdgehalError(f"--dla-core {self.dla_core}", "needs --precision fp16 or int8",
                                   "DLA runs FP16 and INT8 layers only")
            if self.hardware_compatible:
                raise EdgehalError(f"--dla-core {self.dla_core}", "cannot be combined with --hardware-compatible",
                                   "hardware-compatible engines run on discrete Ampere-or-newer GPUs, not DLA")
        if self.timing_cache is not None and not isinstance(self.timing_cache, Path):
            object.__setattr__(self, "timing_cache", Path(self.timing_cache))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["timing_cache"] = str(self.timing_cache) if self.timing_cache else None
        d["dims"] = {k: list(v) for k, v in self.dims.items()}
        return d


def parse_dim_range(text: str) -> tuple[str, tuple[int, int, int]]:
    """``NAME=MIN,OPT,MAX`` (``--dim``) -> (NAME, (MIN, OPT, MAX)); NAME is a dimension's name in the
    ONNX file (``rows``) or ``INPUT:AXIS`` for an unnamed one."""
    key, sep, values = text.partition("=")
    parts = values.split(",")
    try:
        rng = tuple(int(v) for v in parts)
    except ValueError:
        rng = ()
    if not sep or not key.strip() or len(rng) != 3:
        raise EdgehalError(f"--dim {text!r}", "is not NAME=MIN,OPT,MAX",
                           "e.g. --dim rows=1,28,64 (the dimension's name in the ONNX file, or INPUT:AXIS)")
    if any(v < 1 for v in rng) or not rng[0] <= rng[1] <= rng[2]:
        raise EdgehalError(f"--dim {text!r}", "is not a valid range",
                           "positive integers with MIN <= OPT <= MAX")
    return key.strip(), rng  # type: ignore[return-value]


# --------------------------------------------------------------------------
# Profiles and precision


def resolve_batch(inputs: Sequence[TensorSpec], options: EngineOptions, *,
                  what: str) -> tuple[int, int, int] | None:
    """(min, opt, max) batch for the profile; None when no input has a batch dimension.

    Refuses a fixed ONNX batch that the options contradict, and
    ``min <= opt <= max`` violations. Other dynamic dimensions are
    :func:`resolve_dims`' business.
    """
    batched = [t for t in inputs if t.shape]
    if not batched:
        return None
    requested = {"min": options.min_batch, "opt": options.opt_batch, "max": options.max_batch}
    static = {t.shape[0] for t in batched if t.shape[0] >= 0}
    if static:
        fixed = static.pop()
        if static or any(t.shape[0] < 0 for t in batched):
            raise EdgehalError(what, "its inputs disagree on the batch dimension",
                               "every input with the same (fixed or dynamic) batch dimension")
        for key, value in requested.items():
            if value is not None and value != fixed:
                raise EdgehalError(f"--{key}-batch {value}",
                                   f"does not match input {batched[0].name!r}, whose batch is fixed at "
                                   f"{fixed} in the ONNX file",
                                   f"leave the batch options out or set them to {fixed}, or export the "
                                   "model with a dynamic batch")
        return fixed, fixed, fixed
    lo = requested["min"] or 1
    hi = requested["max"] or max(DEFAULT_MAX_BATCH, lo)
    opt = requested["opt"] or hi
    if lo > hi:
        raise EdgehalError(f"--min-batch {lo}", f"is larger than --max-batch {hi}", "min <= opt <= max")
    if not lo <= opt <= hi:
        raise EdgehalError(f"--opt-batch {opt}", f"is outside --min-batch {lo} .. --max-batch {hi}",
                           "min <= opt <= max")
    return lo, opt, hi


def resolve_dims(inputs: Sequence[TensorSpec], options: EngineOptions, manifest: HeadManifest | None, *,
                 what: str) -> dict[tuple[str, int], tuple[int, int, int]]:
    """(input, axis) -> (min, opt, max) for every dynamic dimension other than the batch.

    From ``--dim NAME=MIN,OPT,MAX`` where given (a dimension name is shared by
    every input that uses it), else :func:`default_dim_range`; a dynamic
    dimension with neither is an error, and so is a ``--dim`` that names no
    dynamic dimension of the file.
    """
    out: dict[tuple[str, int], tuple[int, int, int]] = {}
    used: set[str] = set()
    for t in inputs:
        for axis in t.dynamic_axes:
            if axis == 0:
                continue
            keys = dim_keys(t, axis)
            key = next((k for k in keys if k in options.dims), None)
            if key is not None:
                used.add(key)
                out[(t.name, axis)] = options.dims[key]
                continue
            default = default_dim_range(t, axis, manifest)
            if default is None:
                raise EdgehalError(f"{what}: input {t.name!r}",
                                   f"dimension {t.dim_label(axis)} is dynamic and nothing gives its range",
                                   f"--dim {keys[0]}=MIN,OPT,MAX (the sizes the engine accepts and tunes for)")
            out[(t.name, axis)] = default
    unknown = sorted(set(options.dims) - used)
    if unknown:
        dynamic = sorted({dim_keys(t, a)[0] for t in inputs for a in t.dynamic_axes if a})
        raise EdgehalError(f"--dim {unknown[0]}", f"names no dynamic dimension of {what}",
                           f"one of {dynamic}" if dynamic else "no --dim: only the batch dimension is dynamic")
    return out


def onnx_float_precision(model: Any) -> str:
    """``fp16`` for an ONNX whose weights or activations are FP16 (what ``edgehal export
    --precision fp16`` writes: FP16 inside, FP32 inputs and outputs), else ``fp32``."""
    graph = model.graph
    fp16 = 10  # onnx.TensorProto.FLOAT16
    if any(t.data_type == fp16 for t in graph.initializer):
        return "fp16"
    for node in graph.node:
        if node.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in node.attribute):
            return "fp16"
        if node.op_type == "Constant" and any(a.t.data_type == fp16 for a in node.attribute if a.name == "value"):
            return "fp16"
    values = list(graph.input) + list(graph.output) + list(graph.value_info)
    return "fp16" if any(v.type.tensor_type.elem_type == fp16 for v in values) else "fp32"


def check_precision(precision: str, *, has_qdq: bool, what: str, float_precision: str = "fp32") -> None:
    """What a strongly typed build can make of the file: the engine computes in the ONNX's own types.

    int8 needs explicit Q/DQ nodes (no implicit calibration); a Q/DQ graph
    builds only as int8; an FP16 ONNX builds only as fp16 (fp32 would be a
    promise the strongly typed engine does not keep). An FP32 ONNX may build as
    fp16: the build converts it first (:attr:`BuildPlan.converts_to_fp16`).
    """
    if precision == "int8" and not has_qdq:
        raise EdgehalError("--precision int8", f"{what} has no QuantizeLinear/DequantizeLinear nodes",
                           "an explicitly quantized (Q/DQ) ONNX: run `edgehal quantize` on it first and build "
                           "from what it writes (TensorRT builds INT8 only from Q/DQ nodes; edgehal does not "
                           "calibrate implicitly). Or use --precision fp16")
    if precision != "int8" and has_qdq:
        raise EdgehalError(f"--precision {precision}",
                           f"{what} is quantized (it has QuantizeLinear/DequantizeLinear nodes)",
                           "--precision int8 for a Q/DQ model, or build fp32/fp16 engines from the "
                           "unquantized ONNX")
    if precision == "fp32" and float_precision == "fp16":
        raise EdgehalError("--precision fp32", f"{what} is an FP16 model (FP16 weights or activations)",
                           "--precision fp16 for it (engines are strongly typed: they compute in the "
                           "ONNX's own types), or build fp32 from the FP32 ONNX")


@dataclass(frozen=True)
class BuildPlan:
    """A checked request: what the thin TensorRT module builds, and what the sidecar records."""

    source: OnnxModelInfo
    options: EngineOptions
    batch: tuple[int, int, int] | None
    profiles: tuple[ProfileShape, ...]
    float_precision: str = "fp32"  # the ONNX's own float type: fp32 or fp16 (onnx_float_precision)

    @property
    def precision(self) -> str:
        return self.options.precision

    @property
    def converts_to_fp16(self) -> bool:
        """An fp16 engine from an FP32 ONNX: the build converts the ONNX to FP16 first (with the
        converter ``edgehal export --precision fp16`` uses) and builds strongly typed from that.
        Not for DLA, whose weakly typed TensorRT 10 build takes the FP32 ONNX and the FP16 flag."""
        return (self.options.precision == "fp16" and self.float_precision == "fp32"
                and self.options.dla_core is None)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """The graph outputs in manifest order: what the sidecar records and every runner reports."""
        return manifest_order(self.source.outputs, self.source.manifest,
                              what=f"ONNX model {self.source.path.name}")

    @property
    def workspace_bytes(self) -> int | None:
        return self.options.workspace_mib * (1 << 20) if self.options.workspace_mib else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_onnx": str(self.source.path),
            "source_onnx_sha256": self.source.sha256,
            "options": self.options.to_dict(),
            "batch": list(self.batch) if self.batch else None,
            "onnx_precision": self.float_precision,
            "converts_to_fp16": self.converts_to_fp16,
            "profiles": [p.to_dict() for p in self.profiles],
            "inputs": [t.to_dict() for t in self.source.inputs],
            "outputs": [t.to_dict() for t in self.source.outputs],
            "heads": list(self.source.manifest.head_names) if self.source.manifest else None,
        }


def plan_build(onnx_path: str | Path, options: EngineOptions, *, check_support: bool = True) -> BuildPlan:
    """Check ``options`` against the ONNX file and return the plan, or raise one clear error.

    With ``check_support`` (the default) the graph is also checked against
    TensorRT's parser support table, so an unsupported operator fails here
    rather than inside TensorRT.
    """
    p = Path(onnx_path)
    model = load_onnx(p)
    info = read_onnx_info(p, model=model)
    what = f"ONNX model {p.name}"
    if not info.outputs:
        raise EdgehalError(what, "has no outputs")
    manifest_order(info.outputs, info.manifest, what=what)  # every head of the manifest is an output
    float_precision = onnx_float_precision(model)
    check_precision(options.precision, has_qdq=info.has_qdq, what=p.name, float_precision=float_precision)
    batch = resolve_batch(info.inputs, options, what=what)
    dims = resolve_dims(info.inputs, options, info.manifest, what=what)
    if check_support:
        report = inspect_model(model, path=p)
        errors = report.errors
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise EdgehalError(what, f"TensorRT cannot build it: {errors[0].message}{more}",
                               f"run `edgehal inspect {p} --target tensorrt` for the full list")
    return BuildPlan(info, options, batch, derive_profiles(info.inputs, batch, dims), float_precision)


