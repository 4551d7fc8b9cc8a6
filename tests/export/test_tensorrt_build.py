"""The thin TensorRT module, wired end to end against a strict fake of the TensorRT 10 API.

What this proves: the thin module calls TensorRT 10 names only (the fake
rejects removed ones such as ``max_workspace_size``), passes the plan's
precision, profile, workspace, DLA, compatibility and timing-cache choices on,
writes the engine and its sidecar, and checks the sidecar before
deserialising. What it cannot prove: anything TensorRT itself does. That runs
in tests/runtime/test_tensorrt.py and benchmarks/gpu_check.sh on a GPU.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fake_tensorrt  # noqa: E402
import trt_test_models as tm  # noqa: E402

from edgehal.errors import EdgehalError  # noqa: E402
from edgehal.export import tensorrt as trt_backend  # noqa: E402
from edgehal.export.tensorrt_plan import EngineOptions  # noqa: E402
from edgehal.export.tensorrt_provenance import read_sidecar, sidecar_path  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("build")
    kept = tm.export_cnn(d / "mnist_kept.onnx")
    return {"kept": kept, "int8": tm.quantize_qdq(kept, d / "mnist_int8.onnx")}


@pytest.fixture
def fake(monkeypatch):
    """The fake TensorRT on an 'NVIDIA A10' (sm_86), not a Jetson."""
    import torch

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt)
    monkeypatch.setattr(trt_backend, "_gpu_info", lambda index: ("NVIDIA A10", "8.6"))
    monkeypatch.setattr(trt_backend, "_jetson_info", lambda: (None, None))
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    monkeypatch.setattr(fake_tensorrt.Builder, "num_DLA_cores", 0)
    monkeypatch.setattr(fake_tensorrt.Builder, "fail_build", False)
    monkeypatch.setattr(fake_tensorrt.OnnxParser, "fail_with", None)
    return fake_tensorrt


def built(engine: Path) -> dict:
    return json.loads(engine.read_bytes())


def test_fp16_build_writes_engine_sidecar_and_timing_cache(fake, models, tmp_path):
    engine, cache = tmp_path / "m.plan", tmp_path / "timing.cache"
    opts = EngineOptions(precision="fp16", min_batch=1, opt_batch=8, max_batch=16, workspace_mib=256,
                         timing_cache=cache)
    result = trt_backend.build_engine(models["kept"], engine, opts)
    doc = built(engine)
    assert doc["flags"] == ["FP16"]
    assert doc["pools"] == {"WORKSPACE": 256 << 20}
    assert doc["profiles"] == [{"input": [[1, 1, 28, 28], [8, 1, 28, 28], [16, 1, 28, 28]]}]
    assert doc["device"] == "GPU" and doc["hardware"] == "NONE"
    assert cache.read_bytes() == b"+tuned"  # created empty, written back after the build
    prov = read_sidecar(engine)
    assert result.sidecar == sidecar_path(engine)
    assert (prov.tensorrt_version, prov.gpu_name, prov.compute_capability) == ("10.7.0.23", "NVIDIA A10", "8.6")
    assert prov.precision == "fp16" and prov.batch_range == (1, 16)
    assert prov.manifest.head_names == ("digit", "parity")
    assert [t.name for t in prov.outputs] == ["digit", "parity"]
    assert prov.source_onnx == "mnist_kept.onnx" and len(prov.source_onnx_sha256) == 64
    assert prov.onnx_props["edgehal.aux"] == "keep"
    assert prov.l4t_release is None and prov.built_at


def test_fixed_batch_model_needs_no_profile(fake, tmp_path):
    static = tm.export_cnn(tmp_path / "static.onnx", batch=4)
    trt_backend.build_engine(static, tmp_path / "s.plan", EngineOptions())
    assert built(tmp_path / "s.plan")["profiles"] == []
    assert read_sidecar(tmp_path / "s.plan").batch_range == (4, 4)


def test_int8_from_qdq_sets_only_the_int8_flag(fake, models, tmp_path):
    trt_backend.build_engine(models["int8"], tmp_path / "q.plan", EngineOptions(precision="int8"))
    assert built(tmp_path / "q.plan")["flags"] == ["INT8"]


def test_dla_with_gpu_fallback(fake, models, tmp_path, monkeypatch):
    with pytest.raises(EdgehalError, match=r"--dla-core 1 \| this device has 0 DLA core\(s\)"):
        trt_backend.build_engine(models["kept"], tmp_path / "d.plan", EngineOptions(precision="fp16", dla_core=1))
    monkeypatch.setattr(fake.Builder, "num_DLA_cores", 2)
    trt_backend.build_engine(models["kept"], tmp_path / "d.plan", EngineOptions(precision="fp16", dla_core=1))
    doc = built(tmp_path / "d.plan")
    assert doc["device"] == "DLA" and doc["dla_core"] == 1 and "GPU_FALLBACK" in doc["flags"]
    assert read_sidecar(tmp_path / "d.plan").dla_core == 1


def test_version_and_hardware_compatible(fake, models, tmp_path):
    trt_backend.build_engine(models["kept"], tmp_path / "c.plan",
                             EngineOptions(version_compatible=True, hardware_compatible=True))
    doc = built(tmp_path / "c.plan")
    assert "VERSION_COMPATIBLE" in doc["flags"] and doc["hardware"] == "AMPERE_PLUS"


def test_hardware_compatible_refused_on_jetson_and_old_gpus(fake, models, tmp_path, monkeypatch):
    monkeypatch.setattr(trt_backend, "_jetson_info", lambda: ("R36.4.0", "6.1"))
    with pytest.raises(EdgehalError, match=r"--hardware-compatible \| is not supported on Jetson"):
        trt_backend.build_engine(models["kept"], tmp_path / "h.plan", EngineOptions(hardware_compatible=True))
    monkeypatch.setattr(trt_backend, "_jetson_info", lambda: (None, None))
    monkeypatch.setattr(trt_backend, "_gpu_info", lambda index: ("Tesla T4", "7.5"))
    with pytest.raises(EdgehalError, match="needs an Ampere"):
        trt_backend.build_engine(models["kept"], tmp_path / "h.plan", EngineOptions(hardware_compatible=True))
    assert not (tmp_path / "h.plan").exists()


def test_parser_and_builder_failures_are_one_line(fake, models, tmp_path, monkeypatch):
    monkeypatch.setattr(fake.OnnxParser, "fail_with", "Assertion failed: importer for node X")
    with pytest.raises(EdgehalError, match=r"TensorRT's ONNX parser refused it \(Assertion failed: importer"):
        trt_backend.build_engine(models["kept"], tmp_path / "f.plan", EngineOptions())
    monkeypatch.setattr(fake.OnnxParser, "fail_with", None)
    monkeypatch.setattr(fake.Builder, "fail_build", True)
    with pytest.raises(EdgehalError, match=r"TensorRT could not build an engine \(fake build failure"):
        trt_backend.build_engine(models["kept"], tmp_path / "f.plan", EngineOptions())
    assert not (tmp_path / "f.plan").exists() and not sidecar_path(tmp_path / "f.plan").exists()


def test_load_checks_the_sidecar_before_deserialising(fake, models, tmp_path, monkeypatch):
    engine = tmp_path / "m.plan"
    trt_backend.build_engine(models["kept"], engine, EngineOptions(precision="fp16", max_batch=8))
    before = fake.Runtime.deserialized
    loaded = trt_backend.load_engine(engine)
    assert fake.Runtime.deserialized == before + 1
    assert [t.name for t in loaded.inputs] == ["input"]
    assert [(t.name, t.dtype, t.shape) for t in loaded.outputs] == [("digit", "float32", (-1, 10)),
                                                                     ("parity", "float32", (-1, 2))]
    assert loaded.warnings == ()

    monkeypatch.setattr(fake, "__version__", "10.8.0.1")
    monkeypatch.setattr(trt_backend, "_gpu_info", lambda index: ("NVIDIA L4", "8.9"))
    with pytest.raises(EdgehalError) as err:
        trt_backend.load_engine(engine)
    assert str(err.value) == (
        "TensorRT engine m.plan | built with TensorRT 10.7.0.23 on NVIDIA A10 (sm_86); this machine has "
        "TensorRT 10.8.0.1 on NVIDIA L4 (sm_89): TensorRT 10.7.0.23 != 10.8.0.1; compute capability "
        "sm_86 != sm_89. Note: rebuild the engine on the target with `edgehal build-engine mnist_kept.onnx "
        "-o m.plan --precision fp16 --min-batch 1 --opt-batch 8 --max-batch 8`")
    assert fake.Runtime.deserialized == before + 1  # TensorRT never saw the foreign engine


def test_version_compatible_engine_allows_host_code(fake, models, tmp_path, monkeypatch):
    engine = tmp_path / "v.plan"
    trt_backend.build_engine(models["kept"], engine, EngineOptions(version_compatible=True))
    seen = {}
    original = fake.Runtime.deserialize_cuda_engine

    def spy(self, data):
        seen["host_code"] = self.engine_host_code_allowed
        return original(self, data)

    monkeypatch.setattr(fake.Runtime, "deserialize_cuda_engine", spy)
    monkeypatch.setattr(fake, "__version__", "10.9.0")
    trt_backend.load_engine(engine)
    assert seen == {"host_code": True}


def test_tampered_engine_is_refused(fake, models, tmp_path):
    engine = tmp_path / "t.plan"
    trt_backend.build_engine(models["kept"], engine, EngineOptions())
    engine.write_bytes(engine.read_bytes() + b" ")
    with pytest.raises(EdgehalError, match="does not match its sidecar"):
        trt_backend.load_engine(engine)
