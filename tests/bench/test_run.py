"""Planning and the run of ``edgehal bench``: real onnxruntime runners, and a scripted runner on a fake clock.

Real runners only: onnxruntime on the tiny ONNX exports of ``conftest.py``,
and a scripted :class:`Runner` on a fake clock where exact numbers matter. No
assertion depends on how fast this machine is.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from edgehal.bench.jetson import ClockStatus, JetsonInfo, PowerMode
from edgehal.bench.options import BACKENDS, BenchOptions
from edgehal.bench.report import JSON_NAME, format_table, write_reports
from edgehal.bench.run import (
    check_batches,
    describe_artifact,
    make_feed,
    plan,
    run_bench,
)
from edgehal.errors import EdgehalError
from edgehal.runtime.base import Runner
from edgehal.runtime.loader import default_backend
from edgehal.runtime.onnxruntime import OnnxRuntimeRunner
from edgehal.tensors import TensorSpec

from .conftest import FakeClock

# The ONNX fixtures use torch's TorchScript exporter (dynamo=False), which warns that it is legacy.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

NOT_JETSON = JetsonInfo(False)
MS = 1_000_000
QUICK = dict(warmup_runs=2, warmup_seconds=0.0, min_runs=6, min_seconds=0.01, windows=3, max_windows=3,
             threads=1)
# On the fake clock: exactly 2 runs per window; real preemptions are not judged against fake time.
EXACT = {**QUICK, "min_seconds": 0.0, "max_preemptions_per_s": None}


# ---- planning --------------------------------------------------------------------------


def test_describe_artifact_reads_aux_from_onnx_metadata(onnx_pair):
    keep, prune = (describe_artifact(p) for p in onnx_pair)
    assert (keep.kind, keep.aux, keep.precision, keep.model) == ("onnx", "keep", "fp32", "tiny")
    assert prune.aux == "prune" and keep.family == prune.family == "feedbeef"


def test_checkpoint_family_is_its_sha256(tmp_path):
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"not really a checkpoint")
    from edgehal.fileio import sha256_file

    assert describe_artifact(ckpt).family == sha256_file(ckpt)


def test_plan_pairs_artifacts_with_fitting_backends(onnx_pair, tmp_path):
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"x")
    cases = plan([ckpt, *onnx_pair], BenchOptions(backends=("torch", "ort-cpu", "ort-cuda")))
    assert [(Path(c.artifact.path).name, c.backend) for c in cases] == [
        ("m.pt", "torch"), ("tiny_keep.onnx", "ort-cpu"), ("tiny_keep.onnx", "ort-cuda"),
        ("tiny_prune.onnx", "ort-cpu"), ("tiny_prune.onnx", "ort-cuda")]
    defaults = plan([ckpt, onnx_pair[0]], BenchOptions())
    assert [c.backend for c in defaults] == ["torch", "ort-cpu"]
    assert default_backend("x.plan") == "tensorrt" and set(BACKENDS) >= {"torch", "ort-cpu", "tensorrt"}


@pytest.mark.parametrize("make, options, match", [
    (lambda d: [d / "missing.onnx"], BenchOptions(), "file not found"),
    (lambda d: [d / "notes.txt"], BenchOptions(), "unknown type .txt"),
    (lambda d: [d / "bad.onnx"], BenchOptions(), "corrupt or not an ONNX file"),
    (lambda d: [d / "m.pt"], BenchOptions(backends=("ort-cpu",)), "add one of torch, torch-compile"),
    (lambda d: [d / "m.pt"], BenchOptions(backends=("torch", "tensorrt")), "applies to none of the artifacts"),
    (lambda d: [], BenchOptions(), "no artifact given"),
])
def test_plan_rejects_before_any_work(tmp_path, make, options, match):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    (tmp_path / "m.pt").write_bytes(b"x")
    with pytest.raises(EdgehalError, match=match):
        plan(make(tmp_path), options)


def test_make_feed():
    specs = [TensorSpec("x", "float32", (-1, 3, 2)), TensorSpec("ids", "int64", (-1, 5))]
    feed = make_feed(specs, 4)
    assert feed["x"].shape == (4, 3, 2) and feed["x"].dtype == np.float32
    assert feed["ids"].shape == (4, 5) and not feed["ids"].any()
    np.testing.assert_array_equal(make_feed(specs, 4, seed=1)["x"], make_feed(specs, 4, seed=1)["x"])
    with pytest.raises(EdgehalError, match="fixed batch of 1, cannot run batch 8"):
        make_feed([TensorSpec("x", "float32", (1, 3))], 8)
    with pytest.raises(EdgehalError, match="dynamic dimension 1"):
        make_feed([TensorSpec("x", "float32", (-1, -1))], 2)
    assert make_feed([TensorSpec("x", "float32", (-1, -1))], 2, fallback_shape=(7,))["x"].shape == (2, 7)


# ---- the run: real onnxruntime ---------------------------------------------------------


def test_run_bench_kept_and_pruned_with_onnxruntime(onnx_pair, ort_opener):
    options = BenchOptions(batch_sizes=(1, 4), **QUICK)
    report = run_bench(onnx_pair, options, opener=ort_opener, progress=False, jetson_info=NOT_JETSON)
    assert [(r.artifact.name, r.artifact.aux, r.batch_size, r.mode, r.device, r.backend) for r in report.results] == [
        ("tiny_keep.onnx", "keep", 1, "e2e", "cpu", "ort-cpu"), ("tiny_keep.onnx", "keep", 4, "e2e", "cpu", "ort-cpu"),
        ("tiny_prune.onnx", "prune", 1, "e2e", "cpu", "ort-cpu"),
        ("tiny_prune.onnx", "prune", 4, "e2e", "cpu", "ort-cpu")]
    for r in report.results:
        s = r.stats
        assert s.runs >= options.min_runs and s.wall_s >= options.min_seconds
        assert 0 < s.min_ms <= s.median_ms <= s.p90_ms <= s.p95_ms <= s.p99_ms <= s.max_ms
        assert s.throughput_per_s == pytest.approx(s.calls_per_s * r.batch_size)
        assert r.threads["requested"] == 1 and r.threads["runner"] == 1
        assert r.timer == "perf_counter_ns" and r.power is None
        assert r.stability.windows_run in (3,) and len(r.stability.window_medians_ms) == 3
    pairs = report.to_dict()["comparisons"]
    assert [(c["batch_size"], c["keep"], c["prune"]) for c in pairs] == [
        (1, "tiny_keep.onnx", "tiny_prune.onnx"), (4, "tiny_keep.onnx", "tiny_prune.onnx")]
    keep1 = report.results[0].stats.median_ms
    prune1 = report.results[2].stats.median_ms
    assert pairs[0]["prune_speedup"] == pytest.approx(keep1 / prune1)
    m = report.machine
    assert m["logical_cores"] >= 1 and m["cpu_model"] and "onnxruntime" in m["libraries"]
    assert m["gpu_name"] is None or isinstance(m["gpu_name"], str)


def test_static_batch_is_rejected_before_anything_is_timed(static_onnx, ort_opener):
    calls = []

    def counting_opener(path, **kw):
        runner = ort_opener(path, **kw)
        real = runner._infer
        runner._infer = lambda feed, outputs: calls.append(1) or real(feed, outputs)
        return runner

    with pytest.raises(EdgehalError, match="fixed batch of 1, cannot run batch 8"):
        run_bench([static_onnx], BenchOptions(batch_sizes=(1, 8), **QUICK), opener=counting_opener,
                  progress=False, jetson_info=NOT_JETSON)
    assert calls == []


# ---- the run: a scripted runner on a fake clock -----------------------------------------


class ScriptedRunner(Runner):
    """Each call takes ``ms`` on the fake clock; fails to start or to run when told to."""

    def __init__(self, clock, ms, *, name="scripted", fail_activate=False, fail_call=None,
                 max_batch=None) -> None:
        super().__init__()
        self.clock, self.ms, self.name = clock, ms, name
        self.fail_activate, self.fail_call, self._max_batch = fail_activate, fail_call, max_batch

    def _activate(self):
        if self.fail_activate:
            raise EdgehalError("torch.compile", "is not available here (RuntimeError)", "use the torch backend")

    @property
    def manifest(self):
        return None

    @property
    def max_batch(self):
        return self._max_batch

    def input_specs(self):
        return [TensorSpec("x", "float32", (-1, 4))]

    def output_names(self):
        return ["y"]

    def _infer(self, feed, outputs):
        if self.fail_call is not None and feed["x"].shape[0] in self.fail_call:
            raise RuntimeError("inductor: no working C++ compiler\nmore detail")
        self.clock.now += int(self.ms * MS)
        return {"y": feed["x"][:, :1]}


@pytest.fixture()
def files(tmp_path, onnx_pair):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"checkpoint bytes")
    return ckpt, onnx_pair[0], onnx_pair[1]


def test_scripted_run_gives_exact_numbers(files):
    clock = FakeClock()
    ms = {"torch": 3.0, "tiny_keep.onnx": 2.0, "tiny_prune.onnx": 1.0}

    def opener(path, *, backend=None, threads=None, device=None):
        key = backend if backend == "torch" else Path(path).name
        return ScriptedRunner(clock, ms[key], name=backend)

    report = run_bench(files, BenchOptions(batch_sizes=(1, 8), **EXACT), opener=opener, clock=clock,
                       progress=False, jetson_info=NOT_JETSON)
    got = {(r.artifact.name, r.batch_size): r.stats for r in report.results}
    assert got[("model.pt", 8)].median_ms == 3.0 and got[("tiny_keep.onnx", 1)].median_ms == 2.0
    assert got[("tiny_prune.onnx", 8)].throughput_per_s == pytest.approx(8 / 0.001)
    assert all(r.stability.stable and r.stats.runs == 6 for r in report.results)
    assert [c["prune_speedup"] for c in report.to_dict()["comparisons"]] == [2.0, 2.0]
    table = format_table(report)
    assert "Kept vs pruned" in table and "2.00x" in table


class ScriptedGpuRunner(ScriptedRunner):
    """A scripted runner that says it computes on a GPU in ``precision``, with a device timer of ``device_ms``."""

    def __init__(self, clock, ms, *, device_ms, precision="fp16", **kw) -> None:
        super().__init__(clock, ms, **kw)
        self.device_ms, self._precision = device_ms, precision
        self.checks: list[bool] = []
        self.timer_feeds: list[tuple[int, ...]] = []

    @property
    def device(self):
        return "cuda:1"

    @property
    def precision(self):
        return self._precision

    @property
    def threads(self):
        return 3

    def infer(self, feed, *, outputs=None, check=True):
        self.checks.append(check)
        return super().infer(feed, outputs=outputs, check=check)

    def device_timer(self, feed, *, outputs=None):
        self.timer_feeds.append(feed["x"].shape)

        def timed() -> int:
            self.clock.now += int(self.device_ms * MS)
            return int(self.device_ms * MS)

        return timed


def test_the_timed_loop_is_the_public_infer_checked_once(files):
    clock = FakeClock()
    runners = []

    def opener(path, *, backend=None, threads=None, device=None):
        runners.append(ScriptedGpuRunner(clock, 2.0, device_ms=0.5, name=backend))
        return runners[-1]

    run_bench([files[0]], BenchOptions(batch_sizes=(1, 8), **EXACT), opener=opener, clock=clock,
              progress=False, jetson_info=NOT_JETSON)
    timed = runners[-1]  # the first opened is the preflight's
    # Per batch size: one checked call, then warm-up and windows unchecked.
    per_batch = [True] + [False] * (EXACT["warmup_runs"] + EXACT["min_runs"])
    assert timed.checks == per_batch * 2


def test_device_mode_uses_the_runners_device_timer(files):
    clock = FakeClock()

    def opener(path, *, backend=None, threads=None, device=None):
        return ScriptedGpuRunner(clock, 2.0, device_ms=0.5, name=backend)

    report = run_bench([files[0]], BenchOptions(batch_sizes=(1, 8), **EXACT), opener=opener, clock=clock,
                       progress=False, jetson_info=NOT_JETSON)
    assert [(r.batch_size, r.mode, r.timer, r.stats.median_ms) for r in report.results] == [
        (1, "e2e", "perf_counter_ns", 2.0), (1, "device", "device_timer", 0.5),
        (8, "e2e", "perf_counter_ns", 2.0), (8, "device", "device_timer", 0.5)]
    for r in report.results:
        assert r.device == "cuda" and r.threads["runner"] == 3 and r.artifact.precision == "fp16"
    assert "model.pt · torch (device)" in {r.label for r in report.results}


def test_a_cpu_runner_is_timed_end_to_end_only(files):
    clock = FakeClock()
    report = run_bench([files[0]], BenchOptions(**EXACT), opener=lambda p, **kw: ScriptedRunner(clock, 1.0),
                       clock=clock, progress=False, jetson_info=NOT_JETSON)
    [r] = report.results
    assert (r.mode, r.device, r.artifact.precision, r.threads["runner"]) == ("e2e", "cpu", "fp32", None)


def test_backend_that_cannot_start_is_skipped_not_fatal(files):
    clock = FakeClock()

    def opener(path, *, backend=None, threads=None, device=None):
        return ScriptedRunner(clock, 1.0, name=backend, fail_activate=backend == "torch-compile")

    report = run_bench([files[0]], BenchOptions(backends=("torch", "torch-compile"), **EXACT), opener=opener,
                       clock=clock, progress=False, jetson_info=NOT_JETSON)
    assert [r.backend for r in report.results] == ["torch"]
    assert report.skipped[0]["backend"] == "torch-compile" and "torch.compile" in report.skipped[0]["reason"]
    with pytest.raises(EdgehalError, match="no artifact could be opened"):
        run_bench([files[0]], BenchOptions(backends=("torch-compile",), **EXACT), opener=opener, clock=clock,
                  progress=False, jetson_info=NOT_JETSON)


def test_torch_compile_failing_on_a_batch_keeps_the_batches_that_ran(files):
    clock = FakeClock()
    warnings = []

    def opener(path, *, backend=None, threads=None, device=None):
        return ScriptedRunner(clock, 1.0, name=backend, fail_call={8} if backend == "torch-compile" else None)

    report = run_bench([files[0]], BenchOptions(backends=("torch-compile",), batch_sizes=(1, 8), **EXACT),
                       opener=opener, clock=clock, progress=False, jetson_info=NOT_JETSON, warn=warnings.append)
    assert [(r.backend, r.batch_size) for r in report.results] == [("torch-compile", 1)]
    assert "RuntimeError: inductor: no working C++ compiler" in report.skipped[0]["reason"]
    assert any("after 1 result(s)" in w for w in warnings)


def test_other_exceptions_are_bugs_and_propagate(files):
    clock = FakeClock()

    def opener(path, *, backend=None, threads=None, device=None):
        return ScriptedRunner(clock, 1.0, name=backend, fail_call={1})

    with pytest.raises(RuntimeError, match="inductor"):
        run_bench([files[0]], BenchOptions(backends=("torch",), **EXACT), opener=opener, clock=clock,
                  progress=False, jetson_info=NOT_JETSON)


def test_max_batch_is_checked_in_preflight(files):
    clock = FakeClock()

    def opener(path, *, backend=None, threads=None, device=None):
        return ScriptedRunner(clock, 1.0, name=backend, max_batch=4)

    with pytest.raises(EdgehalError, match="batch 8 is larger than the artifact's maximum 4"):
        run_bench([files[0]], BenchOptions(batch_sizes=(1, 8), **EXACT), opener=opener, clock=clock,
                  progress=False, jetson_info=NOT_JETSON)


def test_unstable_results_are_flagged_and_warned(files):
    clock = FakeClock()
    calls = [0]

    class Drifting(ScriptedRunner):
        def _infer(self, feed, outputs):
            calls[0] += 1
            self.clock.now += (MS if calls[0] < 6 else 3 * MS)
            return {"y": feed["x"][:, :1]}

    warnings = []
    report = run_bench([files[0]], BenchOptions(**{**EXACT, "warmup_runs": 0}),
                       opener=lambda p, **kw: Drifting(clock, 1.0, name="torch"), clock=clock, progress=False,
                       jetson_info=NOT_JETSON, warn=warnings.append)
    r = report.results[0]
    assert not r.stability.stable and r.stability.windows_run == 3
    assert any("unstable" in w for w in warnings)
    assert "NO (" in format_table(report)


def test_power_requires_a_jetson(files, ort_opener):
    with pytest.raises(EdgehalError, match="needs tegrastats on a Jetson"):
        run_bench([files[1]], BenchOptions(power=True, **QUICK), opener=ort_opener, progress=False,
                  jetson_info=NOT_JETSON)


def _fake_tegrastats(tmp_path: Path, line: str) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (tmp_path / "line.txt").write_text(line + "\n")
    script = bindir / "tegrastats"
    script.write_text(f"#!/bin/sh\nwhile true; do cat {tmp_path / 'line.txt'}; sleep 0.01; done\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bindir


def test_power_is_sampled_on_a_jetson_with_tegrastats(onnx_pair, tmp_path, monkeypatch, ort_opener):
    # A stand-in tegrastats printing a real Xavier NX line (VDD_IN 4067 mW): the whole power
    # path runs on this CPU machine. Clocks reported locked, so no DVFS warning.
    bindir = _fake_tegrastats(tmp_path, "RAM 4412/7772MB (lfb 237x4MB) VDD_IN 4067/4067 "
                                        "VDD_CPU_GPU_CV 738/738 VDD_SOC 1353/1353")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    info = JetsonInfo(True, "NVIDIA Jetson Xavier NX Developer Kit", "35.4.1", PowerMode("MODE_20W_6CORE", 8),
                      ClockStatus(True, True, True), str(bindir / "tegrastats"))
    options = BenchOptions(**{**QUICK, "min_seconds": 0.3, "tegrastats_interval_ms": 10})
    report = run_bench([onnx_pair[1]], options, opener=ort_opener, progress=False, jetson_info=info)
    p = report.results[0].power
    assert p is not None and p.samples >= 2 and p.total_source == "VDD_IN"
    assert p.avg_power_w == pytest.approx(4.067)
    s = report.results[0].stats
    assert p.energy_per_inference_mj == pytest.approx(4.067 * s.wall_s / s.runs * 1000)
    assert report.machine["jetson"]["model"] == "NVIDIA Jetson Xavier NX Developer Kit"
    assert "mJ/inf" in format_table(report)
    assert not any("clocks" in w or "power" in w for w in report.warnings)


def test_missing_execution_provider_is_skipped_with_its_reason(onnx_pair):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    report = run_bench([onnx_pair[1]], BenchOptions(backends=("ort-cpu", "ort-cuda"), **QUICK), progress=False,
                       jetson_info=NOT_JETSON)
    assert [r.backend for r in report.results] == ["ort-cpu"]
    assert report.skipped[0]["backend"] == "ort-cuda" and "CUDAExecutionProvider" in report.skipped[0]["reason"]


def test_check_batches_uses_the_runner_specs(static_onnx):
    with OnnxRuntimeRunner(static_onnx, providers=["cpu"]) as r:
        check_batches(r, [1], what="static")
        with pytest.raises(EdgehalError, match="cannot run batch 2"):
            check_batches(r, [1, 2], what="static")


def test_write_reports_round_trip(onnx_pair, tmp_path, ort_opener):
    report = run_bench(onnx_pair, BenchOptions(**QUICK), opener=ort_opener, progress=False, jetson_info=NOT_JETSON)
    paths = write_reports(report, tmp_path / "o")
    assert paths["json"].name == JSON_NAME
    data = json.loads(paths["json"].read_text())
    assert [r["stats"]["median_ms"] for r in data["results"]] == [r.stats.median_ms for r in report.results]
