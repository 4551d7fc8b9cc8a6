"""The engine build, wired end to end against a strict fake of the TensorRT 10 and 11 APIs.

Every test runs as both majors. What this proves: the build calls names the
pretended major has only (the fake rejects removed ones such as
``builder.max_batch_size``, and ``BuilderFlag.FP16``/``INT8`` under 11),
builds strongly typed networks without precision flags (fp16 from an FP16
ONNX, converting an FP32 one first; int8 from Q/DQ), keeps DLA on TensorRT
10's weakly typed path, passes the plan's profile, workspace, compatibility
and timing-cache choices on, shows TensorRT's progress and warnings, and
writes the engine and its sidecar with the outputs in manifest order. What it cannot prove: anything TensorRT itself
does. That runs in tests/runtime/test_tensorrt.py and
benchmarks/gpu_check.sh on a GPU.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fakes"))
import fake_tensorrt  # noqa: E402
import trt_test_models as tm  # noqa: E402

from edgehal.artifact import engine_sidecar_path, read_artifact, read_engine_sidecar  # noqa: E402
from edgehal.errors import EdgehalError  # noqa: E402
from edgehal.export.tensorrt import provenance  # noqa: E402
from edgehal.export.tensorrt.build import build_engine  # noqa: E402
from edgehal.export.tensorrt.plan import EngineOptions  # noqa: E402
from edgehal.fileio import sha256_file  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("build")
    kept = tm.export_cnn(d / "mnist_kept.onnx")
    return {"kept": kept, "int8": tm.quantize_qdq(kept, d / "mnist_int8.onnx"),
            "fp16": tm.convert_fp16(kept, d / "mnist_fp16.onnx")}


@pytest.fixture(params=fake_tensorrt.MAJORS, ids=lambda m: f"trt{m}")
def fake(monkeypatch, request):
    """The fake TensorRT 10, then 11, on an 'NVIDIA A10' (sm_86), not a Jetson."""
    return fake_tensorrt.install(monkeypatch, request.param)


def built(engine: Path) -> dict:
    return json.loads(engine.read_bytes())


def test_fp16_build_from_fp32_onnx_converts_it_and_records_it(fake, models, tmp_path):
    engine, cache = tmp_path / "m.plan", tmp_path / "timing.cache"
    opts = EngineOptions(precision="fp16", min_batch=1, opt_batch=8, max_batch=16, workspace_mib=256,
                         timing_cache=cache)
    result = build_engine(models["kept"], engine, opts)
    doc = built(engine)
    # strongly typed, no precision flag: the FP16 comes from the converted ONNX's own types
    assert doc["strongly_typed"] and doc["flags"] == [] and doc["computes"] == ["fp16"]
    converted = tmp_path / "m.fp16.onnx"
    assert result.fp16_onnx == converted and converted.is_file()
    assert read_artifact(converted).require_metadata().precision == "fp16"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert doc["pools"] == {"WORKSPACE": 256 << 20}
    assert doc["profiles"] == [{"input": [[1, 1, 28, 28], [8, 1, 28, 28], [16, 1, 28, 28]]}]
    assert doc["device"] == "GPU" and doc["hardware"] == "NONE"
    assert cache.read_bytes() == b"+tuned"  # created empty, written back after the build
    prov = read_engine_sidecar(engine)
    assert result.sidecar == engine_sidecar_path(engine)
    assert (prov.fp16_onnx, prov.fp16_onnx_sha256) == ("m.fp16.onnx", sha256_file(converted))
    assert prov.strongly_typed and prov.tensorrt_major == int(fake.__version__.split(".")[0])
    assert json.loads(engine_sidecar_path(engine).read_text())["tensorrt_major"] == prov.tensorrt_major
    assert (prov.tensorrt_version, prov.gpu_name, prov.compute_capability) == (fake.__version__, "NVIDIA A10", "8.6")
    assert prov.precision == "fp16" and prov.batch_range == (1, 16)
    assert prov.manifest.head_names == ("digit", "parity")
    assert [t.name for t in prov.outputs] == ["digit", "parity"]
    assert prov.source_onnx == "mnist_kept.onnx" and len(prov.source_onnx_sha256) == 64
    assert prov.metadata.aux == "keep" and prov.metadata.precision == prov.precision
    assert prov.l4t_release is None and prov.built_at


def test_fixed_batch_model_needs_no_profile(fake, tmp_path):
    static = tm.export_cnn(tmp_path / "static.onnx", batch=4)
    build_engine(static, tmp_path / "s.plan", EngineOptions())
    assert built(tmp_path / "s.plan")["profiles"] == []
    assert read_engine_sidecar(tmp_path / "s.plan").batch_range == (4, 4)


def test_fp16_build_from_an_fp16_onnx_builds_it_as_it_is(fake, models, tmp_path):
    result = build_engine(models["fp16"], tmp_path / "h.plan", EngineOptions(precision="fp16", max_batch=4))
    doc = built(tmp_path / "h.plan")
    assert doc["strongly_typed"] and doc["flags"] == [] and doc["computes"] == ["fp16"]
    assert result.fp16_onnx is None and not (tmp_path / "h.fp16.onnx").exists()
    prov = read_engine_sidecar(tmp_path / "h.plan")
    assert prov.fp16_onnx is None and prov.source_onnx == "mnist_fp16.onnx"


def test_int8_from_qdq_is_strongly_typed_without_flags(fake, models, tmp_path):
    build_engine(models["int8"], tmp_path / "q.plan", EngineOptions(precision="int8"))
    doc = built(tmp_path / "q.plan")
    assert doc["strongly_typed"] and doc["flags"] == [] and doc["computes"] == ["int8"]


def test_fp32_build_is_strongly_typed_in_fp32(fake, models, tmp_path):
    build_engine(models["kept"], tmp_path / "f.plan", EngineOptions(max_batch=4))
    doc = built(tmp_path / "f.plan")
    assert doc["strongly_typed"] and doc["flags"] == [] and doc["computes"] == []
    assert not (tmp_path / "f.fp16.onnx").exists()


def test_dla_is_weakly_typed_on_tensorrt_10_and_refused_on_11(fake, models, tmp_path, monkeypatch):
    monkeypatch.setattr(fake.scenario, "dla_cores", 2)
    if fake.__version__.startswith("11."):
        with pytest.raises(EdgehalError, match=r"--dla-core 1 \| needs TensorRT 10; this machine has TensorRT 11"):
            build_engine(models["kept"], tmp_path / "d.plan", EngineOptions(precision="fp16", dla_core=1))
        assert not (tmp_path / "d.plan").exists()
        return
    monkeypatch.setattr(fake.scenario, "dla_cores", 0)
    with pytest.raises(EdgehalError, match=r"--dla-core 1 \| this device has 0 DLA core\(s\)"):
        build_engine(models["kept"], tmp_path / "d.plan", EngineOptions(precision="fp16", dla_core=1))
    monkeypatch.setattr(fake.scenario, "dla_cores", 2)
    build_engine(models["kept"], tmp_path / "d.plan", EngineOptions(precision="fp16", dla_core=1))
    doc = built(tmp_path / "d.plan")
    assert doc["device"] == "DLA" and doc["dla_core"] == 1
    assert not doc["strongly_typed"] and doc["flags"] == ["FP16", "GPU_FALLBACK"] and doc["computes"] == ["fp16"]
    prov = read_engine_sidecar(tmp_path / "d.plan")
    assert prov.dla_core == 1 and not prov.strongly_typed and prov.fp16_onnx is None
    build_engine(models["int8"], tmp_path / "q.plan", EngineOptions(precision="int8", dla_core=0))
    assert built(tmp_path / "q.plan")["flags"] == ["GPU_FALLBACK", "INT8"]


def test_progress_phases_and_tensorrt_warnings_reach_the_user(fake, models, tmp_path, capsys):
    build_engine(models["kept"], tmp_path / "p.plan", EngineOptions(max_batch=4))
    err = capsys.readouterr().err
    assert "Building engine" in err and "Tactic selection" in err
    assert f"TensorRT warning: {fake_tensorrt.BUILD_WARNING}" in err


def test_version_and_hardware_compatible(fake, models, tmp_path):
    build_engine(models["kept"], tmp_path / "c.plan", EngineOptions(version_compatible=True, hardware_compatible=True))
    doc = built(tmp_path / "c.plan")
    assert "VERSION_COMPATIBLE" in doc["flags"] and doc["hardware"] == "AMPERE_PLUS"


def test_hardware_compatible_refused_on_jetson_and_old_gpus(fake, models, tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "_jetson_info", lambda: ("36.4.0", "6.1"))
    with pytest.raises(EdgehalError, match=r"--hardware-compatible \| is not supported on Jetson"):
        build_engine(models["kept"], tmp_path / "h.plan", EngineOptions(hardware_compatible=True))
    monkeypatch.setattr(provenance, "_jetson_info", lambda: (None, None))
    monkeypatch.setattr(provenance, "_gpu_info", lambda index: ("Tesla T4", "7.5"))
    with pytest.raises(EdgehalError, match="needs an Ampere"):
        build_engine(models["kept"], tmp_path / "h.plan", EngineOptions(hardware_compatible=True))
    assert not (tmp_path / "h.plan").exists()


def test_parser_and_builder_failures_are_one_line(fake, models, tmp_path, monkeypatch):
    monkeypatch.setattr(fake.scenario, "parse_error", "Assertion failed: importer for node X")
    with pytest.raises(EdgehalError, match=r"TensorRT's ONNX parser refused it \(Assertion failed: importer"):
        build_engine(models["kept"], tmp_path / "f.plan", EngineOptions())
    monkeypatch.setattr(fake.scenario, "parse_error", None)
    monkeypatch.setattr(fake.scenario, "build_error", "fake build failure: no implementation for layer")
    with pytest.raises(EdgehalError, match=r"TensorRT could not build an engine \(fake build failure"):
        build_engine(models["kept"], tmp_path / "f.plan", EngineOptions())
    assert not (tmp_path / "f.plan").exists() and not engine_sidecar_path(tmp_path / "f.plan").exists()
    with pytest.raises(EdgehalError, match=r"TensorRT could not build an engine \(fake build failure"):
        build_engine(models["kept"], tmp_path / "f.plan", EngineOptions(precision="fp16"))
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no converted ONNX left behind either


def test_sidecar_lists_outputs_in_manifest_order_whatever_the_graph_order(fake, models, tmp_path):
    import onnx

    model = onnx.load(models["kept"])
    reordered = list(reversed(model.graph.output))
    del model.graph.output[:]
    model.graph.output.extend(reordered)
    src = tmp_path / "reversed.onnx"
    onnx.save(model, src)
    build_engine(src, tmp_path / "r.plan", EngineOptions(max_batch=4))
    assert [name for name, _, _ in built(tmp_path / "r.plan")["outputs"]] == ["parity", "digit"]
    assert [t.name for t in read_engine_sidecar(tmp_path / "r.plan").outputs] == ["digit", "parity"]


def test_dynamic_non_batch_dimension_gets_its_profile_range(fake, tmp_path):
    from onnx import TensorProto, helper

    path = tm.graph_model(tmp_path / "hw.onnx", [helper.make_node("Relu", ["x"], ["y"])],
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", 28])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, "H", 28])])
    build_engine(path, tmp_path / "hw.plan", EngineOptions(max_batch=4, dims={"H": (14, 28, 56)}))
    assert built(tmp_path / "hw.plan")["profiles"] == [{"x": [[1, 1, 14, 28], [4, 1, 28, 28], [4, 1, 56, 28]]}]


def test_build_engine_cli_says_which_fp16_onnx_it_built_from(fake, models, tmp_path):
    from click.testing import CliRunner

    from edgehal.cli import main

    result = CliRunner().invoke(main, ["build-engine", str(models["kept"]), "-o", str(tmp_path / "c.plan"),
                                       "--precision", "fp16", "--max-batch", "4"])
    assert result.exit_code == 0, result.output
    assert "built from c.fp16.onnx, mnist_kept.onnx converted to FP16" in result.output
    assert (tmp_path / "c.fp16.onnx").is_file()


def test_the_converted_fp16_onnx_never_overwrites_its_source(fake, models, tmp_path):
    import shutil

    src = tmp_path / "m.fp16.onnx"  # an FP32 model under an unlucky name
    shutil.copy(models["kept"], src)
    before = src.read_bytes()
    with pytest.raises(EdgehalError, match=r"would write the converted FP16 ONNX over the source m.fp16.onnx"):
        build_engine(src, tmp_path / "m.plan", EngineOptions(precision="fp16", max_batch=4))
    assert src.read_bytes() == before and not (tmp_path / "m.plan").exists()
