"""The parity report: Markdown and JSON, with per-artifact notes, warnings and failures."""

from __future__ import annotations

import json
import math

from edgehal.parity import ArtifactResult, HeadComparison, ParityReport, model_level_metrics, write_reports


def _report(*, failures=(), warnings=(), notes=()) -> ParityReport:
    head = HeadComparison("logits", "classification", 1.0, 1.2, 0.2, 99.5, math.inf, 0.01, 3, 1, 0.62)
    aux = HeadComparison("aux", "classification", 2.0, 2.0, 0.0, 100.0, 1e-6, 1e-7, passed=False,
                         failures=["max abs diff 1e-06 (> 1e-07)"])
    artifact = ArtifactResult("out/k.onnx", "onnxruntime", "int8", [head, aux],
                              {"summary": {"hit": 0.9, "name": "x"}}, 1.5, device="cpu", sha256="e" * 64,
                              source_sha256="c" * 64, source_check="match", warnings=list(warnings),
                              notes=list(notes), failures=list(failures))
    return ParityReport("ckpt.pt", "test", 1000, {"summary": {"hit": 0.95}}, [artifact], 3.0,
                        reference={"saved_run": "ref-run", "runner": "torch", "device": "cpu"}, strict=True)


def test_markdown_has_the_table_the_model_level_metrics_and_the_notes(tmp_path):
    report = _report(failures=["was exported from another checkpoint"], warnings=["w"], notes=["n"])
    md, js = write_reports(report, tmp_path)
    text = md.read_text()
    assert text.startswith("# Parity report: FAIL\n")
    assert "- reference: saved run `ref-run` (torch on cpu)" in text
    assert "| `k.onnx` | int8 | logits | 1.00 | 1.20 | +0.20 | 99.50 | inf | 0.01 | 0.62 | pass |" in text
    assert "| `k.onnx` | int8 | aux |" in text and "FAIL: max abs diff 1e-06 (> 1e-07) |" in text
    assert "| `k.onnx` | summary.hit | 0.95 | 0.9 |" in text
    assert text.endswith("## Notes\n\n- `k.onnx`: FAIL: was exported from another checkpoint\n"
                         "- `k.onnx`: warning: w\n- `k.onnx`: note: n\n")
    doc = json.loads(js.read_text())
    assert doc["passed"] is False and doc["strict"] is True and doc["artifacts"][0]["passed"] is False
    artifact = doc["artifacts"][0]
    assert artifact["heads"][0]["max_abs_diff"] is None  # inf is not JSON
    assert (artifact["source_check"], artifact["failures"], artifact["warnings"], artifact["notes"]) == \
        ("match", ["was exported from another checkpoint"], ["w"], ["n"])
    assert doc["reference"]["saved_run"] == "ref-run"


def test_an_artifact_fails_on_a_failure_of_its_own_even_when_every_head_passed():
    report = _report()
    report.artifacts[0].heads[1].passed = True
    assert report.passed and report.artifacts[0]
    report.artifacts[0].failures.append("source mismatch")
    assert not report.artifacts[0] and not report
    assert "## Notes" in report.markdown()
    assert "## Notes" not in _report().markdown()


def test_model_level_metrics_pair_numbers_only():
    assert model_level_metrics({"summary": {"hit": 0.95, "name": "x"}, "coarse_fine_consistency": 0.9},
                               {"summary": {"hit": 0.9, "name": "y"}, "coarse_fine_consistency": 0.8}) == [
        ("summary.hit", 0.95, 0.9), ("coarse_fine_consistency", 0.9, 0.8)]
