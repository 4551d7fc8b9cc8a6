"""The one door: every artifact read into one typed object, one writer, no other parser."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from edgehal.artifact import (ArtifactMetadata, artifact_kind, from_properties, onnx_metadata, read_artifact,
                              to_properties, write_onnx_metadata)
from edgehal.errors import EdgehalError
from edgehal.export.onnx import ExportOptions, export_onnx
from edgehal.fileio import sha256_file
from edgehal.manifest import Head, HeadManifest, Preprocessing

EDGEHAL = Path(__file__).resolve().parents[1] / "edgehal"


def _quiet(_: str) -> None:
    pass


def _meta(**changes) -> ArtifactMetadata:
    full = HeadManifest("tiny", "x", (4,), (Head("main", "main", 0, class_names=("a", "b")),
                                           Head("aux", "aux", 1, class_names=("s",), parent_map=(0, 0))))
    base = dict(manifest=full.select("prune"), full_manifest=full,
                preprocessing=Preprocessing(layout="NC", input_shape=(4,), dataset="toy"), aux="prune",
                precision="int8", source_sha256="ab" * 32,
                metrics={"test": {"main": {"error_rate": 1.5, "errors": 3, "count": 200},
                                  "summary": {"error_rate": 1.5}}},
                calibration={"samples": 64, "method": "minmax", "per_channel": True}, versions={"edgehal": "t"})
    base.update(changes)
    return ArtifactMetadata(**base)


def _plain_onnx(path: Path) -> Path:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def test_onnx_metadata_round_trips_every_field_including_calibration(tmp_path):
    path = _plain_onnx(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    model.metadata_props.add(key="author", value="someone")  # a foreign key survives
    write_onnx_metadata(model, _meta())
    onnx.save(model, str(path))
    art = read_artifact(path)
    assert art.kind == "onnx" and art.metadata == _meta()
    assert art.calibration == {"samples": 64, "method": "minmax", "per_channel": True}
    assert art.metrics["test"]["main"]["errors"] == 3  # every metric, not only error rates
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["author"] == "someone" and props["edgehal.precision"] == "int8"
    assert json.loads(props["edgehal.manifest"])["heads"][0]["name"] == "main"
    # writing again replaces edgehal's entries instead of appending a second set
    write_onnx_metadata(model, _meta(precision="fp32", calibration=None))
    keys = [p.key for p in model.metadata_props]
    assert keys.count("edgehal.precision") == 1 and onnx_metadata(model).precision == "fp32"


def test_properties_are_the_form_triton_configs_and_served_metadata_carry():
    props = to_properties(_meta())
    assert all(k.startswith("edgehal.") and isinstance(v, str) for k, v in props.items())
    assert "edgehal.calibration" in props
    assert from_properties(props, what="config") == _meta()
    assert from_properties({"other": "x"}, what="config") is None


def test_a_plain_onnx_file_is_an_artifact_without_metadata(tmp_path):
    art = read_artifact(_plain_onnx(tmp_path / "plain.onnx"))
    assert art.metadata is None and art.manifest is None and art.precision is None
    with pytest.raises(EdgehalError, match="has no edgehal metadata.*--head"):
        art.require_metadata()


@pytest.mark.parametrize("damage, message", [
    ({"edgehal.manifest": "{not json"}, "edgehal.manifest is not JSON"),
    ({"edgehal.format": "edgehal-onnx/9"}, "format 'edgehal-onnx/9'"),
    ({"edgehal.precision": "int4"}, "precision 'int4' is unknown"),
    ({"edgehal.manifest": json.dumps({"version": 99})}, "newer than this edgehal reads"),
])
def test_damaged_metadata_is_a_clear_error(tmp_path, damage, message):
    props = {**to_properties(_meta()), **damage}
    with pytest.raises(EdgehalError, match=message):
        from_properties(props, what="ONNX model m.onnx")


def test_unknown_missing_and_corrupt_files(tmp_path):
    with pytest.raises(EdgehalError, match=r"unknown type \.tflite.*\.onnx"):
        read_artifact(tmp_path / "m.tflite")
    with pytest.raises(EdgehalError, match="file not found"):
        read_artifact(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(EdgehalError, match="corrupt or not an ONNX file"):
        read_artifact(bad)
    assert [artifact_kind(n) for n in ("a.pt", "a.PTH", "a.onnx", "a.plan", "a.engine")] == \
        ["checkpoint", "checkpoint", "onnx", "engine", "engine"]


def test_checkpoint_and_its_export_read_through_one_door(digits_checkpoint, tmp_path):
    ckpt = read_artifact(digits_checkpoint)
    assert ckpt.kind == "checkpoint" and ckpt.aux == "keep" and ckpt.precision == "fp32"
    assert ckpt.manifest == ckpt.checkpoint.manifest and ckpt.preprocessing.layout == "NCHW"
    out = tmp_path / "m.onnx"
    export_onnx(digits_checkpoint, out, options=ExportOptions(aux="prune"), log=_quiet)
    art = read_artifact(out)
    assert art.source_sha256 == sha256_file(digits_checkpoint)
    assert art.full_manifest == ckpt.manifest and art.manifest == ckpt.manifest.select("prune")
    assert art.preprocessing == ckpt.preprocessing
    # the export carries every metric the evaluator measured in PyTorch, as the checkpoint has them
    assert art.metrics == ckpt.metrics


def _mentions(tree: ast.AST, names: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in names:
            found.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
            found.add(node.value)
    return found


def test_only_the_artifact_module_parses_metadata_props_and_sidecars():
    # Every other module goes through edgehal.artifact; a second parser is how formats drift apart.
    offenders = {}
    for path in EDGEHAL.rglob("*.py"):
        rel = path.relative_to(EDGEHAL).as_posix()
        if rel == "artifact.py":
            continue
        hits = _mentions(ast.parse(path.read_text()),
                         {"metadata_props", "custom_metadata_map", "onnx_props", "SIDECAR_SUFFIX"})
        if hits:
            offenders[rel] = sorted(hits)
    assert offenders == {}


def _engine_with_sidecar(tmp_path: Path) -> Path:
    from edgehal.artifact import write_engine_sidecar
    from edgehal.tensors import TensorSpec
    from edgehal.export.tensorrt.profile import ProfileShape
    from edgehal.export.tensorrt.provenance import EngineProvenance

    engine = tmp_path / "m.plan"
    engine.write_bytes(b"engine bytes")
    write_engine_sidecar(engine, EngineProvenance(
        tensorrt_version="10.7.0", gpu_name="NVIDIA A10", compute_capability="8.6", precision="fp16",
        profiles=(ProfileShape("x", (1, 4), (8, 4), (8, 4)),), inputs=(TensorSpec("x", "float32", (-1, 4)),),
        outputs=(TensorSpec("main", "float32", (-1, 2)),), source_onnx="m.onnx", source_onnx_sha256="a" * 64,
        engine_sha256=sha256_file(engine), metadata=_meta(precision="fp16", calibration=None)))
    return engine


def test_an_engine_is_read_with_its_sidecar_at_the_engines_precision(tmp_path):
    engine = _engine_with_sidecar(tmp_path)
    art = read_artifact(engine)
    assert art.kind == "engine" and art.precision == "fp16" and art.engine.gpu_name == "NVIDIA A10"
    assert art.metadata == _meta(precision="fp16", calibration=None)
    # A sidecar of an earlier release copied the source ONNX's properties (fp32) instead of the metadata.
    sidecar = tmp_path / "m.plan.json"
    raw = json.loads(sidecar.read_text())
    raw.pop("metadata")
    raw["onnx_props"] = to_properties(_meta(precision="fp32", calibration=None))
    sidecar.write_text(json.dumps(raw))
    assert read_artifact(engine).metadata == _meta(precision="fp16", calibration=None)
    sidecar.unlink()
    with pytest.raises(EdgehalError, match="has no provenance sidecar m.plan.json"):
        read_artifact(engine)
