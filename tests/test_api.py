"""The public Python API (edgehal.api, re-exported from edgehal): every function on real files,
the CLI giving the same results, the in-process server, and a light ``import edgehal``."""

from __future__ import annotations

import inspect
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import edgehal
from edgehal import api
from edgehal.cli import main
from edgehal.errors import EdgehalError
from edgehal.manifest import HeadManifest

from .serve.conftest import build_tiny_hal_onnx

REPO = Path(__file__).resolve().parent.parent
# The tiny ONNX fixture uses torch's TorchScript exporter (dynamo=False), which warns that it is legacy.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    """A tiny HAL-shaped ONNX model (main head ``logits``, aux head ``aux_case1``) with edgehal metadata."""
    return build_tiny_hal_onnx(tmp_path_factory.mktemp("api") / "hal.onnx")


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "calib.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (16, 1, 28, 28)).astype(np.float32))
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


# ---------------------------------------------------------------------------
# The package: lazy, light, listed


def test_import_edgehal_loads_no_heavy_library():
    code = ("import sys, edgehal; edgehal.__all__; dir(edgehal); edgehal.HeadManifest; edgehal.Server; "
            "print([m for m in ('torch', 'onnx', 'onnxruntime', 'aiohttp', 'numpy', 'edgehal.api') "
            "if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    # edgehal.api is loaded by the attribute accesses, and is light itself.
    assert proc.stdout.strip() == "['edgehal.api']"


def test_import_edgehal_alone_does_not_load_the_api():
    code = "import sys, edgehal; print('edgehal.api' in sys.modules, 'edgehal.manifest' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.stdout.strip() == "False False", proc.stderr


def test_every_public_name_resolves_and_is_listed():
    assert set(edgehal.__all__) == {"EdgehalError", "Head", "HeadManifest", "Preprocessing", "QuantizeReport",
                                    "Server", "__version__", "bench", "export", "load", "parity", "quantize",
                                    "serve"}
    for name in edgehal.__all__:
        assert getattr(edgehal, name) is not None
        assert name in dir(edgehal)
    assert edgehal.HeadManifest is HeadManifest and edgehal.load is api.load and edgehal.Server is api.Server
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        edgehal.nothing_here  # noqa: B018


@pytest.mark.parametrize("name", ["export", "bench", "parity", "serve"])
def test_a_function_named_like_a_subpackage_calls_the_api_and_stays_the_subpackage(name, tmp_path):
    import importlib

    sub = importlib.import_module(f"edgehal.{name}")  # the subpackage, loaded by the import system
    assert getattr(edgehal, name) is sub and callable(sub)
    assert inspect.signature(getattr(edgehal, name)) == inspect.signature(getattr(api, name))
    # Calling it calls the API function: its own error for a path that does not exist.
    with pytest.raises(EdgehalError, match="not found|no model"):
        if name == "export":
            edgehal.export(tmp_path / "missing.pt", tmp_path / "out.onnx")
        elif name == "bench":
            edgehal.bench([tmp_path / "missing.onnx"])
        elif name == "parity":
            edgehal.parity(tmp_path / "missing.pt", [tmp_path / "missing.onnx"])
        else:
            edgehal.serve([tmp_path / "missing.onnx"])
    import edgehal.export.onnx as onnx_module  # attribute chains through the subpackage keep working

    assert edgehal.export.onnx is onnx_module


def test_py_typed_ships_with_the_package():
    import tomllib

    assert (REPO / "edgehal" / "py.typed").is_file()
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["edgehal"]


# ---------------------------------------------------------------------------
# export


def test_export_refuses_what_is_not_a_model(tmp_path):
    with pytest.raises(EdgehalError, match=r"model \| is a list. Note: a torch.nn.Module"):
        api.export([1, 2], tmp_path / "out.onnx")
    with pytest.raises(EdgehalError, match="file not found"):
        api.export(tmp_path / "missing.pt", tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_export_a_checkpoint_refuses_a_manifest(digits_checkpoint, tmp_path):
    with pytest.raises(EdgehalError, match="manifest | cannot be given with the edgehal checkpoint"):
        api.export(digits_checkpoint, tmp_path / "out.onnx", manifest=HeadManifest.classifier(
            class_names=list("0123456789"), input_shape=(1, 8, 8)))


def test_export_of_a_module_needs_example_inputs_and_a_manifest(tmp_path):
    import torch

    module = torch.nn.Linear(4, 3)
    with pytest.raises(EdgehalError, match="was given no example_inputs"):
        api.export(module, tmp_path / "out.onnx")
    with pytest.raises(EdgehalError, match="has no head manifest. Note: manifest=HeadManifest.classifier"):
        api.export(module, tmp_path / "out.onnx", example_inputs=torch.zeros(2, 4))
    with pytest.raises(EdgehalError, match="data_dir | cannot be given"):
        api.export(module, tmp_path / "out.onnx", example_inputs=torch.zeros(2, 4), data_dir=tmp_path,
                   manifest=HeadManifest.classifier(class_names=["a", "b", "c"], input_shape=(4,)))
    assert not (tmp_path / "out.onnx").exists()


class _TwoHeads:
    """A user's module returning its main and auxiliary logits as a tuple (manifest head order)."""

    @staticmethod
    def build():
        import torch
        from torch import nn

        class TwoHeads(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.body = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU())
                self.aux = nn.Linear(8, 2)
                self.main = nn.Linear(8 + 2, 4)

            def forward(self, x):
                h = self.body(x)
                a = self.aux(h)
                return self.main(torch.cat([h, a], dim=1)), a

        torch.manual_seed(0)
        return TwoHeads().eval()


MANIFEST = dict(class_names=["cat", "dog", "car", "truck"],
                superclasses={"aux_kind": {"animal": ["cat", "dog"], "vehicle": ["car", "truck"]}},
                input_shape=(3, 2, 2))


def test_export_a_module_kept_and_pruned(tmp_path):
    import onnxruntime as ort
    import torch

    module = _TwoHeads.build()
    x = np.random.default_rng(0).standard_normal((8, 3, 2, 2)).astype(np.float32)
    manifest = HeadManifest.classifier(**MANIFEST)
    kept = api.export(module, tmp_path / "kept.onnx", example_inputs=x, manifest=manifest, log=quiet)
    pruned = api.export(module, tmp_path / "pruned.onnx", example_inputs=x, manifest=manifest, aux="prune",
                        log=quiet)
    assert kept.outputs == ["logits", "aux_kind"] and pruned.outputs == ["logits"]
    assert api.load(tmp_path / "pruned.onnx").manifest.head_names == ("logits",)
    assert api.load(tmp_path / "kept.onnx").manifest == manifest
    session = ort.InferenceSession(str(tmp_path / "kept.onnx"), providers=["CPUExecutionProvider"])
    logits, aux = session.run(["logits", "aux_kind"], {"input": x})
    with torch.no_grad():
        want_logits, want_aux = module(torch.from_numpy(x))
    np.testing.assert_allclose(logits, want_logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(aux, want_aux.numpy(), atol=1e-4)


def test_export_a_torchscript_file_and_refuse_a_state_dict(tmp_path):
    import torch

    module = _TwoHeads.build()
    x = np.random.default_rng(0).standard_normal((8, 3, 2, 2)).astype(np.float32)
    scripted = tmp_path / "two_heads.pt"
    with warnings.catch_warnings():  # the user's own trace: torch.jit is deprecated, users still have its files
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.trace(module, torch.from_numpy(x)), str(scripted))
    manifest = HeadManifest.classifier(**MANIFEST)
    with pytest.raises(EdgehalError, match="is a TorchScript archive .*not an edgehal checkpoint.*--manifest"):
        api.export(scripted, tmp_path / "ts.onnx", example_inputs=x)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        report = api.export(scripted, tmp_path / "ts.onnx", example_inputs=x, manifest=manifest, log=quiet)
    # the legacy exporter and edgehal's own trace of the archive are edgehal's business: their
    # deprecation notices are filtered by message, nothing else is
    assert not [w for w in seen if issubclass(w.category, (DeprecationWarning, FutureWarning))
                and "torch" in str(w.filename)], [str(w.message) for w in seen]
    assert report.outputs == ["logits", "aux_kind"]
    # a shape in place of real inputs: the check runs on random ones, and the export says so
    lines = []
    api.export(scripted, tmp_path / "ts_random.onnx", input_shape=(3, 2, 2), manifest=manifest, log=lines.append)
    assert (tmp_path / "ts_random.onnx").is_file() and any("random" in line for line in lines)
    with pytest.raises(EdgehalError, match="input_shape"):
        api.export(module, tmp_path / "m.onnx", input_shape=(3, 2, 2), manifest=manifest, example_inputs=x)
    from edgehal.fileio import sha256_file

    assert api.load(tmp_path / "ts.onnx").source_sha256 == sha256_file(scripted)
    weights = tmp_path / "weights.pt"
    torch.save(module.state_dict(), weights)
    with pytest.raises(EdgehalError, match="weights but no architecture"):
        api.export(weights, tmp_path / "sd.onnx", example_inputs=x, manifest=manifest, log=quiet)
    assert not (tmp_path / "sd.onnx").exists()


def test_export_a_checkpoint_matches_edgehal_export(digits_checkpoint, tmp_path):
    report = api.export(digits_checkpoint, tmp_path / "api.onnx", aux="prune", check_samples=32, log=quiet)
    result = CliRunner().invoke(main, ["export", str(digits_checkpoint), "-o", str(tmp_path / "cli.onnx"),
                                       "--aux", "prune", "--check-samples", "32"])
    assert result.exit_code == 0, result.output
    assert report.outputs == ["logits"]
    assert api.load(tmp_path / "api.onnx").metadata == api.load(tmp_path / "cli.onnx").metadata


# ---------------------------------------------------------------------------
# quantize, load


def test_quantize_returns_its_report_and_writes_what_the_cli_writes(tiny_onnx, calib, tmp_path):
    report = api.quantize(tiny_onnx, tmp_path / "api.onnx", calib_data=calib, calib_samples=16, log=quiet)
    assert isinstance(report, api.QuantizeReport)
    assert report.path == tmp_path / "api.onnx" and report.qdq_nodes > 0 and report.samples == 16
    assert report.method == "minmax" and report.per_channel is True
    assert report.bytes == (tmp_path / "api.onnx").stat().st_size
    result = CliRunner().invoke(main, ["quantize", str(tiny_onnx), "-o", str(tmp_path / "cli.onnx"),
                                       "--calib-data", str(calib), "--calib-samples", "16"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "api.onnx").read_bytes() == (tmp_path / "cli.onnx").read_bytes()
    assert api.load(tmp_path / "api.onnx").precision == "int8"


def test_quantize_refuses_a_bad_method(tiny_onnx, calib, tmp_path):
    with pytest.raises(EdgehalError, match="'nearest' is unknown"):
        api.quantize(tiny_onnx, tmp_path / "q.onnx", calib_data=calib, method="nearest", log=quiet)
    assert not (tmp_path / "q.onnx").exists()


def test_load_reads_the_metadata_without_running(tiny_onnx, tmp_path):
    artifact = api.load(tiny_onnx)
    assert artifact.kind == "onnx" and artifact.precision == "fp32" and artifact.aux == "keep"
    assert artifact.manifest.head_names == ("logits", "aux_case1")
    with pytest.raises(EdgehalError, match="has an unknown type .txt"):
        api.load(tmp_path / "model.txt")


# ---------------------------------------------------------------------------
# bench

FAST_BENCH = dict(warmup_runs=0, warmup_seconds=0.0, min_runs=4, min_seconds=0.0, windows=2, max_windows=2)


def test_bench_returns_typed_results_like_the_cli(tiny_onnx, tmp_path):
    report = api.bench(tiny_onnx, backends="ort-cpu", batch_sizes=(1, 2), threads=1, progress=False,
                       max_preemptions_per_s=None, **FAST_BENCH)
    got = [(r.artifact.name, r.backend, r.batch_size, r.mode) for r in report.results]
    assert got == [("hal.onnx", "ort-cpu", 1, "e2e"), ("hal.onnx", "ort-cpu", 2, "e2e")]
    assert all(r.stats.runs >= 4 and r.stats.median_ms > 0 for r in report.results)
    result = CliRunner().invoke(main, ["bench", str(tiny_onnx), "--backend", "ort-cpu", "--batch-sizes", "1,2",
                                       "--threads", "1", "--warmup-runs", "0", "--warmup-seconds", "0",
                                       "--min-runs", "4", "--min-seconds", "0", "--windows", "2",
                                       "--max-windows", "2", "--max-preemptions", "0", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "bench.json").read_text())
    assert written["options"] == report.options.to_dict()
    assert [(r["artifact"]["name"], r["backend"], r["batch_size"], r["mode"]) for r in written["results"]] == got


def test_bench_refuses_bad_options_before_any_work(tiny_onnx):
    with pytest.raises(EdgehalError, match="--windows | 1 is not allowed"):
        api.bench([tiny_onnx], windows=1)
    with pytest.raises(EdgehalError, match="backend 'onnx' | is not a backend"):
        api.bench([tiny_onnx], backends=["onnx"])


# ---------------------------------------------------------------------------
# parity


@pytest.fixture(scope="module")
def digits_onnx(digits_checkpoint, tmp_path_factory) -> Path:
    from edgehal.export.onnx import ExportOptions, export_onnx

    path = tmp_path_factory.mktemp("digits_api") / "digits.onnx"
    export_onnx(digits_checkpoint, path, options=ExportOptions(aux="keep", check_samples=32), log=quiet)
    return path


def test_parity_against_a_checkpoint_and_its_saved_run(digits_checkpoint, digits_onnx, tmp_path):
    report = api.parity(digits_checkpoint, [digits_onnx], split="val", save_run=tmp_path / "run", log=quiet)
    assert report and report.artifacts[0].artifact == str(digits_onnx)
    assert {h.head for h in report.artifacts[0].heads} == {"logits", "aux_case1"}
    again = api.parity(tmp_path / "run", digits_onnx, log=quiet)
    assert again and again.samples == report.samples and again.split == "val"
    with pytest.raises(EdgehalError, match="data | cannot be given"):
        api.parity(digits_checkpoint, [digits_onnx], data=tmp_path)


# ---------------------------------------------------------------------------
# serve


def _listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port: a server's own bind (SO_REUSEADDR) then fails."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return True
    return False


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


def test_serve_answers_ready_and_inference_then_stop_frees_the_port(tiny_onnx):
    import onnxruntime as ort
    import tritonclient.http as httpclient

    before = _threads()
    server = api.serve([tiny_onnx], max_batch_size=8, threads=1)
    try:
        assert server.url == f"http://127.0.0.1:{server.port}" and server.port > 0
        assert server.models == ("hal",) and server.running
        with urllib.request.urlopen(server.url + "/v2/health/ready", timeout=10) as resp:
            assert resp.status == 200
        x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
        client = httpclient.InferenceServerClient(url=server.address, network_timeout=30)
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer("hal", [inp], outputs=[httpclient.InferRequestedOutput("aux_case1")])
        client.close()
        assert result.as_numpy("logits") is None  # only the output asked for
        session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(result.as_numpy("aux_case1"), session.run(["aux_case1"], {"input": x})[0],
                                   atol=1e-5)
        assert _listening(server.port)
    finally:
        server.stop()
    assert not server.running and not _listening(server.port)
    server.stop()  # idempotent
    assert _threads() == before
    # The freed port serves again.
    with api.serve(tiny_onnx, port=server.port, threads=1) as again:
        assert again.port == server.port
        with urllib.request.urlopen(again.url + "/v2/health/ready", timeout=10) as resp:
            assert resp.status == 200
    assert not _listening(server.port) and _threads() == before


def test_serve_errors_surface_in_the_callers_thread_and_start_nothing(tiny_onnx, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    before = _threads()
    with pytest.raises(EdgehalError, match=rf"ONNX model {bad} \| onnxruntime cannot load it"):
        api.serve([bad])
    with pytest.raises(EdgehalError, match="file not found"):
        api.serve([tmp_path / "missing.onnx"])
    assert _threads() == before
    with api.serve([tiny_onnx], threads=1) as server:
        during = _threads()
        # The port is taken: the bind error comes from the server thread, which is then gone.
        with pytest.raises(EdgehalError, match=f"address 127.0.0.1:{server.port} | cannot be bound"):
            api.serve([tiny_onnx], port=server.port, threads=1)
        assert _threads() == during
    assert _threads() == before
