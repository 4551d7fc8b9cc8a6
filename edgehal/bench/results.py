"""What a benchmark found: one :class:`BenchResult` per case, a :class:`BenchReport` per run.

The comparisons drawn from the results (kept against pruned auxiliary heads,
exports against their checkpoint) live here too: they are part of the
report's data (``bench.json``), which :mod:`edgehal.bench.report` only renders.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from edgehal.bench.jetson import PowerSummary
from edgehal.bench.options import BenchOptions
from edgehal.bench.timing import LatencyStats, Stability

FORMAT = "edgehal-bench/1"


@dataclass(frozen=True)
class ArtifactInfo:
    """One file to benchmark, with what its metadata says about it."""

    path: str
    name: str
    kind: str                 # "checkpoint" | "onnx" | "engine"
    aux: str | None = None    # "keep" | "prune" | None when unknown
    precision: str | None = None
    model: str | None = None
    family: str | None = None  # groups artifacts exported from one checkpoint


@dataclass(frozen=True)
class BenchResult:
    """One artifact x backend x batch size x timing mode."""

    artifact: ArtifactInfo
    backend: str
    device: str
    batch_size: int
    mode: str
    stats: LatencyStats
    stability: Stability
    timer: str
    threads: dict[str, Any]
    power: PowerSummary | None = None  # when tegrastats sampled the run
    warnings: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        aux = f" [{self.artifact.aux}]" if self.artifact.aux else ""
        mode = "" if self.mode == "e2e" else f" ({self.mode})"
        return f"{self.artifact.name}{aux} · {self.backend}{mode}"

    def to_dict(self) -> dict[str, Any]:
        d = {
            "artifact": asdict(self.artifact), "backend": self.backend, "device": self.device,
            "batch_size": self.batch_size, "mode": self.mode, "timer": self.timer, "label": self.label,
            "stats": asdict(self.stats), "stability": asdict(self.stability), "threads": self.threads,
            "power": self.power.to_dict() if self.power is not None else None,
            "warnings": list(self.warnings),
        }
        d["stability"]["window_medians_ms"] = list(self.stability.window_medians_ms)
        d["stability"]["window_throughputs"] = list(self.stability.window_throughputs)
        return d


@dataclass(frozen=True)
class BenchReport:
    options: BenchOptions
    machine: dict[str, Any]
    results: tuple[BenchResult, ...]
    skipped: tuple[dict[str, str], ...] = ()
    warnings: tuple[str, ...] = ()
    created: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "created": self.created,
            "note": self.options.note,
            "options": self.options.to_dict(),
            "machine": self.machine,
            "results": [r.to_dict() for r in self.results],
            "comparisons": comparisons(self.results),
            "vs_checkpoint": vs_checkpoint(self.results),
            "skipped": list(self.skipped),
            "warnings": list(self.warnings),
        }


def comparisons(results: Sequence[BenchResult]) -> list[dict[str, Any]]:
    """Kept against pruned auxiliary heads, side by side.

    Two ONNX results are a pair when they come from the same checkpoint
    (``family``: its sha256, or the model name), have the same precision,
    backend, batch size and timing mode, and one was exported with
    ``aux=keep`` and the other with ``aux=prune``.
    """
    groups: dict[tuple, dict[str, BenchResult]] = defaultdict(dict)
    for r in results:
        a = r.artifact
        if a.aux in ("keep", "prune") and a.family:
            groups[(a.family, a.precision, r.backend, r.batch_size, r.mode)][a.aux] = r
    out = []
    for (family, precision, backend, batch, mode), pair in groups.items():
        if "keep" not in pair or "prune" not in pair:
            continue
        k, p = pair["keep"], pair["prune"]
        out.append({
            "model": k.artifact.model, "family": family, "precision": precision, "backend": backend,
            "batch_size": batch, "mode": mode, "keep": k.artifact.name, "prune": p.artifact.name,
            "keep_median_ms": k.stats.median_ms, "prune_median_ms": p.stats.median_ms,
            "keep_throughput_per_s": k.stats.throughput_per_s,
            "prune_throughput_per_s": p.stats.throughput_per_s,
            "prune_speedup": k.stats.median_ms / p.stats.median_ms if p.stats.median_ms > 0 else None,
            "both_stable": k.stability.stable and p.stability.stable,
        })
    return out


def vs_checkpoint(results: Sequence[BenchResult]) -> list[dict[str, Any]]:
    """Every export against the checkpoint it came from (the PyTorch / onnxruntime ratio).

    An exported artifact records its checkpoint's sha256 (``family``); where that
    checkpoint was benchmarked at the same batch size and timing mode,
    ``speedup`` is checkpoint median / export median (above 1: the export is faster).
    """
    refs = [r for r in results if r.artifact.kind == "checkpoint" and r.artifact.family]
    out = []
    for ref in refs:
        for r in results:
            a = r.artifact
            if (a.kind == "checkpoint" or a.family != ref.artifact.family or r.batch_size != ref.batch_size
                    or r.mode != ref.mode):
                continue
            out.append({
                "model": a.model, "family": a.family, "batch_size": r.batch_size, "mode": r.mode,
                "checkpoint": ref.artifact.name, "checkpoint_backend": ref.backend,
                "artifact": a.name, "aux": a.aux, "precision": a.precision, "backend": r.backend,
                "checkpoint_median_ms": ref.stats.median_ms, "median_ms": r.stats.median_ms,
                "speedup": ref.stats.median_ms / r.stats.median_ms if r.stats.median_ms > 0 else None,
                "both_stable": ref.stability.stable and r.stability.stable,
            })
    return out
