"""PyTorch eager against onnxruntime on the CPU, kept against pruned auxiliary heads.

For one checkpoint (default: the zoo's MNIST HAL Case1), end to end:

1. export it to ONNX with the auxiliary heads kept and pruned (timed; the
   exporter's own checks included), into ``--work-dir`` (ignored by git);
2. run parity of both exports against PyTorch on the full test split (timed);
3. ``edgehal.bench.run_bench`` of the checkpoint (PyTorch eager) and both
   exports (onnxruntime CPU) at every batch size, once per thread setting
   (default 1 and all usable cores). The timing method, statistics and
   stability flags are the library's; this script only arranges and reports.

Writes into ``--out-dir`` (default ``benchmarks/results/runtime_comparison``):
``runtime_comparison.json`` and ``.md`` (latency table, the onnxruntime /
PyTorch speed-up against the goal of 2x at batch 1, kept vs pruned in
latency and size, export and parity times), ``runtime_comparison.png``
(latency against batch size per runtime, kept vs pruned, one panel per thread
setting), ``parity/`` (the parity reports) and ``bench_threads<N>/`` (the
bench's own JSON, CSV and plots). Every number in the Markdown comes from
those files' data.

Usage::

    export EDGEHAL_DATA=../shared/data
    python benchmarks/runtime_comparison.py                          # the real run, machine idle
    python benchmarks/runtime_comparison.py --checkpoint runs/x/checkpoint.pt --min-seconds 0.3 \\
        --warmup-seconds 0.1 --min-runs 10 --out-dir /tmp/rc --work-dir /tmp/rc/work   # smoke run

Exit code 1 on a bad option or a failed parity check.
"""

from __future__ import annotations

import argparse
import os
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = Path("models/zoo/mnist_hal_case1/checkpoint.pt")  # paths relative to the repo: results name no machine path
GOAL_SPEEDUP = 2.0  # the goal: onnxruntime at least 2x PyTorch eager at batch 1
FORMAT = "edgehal-runtime-comparison/1"


def rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def export_both(checkpoint: Path, work_dir: Path, *, data_root: str | None) -> dict[str, dict[str, Any]]:
    from edgehal.export.onnx import ExportOptions, export_onnx
    from edgehal.fileio import sha256_file

    stem = checkpoint.parent.name if checkpoint.name == "checkpoint.pt" else checkpoint.stem
    out = {}
    for aux in ("keep", "prune"):
        path = work_dir / f"{stem}.{aux}.onnx"
        t0 = time.perf_counter()
        rep = export_onnx(checkpoint, path, options=ExportOptions(aux=aux), data_root=data_root)
        out[aux] = {"path": str(path), "name": path.name, "seconds": time.perf_counter() - t0,
                    "exporter_seconds": rep.seconds, "bytes": rep.bytes, "nodes": rep.nodes,
                    "outputs": list(rep.outputs), "sha256": sha256_file(path)}
    return out


def parity(checkpoint: Path, exports: dict[str, dict], out_dir: Path, *, data_root: str | None) -> dict[str, Any]:
    from edgehal.parity import run_parity, write_reports

    report = run_parity(checkpoint, [exports["keep"]["path"], exports["prune"]["path"]], split="test",
                        data_root=data_root)
    md, js = write_reports(report, out_dir / "parity")
    artifacts = {aux: {"passed": a.passed, "seconds": a.seconds,
                       "heads": {h.head: {"error_percent": h.error, "error_diff_pp": h.error_diff_pp,
                                          "agreement_percent": h.agreement} for h in a.heads}}
                 for aux, a in zip(("keep", "prune"), report.artifacts)}
    return {"passed": report.passed, "split": report.split, "samples": report.samples, "seconds": report.seconds,
            "pytorch_seconds": report.seconds - sum(a.seconds for a in report.artifacts),
            "artifacts": artifacts, "reports": [rel(md), rel(js)]}


def bench(checkpoint: Path, exports: dict[str, dict], threads: int, args, out_dir: Path) -> dict[str, Any]:
    from edgehal.bench import BenchOptions, format_table, run_bench, write_reports
    from edgehal.bench.report import to_json

    options = BenchOptions(backends=("torch", "ort-cpu"), batch_sizes=tuple(args.batch_sizes), threads=threads,
                           warmup_seconds=args.warmup_seconds, min_runs=args.min_runs, min_seconds=args.min_seconds,
                           max_windows=args.max_windows,
                           max_preemptions_per_s=args.max_preemptions or None,
                           note=f"{args.note + '; ' if args.note else ''}{threads} thread(s)").validate()
    report = run_bench([checkpoint, exports["keep"]["path"], exports["prune"]["path"]], options,
                       warn=lambda m: print(f"warning: {m}", file=sys.stderr))
    print(format_table(report))
    paths = write_reports(report, out_dir / f"bench_threads{threads}")
    saved = json.loads(to_json(report))  # the bench's own JSON: the same numbers as bench.json
    return {"threads": threads, "files": {k: rel(v) for k, v in paths.items()},
            "results": saved["results"], "vs_checkpoint": saved["vs_checkpoint"],
            "kept_vs_pruned": saved["comparisons"], "warnings": saved["warnings"], "skipped": saved["skipped"],
            "machine": saved["machine"], "options": saved["options"]}


# --------------------------------------------------------------------------
# Report


def _runtime(r: dict) -> str:
    if r["artifact"]["kind"] == "checkpoint":
        return "PyTorch eager"
    return f"onnxruntime CPU, aux {r['artifact']['aux']}"


def _why(st: dict) -> str:
    """``Stability.reason`` of a result saved as JSON."""
    why = []
    if not st.get("windows_agree", True):
        why.append(f"windows disagree by {max(st['latency_spread'], st['throughput_spread']):.0%}")
    if st.get("contended"):
        why.append(f"busy: preempted {st['preemptions_per_s']:.0f}/s")
    return ", ".join(why)


def markdown(data: dict[str, Any]) -> str:
    from edgehal.bench.report import fmt_ms, fmt_rate
    from edgehal.export.onnx import ExportOptions

    m = data["machine"]
    lib = m.get("libraries", {})
    ex, par = data["exports"], data.get("parity")
    lines = [f"# Runtime comparison: {data['model']}", "",
             f"Checkpoint `{data['checkpoint']}` (sha256 `{data['checkpoint_sha256'][:16]}…`, "
             f"{data['checkpoint_bytes'] / 1024:.0f} KiB). Machine: {m.get('cpu_model')}, "
             f"{m.get('usable_cores')} usable cores, no GPU used; torch {lib.get('torch', '?')}, "
             f"onnxruntime {lib.get('onnxruntime', '?')}. Inputs: random, fixed seed. Timing: `edgehal bench` "
             f"(warm-up, windows until stable; e2e = host numpy in and out).", "",
             "## Latency per call", "",
             "| threads | batch | runtime | median ms | p99 ms | samples/s | runs | stable | speed-up vs PyTorch |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for b in data["bench"]:
        speed = {(c["artifact"], c["batch_size"]): c["speedup"] for c in b["vs_checkpoint"]}
        for r in sorted(b["results"], key=lambda r: (r["batch_size"], r["artifact"]["kind"] != "checkpoint",
                                                      r["artifact"]["aux"] or "")):
            s = r["stats"]
            sp = speed.get((r["artifact"]["name"], r["batch_size"]))
            stable = "yes" if r["stability"]["stable"] else f"no ({_why(r['stability'])})"
            lines.append(f"| {b['threads']} | {r['batch_size']} | {_runtime(r)} | {fmt_ms(s['median_ms'])} | "
                         f"{fmt_ms(s['p99_ms'])} | {fmt_rate(s['throughput_per_s'])} | {s['runs']} | {stable} | "
                         f"{'–' if r['artifact']['kind'] == 'checkpoint' else f'{sp:.2f}×' if sp else '–'} |")
    lines += ["", f"## onnxruntime against PyTorch eager (goal: at least {GOAL_SPEEDUP:.0f}× at batch 1)", "",
              "| threads | batch | kept: speed-up | pruned: speed-up | goal |", "| --- | --- | --- | --- | --- |"]
    for g in data["goal"]:
        verdict = "–" if g["batch_size"] != 1 else ("met" if g["met"] else "not met")
        if g["batch_size"] == 1 and not g["all_stable"]:
            verdict += " (from unstable results: rerun on an idle machine)"
        lines.append(f"| {g['threads']} | {g['batch_size']} | {g['keep']:.2f}× | {g['prune']:.2f}× | {verdict} |")
    lines += ["", "## Kept against pruned auxiliary heads", "",
              f"Files: kept {ex['keep']['bytes'] / 1024:.1f} KiB ({ex['keep']['nodes']} nodes, outputs "
              f"{', '.join(ex['keep']['outputs'])}); pruned {ex['prune']['bytes'] / 1024:.1f} KiB "
              f"({ex['prune']['nodes']} nodes, outputs {', '.join(ex['prune']['outputs'])}): "
              f"{(1 - ex['prune']['bytes'] / ex['keep']['bytes']) * 100:.1f}% smaller."
              + (" Pruning removes no node here: everything the auxiliary output needs also feeds the main "
                 "head (a HAL auxiliary block feeds the classifier), so only the output goes; a training-only "
                 "branch (`mnist_ds_case1`) is where pruning removes nodes."
                 if ex["prune"]["nodes"] == ex["keep"]["nodes"] else ""), "",
              "| threads | batch | kept median ms | pruned median ms | kept / pruned | both stable |",
              "| --- | --- | --- | --- | --- | --- |"]
    for b in data["bench"]:
        for c in sorted(b["kept_vs_pruned"], key=lambda c: c["batch_size"]):
            lines.append(f"| {b['threads']} | {c['batch_size']} | {fmt_ms(c['keep_median_ms'])} | "
                         f"{fmt_ms(c['prune_median_ms'])} | {c['prune_speedup']:.2f}× | "
                         f"{'yes' if c['both_stable'] else 'no'} |")
    lines += ["", "## Time to export and to check parity", "",
              f"- export, aux kept: {ex['keep']['seconds']:.1f} s; aux pruned: {ex['prune']['seconds']:.1f} s "
              f"(load, export, prune, `onnx.checker`, onnxruntime-vs-PyTorch check on {ExportOptions().check_samples} "
              "real inputs, atomic write)"]
    if par:
        lines.append(f"- parity on the full {par['split']} split ({par['samples']:,} images), PyTorch + both "
                     f"exports: {par['seconds']:.1f} s (PyTorch {par['pytorch_seconds']:.1f} s, kept "
                     f"{par['artifacts']['keep']['seconds']:.1f} s, "
                     f"pruned {par['artifacts']['prune']['seconds']:.1f} s)"
                     f": **{'PASS' if par['passed'] else 'FAIL'}**")
    # Unstable results are already marked in the table; the rest (a busy machine, skips) is listed here.
    warnings = [f"{b['threads']} thread(s): {w}" for b in data["bench"] for w in b["warnings"]
                if "unstable after" not in w]
    if warnings:
        lines += ["", "## Warnings from the benchmark", ""] + [f"- {w}" for w in warnings]
    lines += ["", f"Written {data['created']} by `benchmarks/runtime_comparison.py`; per-thread bench files in "
              + ", ".join(f"`{Path(b['files']['json']).parent.name}/`" for b in data["bench"]) + "."]
    return "\n".join(lines) + "\n"


def goal_rows(bench_runs: list[dict]) -> list[dict]:
    rows = []
    for b in bench_runs:
        by = {(c["aux"], c["batch_size"]): c for c in b["vs_checkpoint"]}
        for batch in sorted({c["batch_size"] for c in b["vs_checkpoint"]}):
            keep, prune = by.get(("keep", batch)), by.get(("prune", batch))
            if keep is None or prune is None or keep["speedup"] is None or prune["speedup"] is None:
                continue
            rows.append({"threads": b["threads"], "batch_size": batch, "keep": keep["speedup"],
                         "prune": prune["speedup"], "met": min(keep["speedup"], prune["speedup"]) >= GOAL_SPEEDUP,
                         "all_stable": keep["both_stable"] and prune["both_stable"]})
    return rows


def plot(data: dict[str, Any], path: Path) -> None:
    """Median latency against batch size per runtime (dashed: p99), one panel per thread setting."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from edgehal.bench.report import fmt_ms
    from edgehal.fileio import atomic_write_with

    runs = data["bench"]
    fig = Figure(figsize=(5.2 * len(runs), 4.4), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(runs), sharey=True, squeeze=False)[0]
    colors = {"PyTorch eager": "tab:red", "onnxruntime CPU, aux keep": "tab:blue",
              "onnxruntime CPU, aux prune": "tab:green"}
    for ax, b in zip(axes, runs):
        series: dict[str, list[dict]] = {}
        for r in b["results"]:
            series.setdefault(_runtime(r), []).append(r)
        for label, rs in sorted(series.items()):
            rs.sort(key=lambda r: r["batch_size"])
            xs = [r["batch_size"] for r in rs]
            med = [r["stats"]["median_ms"] for r in rs]
            color = colors.get(label)
            ax.plot(xs, med, marker="o", color=color, label=label)
            ax.plot(xs, [r["stats"]["p99_ms"] for r in rs], linestyle="--", linewidth=0.8, alpha=0.6, color=color)
            # kept labels left of the point, the others right: the two onnxruntime lines run close.
            left = label.endswith("keep")
            for x, y, r in zip(xs, med, rs):
                mark = "" if r["stability"]["stable"] else " (unstable)"
                ax.annotate(fmt_ms(y) + mark, (x, y), textcoords="offset points", xytext=(-7 if left else 7, 0),
                            ha="right" if left else "left", va="center", fontsize=7, color=color)
        batches = sorted({r["batch_size"] for r in b["results"]})
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(batches, [str(x) for x in batches])
        ax.margins(x=0.55)
        ax.set_xlabel("batch size")
        ax.set_title(f"{b['threads']} thread(s)", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency per call, ms (solid: median, dashed: p99)")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{data['model']}: PyTorch eager vs onnxruntime (CPU: {data['machine'].get('cpu_model')})",
                 fontsize=10)
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))


# --------------------------------------------------------------------------


def _ints(text: str, what: str, *, all_value: int | None = None) -> list[int]:
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item == "all" and all_value is not None:
            out.append(all_value)
        elif item.isdigit() and int(item) >= 1:
            out.append(int(item))
        else:
            raise SystemExit(f"error: {what} {text!r} | {item!r} is not a positive integer"
                             + (" or 'all'" if all_value is not None else ""))
    return list(dict.fromkeys(out))


def main(argv: list[str] | None = None) -> int:
    os.chdir(REPO)  # every path below, and in the saved results, is relative to the repository
    from edgehal.host import usable_cores

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                    help=f"the model (default: {rel(DEFAULT_CHECKPOINT)})")
    ap.add_argument("--out-dir", type=Path, default=Path("benchmarks/results/runtime_comparison"),
                    help="results (default: benchmarks/results/runtime_comparison)")
    ap.add_argument("--work-dir", type=Path, default=Path("runs/runtime_comparison"),
                    help="the exported ONNX files (default: runs/runtime_comparison, ignored by git)")
    ap.add_argument("--data-dir", default=None, help="data directory (default: $EDGEHAL_DATA)")
    ap.add_argument("--batch-sizes", default="1,64", help="batch sizes (default: 1,64)")
    ap.add_argument("--threads", default="1,all", help=f"thread settings; all = usable cores, here "
                    f"{usable_cores()} (default: 1,all)")
    ap.add_argument("--min-seconds", type=float, default=3.0, help="timed seconds per case at least (default: 3)")
    ap.add_argument("--warmup-seconds", type=float, default=1.0, help="warm-up seconds per case (default: 1)")
    ap.add_argument("--min-runs", type=int, default=100, help="timed calls per case at least (default: 100)")
    ap.add_argument("--max-windows", type=int, default=10, help="windows before giving up on stability (default: 10)")
    ap.add_argument("--max-preemptions", type=float, default=75.0,
                    help="preemptions per second above which a result is unstable; 0: not checked (default: 75)")
    ap.add_argument("--skip-parity", action="store_true", help="do not run parity (default: run it)")
    ap.add_argument("--note", default="", help="a note stored with the results (default: none)")
    args = ap.parse_args(argv)
    args.batch_sizes = _ints(args.batch_sizes, "--batch-sizes")
    threads = _ints(args.threads, "--threads", all_value=usable_cores())

    from edgehal.checkpoint import load_checkpoint
    from edgehal.errors import EdgehalError
    from edgehal.fileio import atomic_write_text, sha256_file

    out_dir = args.out_dir  # relative to the repository (the cwd): saved results name no machine path
    try:
        ckpt = load_checkpoint(args.checkpoint)
        t0 = time.perf_counter()
        print(f"[1/3] exporting {args.checkpoint} with the auxiliary heads kept and pruned", flush=True)
        exports = export_both(args.checkpoint, args.work_dir, data_root=args.data_dir)
        par = None
        if not args.skip_parity:
            print("[2/3] parity of both exports against PyTorch on the full test split", flush=True)
            par = parity(args.checkpoint, exports, out_dir, data_root=args.data_dir)
        print(f"[3/3] benchmarking PyTorch eager and onnxruntime CPU at batch {args.batch_sizes}, "
              f"threads {threads}", flush=True)
        runs = [bench(args.checkpoint, exports, t, args, out_dir) for t in threads]
    except EdgehalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    data = {"format": FORMAT, "model": ckpt.payload.get("name", args.checkpoint.parent.name),
            "checkpoint": rel(args.checkpoint), "checkpoint_sha256": sha256_file(args.checkpoint),
            "checkpoint_bytes": args.checkpoint.stat().st_size, "test_error_percent": {
                h: m["error_rate"] for h, m in ckpt.metrics.get("test", {}).items()
                if isinstance(m, dict) and "error_rate" in m},
            "exports": exports, "parity": par, "bench": runs, "goal": goal_rows(runs),
            "goal_speedup": GOAL_SPEEDUP, "machine": runs[-1]["machine"], "note": args.note,
            "command": " ".join(["python", "benchmarks/runtime_comparison.py", *(argv or sys.argv[1:])]),
            "total_seconds": time.perf_counter() - t0,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write_text(out_dir / "runtime_comparison.json", json.dumps(data, indent=2) + "\n")
    text = markdown(data)
    atomic_write_text(out_dir / "runtime_comparison.md", text)
    plot(data, out_dir / "runtime_comparison.png")
    print("\n" + text)
    print(f"wrote {rel(out_dir)}/runtime_comparison.json, .md and .png")
    return 0 if par is None or par["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
