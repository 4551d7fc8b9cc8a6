"""TensorRTRunner: refusals on any machine; real engines where TensorRT and a CUDA GPU are present."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
import trt_test_models as tm  # noqa: E402

from edgehal.errors import EdgehalError  # noqa: E402
from edgehal.manifest import Preprocessing  # noqa: E402
from edgehal.export import tensorrt as trt_backend  # noqa: E402
from edgehal.export.tensorrt_plan import ProfileShape, TensorInfo  # noqa: E402
from edgehal.export.tensorrt_provenance import (  # noqa: E402
    EngineProvenance,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)
from edgehal.runtime.tensorrt import TensorRTRunner  # noqa: E402


def _gpu_skip_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (pip install 'edgehal[tensorrt]' on a machine with an NVIDIA GPU)"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (TensorRT engines build and run on an NVIDIA GPU)"
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # the wheel without its libraries
        return f"TensorRT does not load here ({exc.__class__.__name__}: {exc})"
    return None


GPU_SKIP = _gpu_skip_reason()


def needs_tensorrt(test):
    """Marked ``tensorrt``; skipped with the reason where TensorRT or a CUDA GPU is absent."""
    skip = pytest.mark.skipif(GPU_SKIP is not None, reason=GPU_SKIP or "TensorRT and a CUDA GPU are present")
    return pytest.mark.tensorrt(skip(test))


# -- any machine -----------------------------------------------------------------


def _fake_engine(tmp_path: Path) -> Path:
    engine = tmp_path / "m.plan"
    engine.write_bytes(b"engine")
    from edgehal.fileio import sha256_file

    write_sidecar(engine, EngineProvenance(
        tensorrt_version="10.7.0", gpu_name="NVIDIA A10", compute_capability="8.6", precision="fp16",
        profiles=(ProfileShape("input", (2, 1, 28, 28), (8, 1, 28, 28), (8, 1, 28, 28)),),
        inputs=(TensorInfo("input", "float32", (-1, 1, 28, 28)),),
        outputs=(TensorInfo("parity", "float32", (-1, 2)), TensorInfo("digit", "float32", (-1, 10))),
        source_onnx="m.onnx", source_onnx_sha256="a" * 64, engine_sha256=sha256_file(engine),
        manifest=tm.manifest()))
    return engine


def test_activation_without_tensorrt_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    runner = TensorRTRunner(_fake_engine(tmp_path), device_index=0)
    with pytest.raises(EdgehalError, match=r"^TensorRT \| is not installed"):
        runner.activate()
    assert not runner.is_active


def test_missing_engine(tmp_path):
    with pytest.raises(EdgehalError, match="file not found"):
        TensorRTRunner(tmp_path / "nope.plan").activate()


def test_batch_outside_the_profile_never_reaches_tensorrt(tmp_path, monkeypatch):
    """The runner's own check refuses the batch; TensorRT's execute is never called."""
    engine = _fake_engine(tmp_path)
    prov = read_sidecar(engine)
    runner = TensorRTRunner(engine)
    runner._provenance = prov
    runner._loaded = trt_backend.LoadedEngine(engine=None, runtime=None, provenance=prov, inputs=prov.inputs,
                                              outputs=prov.outputs)
    runner.is_active = True

    def never(*args, **kwargs):
        raise AssertionError("TensorRT was called")

    monkeypatch.setattr(trt_backend, "execute", never)
    for batch in (1, 9, 64):
        with pytest.raises(EdgehalError, match=rf"batch {batch} is outside the engine's profile \(batch 2..8\)"):
            runner.infer({"input": np.zeros((batch, 1, 28, 28), np.float32)})
    assert runner.max_batch == 8
    assert runner.output_names() == ["digit", "parity"]  # manifest order: every head of a kept-aux engine
    assert runner.manifest.head_names == ("digit", "parity")


def test_metadata_carries_the_engine_precision(tmp_path):
    """Parity picks tolerances by precision: an fp16 engine from an fp32 ONNX is fp16."""
    import dataclasses as dc

    from edgehal.export.metadata import OnnxMetadata

    engine = _fake_engine(tmp_path)
    onnx_meta = OnnxMetadata(manifest=tm.manifest(), full_manifest=tm.manifest(), preprocessing=Preprocessing(layout="NCHW", input_shape=(1, 8, 8)),
                             aux="keep", precision="fp32")
    prov = dc.replace(read_sidecar(engine), onnx_props=onnx_meta.to_props())
    runner = TensorRTRunner(engine)
    runner._provenance = prov
    assert runner.precision == "fp16"
    assert runner.metadata.precision == "fp16" and runner.metadata.preprocessing.layout == "NCHW"


def test_runner_reports_its_cuda_device(tmp_path):
    runner = TensorRTRunner(_fake_engine(tmp_path), device_index=1)
    assert runner.device == "cuda:1"


# -- on a GPU with TensorRT ----------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("trt_runtime")
    kept = tm.export_cnn(d / "mnist_kept.onnx")
    return {"kept": kept, "pruned": tm.export_cnn(d / "mnist_pruned.onnx", aux="prune"),
            "int8": tm.quantize_qdq(kept, d / "mnist_int8.onnx")}


def _reference(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    from edgehal.runtime.onnxruntime import OnnxRuntimeRunner

    with OnnxRuntimeRunner(path, providers=["cpu"], threads=1) as r:
        return r.infer({"input": x})


@pytest.mark.parametrize("aux,precision,atol", [("kept", "fp32", 1e-3), ("kept", "fp16", 5e-2),
                                                 ("pruned", "fp32", 1e-3), ("pruned", "fp16", 5e-2)])
@needs_tensorrt
def test_engine_matches_onnxruntime(onnx_models, tmp_path, aux, precision, atol):
    from edgehal.export.tensorrt_plan import EngineOptions

    engine = tmp_path / f"{aux}_{precision}.plan"
    trt_backend.build_engine(onnx_models[aux], engine, EngineOptions(precision=precision, max_batch=16))
    x = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    want = _reference(onnx_models[aux], x)
    with TensorRTRunner(engine) as runner:
        got = runner.infer({"input": x})
        assert list(got) == list(want) == list(runner.manifest.head_names)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], atol=atol, rtol=0)
        with pytest.raises(EdgehalError, match="outside the engine's profile"):
            runner.infer({"input": np.zeros((17, 1, 28, 28), np.float32)})
        import torch

        prepared = runner.prepare_device({"input": x})
        device_out = runner.infer_device(prepared)
        torch.cuda.synchronize()
        for name in want:
            np.testing.assert_allclose(device_out[name].cpu().numpy(), got[name], atol=1e-6, rtol=0)


@needs_tensorrt
def test_int8_engine_from_qdq(onnx_models, tmp_path):
    from edgehal.export.tensorrt_plan import EngineOptions

    engine = tmp_path / "int8.plan"
    trt_backend.build_engine(onnx_models["int8"], engine, EngineOptions(precision="int8", max_batch=8))
    x = np.random.default_rng(1).random((4, 1, 28, 28), dtype=np.float32)
    want = _reference(onnx_models["int8"], x)
    with TensorRTRunner(engine) as runner:
        got = runner.infer({"input": x})
    agree = np.mean(got["digit"].argmax(1) == want["digit"].argmax(1))
    assert agree >= 0.75, (got, want)


@needs_tensorrt
def test_foreign_sidecar_is_refused_before_deserialising(onnx_models, tmp_path):
    from edgehal.export.tensorrt_plan import EngineOptions

    engine = tmp_path / "m.plan"
    trt_backend.build_engine(onnx_models["kept"], engine, EngineOptions(max_batch=4))
    prov = read_sidecar(engine)
    raw = json.loads(sidecar_path(engine).read_text())
    raw["tensorrt_version"] = "9.0.0"
    sidecar_path(engine).write_text(json.dumps(raw))
    with pytest.raises(EdgehalError, match=r"built with TensorRT 9.0.0 .* rebuild the engine on the target"):
        TensorRTRunner(engine).activate()
    write_sidecar(engine, dataclasses.replace(prov))
    with TensorRTRunner(engine) as runner:
        assert runner.provenance.tensorrt_version == prov.tensorrt_version


@pytest.mark.parametrize("cell", ["rnn", "lstm", "peephole_lstm", "gru"])
@needs_tensorrt
def test_recurrent_engine_with_a_dynamic_sequence(tmp_path, cell):
    """Issue 8 on hardware: the native ONNX RNN/LSTM(+P)/GRU export of a trained row classifier builds with
    a profile over the sequence dimension and matches onnxruntime at several lengths."""
    from edgehal.config import config_from_dict
    from edgehal.export.onnx import ExportOptions, export_onnx
    from edgehal.export.tensorrt_plan import EngineOptions
    from edgehal.train import train

    cfg = config_from_dict({
        "name": f"rows_{cell}", "output_dir": str(tmp_path / "run"),
        "model": {"name": "rnn_classifier", "cell": cell, "hidden_size": 16, "bidirectional": cell != "rnn",
                  "aux": [{"case": "case1"}]},
        "data": {"dataset": "digits", "limit": 200},
        "train": {"epochs": 1, "batch_size": 50, "optimizer": "adamw", "lr": 0.005, "device": "cpu"},
    })
    ckpt = train(cfg, log=lambda _: None, progress=False)
    onnx_path = tmp_path / "rows.onnx"
    export_onnx(ckpt, onnx_path, options=ExportOptions(aux="keep"), log=lambda _: None)
    engine = tmp_path / "rows.plan"
    trt_backend.build_engine(onnx_path, engine, EngineOptions(max_batch=8, dims={"rows": (1, 8, 16)}))
    rng = np.random.default_rng(0)
    with TensorRTRunner(engine) as runner:
        for rows in (8, 3, 16):
            x = rng.integers(0, 17, (5, 1, rows, 8)).astype(np.float32)
            want = _reference(onnx_path, x)
            got = runner.infer({"input": x})
            for name in want:
                np.testing.assert_allclose(got[name], want[name], atol=1e-4, rtol=0)
        with pytest.raises(EdgehalError, match="outside the engine's profile"):
            runner.infer({"input": np.zeros((2, 1, 17, 8), np.float32)})
