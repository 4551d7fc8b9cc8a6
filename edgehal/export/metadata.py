"""Transitional: the ONNX metadata codec now lives in :mod:`edgehal.artifact`.

Kept only while the modules being moved in parallel switch over; removed when they have.
"""

from __future__ import annotations

from typing import Any

from edgehal.artifact import PREFIX, ArtifactMetadata, from_properties, read_artifact, to_properties
from edgehal.artifact import _props_of as props_of  # noqa: F401


class OnnxMetadata(ArtifactMetadata):
    def to_props(self) -> dict[str, str]:
        return to_properties(self)

    @classmethod
    def from_props(cls, props: dict[str, str], *, what: str = "ONNX model") -> ArtifactMetadata:
        meta = from_properties(props, what=what)
        if meta is None:
            from edgehal.errors import EdgehalError
            raise EdgehalError(what, "has no edgehal metadata",
                               "a model written by `edgehal export`, or name its outputs with --head")
        from dataclasses import fields
        return cls(**{f.name: getattr(meta, f.name) for f in fields(meta)})


def write_props(model: Any, props: dict[str, str]) -> None:
    keep = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    for key, value in keep + sorted(props.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(path: Any) -> ArtifactMetadata:
    return read_artifact(path).require_metadata()
