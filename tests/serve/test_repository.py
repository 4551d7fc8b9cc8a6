"""Finding models: files, folders, Triton model repositories and their config.pbtxt."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgehal.errors import EdgehalError
from edgehal.serve.repository import LoadedModel, ModelOptions, discover, load, parse_config

from .conftest import json_infer, run_server

CONFIG = """
name: "hal"
platform: "onnxruntime_onnx"
max_batch_size: 4
input [
  {
    name: "input"
    data_type: TYPE_FP32
    dims: [ 1, 28, 28 ]
  }
]
output [
  {
    name: "logits"
    data_type: TYPE_FP32
    dims: [ 10 ]
  },
  {
    name: "aux_case1"
    data_type: TYPE_FP32
    dims: [ 2 ]
  }
]
dynamic_batching {
  max_queue_delay_microseconds: 1500
  default_queue_policy { max_queue_size: 7 }
}
instance_group [ { count: 1, kind: KIND_CPU } ]
parameters { key: "note" value: { string_value: "written by the repository generator" } }
"""


def triton_repo(root: Path, model_path: Path, config: str | None = CONFIG, versions=(1,), name="hal") -> Path:
    d = root / name
    for v in versions:
        (d / str(v)).mkdir(parents=True, exist_ok=True)
        shutil.copy(model_path, d / str(v) / "model.onnx")
    if config is not None:
        (d / "config.pbtxt").write_text(config)
    return root


def test_an_onnx_file_is_version_1_under_its_stem(model_path):
    (s,) = discover([model_path])
    assert (s.name, s.version, s.path, s.config) == ("hal_mnist", "1", model_path, None)


def test_a_folder_of_onnx_files(model_path, tmp_path):
    for n in ("a", "b"):
        shutil.copy(model_path, tmp_path / f"{n}.onnx")
    (tmp_path / "notes.txt").write_text("not a model")
    assert [(s.name, s.version) for s in discover([tmp_path])] == [("a", "1"), ("b", "1")]


@pytest.mark.parametrize("case,message", [
    ("missing", "file not found"),
    ("empty", "holds no model file and no Triton model"),
    ("not onnx", "is not an .onnx file"),
    ("twice", "is given twice"),
])
def test_discovery_errors(model_path, tmp_path, case, message):
    if case == "missing":
        paths = [tmp_path / "nope.onnx"]
    elif case == "empty":
        paths = [tmp_path]
    elif case == "not onnx":
        (tmp_path / "model.pt").write_bytes(b"x")
        paths = [tmp_path / "model.pt"]
    else:
        shutil.copy(model_path, tmp_path / "hal_mnist.onnx")
        paths = [model_path, tmp_path / "hal_mnist.onnx"]
    with pytest.raises(EdgehalError, match=message):
        discover(paths)


def test_triton_repository_is_found_and_its_config_honoured(model_path, tmp_path):
    repo = triton_repo(tmp_path, model_path)
    (s,) = discover([repo])
    assert (s.name, s.version, s.path.relative_to(repo).as_posix()) == ("hal", "1", "hal/1/model.onnx")
    assert discover([repo / "hal"])[0].path == s.path  # the model folder itself works too
    (m,) = load([s], ModelOptions(max_batch_size=64, max_queue_delay_ms=0, max_queue_size=256, threads=1))
    try:
        assert m.batching.max_batch_size == 4 and m.batching.dynamic
        assert m.batching.max_queue_delay_s == pytest.approx(0.0015)
        assert m.batching.max_queue_size == 7
        assert m.io.max_batch_size == 4
        config = m.config_json()
        assert config["max_batch_size"] == 4
        assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 1500
        assert json.loads(m.parameters["edgehal.manifest"])["heads"][1]["name"] == "aux_case1"
    finally:
        m.close()


def test_config_without_dynamic_batching_runs_requests_alone(model_path, tmp_path):
    config = CONFIG.split("dynamic_batching")[0]
    (m,) = load(discover([triton_repo(tmp_path, model_path, config)]), ModelOptions(threads=1))
    try:
        assert m.batching.max_batch_size == 4 and not m.batching.dynamic
        assert "dynamic_batching" not in m.config_json()
    finally:
        m.close()


def test_config_output_subset_and_label_file(model_path, tmp_path):
    config = ('name: "hal" backend: "onnxruntime" max_batch_size: 2 '
              'output [ { name: "aux_case1" data_type: TYPE_FP32 dims: [ 2 ] label_filename: "labels.txt" } ]')
    repo = triton_repo(tmp_path, model_path, config)
    (m,) = load(discover([repo]), ModelOptions(threads=1))
    try:
        assert [t.name for t in m.io.outputs] == ["aux_case1"]
        assert m.io.labels["aux_case1"] == ("ge5", "lt5")  # the manifest's names win over a label file
    finally:
        m.close()


@pytest.mark.parametrize("policy,versions", [
    ("", ["3"]),
    ("version_policy: { latest: { num_versions: 2 } }", ["2", "3"]),
    ("version_policy: { all: {} }", ["1", "2", "3"]),
    ("version_policy: { specific: { versions: [1, 3] } }", ["1", "3"]),
])
def test_version_policy(model_path, tmp_path, policy, versions):
    repo = triton_repo(tmp_path, model_path, 'name: "hal" max_batch_size: 4 ' + policy, versions=(1, 2, 3))
    assert [s.version for s in discover([repo])] == versions


@pytest.mark.parametrize("config,message", [
    ('name: "other"', "config.pbtxt names it 'other'"),
    ('platform: "tensorrt_plan"', "has no version folder holding model.plan"),
    ('platform: "pytorch_libtorch"', "holds no model that edgehal can serve"),
    ('platform: "tensorrt_plan" backend: "onnxruntime"', "which disagree"),
    ('platform: "onnxruntime_onnx" default_model_filename: "model.bin"', "is not a file of platform"),
    ("max_batch_size: [", "does not parse"),
    ('version_policy: { specific: { versions: [5] } }', "asks for version 5"),
])
def test_config_errors_at_discovery(model_path, tmp_path, config, message):
    with pytest.raises(EdgehalError, match=message):
        discover([triton_repo(tmp_path, model_path, config)])


@pytest.mark.parametrize("config,message", [
    ('max_batch_size: 4 input [ { name: "image" data_type: TYPE_FP32 dims: [1, 28, 28] } ]',
     "lists input 'image', which the graph lacks"),
    ('max_batch_size: 4 input [ { name: "input" data_type: TYPE_FP16 dims: [1, 28, 28] } ]',
     "gives input 'input' type TYPE_FP16"),
    ('max_batch_size: 4 input [ { name: "input" data_type: TYPE_FP32 dims: [1, 28, 27] } ]',
     r"gives input 'input' dims \[1, 28, 27\]"),
    ('max_batch_size: 0 input [ { name: "input" data_type: TYPE_FP32 dims: [1, 28, 28] } ]',
     r"gives input 'input' dims \[1, 28, 28\]"),
    ('max_batch_size: 4 output [ { name: "probs" data_type: TYPE_FP32 dims: [10] } ]',
     "lists output 'probs'"),
])
def test_config_that_disagrees_with_the_graph_is_refused(model_path, tmp_path, config, message):
    with pytest.raises(EdgehalError, match=message):
        load(discover([triton_repo(tmp_path, model_path, config)]), ModelOptions(threads=1))


def test_unknown_config_fields_are_skipped(model_path, tmp_path, caplog):
    path = tmp_path / "config.pbtxt"
    path.write_text('name: "hal" max_batch_size: 4 some_future_field: 3')
    config = parse_config(path)
    assert config.max_batch_size == 4
    assert "skipping fields" in caplog.text


def test_a_model_without_edgehal_metadata_or_batch_axis_is_served_plainly(tmp_path, slow_model_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "fixed",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "fixed.onnx"))
    (m,) = load(discover([tmp_path / "fixed.onnx"]), ModelOptions(threads=1))
    try:
        assert m.io.max_batch_size == 0 and m.parameters == {}
        assert [t.shape for t in m.io.inputs] == [(1, 3)]
        assert m.run({"x": np.array([[-1.0, 0.0, 2.0]], np.float32)})["y"].tolist() == [[0.0, 0.0, 2.0]]
    finally:
        m.close()
    (slow,) = load(discover([slow_model_path]), ModelOptions(threads=1))
    try:
        assert slow.io.max_batch_size == 64 and slow.parameters == {}
    finally:
        slow.close()


def test_server_on_a_triton_repository_enforces_its_max_batch_size(model_path, tmp_path):
    import tritonclient.http as httpclient

    repo = triton_repo(tmp_path / "repo", model_path)
    with run_server([repo], tmp_path / "logs") as srv:
        client = httpclient.InferenceServerClient(url=srv.url)
        config = client.get_model_config("hal")
        assert config["max_batch_size"] == 4
        assert config["dynamic_batching"] == {"max_queue_delay_microseconds": 1500,
                                              "default_queue_policy": {"max_queue_size": 7}}
        assert client.get_model_metadata("hal", "1")["inputs"][0]["shape"] == [-1, 1, 28, 28]
        ok = json_infer([{"name": "input", "shape": [4, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784 * 4}])
        assert srv.post("/v2/models/hal/versions/1/infer", ok)[0] == 200
        too_big = json_infer([{"name": "input", "shape": [5, 1, 28, 28], "datatype": "FP32",
                               "data": [0.0] * 784 * 5}])
        status, body = srv.post("/v2/models/hal/infer", too_big)
        assert status == 400
        assert json.loads(body) == {"error": "input 'input' | batch size 5 is out of range. "
                                             "Note: 1 to 4 (the model's max_batch_size)"}
        client.close()


def test_loading_a_corrupt_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(EdgehalError, match="onnxruntime cannot load it"):
        LoadedModel(discover([bad])[0], ModelOptions(threads=1))


def test_a_model_with_a_tensor_numpy_cannot_hold_is_refused_at_load(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT8E4M3FN, ["N", 4]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "fp8", io[:1], io[1:])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(tmp_path / "fp8.onnx"))
    with pytest.raises(EdgehalError, match=r"fp8.onnx: input 'x': dtype FLOAT8E4M3FN \| has no numpy type"):
        load(discover([tmp_path / "fp8.onnx"]), ModelOptions(threads=1))


def test_a_repository_written_by_export_triton_is_served_as_configured(model_path, tmp_path):
    from edgehal.export import triton

    written = triton.export_triton(model_path, repository=tmp_path, options=triton.TritonOptions(kind="KIND_CPU"))
    (m,) = load(discover([tmp_path]), ModelOptions(max_batch_size=64, threads=1))
    try:
        assert m.name == written.directory.name
        assert m.batching.max_batch_size == written.max_batch_size
        assert m.io.labels["aux_case1"] == ("ge5", "lt5")
        assert [t.name for t in m.io.outputs] == ["logits", "aux_case1"]
    finally:
        m.close()


def test_a_repository_model_for_another_platform_is_skipped(model_path, tmp_path, caplog):
    triton_repo(tmp_path, model_path)
    torchscript = tmp_path / "scripted" / "1"
    torchscript.mkdir(parents=True)
    (torchscript / "model.pt").write_bytes(b"\0")
    (tmp_path / "scripted" / "config.pbtxt").write_text(
        'name: "scripted" platform: "pytorch_libtorch" max_batch_size: 4')
    assert [s.name for s in discover([tmp_path])] == ["hal"]
    assert "skipped, platform 'pytorch_libtorch'" in caplog.text
    with pytest.raises(EdgehalError, match="is for platform 'pytorch_libtorch'"):
        discover([tmp_path / "scripted"])


def test_engines_are_found_by_suffix_config_platform_or_backend(model_path, tmp_path):
    """Discovery only: a .plan is an engine whether named on its own, in a folder, or in a
    repository (its config naming the platform, the backend, or neither)."""
    files = tmp_path / "files"
    files.mkdir()
    for name in ("a.plan", "b.engine", "a.plan.json"):
        (files / name).write_bytes(b"\0")
    assert [(s.name, s.platform.name) for s in discover([files])] == [("a", "tensorrt_plan"),
                                                                       ("b", "tensorrt_plan")]
    (s,) = discover([files / "a.plan"])
    assert s.platform.runner == "tensorrt"
    repo = tmp_path / "repo"
    for name, config in (("by_platform", 'platform: "tensorrt_plan"'), ("by_backend", 'backend: "tensorrt"'),
                         ("by_file", None)):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "1" / "model.plan").write_bytes(b"\0")
        if config is not None:
            (repo / name / "config.pbtxt").write_text(config)
    triton_repo(repo, model_path, 'max_batch_size: 4', name="onnx")
    found = {s.name: (s.platform.name, s.path.name) for s in discover([repo])}
    assert found == {"by_platform": ("tensorrt_plan", "model.plan"), "by_backend": ("tensorrt_plan", "model.plan"),
                     "by_file": ("tensorrt_plan", "model.plan"), "onnx": ("onnxruntime_onnx", "model.onnx")}
