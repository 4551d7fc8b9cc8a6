"""Reports of ``edgehal bench``: terminal table, JSON, CSV and PNG plots.

Every number is formatted by one function (:func:`fmt_ms`, :func:`fmt_rate`)
so the table, the CSV's rounded twin in the plots, and the plot annotations
show the same digits; JSON and CSV keep full precision. All files are written
atomically. Plots use matplotlib's object API with the Agg canvas, so no
global backend is switched and no display is needed.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from edgehal.bench.results import BenchReport, BenchResult, comparisons, vs_checkpoint
from edgehal.fileio import atomic_write_text, atomic_write_with

JSON_NAME = "bench.json"
CSV_NAME = "bench.csv"
LATENCY_PNG = "latency.png"
THROUGHPUT_PNG = "throughput.png"

CSV_COLUMNS = (
    "artifact", "path", "aux", "precision", "backend", "device", "batch_size", "mode", "timer",
    "runs", "min_ms", "mean_ms", "median_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "std_ms",
    "throughput_per_s", "calls_per_s", "wall_s", "stable", "latency_spread", "throughput_spread",
    "windows_run", "preemptions_per_s", "contended", "threads_requested", "threads_runner", "avg_power_w",
    "energy_per_inference_mj", "energy_per_sample_mj",
)


def fmt_ms(v: float) -> str:
    """Milliseconds to 4 significant digits (``0.006120``, ``1.230``, ``123.0``, ``1234``)."""
    if not math.isfinite(v) or v <= 0:
        return f"{v:.3f}"
    decimals = min(6, max(0, 3 - math.floor(math.log10(v))))
    return f"{v:.{decimals}f}"


def fmt_rate(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}"


# --------------------------------------------------------------------------
# Terminal table


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def format_table(report: BenchReport) -> str:
    """The results, then kept-vs-pruned pairs, then warnings, as printed by ``edgehal bench``."""
    headers = ("artifact", "aux", "backend", "batch", "mode", "runs", "min", "median", "mean", "p90",
               "p95", "p99", "max ms", "samples/s", "stable")
    has_power = any(r.power is not None and r.power.avg_power_w is not None for r in report.results)
    if has_power:
        headers = headers + ("W", "mJ/inf")
    rows = []
    for r in report.results:
        s = r.stats
        row = [r.artifact.name, r.artifact.aux or "-", r.backend, str(r.batch_size), r.mode, str(s.runs),
               fmt_ms(s.min_ms), fmt_ms(s.median_ms), fmt_ms(s.mean_ms), fmt_ms(s.p90_ms), fmt_ms(s.p95_ms),
               fmt_ms(s.p99_ms), fmt_ms(s.max_ms), fmt_rate(s.throughput_per_s),
               "yes" if r.stability.stable else f"NO ({r.stability.reason})"]
        if has_power:
            p = r.power
            row += [f"{p.avg_power_w:.2f}" if p and p.avg_power_w is not None else "-",
                    f"{p.energy_per_inference_mj:.3f}" if p and p.energy_per_inference_mj is not None else "-"]
        rows.append(row)
    out = _table(headers, rows, right={3} | set(range(5, 14)) | {15, 16})
    pairs = comparisons(report.results)
    if pairs:
        out += ["", "Kept vs pruned auxiliary heads (median ms):"]
        prow = [[c["model"] or c["family"][:12], c["backend"], str(c["batch_size"]), c["mode"],
                 fmt_ms(c["keep_median_ms"]), fmt_ms(c["prune_median_ms"]),
                 f"{c['prune_speedup']:.2f}x" if c["prune_speedup"] else "-"] for c in pairs]
        out += _table(("model", "backend", "batch", "mode", "keep", "prune", "prune speed-up"), prow,
                      right={2, 4, 5, 6})
    ratios = vs_checkpoint(report.results)
    if ratios:
        out += ["", "Against the PyTorch checkpoint (median ms; speed-up = checkpoint / export):"]
        rrow = [[c["artifact"], c["aux"] or "-", c["backend"], str(c["batch_size"]), c["mode"],
                 f"{c['checkpoint_backend']} {fmt_ms(c['checkpoint_median_ms'])}", fmt_ms(c["median_ms"]),
                 f"{c['speedup']:.2f}x" if c["speedup"] else "-"] for c in ratios]
        out += _table(("artifact", "aux", "backend", "batch", "mode", "checkpoint", "export", "speed-up"), rrow,
                      right={3, 5, 6, 7})
    m = report.machine
    threads = sorted({str(r.threads.get("runner") or r.threads.get("requested") or "default")
                      for r in report.results})
    out += ["", f"machine: {m.get('cpu_model')}, {m.get('usable_cores')} cores"
            + (f", GPU {m['gpu_name']} (driver {m.get('gpu_driver')})" if m.get("gpu_name") else ", no GPU")
            + f"; threads: {', '.join(threads) or '-'}; load {m.get('load_average_1_5_15')}"]
    if report.options.note:
        out.append(f"note: {report.options.note}")
    for s in report.skipped:
        out.append(f"skipped: {s['artifact']} ({s['backend']}): {s['reason']}")
    return "\n".join(out)


# --------------------------------------------------------------------------
# Files


def _finite(obj: Any) -> Any:
    """JSON has no infinity or NaN: write them as null (a zero-length window gives an infinite rate)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def to_json(report: BenchReport) -> str:
    return json.dumps(_finite(report.to_dict()), indent=2, allow_nan=False, default=str) + "\n"


def csv_rows(report: BenchReport) -> list[dict[str, Any]]:
    rows = []
    for r in report.results:
        s, st, p = r.stats, r.stability, r.power
        rows.append({
            "artifact": r.artifact.name, "path": r.artifact.path, "aux": r.artifact.aux or "",
            "precision": r.artifact.precision or "", "backend": r.backend, "device": r.device,
            "batch_size": r.batch_size, "mode": r.mode, "timer": r.timer, "runs": s.runs,
            "min_ms": s.min_ms, "mean_ms": s.mean_ms, "median_ms": s.median_ms, "p90_ms": s.p90_ms,
            "p95_ms": s.p95_ms, "p99_ms": s.p99_ms, "max_ms": s.max_ms, "std_ms": s.std_ms,
            "throughput_per_s": s.throughput_per_s, "calls_per_s": s.calls_per_s, "wall_s": s.wall_s,
            "stable": st.stable, "latency_spread": st.latency_spread,
            "throughput_spread": st.throughput_spread, "windows_run": st.windows_run,
            "preemptions_per_s": st.preemptions_per_s if st.preemptions_per_s is not None else "",
            "contended": st.contended,
            "threads_requested": r.threads.get("requested") or "", "threads_runner": r.threads.get("runner") or "",
            "avg_power_w": p.avg_power_w if p is not None and p.avg_power_w is not None else "",
            "energy_per_inference_mj": p.energy_per_inference_mj if p is not None and p.energy_per_inference_mj
            is not None else "",
            "energy_per_sample_mj": p.energy_per_sample_mj if p is not None and p.energy_per_sample_mj
            is not None else "",
        })
    return rows


def to_csv(report: BenchReport) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in csv_rows(report):
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def _series(results: Sequence[BenchResult]) -> dict[str, list[BenchResult]]:
    series: dict[str, list[BenchResult]] = defaultdict(list)
    for r in results:
        series[r.label].append(r)
    return {k: sorted(v, key=lambda r: r.batch_size) for k, v in series.items()}


def _plot(path: Path, results: Sequence[BenchResult], *, metric: str, ylabel: str, title: str,
          fmt: Any) -> dict[str, list[tuple[int, float]]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = _series(results)
    drawn: dict[str, list[tuple[int, float]]] = {}
    fig = Figure(figsize=(8, 5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (label, rs) in enumerate(series.items()):
        xs = [r.batch_size for r in rs]
        ys = [getattr(r.stats, metric) for r in rs]
        line, = ax.plot(xs, ys, marker="o", label=label)
        if metric == "median_ms":
            # A dashed p99 line shows the tail the median hides.
            ax.plot(xs, [r.stats.p99_ms for r in rs], linestyle="--", linewidth=0.8, alpha=0.6,
                    color=line.get_color())
        for x, y, r in zip(xs, ys, rs):
            mark = "" if r.stability.stable else " (unstable)"
            # Alternate above/below so labels of neighbouring lines do not overprint.
            ax.annotate(fmt(y) + mark, (x, y), textcoords="offset points",
                        xytext=(5, 6 if i % 2 == 0 else -12), fontsize=7, color=line.get_color())
        drawn[label] = list(zip(xs, ys))
    batches = sorted({r.batch_size for r in results})
    if len(batches) > 1 and batches[-1] / batches[0] >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    values = [y for pts in drawn.values() for _, y in pts if y > 0 and math.isfinite(y)]
    if values and max(values) / min(values) > 20:
        ax.set_yscale("log")
    ax.margins(x=0.12, y=0.1)
    ax.set_xlabel("batch size")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if series:
        ax.legend(fontsize=7, loc="best")
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    return drawn


def plot_latency(path: str | Path, report: BenchReport) -> dict[str, list[tuple[int, float]]]:
    """Median latency against batch size, one line per artifact x backend x mode; returns what it drew."""
    sub = f" — {report.options.note}" if report.options.note else ""
    return _plot(Path(path), report.results, metric="median_ms", ylabel="median latency per call (ms)",
                 title=f"Latency vs batch size (solid: median, dashed: p99){sub}", fmt=fmt_ms)


def plot_throughput(path: str | Path, report: BenchReport) -> dict[str, list[tuple[int, float]]]:
    """Throughput (samples/s) against batch size; returns what it drew."""
    sub = f" — {report.options.note}" if report.options.note else ""
    return _plot(Path(path), report.results, metric="throughput_per_s", ylabel="samples per second",
                 title=f"Throughput vs batch size{sub}", fmt=fmt_rate)


def write_reports(report: BenchReport, output_dir: str | Path) -> dict[str, Path]:
    """Write JSON, CSV and both PNGs into ``output_dir``; return their paths by kind."""
    out = Path(output_dir)
    paths = {"json": out / JSON_NAME, "csv": out / CSV_NAME,
             "latency_png": out / LATENCY_PNG, "throughput_png": out / THROUGHPUT_PNG}
    atomic_write_text(paths["json"], to_json(report))
    atomic_write_text(paths["csv"], to_csv(report))
    if report.results:
        plot_latency(paths["latency_png"], report)
        plot_throughput(paths["throughput_png"], report)
    else:
        del paths["latency_png"], paths["throughput_png"]
    return paths
