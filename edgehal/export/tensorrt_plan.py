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


def dim_keys(t: TensorInfo, axis: int) -> tuple[str, ...]:
    """The ``--dim`` names that address ``axis`` of input ``t``: its name in the file, then ``INPUT:AXIS``."""
    name = t.dim_names[axis] if axis < len(t.dim_names) else None
    return ((name,) if name else ()) + (f"{t.name}:{axis}",)


def default_dim_range(t: TensorInfo, axis: int, manifest: HeadManifest | None) -> tuple[int, int, int] | None:
    """The profile a dynamic non-batch dimension gets without ``--dim``, from the file's metadata.

    The model's sequence axis (``sequence_axis`` in the manifest, e.g. the
    rows of a row-sequential classifier): 1 up to the trained length, tuned
    for the trained length. Any other dimension: the trained size alone. None
    when the file does not say (no edgehal metadata, or another input).
    """
    if manifest is None or t.name != manifest.input_name or not 0 < axis <= len(manifest.input_shape):
        return None
    size = int(manifest.input_shape[axis - 1])
    if size < 1:
        return None
    return (1, size, size) if (manifest.sequence is not None and manifest.sequence.axis == axis) else (size, size, size)


def resolve_dims(inputs: Sequence[TensorInfo], options: EngineOptions, manifest: HeadManifest | None, *,
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


def derive_profiles(inputs: Sequence[TensorInfo], batch: tuple[int, int, int] | None,
                    dims: Mapping[tuple[str, int], tuple[int, int, int]] | None = None
                    ) -> tuple[ProfileShape, ...]:
    """The optimisation profile: each input's shape with the batch range and the ``dims`` ranges filled in."""
    out = []
    dims = dims or {}
    for t in inputs:
        shapes = [list(t.shape), list(t.shape), list(t.shape)]
        for axis, size in enumerate(t.shape):
            rng = batch if axis == 0 and batch is not None else dims.get((t.name, axis))
            if rng is not None:
                for k in range(3):
                    shapes[k][axis] = rng[k]
        out.append(ProfileShape(t.name, *(tuple(x) for x in shapes)))
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
    dims = resolve_dims(info.inputs, options, info.manifest, what=what)
    if check_support:
        from edgehal.export.inspect import inspect_model

        report = inspect_model(model, path=p)
        errors = report.errors
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise EdgehalError(what, f"TensorRT cannot build it: {errors[0].message}{more}",
                               f"run `edgehal inspect {p} --target tensorrt` for the full list")
    return BuildPlan(info, options, batch, derive_profiles(info.inputs, batch, dims))


def check_profile(profiles: Sequence[ProfileShape], shapes: Mapping[str, Sequence[int]], *,
                what: str) -> None:
    """Refuse a shape outside the engine's profile (batch or any other dimension) before TensorRT sees it."""
    for prof in profiles:
        shape = shapes.get(prof.input)
        if shape is None or not prof.min or not len(shape):
            continue
        for axis, got in enumerate(int(v) for v in shape):
            if axis >= len(prof.min):
                break
            lo, hi = prof.min[axis], prof.max[axis]
            if lo < 0 or lo <= got <= hi:
                continue
            allowed = f"{lo}" if lo == hi else f"{lo}..{hi}"
            if axis == 0:
                raise EdgehalError(f"{what}: input {prof.input!r}",
                                   f"batch {got} is outside the engine's profile (batch {allowed})",
                                   f"a batch of {allowed}, or rebuild the engine with `edgehal build-engine "
                                   f"--max-batch {max(got, hi)}`" if got > hi else f"a batch of {allowed}")
            raise EdgehalError(f"{what}: input {prof.input!r}",
                               f"dimension {axis} is {got}, outside the engine's profile ({allowed})",
                               f"{allowed}, or rebuild the engine with `edgehal build-engine --dim "
                               f"{prof.input}:{axis}={min(got, lo)},{prof.opt[axis]},{max(got, hi)}`")
