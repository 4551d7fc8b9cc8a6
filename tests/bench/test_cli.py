"""``edgehal bench`` on the command line: option errors, help, and the files it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgehal.bench.report import JSON_NAME, fmt_ms
from edgehal.cli import main

# The ONNX fixtures use torch's TorchScript exporter (dynamo=False), which warns that it is legacy.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_cli_invalid_backend_lists_the_valid_ones(onnx_pair):
    res = CliRunner().invoke(main, ["bench", str(onnx_pair[0]), "--backend", "ort-cpu,onnx"])
    assert res.exit_code == 2
    assert "'onnx' is not a backend. Choose from: torch, torch-compile, ort-cpu, ort-cuda, ort-tensorrt, tensorrt" \
        in res.output


@pytest.mark.parametrize("args, message", [
    (["--windows", "1"], "error: bench option --windows | 1 is not allowed"),
    (["--stability-threshold", "10"], "a fraction between 0 and 1"),
    (["--batch-sizes", "0"], "positive integers"),
    (["--backend", "torch"], "no requested backend runs .onnx files (requested: torch)"),
])
def test_cli_bad_options_exit_1_with_one_line(onnx_pair, args, message):
    res = CliRunner().invoke(main, ["bench", str(onnx_pair[0]), *args])
    assert res.exit_code == 1, res.output
    assert message in res.output and "Traceback" not in res.output


def test_cli_help_names_every_default():
    res = CliRunner().invoke(main, ["bench", "--help"], terminal_width=200)
    assert res.exit_code == 0
    options = [line for line in res.output.splitlines() if line.strip().startswith("-")]
    body = res.output.split("Options:")[1]
    for opt in ("--backend", "--batch-sizes", "--threads", "--warmup-runs", "--warmup-seconds", "--min-runs",
                "--min-seconds", "--windows", "--stability-threshold", "-o, --output-dir"):
        assert opt in body
    assert body.count("Default:") >= len(options) - 1  # every option but --help


def test_cli_bench_writes_json_csv_png_with_the_printed_numbers(onnx_pair, tmp_path):
    out = tmp_path / "results"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "edgehal.cli", "bench", *map(str, onnx_pair), "--backend", "ort-cpu",
         "--batch-sizes", "1,64", "--threads", "1", "--warmup-runs", "2", "--warmup-seconds", "0",
         "--min-runs", "6", "--min-seconds", "0.02", "--max-windows", "3", "-o", str(out), "--note", "test"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / JSON_NAME).read_text())
    assert len(data["results"]) == 4 and len(data["comparisons"]) == 2 and data["note"] == "test"
    for r in data["results"]:
        assert fmt_ms(r["stats"]["median_ms"]) in proc.stdout
        assert (r["device"], r["mode"], r["timer"], r["artifact"]["precision"]) == ("cpu", "e2e", "perf_counter_ns",
                                                                                   "fp32")
    for name in ("bench.csv", "latency.png", "throughput.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
