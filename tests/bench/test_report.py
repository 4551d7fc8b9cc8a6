"""Reports: the table, JSON, CSV and PNGs all carry the numbers the run returned."""

from __future__ import annotations

import csv
import json
import math

from edgehal.bench.jetson import PowerSummary
from edgehal.bench.report import (
    CSV_COLUMNS,
    fmt_ms,
    fmt_rate,
    format_table,
    plot_latency,
    plot_throughput,
    to_json,
    write_reports,
)
from edgehal.bench.results import ArtifactInfo, BenchReport, BenchResult
from edgehal.bench.timing import LatencyStats

PNG = b"\x89PNG\r\n\x1a\n"


def test_fmt_ms_keeps_four_significant_digits():
    assert [fmt_ms(v) for v in (0.00612, 0.1234, 1.2344, 12.345, 123.45, 1234.5)] == [
        "0.006120", "0.1234", "1.234", "12.35", "123.5", "1234"]
    assert fmt_rate(1234567.8) == "1,234,568" and fmt_rate(12.34) == "12.3"


def test_table_and_json_show_exports_against_their_checkpoint(report, make_result):
    timed = make_result("model.pt", None, 1, [0.4, 0.4], backend="torch")
    ckpt = BenchResult(ArtifactInfo("/x/model.pt", "model.pt", "checkpoint", None, None, None, "fam"), "torch", "cpu",
                       1, "e2e", timed.stats, timed.stability, "perf_counter_ns", {})
    rep = BenchReport(report.options, report.machine, (ckpt, *report.results))
    table = format_table(rep)
    assert "Against the PyTorch checkpoint" in table and "torch 0.4000" in table
    assert len(json.loads(to_json(rep))["vs_checkpoint"]) == 2
    assert "Against the PyTorch checkpoint" not in format_table(report)


def test_table_shows_the_returned_numbers(report):
    table = format_table(report)
    for r in report.results:
        for v in (r.stats.min_ms, r.stats.median_ms, r.stats.p99_ms, r.stats.max_ms):
            assert fmt_ms(v) in table
        assert fmt_rate(r.stats.throughput_per_s) in table
    assert "NO (windows disagree by 40%)" in table and "NO (busy: preempted 150/s)" in table
    assert "Kept vs pruned" in table and "note: busy machine" in table
    assert "mJ/inf" not in table


def test_json_and_csv_match_the_results_exactly(report, tmp_path):
    paths = write_reports(report, tmp_path / "out")
    assert set(paths) == {"json", "csv", "latency_png", "throughput_png"}
    data = json.loads(paths["json"].read_text())
    assert data["format"] == "edgehal-bench/1" and data["note"] == "busy machine"
    assert data["options"]["batch_sizes"] == [1, 64] and data["machine"]["cpu_model"] == "Test CPU"
    assert len(data["comparisons"]) == 2
    rows = list(csv.DictReader(paths["csv"].open()))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == len(data["results"]) == len(report.results)
    for r, j, c in zip(report.results, data["results"], rows):
        for key in ("min_ms", "mean_ms", "median_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "throughput_per_s"):
            assert j["stats"][key] == getattr(r.stats, key)
            assert float(c[key]) == getattr(r.stats, key)
        assert j["stats"]["runs"] == int(c["runs"]) == r.stats.runs
        assert j["stability"]["stable"] == r.stability.stable and c["stable"] == str(r.stability.stable)
        assert j["stability"]["contended"] == r.stability.contended and c["contended"] == str(r.stability.contended)
        assert float(c["preemptions_per_s"]) == j["stability"]["preemptions_per_s"]
        assert j["artifact"]["aux"] == c["aux"] == r.artifact.aux and c["batch_size"] == str(r.batch_size)
    for key in ("latency_png", "throughput_png"):
        assert paths[key].read_bytes()[:8] == PNG
    assert not list((tmp_path / "out").glob(".*.tmp"))  # atomic writes leave no temporaries


def test_plots_draw_the_returned_numbers(report, tmp_path):
    drawn = plot_latency(tmp_path / "lat.png", report)
    assert drawn["m_keep.onnx [keep] · ort-cpu"] == [(1, report.results[0].stats.median_ms),
                                                    (64, report.results[1].stats.median_ms)]
    assert drawn["other_prune.onnx [prune] · ort-cpu"] == [(1, report.results[4].stats.median_ms)]
    thr = plot_throughput(tmp_path / "thr.png", report)
    assert thr["m_prune.onnx [prune] · ort-cpu"] == [(1, report.results[2].stats.throughput_per_s),
                                                    (64, report.results[3].stats.throughput_per_s)]
    assert (tmp_path / "lat.png").read_bytes()[:8] == PNG


def test_power_columns_and_non_finite_values(report, make_result):
    power = PowerSummary(4.5, "VDD_IN", 12, 1.0, 1000, 1, 4.5, 4.5, {"VDD_IN": 4500.0})
    r = make_result("m_keep.onnx", "keep", 1, [1.0, 1.0], power=power)
    rep = BenchReport(report.options, report.machine, (r,))
    table = format_table(rep)
    assert "mJ/inf" in table and "4.500" in table
    data = json.loads(to_json(rep))
    assert data["results"][0]["power"]["energy_per_inference_mj"] == 4.5
    # A zero-length window gives an infinite rate: JSON stores null, never "Infinity".
    zero = LatencyStats.from_ns([0, 0], wall_ns=0, batch_size=1)
    assert math.isinf(zero.throughput_per_s)
    bad = BenchResult(r.artifact, "ort-cpu", "cpu", 1, "e2e", zero, r.stability, "t", {})
    data = json.loads(to_json(BenchReport(report.options, report.machine, (bad,))))
    assert data["results"][0]["stats"]["throughput_per_s"] is None


def test_no_results_writes_no_plots(report, tmp_path):
    empty = BenchReport(report.options, report.machine, ())
    assert set(write_reports(empty, tmp_path)) == {"json", "csv"}
