"""The edgehal entries of an ONNX file's ``metadata_props``.

Every key is namespaced ``edgehal.`` and every value is a JSON string, so any
ONNX tool can read them back (``onnx.load(p).metadata_props``).

    edgehal.format        "edgehal-onnx/1"
    edgehal.manifest      HeadManifest.to_json() of the heads this graph returns
    edgehal.full_manifest the checkpoint's manifest (all heads, before pruning)
    edgehal.preprocessing {"layout": "NCHW", "mean": [...], "std": [...], "scale": 1/255, ...}
    edgehal.aux           "keep" | "prune"
    edgehal.precision     "fp32" | "fp16" | "int8"
    edgehal.source_sha256 sha256 of the checkpoint file it came from
    edgehal.metrics       {"test": {head: error_rate_percent, ...}, ...} measured in PyTorch
    edgehal.versions      {"edgehal": ..., "torch": ..., "onnx": ..., "onnxruntime": ...}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgehal.errors import EdgehalError
from edgehal.manifest import HeadManifest, Preprocessing

FORMAT = "edgehal-onnx/1"
PREFIX = "edgehal."


@dataclass(frozen=True)
class OnnxMetadata:
    manifest: HeadManifest
    full_manifest: HeadManifest
    preprocessing: Preprocessing | None
    aux: str
    precision: str
    source_sha256: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def to_props(self) -> dict[str, str]:
        return {
            PREFIX + "format": FORMAT,
            PREFIX + "manifest": self.manifest.to_json(),
            PREFIX + "full_manifest": self.full_manifest.to_json(),
            PREFIX + "preprocessing": self.preprocessing.to_json() if self.preprocessing else "null",
            PREFIX + "aux": self.aux,
            PREFIX + "precision": self.precision,
            PREFIX + "source_sha256": self.source_sha256 or "",
            PREFIX + "metrics": json.dumps(self.metrics, sort_keys=True),
            PREFIX + "versions": json.dumps(self.versions, sort_keys=True),
        }

    @classmethod
    def from_props(cls, props: dict[str, str], *, what: str = "ONNX model") -> "OnnxMetadata":
        if props.get(PREFIX + "format") != FORMAT:
            raise EdgehalError(what, "has no edgehal metadata",
                               "a model written by `edgehal export`, or name its outputs with --head")
        try:
            return cls(
                manifest=HeadManifest.from_json(props[PREFIX + "manifest"]),
                full_manifest=HeadManifest.from_json(props[PREFIX + "full_manifest"]),
                preprocessing=_preprocessing(props[PREFIX + "preprocessing"], what),
                aux=props[PREFIX + "aux"],
                precision=props[PREFIX + "precision"],
                source_sha256=props.get(PREFIX + "source_sha256") or None,
                metrics=json.loads(props.get(PREFIX + "metrics", "{}")),
                versions=json.loads(props.get(PREFIX + "versions", "{}")),
            )
        except (KeyError, json.JSONDecodeError) as exc:
            raise EdgehalError(what, f"has damaged edgehal metadata ({exc})") from None

    def with_precision(self, precision: str) -> "OnnxMetadata":
        from dataclasses import replace
        return replace(self, precision=precision)


def _preprocessing(text: str, what: str) -> Preprocessing | None:
    raw = json.loads(text)
    return Preprocessing.from_dict(raw, what=f"{what}: preprocessing") if raw else None


def props_of(model: Any) -> dict[str, str]:
    """``metadata_props`` of an ``onnx.ModelProto`` or an onnxruntime ``ModelMetadata``."""
    if hasattr(model, "metadata_props"):
        return {p.key: p.value for p in model.metadata_props}
    return dict(getattr(model, "custom_metadata_map", {}) or {})


def write_props(model: Any, props: dict[str, str]) -> None:
    """Set ``props`` on an ``onnx.ModelProto``, replacing existing edgehal entries."""
    keep = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    for key, value in keep + sorted(props.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(path: str | Path) -> OnnxMetadata:
    """Read edgehal's metadata from an ONNX file without loading its weights."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise EdgehalError(f"ONNX model {p}", "file not found")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends for corrupt files
        raise EdgehalError(f"ONNX model {p}", f"is corrupt or not an ONNX file ({exc.__class__.__name__})") from None
    return OnnxMetadata.from_props(props_of(model), what=f"ONNX model {p}")
