"""Everything about a TensorRT engine that can be decided without TensorRT.

``edgehal build-engine`` turns an ONNX file and :class:`EngineOptions` into a
:class:`BuildPlan` here, on any machine: precision choices, the optimisation
profile checked against the ONNX input shapes, DLA options, and TensorRT's
parser support table. Only a valid plan reaches :mod:`edgehal.export.tensorrt`,
the thin module that calls TensorRT, so an impossible request is one clear
``EdgehalError`` before anything is built.

The engine's provenance sidecar and the check before loading live in
:mod:`edgehal.export.tensorrt_provenance`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from edgehal.errors import EdgehalError
from edgehal.fileio import sha256_file
from edgehal.hierarchy import HeadManifest

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_MAX_BATCH = 32
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


# --------------------------------------------------------------------------
# Options and the ONNX model they apply to


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

    def __post_init__(self) -> None:
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
        return d


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, numpy dtype, shape (``-1`` where dynamic)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    dim_names: tuple[str | None, ...] = ()

    @property
    def dynamic_axes(self) -> tuple[int, ...]:
        return tuple(i for i, d in enumerate(self.shape) if d < 0)

    def dim_label(self, axis: int) -> str:
        name = self.dim_names[axis] if axis < len(self.dim_names) else None
        return f"{axis} ({name!r})" if name else str(axis)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TensorInfo":
        return cls(str(d["name"]), str(d["dtype"]), tuple(int(x) for x in d["shape"]))


@dataclass(frozen=True)
class OnnxModelInfo:
    """What the planner needs from an ONNX file: I/O, Q/DQ nodes, edgehal metadata."""

    path: Path
    sha256: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    qdq_nodes: int
    props: Mapping[str, str] = field(default_factory=dict)
    manifest: HeadManifest | None = None

    @property
    def has_qdq(self) -> bool:
        return self.qdq_nodes > 0


def load_onnx(path: str | Path) -> Any:
    """``onnx.load`` with one-line errors for a missing or corrupt file."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise EdgehalError(f"ONNX model {p}", "file not found")
    try:
        return onnx.load(str(p))
    except Exception as exc:  # onnx raises DecodeError and friends for corrupt files
        raise EdgehalError(f"ONNX model {p}",
                           f"is corrupt or not an ONNX file ({exc.__class__.__name__})") from None


def tensor_info(value_info: Any) -> TensorInfo:
    """A :class:`TensorInfo` from an ONNX ``ValueInfoProto``."""
    from onnx import helper

    ttype = value_info.type.tensor_type
    try:
        dtype = str(helper.tensor_dtype_to_np_dtype(ttype.elem_type))
    except (KeyError, ValueError):
        dtype = f"onnx:{ttype.elem_type}"
    shape, names = [], []
    for dim in ttype.shape.dim:
        has_value = dim.HasField("dim_value") and dim.dim_value > 0
        shape.append(int(dim.dim_value) if has_value else -1)
        names.append(None if has_value else (dim.dim_param or None))
    return TensorInfo(value_info.name, dtype, tuple(shape), tuple(names))


def read_onnx_info(path: str | Path, *, model: Any = None) -> OnnxModelInfo:
    """Inputs, outputs, Q/DQ node count and edgehal metadata of an ONNX file."""
    from edgehal.export.metadata import PREFIX, OnnxMetadata, props_of

    p = Path(path)
    model = model if model is not None else load_onnx(p)
    initializers = {init.name for init in model.graph.initializer}
    inputs = tuple(tensor_info(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(tensor_info(v) for v in model.graph.output)
    qdq = sum(1 for node in iter_nodes(model.graph) if node.op_type in QDQ_OPS)
    props = {k: v for k, v in props_of(model).items() if k.startswith(PREFIX)}
    manifest = None
    if props.get(PREFIX + "format"):
        manifest = OnnxMetadata.from_props(props, what=f"ONNX model {p}").manifest
    return OnnxModelInfo(p, sha256_file(p), inputs, outputs, qdq, props, manifest)


def iter_nodes(graph: Any):
    """Every node of a graph, including those of If/Loop/Scan subgraphs."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and attr.HasField("g"):
                yield from iter_nodes(attr.g)
            for sub in attr.graphs:
                yield from iter_nodes(sub)


# --------------------------------------------------------------------------
# Profiles and precision


@dataclass(frozen=True)
class ProfileShape:
    """One input's shapes in the optimisation profile."""

    input: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    @property
    def dynamic_batch(self) -> bool:
        return bool(self.min) and self.min[0] != self.max[0]

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ProfileShape":
        return cls(str(d["input"]), tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]))


def resolve_batch(inputs: Sequence[TensorInfo], options: EngineOptions, *,
                  what: str) -> tuple[int, int, int] | None:
    """(min, opt, max) batch for the profile; None when no input has a batch dimension.

    Refuses dynamic dimensions other than the batch (build-engine profiles only
    the batch), a fixed ONNX batch that the options contradict, and
    ``min <= opt <= max`` violations.
    """
    batched = [t for t in inputs if t.shape]
    for t in batched:
        for axis in t.dynamic_axes:
            if axis != 0:
                raise EdgehalError(f"{what}: input {t.name!r}",
                                   f"dimension {t.dim_label(axis)} is dynamic",
                                   "only the batch dimension may be dynamic: build-engine profiles "
                                   "the batch alone; export with a fixed input size")
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


def derive_profiles(inputs: Sequence[TensorInfo], batch: tuple[int, int, int] | None) -> tuple[ProfileShape, ...]:
    """The optimisation profile: each input's shape with the batch range filled in."""
    out = []
    for t in inputs:
        if not t.shape or batch is None:
            out.append(ProfileShape(t.name, t.shape, t.shape, t.shape))
            continue
        rest = t.shape[1:]
        out.append(ProfileShape(t.name, (batch[0], *rest), (batch[1], *rest), (batch[2], *rest)))
    return tuple(out)


def check_precision(precision: str, *, has_qdq: bool, what: str) -> None:
    """int8 needs explicit Q/DQ nodes (no implicit calibration); a Q/DQ graph builds only as int8."""
    if precision == "int8" and not has_qdq:
        raise EdgehalError("--precision int8", f"{what} has no QuantizeLinear/DequantizeLinear nodes",
                           "an explicitly quantized (Q/DQ) ONNX such as `edgehal quantize` writes; "
                           "edgehal does not calibrate implicitly. Or use --precision fp16")
    if precision != "int8" and has_qdq:
        raise EdgehalError(f"--precision {precision}",
                           f"{what} is quantized (it has QuantizeLinear/DequantizeLinear nodes)",
                           "--precision int8 for a Q/DQ model, or build fp32/fp16 engines from the "
                           "unquantized ONNX")


@dataclass(frozen=True)
class BuildPlan:
    """A checked request: what the thin TensorRT module builds, and what the sidecar records."""

    source: OnnxModelInfo
    options: EngineOptions
    batch: tuple[int, int, int] | None
    profiles: tuple[ProfileShape, ...]

    @property
    def precision(self) -> str:
        return self.options.precision

    @property
    def workspace_bytes(self) -> int | None:
        return self.options.workspace_mib * (1 << 20) if self.options.workspace_mib else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_onnx": str(self.source.path),
            "source_onnx_sha256": self.source.sha256,
            "options": self.options.to_dict(),
            "batch": list(self.batch) if self.batch else None,
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
    check_precision(options.precision, has_qdq=info.has_qdq, what=p.name)
    batch = resolve_batch(info.inputs, options, what=what)
    if check_support:
        from edgehal.export.inspect import inspect_model

        report = inspect_model(model, path=p)
        errors = report.errors
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise EdgehalError(what, f"TensorRT cannot build it: {errors[0].message}{more}",
                               f"run `edgehal inspect {p} --target tensorrt` for the full list")
    return BuildPlan(info, options, batch, derive_profiles(info.inputs, batch))


def check_batch(profiles: Sequence[ProfileShape], shapes: Mapping[str, Sequence[int]], *,
                what: str) -> None:
    """Refuse a batch outside the engine's profile before TensorRT sees it."""
    for prof in profiles:
        shape = shapes.get(prof.input)
        if shape is None or not prof.min or not len(shape):
            continue
        lo, hi, got = prof.min[0], prof.max[0], int(shape[0])
        if not lo <= got <= hi:
            allowed = f"{lo}" if lo == hi else f"{lo}..{hi}"
            raise EdgehalError(f"{what}: input {prof.input!r}",
                               f"batch {got} is outside the engine's profile (batch {allowed})",
                               f"a batch of {allowed}, or rebuild the engine with `edgehal build-engine "
                               f"--max-batch {max(got, hi)}`" if got > hi else f"a batch of {allowed}")
