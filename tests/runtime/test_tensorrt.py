"""TensorRTRunner: loading, binding and ``execute_async_v3`` against a strict fake of TensorRT 10 and
11 on any machine (each fake test runs as both majors); real engines where TensorRT and a CUDA GPU are
present.

The fake (tests/fakes/fake_tensorrt.py) runs the runner's own
binding and execution code with host memory in the place of the GPU: inputs
are read from, and outputs written to, the addresses the runner binds, so a
wrong shape, address, name or order shows here. What TensorRT computes is
checked only by the tests at the end, on a GPU.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
import fake_tensorrt  # noqa: E402
import trt_test_models as tm  # noqa: E402

from edgehal.artifact import (  # noqa: E402
    engine_sidecar_path,
    read_engine_sidecar,
    write_engine_sidecar,
)
from edgehal.errors import EdgehalError  # noqa: E402
from edgehal.export.tensorrt import provenance  # noqa: E402
from edgehal.export.tensorrt.build import build_engine  # noqa: E402
from edgehal.export.tensorrt.plan import EngineOptions  # noqa: E402
from edgehal.export.tensorrt.profile import ProfileShape  # noqa: E402
from edgehal.export.tensorrt.provenance import (  # noqa: E402
    EngineProvenance,
)
from edgehal.runtime.tensorrt import TensorRTRunner, load_engine  # noqa: E402
from edgehal.tensors import TensorSpec  # noqa: E402


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


# -- any machine: no TensorRT ------------------------------------------------------


def _sidecar_only_engine(tmp_path: Path) -> Path:
    engine = tmp_path / "m.plan"
    engine.write_bytes(b"engine")
    from edgehal.fileio import sha256_file

    write_engine_sidecar(engine, EngineProvenance(
        tensorrt_version="10.7.0", gpu_name="NVIDIA A10", compute_capability="8.6", precision="fp16",
        profiles=(ProfileShape("input", (2, 1, 28, 28), (8, 1, 28, 28), (8, 1, 28, 28)),),
        inputs=(TensorSpec("input", "float32", (-1, 1, 28, 28)),),
        outputs=(TensorSpec("parity", "float32", (-1, 2)), TensorSpec("digit", "float32", (-1, 10))),
        source_onnx="m.onnx", source_onnx_sha256="a" * 64, engine_sha256=sha256_file(engine),
        metadata=tm.metadata(precision="fp16")))
    return engine


def test_activation_without_tensorrt_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    runner = TensorRTRunner(_sidecar_only_engine(tmp_path), device_index=0)
    with pytest.raises(EdgehalError, match=r"^TensorRT \| is not installed"):
        runner.activate()
    assert not runner.is_active


def test_missing_engine(tmp_path):
    with pytest.raises(EdgehalError, match="file not found"):
        TensorRTRunner(tmp_path / "nope.plan").activate()


def test_runner_says_where_it_computes_before_activation(tmp_path):
    runner = TensorRTRunner(_sidecar_only_engine(tmp_path), device_index=1)
    assert runner.device == "cuda:1" and runner.manifest is None and runner.precision == "fp16"  # from the sidecar


# -- any machine: the strict fake TensorRT ---------------------------------------------


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    """The tiny HAL CNN, kept (outputs digit, parity), and with its graph outputs reversed."""
    import onnx

    d = tmp_path_factory.mktemp("trt_fake")
    kept = tm.export_cnn(d / "mnist_kept.onnx")
    model = onnx.load(kept)
    reordered = list(reversed(model.graph.output))
    del model.graph.output[:]
    model.graph.output.extend(reordered)
    onnx.save(model, d / "mnist_reversed.onnx")
    return {"kept": kept, "reversed": d / "mnist_reversed.onnx"}


@pytest.fixture(params=fake_tensorrt.MAJORS, ids=lambda m: f"trt{m}")
def fake(monkeypatch, request):
    """The fake TensorRT 10, then 11."""
    return fake_tensorrt.install(monkeypatch, request.param)


def _major(fake) -> int:
    return int(fake.__version__.split(".")[0])


def _engine(fake, onnx_path: Path, tmp_path: Path, **options) -> Path:
    engine = tmp_path / f"{onnx_path.stem}.plan"
    build_engine(onnx_path, engine, EngineOptions(**options))
    return engine


def _expected(x: np.ndarray) -> dict[str, np.ndarray]:
    return fake_tensorrt.expected_outputs({"input": x}, {"digit": ((len(x), 10), "float32"),
                                                         "parity": ((len(x), 2), "float32")})


def test_infer_binds_inputs_and_outputs_and_runs_execute_async_v3(fake, onnx_files, tmp_path):
    engine = _engine(fake, onnx_files["kept"], tmp_path, max_batch=8)
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    with TensorRTRunner(engine) as runner:
        got = runner.infer({"input": x})
        assert list(got) == ["digit", "parity"]
        for name, want in _expected(x).items():
            np.testing.assert_allclose(got[name], want, rtol=1e-6)
        ones = runner.infer({"input": np.ones((2, 1, 28, 28), np.float32)}, outputs=["parity"])
        # every pixel of both samples is 1: 784 per sample, plus the element index, plus sum(b"parity")
        assert list(ones) == ["parity"]
        np.testing.assert_array_equal(ones["parity"], [[784 + 665, 785 + 665]] * 2)
        assert runner._context._runs == 2


def test_outputs_come_in_manifest_order_whatever_the_engine_order(fake, onnx_files, tmp_path):
    engine = _engine(fake, onnx_files["reversed"], tmp_path, max_batch=4)
    with TensorRTRunner(engine) as runner:
        assert [t.name for t in runner._loaded.outputs] == ["parity", "digit"]  # the engine's own order
        assert runner.output_names() == ["digit", "parity"]
        assert [s.name for s in runner.output_specs()] == ["digit", "parity"]
        x = np.random.default_rng(1).random((4, 1, 28, 28), dtype=np.float32)
        got = runner.infer({"input": x})
        assert list(got) == ["digit", "parity"]
        for name, want in _expected(x).items():
            np.testing.assert_allclose(got[name], want, rtol=1e-6)


def test_every_batch_inside_the_profile_binds_its_own_shapes(fake, onnx_files, tmp_path):
    engine = _engine(fake, onnx_files["kept"], tmp_path, min_batch=2, max_batch=8)
    rng = np.random.default_rng(2)
    with TensorRTRunner(engine) as runner:
        for batch in (2, 8, 5):
            x = rng.random((batch, 1, 28, 28), dtype=np.float32)
            got = runner.infer({"input": x})
            assert got["digit"].shape == (batch, 10)
            np.testing.assert_allclose(got["digit"], _expected(x)["digit"], rtol=1e-6)


def test_batch_outside_the_profile_never_reaches_tensorrt(fake, onnx_files, tmp_path):
    """The runner's own check refuses the batch; execute_async_v3 is never called."""
    engine = _engine(fake, onnx_files["kept"], tmp_path, min_batch=2, max_batch=8)
    with TensorRTRunner(engine) as runner:
        for batch in (1, 9, 64):
            with pytest.raises(EdgehalError, match=rf"batch {batch} is outside the engine's profile \(batch 2..8\)"):
                runner.infer({"input": np.zeros((batch, 1, 28, 28), np.float32)})
        assert runner._context._runs == 0
        assert runner.max_batch == 8
        # Unchecked, the shape still cannot pass: set_input_shape refuses it, as TensorRT's does.
        with pytest.raises(EdgehalError, match=r"input 'input' \| shape \(9, 1, 28, 28\) is outside the engine's "
                                               "profile"):
            runner.infer({"input": np.zeros((9, 1, 28, 28), np.float32)}, check=False)
        assert runner._context._runs == 0


def test_metadata_carries_the_engine_precision(fake, onnx_files, tmp_path):
    """Parity picks tolerances by precision: an fp16 engine from an fp32 ONNX is fp16."""
    engine = _engine(fake, onnx_files["kept"], tmp_path, precision="fp16", max_batch=4)
    with TensorRTRunner(engine) as runner:
        assert runner.precision == "fp16"
        assert runner.metadata.precision == "fp16"
        assert runner.metadata.preprocessing.layout == "NCHW"
        assert runner.manifest.head_names == ("digit", "parity")


def test_device_timer_runs_the_bound_engine_alone(fake, onnx_files, tmp_path):
    engine = _engine(fake, onnx_files["kept"], tmp_path, max_batch=8)
    rng = np.random.default_rng(3)
    x = rng.random((4, 1, 28, 28), dtype=np.float32)
    with TensorRTRunner(engine) as runner:
        timed = runner.device_timer({"input": x})
        assert isinstance(timed(), int)
        runner.infer({"input": rng.random((2, 1, 28, 28), dtype=np.float32)})  # binds buffers of its own
        timed()
        for name, want in _expected(x).items():  # the timer bound its buffers again: still x's outputs
            np.testing.assert_allclose(timed.buffers[name].numpy(), want, rtol=1e-6)
        assert runner._context._runs == 3
        with pytest.raises(EdgehalError, match="batch 9 is outside the engine's profile"):
            runner.device_timer({"input": np.zeros((9, 1, 28, 28), np.float32)})
        with pytest.raises(EdgehalError, match="'logits' | is not an output"):
            runner.device_timer({"input": x}, outputs=["logits"])


def test_load_checks_the_sidecar_before_deserialising(fake, onnx_files, tmp_path, monkeypatch):
    engine = _engine(fake, onnx_files["kept"], tmp_path, precision="fp16", max_batch=8)
    loaded = load_engine(engine)
    assert fake.scenario.deserialized == 1
    assert [t.name for t in loaded.inputs] == ["input"]
    assert [(t.name, t.dtype, t.shape) for t in loaded.outputs] == [("digit", "float32", (-1, 10)),
                                                                     ("parity", "float32", (-1, 2))]
    assert loaded.warnings == ()

    built, other = fake.__version__, f"{_major(fake)}.99.0.1"
    monkeypatch.setattr(fake, "__version__", other)
    monkeypatch.setattr(provenance, "_gpu_info", lambda index: ("NVIDIA L4", "8.9"))
    with pytest.raises(EdgehalError) as err:
        load_engine(engine)
    assert str(err.value) == (
        f"TensorRT engine mnist_kept.plan | built with TensorRT {built} on NVIDIA A10 (sm_86); this machine has "
        f"TensorRT {other} on NVIDIA L4 (sm_89): TensorRT {built} != {other}; compute capability "
        "sm_86 != sm_89. Note: rebuild the engine on the target with `edgehal build-engine mnist_kept.onnx "
        "-o mnist_kept.plan --precision fp16 --min-batch 1 --opt-batch 8 --max-batch 8`")
    assert fake.scenario.deserialized == 1  # TensorRT never saw the foreign engine


@pytest.mark.parametrize("old_sidecar", [False, True], ids=["sidecar", "old-sidecar"])
def test_an_engine_of_the_other_major_is_refused_with_the_rebuild_command(fake, onnx_files, tmp_path,
                                                                        monkeypatch, old_sidecar):
    engine = _engine(fake, onnx_files["kept"], tmp_path, precision="fp16", max_batch=8)
    built, major = fake.__version__, _major(fake)
    if old_sidecar:  # written before the major was recorded: the version string says it
        raw = json.loads(engine_sidecar_path(engine).read_text())
        del raw["tensorrt_major"], raw["strongly_typed"], raw["fp16_onnx"], raw["fp16_onnx_sha256"]
        engine_sidecar_path(engine).write_text(json.dumps(raw))
        assert read_engine_sidecar(engine).tensorrt_major == major
    other = 11 if major == 10 else 10
    for name, value in fake.configure(other).items():
        monkeypatch.setattr(fake, name, value)
    with pytest.raises(EdgehalError) as err:
        TensorRTRunner(engine).activate()
    assert str(err.value) == (
        f"TensorRT engine mnist_kept.plan | was built with TensorRT {built} (major {major}); this machine has "
        f"TensorRT {fake.__version__} (major {other}), and engines never load across TensorRT majors. "
        "Note: rebuild the engine here with `edgehal build-engine mnist_kept.onnx -o mnist_kept.plan "
        "--precision fp16 --min-batch 1 --opt-batch 8 --max-batch 8`")
    assert fake.scenario.deserialized == 0  # refused from the sidecar, before TensorRT saw it


def test_an_fp16_engine_built_from_an_fp16_onnx_runs(fake, onnx_files, tmp_path):
    fp16 = tm.convert_fp16(onnx_files["kept"], tmp_path / "mnist_fp16.onnx")
    engine = _engine(fake, fp16, tmp_path, precision="fp16", max_batch=4)
    x = np.random.default_rng(4).random((2, 1, 28, 28), dtype=np.float32)
    with TensorRTRunner(engine) as runner:
        assert runner.precision == "fp16" and runner.provenance.strongly_typed
        got = runner.infer({"input": x})
        for name, want in _expected(x).items():
            np.testing.assert_allclose(got[name], want, rtol=1e-6)


def test_another_l4t_release_is_a_warning_at_activation(fake, onnx_files, tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "_jetson_info", lambda: ("36.3.0", "6.0"))
    engine = _engine(fake, onnx_files["kept"], tmp_path, precision="fp16", max_batch=4)
    assert read_engine_sidecar(engine).l4t_release == "36.3.0"
    monkeypatch.setattr(provenance, "_jetson_info", lambda: ("36.4.0", "6.1"))
    with pytest.warns(UserWarning, match="was built on L4T 36.3.0; this Jetson runs L4T 36.4.0"):
        TensorRTRunner(engine).activate()
    monkeypatch.setattr(provenance, "_jetson_info", lambda: ("36.3.0", "6.0"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TensorRTRunner(engine).activate()


def test_version_compatible_engine_allows_host_code(fake, onnx_files, tmp_path, monkeypatch):
    engine = _engine(fake, onnx_files["kept"], tmp_path, version_compatible=True)
    seen = {}
    original = fake.Runtime.deserialize_cuda_engine

    def spy(self, data):
        seen["host_code"] = self.engine_host_code_allowed
        return original(self, data)

    monkeypatch.setattr(fake.Runtime, "deserialize_cuda_engine", spy)
    monkeypatch.setattr(fake, "__version__", f"{_major(fake)}.99.0")
    load_engine(engine)
    assert seen == {"host_code": True}


def test_tampered_engine_is_refused(fake, onnx_files, tmp_path):
    engine = _engine(fake, onnx_files["kept"], tmp_path)
    engine.write_bytes(engine.read_bytes() + b" ")
    with pytest.raises(EdgehalError, match="does not match its sidecar"):
        load_engine(engine)


def test_bytes_tensorrt_cannot_deserialise_are_one_line(fake, onnx_files, tmp_path):
    from edgehal.fileio import sha256_file

    engine = _engine(fake, onnx_files["kept"], tmp_path)
    engine.write_bytes(b"not an engine")
    write_engine_sidecar(engine, dataclasses.replace(read_engine_sidecar(engine), engine_sha256=sha256_file(engine)))
    with pytest.raises(EdgehalError, match=r"TensorRT could not load it \(IRuntime::deserializeCudaEngine.*"
                                           r"rebuild the engine on the target with `edgehal build-engine"):
        TensorRTRunner(engine).activate()


def test_an_engine_whose_io_the_runner_cannot_copy_is_refused_at_activation(fake, tmp_path):
    """The engine's I/O types come from the one dtype table; BF16 has a numpy type (ml_dtypes), not a torch copy."""
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(n, TensorProto.BFLOAT16, ["N", 4]) for n in ("x", "y")]
    model = tm.graph_model(tmp_path / "bf16.onnx", [helper.make_node("Identity", ["x"], ["y"])], io[:1], io[1:],
                           opset=21)
    engine = _engine(fake, model, tmp_path, max_batch=4)
    runner = TensorRTRunner(engine)
    with pytest.raises(EdgehalError, match=r"^TensorRT engine bf16.plan: input 'x' \| is BF16, which the runner "
                                           r"cannot copy between numpy and the GPU"):
        runner.activate()
    assert not runner.is_active


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
    engine = tmp_path / f"{aux}_{precision}.plan"
    build_engine(onnx_models[aux], engine, EngineOptions(precision=precision, max_batch=16))
    x = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    want = _reference(onnx_models[aux], x)
    with TensorRTRunner(engine) as runner:
        got = runner.infer({"input": x})
        assert list(got) == list(want) == list(runner.manifest.head_names)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], atol=atol, rtol=0)
        with pytest.raises(EdgehalError, match="outside the engine's profile"):
            runner.infer({"input": np.zeros((17, 1, 28, 28), np.float32)})
        timed = runner.device_timer({"input": x})
        assert timed() > 0
        for name in want:
            np.testing.assert_allclose(timed.buffers[name].cpu().numpy(), got[name], atol=1e-6, rtol=0)


@needs_tensorrt
def test_int8_engine_from_qdq(onnx_models, tmp_path):
    engine = tmp_path / "int8.plan"
    build_engine(onnx_models["int8"], engine, EngineOptions(precision="int8", max_batch=8))
    x = np.random.default_rng(1).random((4, 1, 28, 28), dtype=np.float32)
    want = _reference(onnx_models["int8"], x)
    with TensorRTRunner(engine) as runner:
        got = runner.infer({"input": x})
    agree = np.mean(got["digit"].argmax(1) == want["digit"].argmax(1))
    assert agree >= 0.75, (got, want)


@needs_tensorrt
def test_foreign_sidecar_is_refused_before_deserialising(onnx_models, tmp_path):
    engine = tmp_path / "m.plan"
    build_engine(onnx_models["kept"], engine, EngineOptions(max_batch=4))
    prov = read_engine_sidecar(engine)
    raw = json.loads(engine_sidecar_path(engine).read_text())
    raw["tensorrt_version"] = "9.0.0"
    engine_sidecar_path(engine).write_text(json.dumps(raw))
    with pytest.raises(EdgehalError, match=r"built with TensorRT 9.0.0 .*rebuild the engine here"):
        TensorRTRunner(engine).activate()
    write_engine_sidecar(engine, dataclasses.replace(prov))
    with TensorRTRunner(engine) as runner:
        assert runner.provenance.tensorrt_version == prov.tensorrt_version


@pytest.mark.parametrize("cell", ["rnn", "lstm", "peephole_lstm", "gru"])
@needs_tensorrt
def test_recurrent_engine_with_a_dynamic_sequence(tmp_path, cell):
    """On hardware: the native ONNX RNN/LSTM(+P)/GRU export of a trained row classifier builds with
    a profile over the sequence dimension and matches onnxruntime at several lengths."""
    from edgehal.config import config_from_dict
    from edgehal.export.onnx import ExportOptions, export_onnx
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
    build_engine(onnx_path, engine, EngineOptions(max_batch=8, dims={"rows": (1, 8, 16)}))
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
