"""The one door for artifacts: checkpoints, ONNX files and TensorRT engines.

:func:`read_artifact` reads any of them into one typed :class:`Artifact`:
the manifest of the heads it returns and of its source model, preprocessing,
every metric the evaluator measured per split and head, the INT8 calibration,
the source checkpoint's sha256, library versions and precision. ONNX files
carry this as ``metadata_props`` (one ``edgehal.*`` key per field, each a JSON
value, so any ONNX tool can read them: ``onnx.load(p).metadata_props``);
engines carry it in their sidecar JSON; checkpoints in their payload.
:func:`write_onnx_metadata` is the one writer of ONNX props, and no other
module parses ``metadata_props``.

    edgehal.format        "edgehal-onnx/1"
    edgehal.manifest      HeadManifest of the heads this graph returns
    edgehal.full_manifest the source checkpoint's manifest (all heads, before pruning)
    edgehal.preprocessing Preprocessing: layout, raw input range, in-graph normalisation
    edgehal.aux           "keep" | "prune"
    edgehal.precision     "fp32" | "fp16" | "int8"
    edgehal.source_sha256 sha256 of the checkpoint file it came from
    edgehal.metrics       {split: {head: {metric: value}, "summary": {...}}} measured in PyTorch
    edgehal.calibration   {"samples", "method", "per_channel", ...} for INT8 models
    edgehal.versions      {"edgehal": ..., "torch": ..., "onnx": ..., "onnxruntime": ...}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from edgehal.errors import EdgehalError
from edgehal.manifest import HeadManifest, Preprocessing

if TYPE_CHECKING:  # pragma: no cover
    from edgehal.checkpoint import LoadedCheckpoint
    from edgehal.export.tensorrt.provenance import EngineProvenance

ONNX_FORMAT = "edgehal-onnx/1"
PREFIX = "edgehal."
KINDS = ("checkpoint", "onnx", "engine")
SUFFIXES = {".pt": "checkpoint", ".pth": "checkpoint", ".onnx": "onnx", ".plan": "engine", ".engine": "engine"}
PRECISIONS = ("fp32", "fp16", "int8")
AUX_CHOICES = ("keep", "prune")


@dataclass(frozen=True)
class ArtifactMetadata:
    """What edgehal records in every artifact it writes."""

    manifest: HeadManifest
    full_manifest: HeadManifest
    preprocessing: Preprocessing | None = None
    aux: str = "keep"
    precision: str = "fp32"
    source_sha256: str | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    calibration: Mapping[str, Any] | None = None
    versions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.aux not in AUX_CHOICES:
            raise EdgehalError("artifact metadata", f"aux {self.aux!r} is unknown", f"one of {AUX_CHOICES}")
        if self.precision not in PRECISIONS:
            raise EdgehalError("artifact metadata", f"precision {self.precision!r} is unknown",
                               f"one of {PRECISIONS}")

    def with_precision(self, precision: str) -> "ArtifactMetadata":
        return replace(self, precision=precision)

    def to_dict(self) -> dict[str, Any]:
        return {"format": ONNX_FORMAT, "manifest": self.manifest.to_dict(),
                "full_manifest": self.full_manifest.to_dict(),
                "preprocessing": self.preprocessing.to_dict() if self.preprocessing else None,
                "aux": self.aux, "precision": self.precision, "source_sha256": self.source_sha256,
                "metrics": dict(self.metrics), "calibration": dict(self.calibration) if self.calibration else None,
                "versions": dict(self.versions)}

    @classmethod
    def from_dict(cls, d: Any, *, what: str) -> "ArtifactMetadata":
        if not isinstance(d, Mapping):
            raise EdgehalError(what, f"has edgehal metadata of type {type(d).__name__}", "a JSON object")
        if d.get("format") != ONNX_FORMAT:
            raise EdgehalError(what, f"has edgehal metadata format {d.get('format')!r}",
                               f"{ONNX_FORMAT!r}; a newer edgehal may have written it")
        missing = [k for k in ("manifest", "full_manifest", "aux", "precision") if d.get(k) is None]
        if missing:
            raise EdgehalError(what, f"has damaged edgehal metadata (no {missing[0]})")
        pre = d.get("preprocessing")
        return cls(manifest=HeadManifest.from_dict(d["manifest"], what=f"{what}: manifest"),
                   full_manifest=HeadManifest.from_dict(d["full_manifest"], what=f"{what}: full_manifest"),
                   preprocessing=Preprocessing.from_dict(pre, what=f"{what}: preprocessing") if pre else None,
                   aux=str(d["aux"]), precision=str(d["precision"]), source_sha256=d.get("source_sha256") or None,
                   metrics=dict(d.get("metrics") or {}), calibration=d.get("calibration") or None,
                   versions=dict(d.get("versions") or {}))


# --------------------------------------------------------------------------
# ONNX metadata_props: the one reader and the one writer

# Keys whose value is a plain string rather than JSON (kept for tools that read them as text).
_TEXT_KEYS = ("format", "aux", "precision", "source_sha256")


def _props_of(model: Any) -> dict[str, str]:
    """``metadata_props`` of an ``onnx.ModelProto``, or an onnxruntime ``ModelMetadata``'s custom map."""
    if hasattr(model, "metadata_props"):
        return {p.key: p.value for p in model.metadata_props}
    return dict(getattr(model, "custom_metadata_map", {}) or {})


def from_properties(props: Mapping[str, str], *, what: str) -> ArtifactMetadata | None:
    """Metadata from ``edgehal.*`` string properties (ONNX ``metadata_props``, a Triton
    ``config.pbtxt``'s parameters, served model metadata); None when there is none."""
    if PREFIX + "format" not in props:
        return None
    d: dict[str, Any] = {}
    for key, value in props.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX):]
        if name in _TEXT_KEYS:
            d[name] = value
            continue
        try:
            d[name] = json.loads(value) if value else None
        except json.JSONDecodeError as exc:
            raise EdgehalError(what, f"has damaged edgehal metadata: {key} is not JSON ({exc.msg})") from None
    return ArtifactMetadata.from_dict(d, what=what)


def to_properties(meta: ArtifactMetadata) -> dict[str, str]:
    """The ``edgehal.*`` string properties of ``meta``: what ONNX files, Triton configs and
    served model metadata carry."""
    out = {}
    for name, value in meta.to_dict().items():
        if name in _TEXT_KEYS:
            out[PREFIX + name] = value or ""
        else:
            out[PREFIX + name] = json.dumps(value, sort_keys=True)
    return out


def onnx_metadata(model: Any, *, what: str = "ONNX model") -> ArtifactMetadata | None:
    """edgehal's metadata of an in-memory model (an ``onnx.ModelProto`` or an
    onnxruntime session's ``get_modelmeta()``); None when it has none."""
    return from_properties(_props_of(model), what=what)


def write_onnx_metadata(model: Any, meta: ArtifactMetadata, *, foreign_from: Any = None) -> None:
    """Store ``meta`` in an ``onnx.ModelProto``'s ``metadata_props``, replacing earlier edgehal entries.

    Properties that are not edgehal's are kept: the model's own, or those of
    ``foreign_from`` (the source model of a tool that drops them, like onnxruntime's quantizer).
    """
    source = model if foreign_from is None else foreign_from
    keep = [(p.key, p.value) for p in source.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    for key, value in keep + sorted(to_properties(meta).items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def _load_onnx_proto(p: Path) -> Any:
    import onnx

    try:
        return onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends for corrupt files
        raise EdgehalError(f"ONNX model {p}", f"is corrupt or not an ONNX file ({exc.__class__.__name__})") from None


# --------------------------------------------------------------------------
# The artifact


@dataclass(frozen=True)
class Artifact:
    """A checkpoint, ONNX file or engine, with what edgehal knows about it.

    ``metadata`` is None for an ONNX file or engine that edgehal did not write
    (a plain model still runs; parity then needs ``--head`` mappings).
    ``engine`` is the build provenance of an engine (its sidecar);
    ``checkpoint`` the loaded checkpoint (weights, config, history).
    """

    path: Path
    kind: str
    metadata: ArtifactMetadata | None
    engine: Any = None
    checkpoint: "LoadedCheckpoint | None" = None

    @property
    def what(self) -> str:
        return {"checkpoint": "checkpoint", "onnx": "ONNX model", "engine": "TensorRT engine"}[self.kind] + \
            f" {self.path}"

    def require_metadata(self) -> ArtifactMetadata:
        if self.metadata is None:
            raise EdgehalError(self.what, "has no edgehal metadata",
                               "a model written by `edgehal export` (or `build-engine` from one); for a plain "
                               "model name its outputs with --head HEAD=OUTPUT")
        return self.metadata

    @property
    def manifest(self) -> HeadManifest | None:
        return self.metadata.manifest if self.metadata else None

    @property
    def full_manifest(self) -> HeadManifest | None:
        return self.metadata.full_manifest if self.metadata else None

    @property
    def preprocessing(self) -> Preprocessing | None:
        return self.metadata.preprocessing if self.metadata else None

    @property
    def metrics(self) -> Mapping[str, Any]:
        return self.metadata.metrics if self.metadata else {}

    @property
    def precision(self) -> str | None:
        return self.metadata.precision if self.metadata else None

    @property
    def aux(self) -> str | None:
        return self.metadata.aux if self.metadata else None

    @property
    def source_sha256(self) -> str | None:
        return self.metadata.source_sha256 if self.metadata else None

    @property
    def calibration(self) -> Mapping[str, Any] | None:
        return self.metadata.calibration if self.metadata else None

    @property
    def versions(self) -> Mapping[str, str]:
        return self.metadata.versions if self.metadata else {}

    def sha256(self) -> str:
        from edgehal.fileio import sha256_file

        return sha256_file(self.path)


def artifact_kind(path: str | Path) -> str:
    """``checkpoint``, ``onnx`` or ``engine`` from the file's suffix; an error listing them otherwise."""
    p = Path(path)
    kind = SUFFIXES.get(p.suffix.lower())
    if p.suffix.lower() == ".pt2":
        raise EdgehalError(f"artifact {p}", "is a torch.export program, not an edgehal artifact",
                           f"export it to ONNX first: edgehal export {p.name} -o model.onnx --manifest heads.yaml "
                           "--example-inputs x.npy")
    if kind is None:
        raise EdgehalError(f"artifact {p}", f"has an unknown type {p.suffix or '(no suffix)'}",
                           f"one of {', '.join(SUFFIXES)}")
    return kind


def read_artifact(path: str | Path) -> Artifact:
    """Read a checkpoint, an ONNX file (its metadata, without running it) or an
    engine with its sidecar into an :class:`Artifact`."""
    p = Path(path)
    kind = artifact_kind(p)
    if not p.is_file():
        raise EdgehalError(f"artifact {p}", "file not found")
    if kind == "onnx":
        return Artifact(p, kind, onnx_metadata(_load_onnx_proto(p), what=f"ONNX model {p}"))
    if kind == "checkpoint":
        from edgehal.checkpoint import load_checkpoint

        ckpt = load_checkpoint(p)
        return Artifact(p, kind, checkpoint_metadata(ckpt), checkpoint=ckpt)
    provenance = read_engine_sidecar(p)
    return Artifact(p, kind, provenance.metadata, engine=provenance)


def checkpoint_metadata(ckpt: "LoadedCheckpoint") -> ArtifactMetadata:
    """A checkpoint runs every head, in fp32; it is its own source."""
    return ArtifactMetadata(manifest=ckpt.manifest, full_manifest=ckpt.manifest, preprocessing=ckpt.preprocessing,
                            aux="keep", precision="fp32", source_sha256=None, metrics=ckpt.metrics,
                            versions=dict(ckpt.payload.get("versions", {})))


# --------------------------------------------------------------------------
# Engine sidecars


SIDECAR_SUFFIX = ".json"


def engine_sidecar_path(engine: str | Path) -> Path:
    """``model.plan`` -> ``model.plan.json``."""
    p = Path(engine)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def read_engine_sidecar(engine: str | Path) -> "EngineProvenance":
    """The build provenance beside ``engine`` (``model.plan.json``), with the edgehal
    metadata of the ONNX file it was built from at the engine's own precision;
    one clear error when it is missing or damaged."""
    from edgehal.export.tensorrt.provenance import EngineProvenance

    path = engine_sidecar_path(engine)
    what = f"TensorRT engine {Path(engine).name}"
    if not path.is_file():
        raise EdgehalError(what, f"has no provenance sidecar {path.name}",
                           "an engine built by `edgehal build-engine`, which writes the sidecar beside it; "
                           "rebuild the engine on the target with `edgehal build-engine`")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgehalError(f"engine sidecar {path.name}", f"is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise EdgehalError(f"engine sidecar {path.name}", "is not a JSON object")
    return EngineProvenance.from_dict(raw, what=f"engine sidecar {path.name}")


def write_engine_sidecar(engine: str | Path, provenance: "EngineProvenance") -> Path:
    """Write the sidecar beside ``engine`` atomically; returns its path."""
    from edgehal.fileio import atomic_write_text

    path = engine_sidecar_path(engine)
    atomic_write_text(path, json.dumps(provenance.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def engine_metadata_from_sidecar(d: Mapping[str, Any], *, precision: str, what: str) -> ArtifactMetadata | None:
    """The ``metadata`` entry of a sidecar, at the engine's precision; sidecars of
    earlier releases copied the source ONNX's properties instead."""
    if d.get("metadata"):
        meta = ArtifactMetadata.from_dict(d["metadata"], what=what)
    else:
        meta = from_properties(d.get("onnx_props") or {}, what=what)
    return meta.with_precision(precision) if meta else None


def manifest_from_properties(props: Mapping[str, str], *, what: str) -> HeadManifest | None:
    """The head manifest of ``edgehal.*`` properties: from complete metadata, or from
    a Triton config written before configs carried all of it (the manifest alone)."""
    meta = from_properties(props, what=what)
    if meta is not None:
        return meta.manifest
    raw = props.get(PREFIX + "manifest")
    return HeadManifest.from_json(raw, what=f"{what}: manifest") if raw else None
