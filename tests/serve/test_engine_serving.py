"""`edgehal serve` on TensorRT engines: the Triton repository `edgehal export-triton` writes from a .plan.

The engine is built by `edgehal build-engine` against the strict fake TensorRT
(tests/fakes/fake_tensorrt.py) on a pretend A10 with host memory for device
memory, so this runs on any machine: what it proves is that serving goes
through the TensorRT runner (binding and execute_async_v3 included), reads the
repository `export-triton` wrote, describes the model from the engine and its
sidecar, and refuses an engine that does not match its config. What TensorRT
computes is tested on a GPU (tests/runtime/test_tensorrt.py).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
import fake_tensorrt  # noqa: E402
import trt_test_models as tm  # noqa: E402

from edgehal.cli import main  # noqa: E402
from edgehal.errors import EdgehalError  # noqa: E402
from edgehal.serve.repository import ModelOptions, discover, load  # noqa: E402

from .conftest import serve_in_process  # noqa: E402

MODEL = "tiny"


@pytest.fixture(params=fake_tensorrt.MAJORS, ids=lambda m: f"trt{m}")
def fake_trt(monkeypatch, request):
    """The fake TensorRT 10, then 11, on an 'NVIDIA A10' (sm_86), not a Jetson, with host memory as
    device memory."""
    return fake_tensorrt.install(monkeypatch, request.param)


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def engines(fake_trt, tmp_path) -> dict[str, Path]:
    """fp16 engines (batch 1..8) of the tiny HAL CNN, every head kept and the aux head pruned."""
    out = {}
    for aux in ("keep", "prune"):
        onnx_path = tm.export_cnn(tmp_path / f"{aux}.onnx", aux=aux)
        out[aux] = tmp_path / f"{aux}.plan"
        cli("build-engine", str(onnx_path), "-o", str(out[aux]), "--precision", "fp16", "--max-batch", "8")
    return out


@pytest.fixture
def repository(engines, tmp_path) -> Path:
    """The repository `edgehal export-triton` writes for the kept engine."""
    repo = tmp_path / "repo"
    cli("export-triton", str(engines["keep"]), "--repository", str(repo), "--name", MODEL)
    return repo


def expected(x: np.ndarray) -> dict[str, np.ndarray]:
    """What the fake engine computes for ``x``."""
    return fake_tensorrt.expected_outputs({"input": x}, {"digit": ((len(x), 10), "float32"),
                                                         "parity": ((len(x), 2), "float32")})


def test_export_triton_repository_of_a_plan_is_served(repository):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    (source,) = discover([repository])
    assert source.platform.name == "tensorrt_plan" and source.path.name == "model.plan"
    models = load([source], ModelOptions())
    model = models[0]
    assert model.runner.name == "tensorrt" and model.runner.device == "cuda:0"
    assert model.batching.max_batch_size == 8 and model.batching.dynamic
    with serve_in_process(models) as url:
        client = httpclient.InferenceServerClient(url=url)
        try:
            assert client.is_server_ready() and client.is_model_ready(MODEL)
            meta = client.get_model_metadata(MODEL)
            assert meta["platform"] == "tensorrt_plan" and meta["versions"] == ["1"]
            assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
            assert meta["outputs"] == [{"name": "digit", "datatype": "FP32", "shape": [-1, 10]},
                                       {"name": "parity", "datatype": "FP32", "shape": [-1, 2]}]
            params = meta["parameters"]
            assert params["edgehal.precision"] == "fp16"  # the engine's, not its source ONNX's fp32
            assert [h["name"] for h in json.loads(params["edgehal.manifest"])["heads"]] == ["digit", "parity"]
            assert json.loads(params["edgehal.preprocessing"])["layout"] == "NCHW"
            config = client.get_model_config(MODEL)
            assert (config["platform"], config["backend"], config["max_batch_size"]) == (
                "tensorrt_plan", "tensorrt", 8)
            assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [1, 28, 28]}]
            assert [(o["name"], o["data_type"]) for o in config["output"]] == [("digit", "TYPE_FP32"),
                                                                               ("parity", "TYPE_FP32")]

            x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
            for binary in (True, False):
                inp = httpclient.InferInput("input", list(x.shape), "FP32")
                inp.set_data_from_numpy(x, binary_data=binary)
                result = client.infer(MODEL, [inp])
                for name, want in expected(x).items():
                    np.testing.assert_allclose(result.as_numpy(name), want, rtol=1e-6)
            only = client.infer(MODEL, [inp], outputs=[httpclient.InferRequestedOutput("parity")])
            assert only.as_numpy("digit") is None
            np.testing.assert_allclose(only.as_numpy("parity"), expected(x)["parity"], rtol=1e-6)

            too_big = np.zeros((9, 1, 28, 28), np.float32)
            inp = httpclient.InferInput("input", list(too_big.shape), "FP32")
            inp.set_data_from_numpy(too_big)
            with pytest.raises(InferenceServerException, match=r"batch size 9 is out of range. Note: 1 to 8 "
                                                r"\(the model's max_batch_size\)"):
                client.infer(MODEL, [inp])
        finally:
            client.close()


def _edit_config(repository: Path, old: str, new: str) -> None:
    path = repository / MODEL / "config.pbtxt"
    text = path.read_text()
    assert re.search(old, text), text
    path.write_text(re.sub(old, new, text, count=1))


def _load_error(repository: Path) -> str:
    with pytest.raises(EdgehalError) as info:
        load(discover([repository]), ModelOptions())
    return str(info.value)


def test_an_engine_without_an_output_of_its_config_is_refused(repository, engines):
    """An engine rebuilt with the aux head pruned, copied over the repository's without re-exporting."""
    version = repository / MODEL / "1"
    shutil.copyfile(engines["prune"], version / "model.plan")
    shutil.copyfile(engines["prune"].with_name("prune.plan.json"), version / "model.plan.json")
    assert _load_error(repository) == (
        f"model {MODEL!r} ({version / 'model.plan'}) | config.pbtxt lists output 'parity', which the engine "
        "lacks. Note: outputs ['digit']")


@pytest.mark.parametrize("old,new,message", [
    (r"dims: \[ 1, 28, 28 \]", "dims: [ 1, 32, 32 ]",
     "config.pbtxt gives input 'input' dims [1, 32, 32]. Note: the engine's [1, 28, 28] (without the batch "
     "dimension when max_batch_size > 0)"),
    (r"data_type: TYPE_FP32", "data_type: TYPE_FP16",
     "config.pbtxt gives input 'input' type TYPE_FP16. Note: the engine's TYPE_FP32"),
    (r"max_batch_size: 8", "max_batch_size: 32",
     "config.pbtxt sets max_batch_size 32 but the engine's profile takes batches up to 8. Note: "
     "max_batch_size 8 or less, or an engine built with `edgehal build-engine --max-batch 32`"),
    (r'name: "input"', 'name: "image"',
     "config.pbtxt lists input 'image', which the engine lacks. Note: inputs ['input']"),
])
def test_a_config_that_disagrees_with_its_engine_is_refused(repository, old, new, message):
    _edit_config(repository, old, new)
    path = repository / MODEL / "1" / "model.plan"
    assert _load_error(repository) == f"model {MODEL!r} ({path}) | {message}"


def test_a_plan_file_is_served_with_its_profile_as_the_batch_limit(engines):
    (model,) = load(discover([engines["keep"]]), ModelOptions(max_batch_size=64))
    try:
        assert model.name == "keep" and model.platform.name == "tensorrt_plan"
        assert model.batching.max_batch_size == 8  # the profile's, not the command line's 64
        assert model.config_json()["max_batch_size"] == 8
    finally:
        model.close()

