"""``edgehal export-triton``: every generated config parses into Triton's own ModelConfig."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
import trt_test_models as tm  # noqa: E402

from edgehal.cli import main  # noqa: E402
from edgehal.errors import EdgehalError  # noqa: E402
from edgehal.export.tensorrt.profile import ProfileShape  # noqa: E402
from edgehal.artifact import write_engine_sidecar  # noqa: E402
from edgehal.export.tensorrt.provenance import EngineProvenance  # noqa: E402
from edgehal.export.triton import TritonOptions, export_triton, manifest_from_config  # noqa: E402
from edgehal.fileio import sha256_file  # noqa: E402
from edgehal.tensors import TensorSpec  # noqa: E402

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="pip install 'tritonclient[grpc]' (the dev extra)")
text_format = pytest.importorskip("google.protobuf.text_format")


def parse(config: Path):
    return text_format.Parse(config.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("triton")
    kept = tm.export_cnn(d / "mnist_kept.onnx")
    return {
        "kept": kept,
        "pruned": tm.export_cnn(d / "mnist_pruned.onnx", aux="prune"),
        "static": tm.export_cnn(d / "mnist_b1.onnx", batch=1),
        "int8": tm.quantize_qdq(kept, d / "mnist_int8.onnx"),
    }


def fake_engine(tmp_path: Path, *, dynamic: bool = True) -> Path:
    """A .plan file with a real sidecar (the engine bytes are never read by export-triton)."""
    engine = tmp_path / "mnist_fp16.plan"
    engine.write_bytes(b"not a real engine")
    batch = (1, 16, 16) if dynamic else (1, 1, 1)
    prov = EngineProvenance(
        tensorrt_version="10.3.0", gpu_name="NVIDIA A10", compute_capability="8.6", precision="fp16",
        profiles=(ProfileShape("input", (batch[0], 1, 28, 28), (batch[1], 1, 28, 28), (batch[2], 1, 28, 28)),),
        inputs=(TensorSpec("input", "float32", (-1 if dynamic else 1, 1, 28, 28)),),
        outputs=(TensorSpec("parity", "float32", (-1, 2)), TensorSpec("digit", "float32", (-1, 10))),
        source_onnx="mnist_kept.onnx", source_onnx_sha256="a" * 64, engine_sha256=sha256_file(engine),
        metadata=tm.metadata(precision="fp16"))
    write_engine_sidecar(engine, prov)
    return engine


@pytest.mark.parametrize("name", ["kept", "pruned", "int8"])
def test_onnx_repository_parses_into_model_config(models, tmp_path, name):
    result = export_triton(models[name], repository=tmp_path / "repo")
    cfg = parse(result.config)
    assert result.config == tmp_path / "repo" / models[name].stem / "config.pbtxt"
    assert (tmp_path / "repo" / models[name].stem / "1" / "model.onnx").read_bytes() == models[name].read_bytes()
    assert cfg.name == models[name].stem and cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == 8
    assert [(i.name, list(i.dims), i.data_type) for i in cfg.input] == [
        ("input", [1, 28, 28], model_config_pb2.TYPE_FP32)]
    heads = ["digit", "parity"] if name != "pruned" else ["digit"]
    assert [o.name for o in cfg.output] == heads
    assert list(cfg.output[0].dims) == [10]
    assert cfg.output[0].label_filename == "digit_labels.txt"
    labels = (result.directory / "digit_labels.txt").read_text().splitlines()
    assert labels == [str(i) for i in range(10)]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 100
    assert [(g.count, g.kind) for g in cfg.instance_group] == [(1, model_config_pb2.ModelInstanceGroup.KIND_GPU)]
    manifest = manifest_from_config(cfg.parameters)
    assert manifest.head_names[0] == "digit" and manifest.model == "tiny_hal"
    assert json.loads(cfg.parameters["edgehal.preprocessing"].string_value)["layout"] == "NCHW"
    assert not cfg.optimization.execution_accelerators.gpu_execution_accelerator


def test_all_options_and_the_tensorrt_accelerator(models, tmp_path):
    result = CliRunner().invoke(main, ["export-triton", str(models["kept"]), "--repository", str(tmp_path),
                                       "--name", "hal-mnist", "--max-batch-size", "32", "--instances", "2",
                                       "--kind", "KIND_GPU", "--tensorrt-accelerator",
                                       "--max-queue-delay-us", "500"])
    assert result.exit_code == 0, result.output
    cfg = parse(tmp_path / "hal-mnist" / "config.pbtxt")
    assert cfg.name == "hal-mnist" and cfg.max_batch_size == 32
    assert [(g.count, g.kind) for g in cfg.instance_group] == [(2, model_config_pb2.ModelInstanceGroup.KIND_GPU)]
    (accel,) = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert accel.name == "tensorrt"
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500


def test_cpu_instances(models, tmp_path):
    result = export_triton(models["kept"], repository=tmp_path, options=TritonOptions(kind="KIND_CPU", instances=3))
    cfg = parse(result.config)
    assert [(g.count, g.kind) for g in cfg.instance_group] == [(3, model_config_pb2.ModelInstanceGroup.KIND_CPU)]


def test_fixed_batch_keeps_the_batch_dim(models, tmp_path):
    cfg = parse(export_triton(models["static"], repository=tmp_path).config)
    assert cfg.max_batch_size == 0
    assert list(cfg.input[0].dims) == [1, 1, 28, 28] and list(cfg.output[0].dims) == [1, 10]
    assert not cfg.HasField("dynamic_batching")
    with pytest.raises(EdgehalError, match=r"--max-batch-size 8 \| needs a dynamic batch dimension; "
                                           r"mnist_b1.onnx has batch 1"):
        export_triton(models["static"], repository=tmp_path, options=TritonOptions(max_batch_size=8))


def test_plan_repository(tmp_path):
    engine = fake_engine(tmp_path)
    result = export_triton(engine, repository=tmp_path / "repo")
    cfg = parse(result.config)
    version = tmp_path / "repo" / "mnist_fp16" / "1"
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 16
    assert (version / "model.plan").read_bytes() == engine.read_bytes()
    assert json.loads((version / "model.plan.json").read_text())["precision"] == "fp16"
    assert [o.name for o in cfg.output] == ["digit", "parity"]  # manifest order, not the engine's
    assert cfg.parameters["edgehal.precision"].string_value == "fp16"
    assert "NVIDIA A10 (sm_86)" in cfg.parameters["edgehal.engine_built_on"].string_value
    with pytest.raises(EdgehalError, match=r"exceeds the engine's profile \(batch up to 16\)"):
        export_triton(engine, repository=tmp_path / "repo", options=TritonOptions(max_batch_size=64))
    with pytest.raises(EdgehalError, match="cannot serve a TensorRT engine"):
        export_triton(engine, repository=tmp_path / "repo", options=TritonOptions(kind="KIND_CPU"))
    with pytest.raises(EdgehalError, match="applies to ONNX models only"):
        export_triton(engine, repository=tmp_path / "repo", options=TritonOptions(tensorrt_accelerator=True))


def test_plan_with_fixed_batch(tmp_path):
    cfg = parse(export_triton(fake_engine(tmp_path, dynamic=False), repository=tmp_path / "r").config)
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [1, 1, 28, 28]


def test_switching_platform_removes_the_other_model_file(models, tmp_path):
    engine = fake_engine(tmp_path)
    export_triton(engine, repository=tmp_path / "repo", options=TritonOptions(name="m"))
    export_triton(models["kept"], repository=tmp_path / "repo", options=TritonOptions(name="m"))
    assert sorted(p.name for p in (tmp_path / "repo" / "m" / "1").iterdir()) == ["model.onnx"]


def test_escaping_round_trips_through_text_format(models, tmp_path):
    manifest = dataclasses.replace(tm.manifest(), model='quo"te\\back\nslash ünï')
    from edgehal.export.triton import render_config

    text = render_config(name="m", platform="onnxruntime_onnx", max_batch_size=0,
                         inputs=[TensorSpec("input", "float32", (1, 2))], outputs=[TensorSpec("digit", "float32", (1, 10))],
                         labels={}, options=TritonOptions(), parameters={"edgehal.manifest": manifest.to_json()})
    cfg = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert manifest_from_config(cfg.parameters).model == manifest.model


def test_a_tensor_triton_has_no_type_for_is_refused_by_name():
    from onnx import TensorProto

    from edgehal.export.triton import render_config
    from edgehal.tensors import dtype_from_onnx

    fp8 = TensorSpec("q", dtype_from_onnx(TensorProto.FLOAT8E4M3FN), (-1, 4))
    with pytest.raises(EdgehalError, match=r"^tensor 'q' \| has dtype FLOAT8E4M3FN, which Triton has no data_type"):
        render_config(name="m", platform="onnxruntime_onnx", max_batch_size=4, inputs=[fp8],
                      outputs=[TensorSpec("digit", "float32", (-1, 10))], labels={}, options=TritonOptions(),
                      parameters={})


@pytest.mark.parametrize("kwargs,message", [
    (dict(kind="KIND_TPU"), r"--kind 'KIND_TPU' \| is not a choice. Note: one of KIND_GPU, KIND_CPU"),
    (dict(instances=0), "--instances 0 | must be a positive integer"),
    (dict(name="bad/name"), "is not a valid model name"),
    (dict(kind="KIND_CPU", tensorrt_accelerator=True), "needs --kind KIND_GPU"),
])
def test_bad_options(kwargs, message):
    with pytest.raises(EdgehalError, match=message):
        TritonOptions(**kwargs)


def test_model_without_manifest_is_refused(tmp_path):
    det = tm.det_model(tmp_path / "det.onnx")
    result = CliRunner().invoke(main, ["export-triton", str(det), "--repository", str(tmp_path / "r")])
    assert result.exit_code == 1 and "has no edgehal head manifest" in result.output
    result = CliRunner().invoke(main, ["export-triton", str(det), "--repository", str(tmp_path / "r"),
                                       "--kind", "KIND_TPU"])
    assert result.exit_code == 2 and "KIND_GPU" in result.output


def test_serve_loads_the_generated_repository(models, tmp_path):
    """`edgehal serve` loads the repository export-triton writes (its own config checks included)."""
    from edgehal.serve import repository

    export_triton(models["kept"], repository=tmp_path / "repo", options=TritonOptions(kind="KIND_CPU"))
    export_triton(models["static"], repository=tmp_path / "repo", options=TritonOptions(kind="KIND_CPU"))
    sources = repository.discover([tmp_path / "repo"])
    assert sorted(s.name for s in sources) == ["mnist_b1", "mnist_kept"]
    loaded = repository.load(sources, repository.ModelOptions(threads=1, providers=("cpu",)))
    try:
        by_name = {m.name: m for m in loaded}
        kept = by_name["mnist_kept"]
        assert kept.batching.max_batch_size == 8
        assert [t.name for t in kept.io.outputs] == ["digit", "parity"]
        assert kept.io.labels["digit"] == tuple(str(i) for i in range(10))
        assert by_name["mnist_b1"].batching.max_batch_size == 0
    finally:
        for m in loaded:
            m.close()
