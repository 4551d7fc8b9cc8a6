"""Triton's perf_analyzer against edgehal serve: HTTP, gRPC and system shared memory.

perf_analyzer is not a Python package: ``python benchmarks/perf_analyzer.py fetch`` (and libb64)
puts it in ``benchmarks/.perf_analyzer/``. Without it these tests skip, as CI does.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import tritonclient.http as httpclient

import edgehal

from .conftest import free_port

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import perf_analyzer  # noqa: E402

MODEL = "hal_mnist"


@pytest.fixture(scope="module")
def exe() -> Path:
    try:
        perf_analyzer.check()
    except SystemExit as exc:
        pytest.skip(f"perf_analyzer is not available here: {exc}")
    return perf_analyzer.binary()


@pytest.fixture(scope="module")
def server(model_path):
    with edgehal.serve([model_path], grpc_port=free_port(), threads=1, max_batch_size=8) as s:
        yield s


def _success_count(server) -> int:
    stats = httpclient.InferenceServerClient(url=server.address).get_inference_statistics(MODEL)
    return int(stats["model_stats"][0]["inference_stats"]["success"]["count"])


@pytest.mark.parametrize("protocol,shared_memory", [("http", "none"), ("grpc", "none"), ("http", "system"),
                                                    ("grpc", "system")])
def test_perf_analyzer_measures_the_server(exe, server, protocol, shared_memory, tmp_path):
    port = server.address.rsplit(":", 1)[1] if protocol == "http" else server.grpc_address.rsplit(":", 1)[1]
    report = tmp_path / "report.csv"
    before = _success_count(server)
    cmd = [str(exe), "-m", MODEL, "-u", f"127.0.0.1:{port}", "-i", protocol, "--concurrency-range", "2",
           "-p", "300", "--stability-percentage", "1000", "--max-trials", "3", "-f", str(report),
           "--shared-memory", shared_memory]
    if shared_memory == "system":
        cmd += ["--output-shared-memory-size", "64"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False,
                         env=perf_analyzer.environment())
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    # its clean-up unregisters every region, system and CUDA: both must succeed
    assert "Unable to unregister" not in out and "error" not in out.lower(), out
    with open(report, newline="") as f:
        row = next(csv.DictReader(f))
    assert float(row["Inferences/Second"]) > 0
    # it read the statistics extension, and the server counted at least what it measured
    assert "Server:" in out and "Inference count:" in out
    assert _success_count(server) - before >= int(float(row["Inferences/Second"]) * 0.3)
    client = httpclient.InferenceServerClient(url=server.address)
    assert client.get_system_shared_memory_status() == []
    assert client.is_server_ready()
