"""Results and the comparisons drawn from them: kept against pruned heads, exports against their checkpoint."""

from __future__ import annotations

import pytest

from edgehal.bench.results import (
    ArtifactInfo,
    BenchReport,
    BenchResult,
    comparisons,
    vs_checkpoint,
)


def test_kept_and_pruned_pair_within_one_checkpoint_only(report, make_result):
    pairs = comparisons(report.results)
    assert [(c["batch_size"], c["keep"], c["prune"]) for c in pairs] == [
        (1, "m_keep.onnx", "m_prune.onnx"), (64, "m_keep.onnx", "m_prune.onnx")]
    r = report.results
    assert pairs[0]["prune_speedup"] == pytest.approx(r[0].stats.median_ms / r[2].stats.median_ms)
    assert pairs[0]["both_stable"] is False and pairs[1]["both_stable"] is False
    # Different precision or backend: not a pair.
    assert comparisons([r[0], make_result("p.onnx", "prune", 1, [0.1], precision="int8")]) == []
    assert comparisons([r[0], make_result("p.onnx", "prune", 1, [0.1], backend="ort-cuda")]) == []


def _checkpoint_result(make_result) -> BenchResult:
    timed = make_result("model.pt", None, 1, [0.4, 0.4], backend="torch")
    return BenchResult(ArtifactInfo("/x/model.pt", "model.pt", "checkpoint", None, None, None, "fam"), "torch", "cpu",
                       1, "e2e", timed.stats, timed.stability, "perf_counter_ns", {})


def test_exports_are_compared_with_their_checkpoint(report, make_result):
    ckpt = _checkpoint_result(make_result)
    rows = vs_checkpoint((ckpt, *report.results))
    assert [(c["artifact"], c["batch_size"]) for c in rows] == [("m_keep.onnx", 1), ("m_prune.onnx", 1)]
    assert rows[0]["speedup"] == pytest.approx(0.4 / report.results[0].stats.median_ms)
    assert vs_checkpoint(report.results) == []


def test_report_dict_carries_results_and_comparisons(report, make_result):
    ckpt = _checkpoint_result(make_result)
    d = BenchReport(report.options, report.machine, (ckpt, *report.results)).to_dict()
    assert d["format"] == "edgehal-bench/1" and d["note"] == "busy machine"
    assert [r["artifact"]["name"] for r in d["results"]] == ["model.pt", *(r.artifact.name for r in report.results)]
    assert len(d["comparisons"]) == 2 and len(d["vs_checkpoint"]) == 2
    assert d["results"][1]["label"] == "m_keep.onnx [keep] · ort-cpu"
    assert d["results"][1]["stability"]["window_medians_ms"] == list(report.results[0].stability.window_medians_ms)
