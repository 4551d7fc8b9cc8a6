"""The engine build, wired end to end against a strict fake of the TensorRT 10 API.

What this proves: the build calls TensorRT 10 names only (the fake rejects
removed ones such as ``builder.max_batch_size`` and ``max_workspace_size``),
passes the plan's precision, profile, workspace, DLA, compatibility and
timing-cache choices on, and writes the engine and its sidecar with the
outputs in manifest order. What it cannot prove: anything TensorRT itself
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

from edgehal.errors import EdgehalError  # noqa: E402
from edgehal.export.tensorrt import provenance  # noqa: E402
from edgehal.export.tensorrt.build import build_engine  # noqa: E402
from edgehal.export.tensorrt.plan import EngineOptions  # noqa: E402
from edgehal.artifact import engine_sidecar_path, read_engine_sidecar  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("build")
    kept = tm.export_cnn(d / "mnist_kept.onnx")
    return {"kept": kept, "int8": tm.quantize_qdq(kept, d / "mnist_int8.onnx")}


@pytest.fixture
def fake(monkeypatch):
    """The fake TensorRT on an 'NVIDIA A10' (sm_86), not a Jetson."""
    return fake_tensorrt.install(monkeypatch)


def built(engine: Path) -> dict:
    return json.loads(engine.read_bytes())


def test_fp16_build_writes_engine_sidecar_and_timing_cache(fake, models, tmp_path):
    engine, cache = tmp_path / "m.plan", tmp_path / "timing.cache"
    opts = EngineOptions(precision="fp16", min_batch=1, opt_batch=8, max_batch=16, workspace_mib=256,
                         timing_cache=cache)
    result = build_engine(models["kept"], engine, opts)
    doc = built(engine)
    assert doc["flags"] == ["FP16"]
    assert doc["pools"] == {"WORKSPACE": 256 << 20}
    assert doc["profiles"] == [{"input": [[1, 1, 28, 28], [8, 1, 28, 28], [16, 1, 28, 28]]}]
    assert doc["device"] == "GPU" and doc["hardware"] == "NONE"
    assert cache.read_bytes() == b"+tuned"  # created empty, written back after the build
    prov = read_engine_sidecar(engine)
    assert result.sidecar == engine_sidecar_path(engine)
    assert (prov.tensorrt_version, prov.gpu_name, prov.compute_capability) == ("10.7.0.23", "NVIDIA A10", "8.6")
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


def test_int8_from_qdq_sets_only_the_int8_flag(fake, models, tmp_path):
    build_engine(models["int8"], tmp_path / "q.plan", EngineOptions(precision="int8"))
    assert built(tmp_path / "q.plan")["flags"] == ["INT8"]


def test_dla_with_gpu_fallback(fake, models, tmp_path, monkeypatch):
    with pytest.raises(EdgehalError, match=r"--dla-core 1 \| this device has 0 DLA core\(s\)"):
        build_engine(models["kept"], tmp_path / "d.plan", EngineOptions(precision="fp16", dla_core=1))
    monkeypatch.setattr(fake.scenario, "dla_cores", 2)
    build_engine(models["kept"], tmp_path / "d.plan", EngineOptions(precision="fp16", dla_core=1))
    doc = built(tmp_path / "d.plan")
    assert doc["device"] == "DLA" and doc["dla_core"] == 1 and "GPU_FALLBACK" in doc["flags"]
    assert read_engine_sidecar(tmp_path / "d.plan").dla_core == 1


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
