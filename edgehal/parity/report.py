"""Report: per-artifact results and the parity report, as Markdown and JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgehal.parity.compare import HeadComparison


@dataclass
class ArtifactResult:
    """One artifact's verdict: its heads' comparisons, its metrics, and how its source was checked.

    ``warnings`` are problems that do not fail it (a source mismatch without
    ``strict``), ``notes`` things a reader should know (no recorded source),
    ``failures`` reasons it failed other than its heads (a source mismatch
    with ``strict``).
    """

    artifact: str
    backend: str
    precision: str
    heads: list[HeadComparison]
    metrics: dict
    seconds: float
    device: str = "cpu"
    sha256: str | None = None
    source_sha256: str | None = None
    source_check: str = "unchecked"
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(self.heads) and bool(self.heads) and not self.failures

    def __bool__(self) -> bool:
        return self.passed


@dataclass
class ParityReport:
    """``checkpoint`` is the reference's path (as it was when the reference ran): a checkpoint, or the
    ONNX file or engine a user gave as the reference; ``reference`` describes the reference run (its
    kind, where it ran, and the saved run it was read from)."""

    checkpoint: str
    split: str
    samples: int
    reference_metrics: dict
    artifacts: list[ArtifactResult]
    seconds: float
    reference: dict[str, Any] = field(default_factory=dict)
    strict: bool = False

    @property
    def passed(self) -> bool:
        return all(self.artifacts)

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        for a, obj in zip(d["artifacts"], self.artifacts):
            a["passed"] = obj.passed
        return _finite(d)

    def markdown(self) -> str:
        ref = self.reference
        # A checkpoint reference ran in PyTorch; an ONNX file or engine ran in its own runner.
        by_checkpoint = ref.get("kind", "checkpoint") == "checkpoint"
        label = "PyTorch" if by_checkpoint else "reference"
        source = (f"- checkpoint: `{self.checkpoint}`" if by_checkpoint
                  else f"- reference: `{self.checkpoint}` ({ref.get('kind')}, {ref.get('runner')})")
        lines = [f"# Parity report: {'PASS' if self.passed else 'FAIL'}", "",
                 source, f"- split: {self.split} ({self.samples} samples)"]
        if ref.get("saved_run"):
            lines.append(f"- reference: saved run `{ref['saved_run']}` ({ref.get('runner')} on {ref.get('device')})")
        lines += [f"- total time: {self.seconds:.1f}s", "",
                  f"| artifact | precision | head | {label} error % | artifact error % | diff (pp) | agreement % "
                  "| max abs diff | mean abs diff | McNemar p | result |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for a in self.artifacts:
            for h in a.heads:
                lines.append(
                    f"| `{Path(a.artifact).name}` | {a.precision} | {h.head} | {_f(h.reference_error)} | "
                    f"{_f(h.error)} | {_f(h.error_diff_pp, '+.2f')} | {_f(h.agreement, '.2f')} | "
                    f"{h.max_abs_diff:.3g} | {h.mean_abs_diff:.3g} | {_f(h.mcnemar_p, '.3g')} | "
                    f"{'pass' if h.passed else 'FAIL: ' + '; '.join(h.failures)} |")
        extra = [(Path(a.artifact).name, row) for a in self.artifacts
                 for row in model_level_metrics(self.reference_metrics, a.metrics)]
        if extra:
            lines += ["", f"| artifact | metric | {label} | artifact |", "| --- | --- | --- | --- |"]
            lines += [f"| `{name}` | {key} | {ref:.6g} | {got:.6g} |" for name, (key, ref, got) in extra]
        remarks = [f"- `{Path(a.artifact).name}`: FAIL: {text}" for a in self.artifacts for text in a.failures]
        remarks += [f"- `{Path(a.artifact).name}`: warning: {text}" for a in self.artifacts for text in a.warnings]
        remarks += [f"- `{Path(a.artifact).name}`: note: {text}" for a in self.artifacts for text in a.notes]
        if remarks:
            lines += ["", "## Notes", "", *remarks]
        return "\n".join(lines) + "\n"


def model_level_metrics(ref_metrics: dict, got_metrics: dict) -> list[tuple[str, float, float]]:
    """Model-level numbers of an evaluator (``summary``: hit rates, metres; HD-CNN's coarse/fine
    consistency), as (name, PyTorch value, artifact value)."""
    rows = []
    for section in ("summary", "coarse_fine_consistency"):
        ref, got = ref_metrics.get(section), got_metrics.get(section)
        if isinstance(ref, dict) and isinstance(got, dict):
            rows += [(f"{section}.{k}", float(ref[k]), float(got[k])) for k in ref
                     if k in got and isinstance(ref[k], (int, float)) and isinstance(got[k], (int, float))]
        elif isinstance(ref, (int, float)) and isinstance(got, (int, float)):
            rows.append((section, float(ref), float(got)))
    return rows


def write_reports(report: ParityReport, out_dir: str | Path) -> tuple[Path, Path]:
    """``parity.md`` and ``parity.json`` in ``out_dir``, each written atomically."""
    from edgehal.fileio import atomic_write_text

    out = Path(out_dir)
    md, js = out / "parity.md", out / "parity.json"
    atomic_write_text(md, report.markdown())
    atomic_write_text(js, json.dumps(report.to_dict(), indent=2, sort_keys=True))
    return md, js


def _f(v, fmt: str = ".2f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
