"""The recurrent cells' results table: every recurrent cell on both tasks, measured.

Runs, for each cell (``rnn``, ``lstm``, ``peephole_lstm``, ``gru``) and seed:

* row-sequential MNIST, baseline and HAL Case1
  (``models/configs/mnist_rows_<cell>.yaml``, ``mnist_rows_<cell>_hal_case1.yaml``);
* hierarchical localization by recurrence on UJIIndoorLoc
  (``models/configs/ujiindoorloc_recurrent_<cell>.yaml``).

Every run is ``edgehal train`` in a subprocess, with the exact command saved.
It is resumable: a finished run (its JSON exists) is skipped, an interrupted
one continues from its last epoch's checkpoint (under the git-ignored
``runs/rnn/``). Right after training, the checkpoint is exported to ONNX
(edgehal's default exporter and opset, dynamic batch and sequence) with its
auxiliary heads kept and pruned, both go through ``edgehal parity`` on the full test split (report next to the
checkpoint), and the pruned export (what a deployment runs) is timed with
``edgehal.bench.run_bench``: batch 1, one thread, PyTorch eager on the
checkpoint and onnxruntime (CPU) on the export. Each finished run is saved as
``<results>/<config>_seed<k>.json`` (test metrics, parameters, parity,
latency, budget, command, training time, machine). Then ``results.md`` and ``results.json``
are written from the saved files alone: test error (MNIST), building and floor
hit rates and mean 2D error (localization, on validationData.csv), mean ±
standard deviation over seeds, parameters and latency, with the goals set for them.

Usage::

    export EDGEHAL_DATA=../shared/data
    python benchmarks/rnn_results.py                           # configs' epochs, seed 0, both tasks
    python benchmarks/rnn_results.py --seeds 0,1,2 --tasks localization
    python benchmarks/rnn_results.py --dry-run                 # what would run
    python benchmarks/rnn_results.py --summary-only            # rebuild the table from saved runs
    python benchmarks/rnn_results.py --tasks mnist --remeasure # export, parity, latency again; no training
    # smoke test: tiny budget, everything outside the repository
    python benchmarks/rnn_results.py --epochs 1 --limit 2000 --threads 1 --bench-seconds 0.2 \\
        --results-dir /tmp/rnn_smoke/results --runs-dir /tmp/rnn_smoke/runs

Latency is only meaningful on a quiet machine: a result whose timing windows
disagree or whose process was preempted is marked "unstable" in the table.

Exit code: 0 on success; 1 on a bad option or a failed run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduce_hal import Budget as HalBudget  # noqa: E402
from reproduce_hal import (Failure, TrainRun, checkpoint_state, execute, load_run_config, rel,  # noqa: E402
                           write_json)

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "models" / "configs"
CELLS = ("rnn", "lstm", "peephole_lstm", "gru")
TASKS = ("mnist", "localization")
VARIANTS = {"mnist": ("baseline", "hal_case1"), "localization": ("recurrent",)}
RESULT_FORMAT = "edgehal-rnn-run/1"
SUMMARY_FORMAT = "edgehal-rnn-results/1"
LOC_METRICS = ("building_hit_rate", "floor_hit_rate", "mean_error_m", "median_error_m", "penalised_error_m")
# The goals set for the recurrent cells.
MNIST_LSTM_GOAL = 1.5            # % test error, LSTM
PUBLISHED_FLOOR_HIT = 95.24      # %, Elesawi and Kim 2021 (hierarchical RNN), validationData.csv
HIER_RESULT = REPO / "benchmarks" / "results" / "ujiindoorloc_hier_3seeds.json"


def config_path(task: str, variant: str, cell: str) -> Path:
    name = {"baseline": f"mnist_rows_{cell}", "hal_case1": f"mnist_rows_{cell}_hal_case1",
            "recurrent": f"ujiindoorloc_recurrent_{cell}"}[variant]
    path = CONFIGS / f"{name}.yaml"
    if not path.is_file():
        raise Failure(f"config {rel(path)} | file not found. Note: one config per cell and variant in models/configs/")
    return path


@dataclass(frozen=True)
class Budget(HalBudget):
    """``reproduce_hal``'s budget, plus what must match within one results folder."""

    def key(self) -> dict[str, Any]:
        """What must match between the runs of one results folder (threads change speed, not results)."""
        return {"epochs": self.epochs, "limit": self.limit, "extra": list(self.extra)}


@dataclass(frozen=True, kw_only=True)
class Run(TrainRun):
    task: str
    variant: str
    cell: str

    @property
    def name(self) -> str:
        return f"{self.config.stem}_seed{self.seed}"


def plan_runs(tasks: list[str], cells: list[str], seeds: list[int], budget: Budget, runs_dir: Path,
              data_dir: str | None) -> list[Run]:
    """Every run, its config loaded with its overrides: a bad option fails before any work."""
    runs = []
    for task in tasks:
        for cell in cells:
            for variant in VARIANTS[task]:
                path = config_path(task, variant, cell)
                for seed in seeds:
                    overrides = budget.overrides(seed)
                    cfg = load_run_config(path, overrides)
                    if cfg.model.get("cell") != cell:
                        raise Failure(f"config {rel(path)} | has cell {cfg.model.get('cell')!r}, not {cell!r}")
                    runs.append(Run(task=task, variant=variant, cell=cell, seed=seed, config=path,
                                    overrides=tuple(overrides), output_dir=runs_dir / f"{path.stem}_seed{seed}",
                                    data_dir=data_dir, epochs=cfg.train.epochs))
    return runs


# --------------------------------------------------------------------------
# One run: train, then measure


def export_and_check(checkpoint: Path, work: Path, *, data_dir: str | None) -> tuple[Path, dict]:
    """Export kept and pruned (default exporter and opset, dynamic batch and, for row classifiers, dynamic
    sequence length) and run parity on the full test split."""
    from edgehal.export.onnx import ExportOptions, export_onnx
    from edgehal.parity import run_parity, write_reports

    paths = {aux: work / f"model.{aux}.onnx" for aux in ("keep", "prune")}
    nodes = {}
    for aux, path in paths.items():
        nodes[aux] = export_onnx(checkpoint, path, options=ExportOptions(aux=aux), data_root=data_dir,
                                 log=lambda _: None).nodes
    rep = run_parity(checkpoint, [paths["keep"], paths["prune"]], data_root=data_dir, log=lambda _: None)
    write_reports(rep, work / "parity")
    heads = {}
    for a in rep.artifacts:
        for h in a.heads:
            entry = {"passed": h.passed, "max_abs_diff": h.max_abs_diff}
            if h.error_diff_pp is not None:
                entry["error_diff_pp"] = h.error_diff_pp
            heads[f"{Path(a.artifact).name}:{h.head}"] = entry
    import onnx

    dims = onnx.load(str(paths["prune"])).graph.input[0].type.tensor_type.shape.dim
    return paths["prune"], {"passed": rep.passed, "samples": rep.samples, "nodes": nodes, "heads": heads,
                            "input_shape": [d.dim_param or d.dim_value for d in dims],
                            "report": rel(work / "parity" / "parity.md")}


def latency(checkpoint: Path, onnx_path: Path, *, seconds: float, min_runs: int) -> dict:
    """PyTorch eager (checkpoint) and onnxruntime CPU (pruned export), batch 1, one thread."""
    from edgehal.bench import BenchOptions, run_bench

    opts = BenchOptions(backends=("torch", "ort-cpu"), batch_sizes=(1,), threads=1, min_seconds=seconds,
                        min_runs=min_runs, warmup_seconds=min(1.0, seconds))
    bench = run_bench([checkpoint, onnx_path], opts, progress=False)
    return {r.backend: {"median_ms": r.stats.median_ms, "p99_ms": r.stats.p99_ms, "runs": r.stats.runs,
                        "stable": r.stability.stable} for r in bench.results}


def result_of(run: Run, budget: Budget, *, wall_seconds: float | None, resumed_from: int | None,
              timing: dict, parity: dict) -> dict[str, Any]:
    """The saved record of a finished run; metrics read from its checkpoint."""
    from edgehal.checkpoint import load_checkpoint
    from edgehal.doctor import machine_info
    from edgehal.fileio import sha256_file

    ckpt = load_checkpoint(run.checkpoint)
    p = ckpt.payload
    test = p["metrics"]["test"]
    if run.task == "mnist":
        metrics = {"main_head": ckpt.manifest.main.name,
                   "test_error_percent": {h: m["error_rate"] for h, m in test.items()
                                          if isinstance(m, dict) and "error_rate" in m},
                   "test_samples": test[ckpt.manifest.main.name].get("count")}
    else:
        metrics = {k: test["summary"][k] for k in LOC_METRICS}
        metrics["test_samples"] = test["summary"]["count"]
    return {
        "format": RESULT_FORMAT, "task": run.task, "variant": run.variant, "cell": run.cell, "seed": run.seed,
        "config": rel(run.config), "overrides": list(run.overrides), "argv": run.argv,
        "command": shlex.join(run.argv), "budget": budget.key(), "epochs": int(p["training"]["epoch"]),
        "metrics": metrics, "parameters": sum(v.numel() for v in ckpt.build_model().parameters()),
        "latency_batch1_threads1": timing, "parity": parity,
        "train_seconds": sum(float(r.get("seconds") or 0.0) for r in p.get("history", [])),
        "wall_seconds": wall_seconds, "resumed_from_epoch": resumed_from,
        "checkpoint": rel(run.checkpoint), "checkpoint_sha256": sha256_file(run.checkpoint),
        "resolved_config": p["config"], "versions": p.get("versions", {}), "machine": machine_info(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def load_results(results_dir: Path) -> list[dict]:
    out = []
    for path in sorted(results_dir.glob("*_seed*.json")):
        data = json.loads(path.read_text())
        if data.get("format") != RESULT_FORMAT:
            raise Failure(f"{path} | is not a result of this script. Note: format {RESULT_FORMAT}")
        data["_file"] = path.name
        out.append(data)
    return out


def check_budget(existing: list[dict], budget: Budget) -> None:
    """One budget per results folder, or a mean would mix budgets."""
    for data in existing:
        if data["budget"] != budget.key():
            raise Failure(f"{data['_file']} | was run with budget {data['budget']}, not {budget.key()}. "
                          "Note: one budget per --results-dir; pick another --results-dir for a different budget")


def run_all(runs: list[Run], budget: Budget, results_dir: Path, *, dry_run: bool, bench_seconds: float,
            bench_runs: int, remeasure: bool = False) -> None:
    check_budget(load_results(results_dir), budget)
    if remeasure:
        remeasure_all([r for r in runs if (results_dir / f"{r.name}.json").is_file()], budget, results_dir,
                      dry_run=dry_run, bench_seconds=bench_seconds, bench_runs=bench_runs)
        return
    todo = [r for r in runs if not (results_dir / f"{r.name}.json").is_file()]
    print(f"{len(runs)} runs planned, {len(runs) - len(todo)} already finished, {len(todo)} to do "
          f"(results: {rel(results_dir)})", flush=True)
    walls: list[float] = []
    for i, run in enumerate(todo, 1):
        state, done = checkpoint_state(run)
        eta = f", about {statistics.fmean(walls) * (len(todo) - i + 1) / 60:.0f} min left" if walls else ""
        what = {"new": "training", "resume": f"resuming from epoch {done}", "finished": "measuring finished run"}
        print(f"\n[{i}/{len(todo)}] {run.name}: {what[state]} ({run.epochs} epochs{eta})\n"
              f"  $ {shlex.join(run.argv)}", flush=True)
        if dry_run:
            continue
        t0 = time.perf_counter()
        wall = None
        if state != "finished":
            wall = execute(run.argv, resume=run.checkpoint if state == "resume" else None)
        pruned, parity = export_and_check(run.checkpoint, run.output_dir, data_dir=run.data_dir)
        timing = latency(run.checkpoint, pruned, seconds=bench_seconds, min_runs=bench_runs)
        walls.append(time.perf_counter() - t0)
        result = result_of(run, budget, wall_seconds=wall, resumed_from=done if state != "new" else None,
                           timing=timing, parity=parity)
        write_json(results_dir / f"{run.name}.json", result)
        print(f"  done: {_headline(result)}; parity (kept, pruned) {'PASS' if parity['passed'] else 'FAIL'}; "
              f"PyTorch {timing['torch']['median_ms']:.3f} ms, onnxruntime {timing['ort-cpu']['median_ms']:.3f} ms;"
              f" saved {rel(results_dir / (run.name + '.json'))}", flush=True)


def remeasure_all(runs: list[Run], budget: Budget, results_dir: Path, *, dry_run: bool, bench_seconds: float,
                  bench_runs: int) -> None:
    """Export, parity and latency again for finished runs (after an exporter change), training nothing.

    The checkpoint must be the one the saved result names (same sha256); the
    result keeps its wall time and gains ``remeasured`` (when).
    """
    from edgehal.fileio import sha256_file

    print(f"{len(runs)} saved runs to measure again (results: {rel(results_dir)})", flush=True)
    for i, run in enumerate(runs, 1):
        old = json.loads((results_dir / f"{run.name}.json").read_text())
        print(f"\n[{i}/{len(runs)}] {run.name}: export, parity and latency again", flush=True)
        if dry_run:
            continue
        if not run.checkpoint.is_file() or sha256_file(run.checkpoint) != old["checkpoint_sha256"]:
            raise Failure(f"{rel(run.checkpoint)} | is missing or not the checkpoint {run.name}.json recorded. "
                          "Note: --remeasure only measures the saved runs' own checkpoints again")
        pruned, parity = export_and_check(run.checkpoint, run.output_dir, data_dir=run.data_dir)
        timing = latency(run.checkpoint, pruned, seconds=bench_seconds, min_runs=bench_runs)
        result = result_of(run, budget, wall_seconds=old["wall_seconds"], resumed_from=old["resumed_from_epoch"],
                           timing=timing, parity=parity)
        result["remeasured"] = result["created"]
        result["created"] = old["created"]
        write_json(results_dir / f"{run.name}.json", result)
        print(f"  done: {_headline(result)}; parity (kept, pruned) {'PASS' if parity['passed'] else 'FAIL'}; "
              f"PyTorch {timing['torch']['median_ms']:.3f} ms, onnxruntime {timing['ort-cpu']['median_ms']:.3f} ms",
              flush=True)


def _headline(r: dict) -> str:
    m = r["metrics"]
    if r["task"] == "mnist":
        return f"test error {m['test_error_percent'][m['main_head']]:.2f}%"
    return (f"building {m['building_hit_rate']:.2f}%, floor {m['floor_hit_rate']:.2f}%, "
            f"mean error {m['mean_error_m']:.2f} m")


# --------------------------------------------------------------------------
# The table


def _stats(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values) if values else None, "max": max(values) if values else None}


def _latency(runs: list[dict], backend: str) -> dict[str, Any]:
    values = [r["latency_batch1_threads1"][backend] for r in runs]
    return {"median_ms": statistics.median(v["median_ms"] for v in values) if values else None,
            "stable": all(v["stable"] for v in values)}


def summarize(results_dir: Path) -> dict[str, Any]:
    existing = load_results(results_dir)
    budgets = {json.dumps(r["budget"], sort_keys=True) for r in existing}
    if len(budgets) > 1:
        raise Failure(f"{rel(results_dir)} | mixes budgets {sorted(budgets)}. Note: one budget per results folder")
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in existing:
        groups.setdefault((r["task"], r["variant"], r["cell"]), []).append(r)
    rows = []
    for task in TASKS:
        for cell in CELLS:
            for variant in VARIANTS[task]:
                runs = sorted(groups.get((task, variant, cell), []), key=lambda r: r["seed"])
                if not runs:
                    continue
                row: dict[str, Any] = {
                    "task": task, "variant": variant, "cell": cell, "seeds": [r["seed"] for r in runs],
                    "epochs": sorted({r["epochs"] for r in runs}), "parameters": runs[0]["parameters"],
                    "latency_ms": {b: _latency(runs, b) for b in ("torch", "ort-cpu")},
                    "parity_passed": [r["parity"]["passed"] for r in runs],
                    "train_seconds_mean": statistics.fmean(r["train_seconds"] for r in runs),
                    "test_samples": runs[0]["metrics"]["test_samples"], "sources": [r["_file"] for r in runs]}
                if task == "mnist":
                    main = runs[0]["metrics"]["main_head"]
                    row["test_error_percent"] = _stats([r["metrics"]["test_error_percent"][main] for r in runs])
                    row["per_seed"] = [r["metrics"]["test_error_percent"][main] for r in runs]
                    aux = [v for r in runs for h, v in r["metrics"]["test_error_percent"].items() if h != main]
                    row["aux_error_percent_mean"] = statistics.fmean(aux) if aux else None
                else:
                    row.update({k: _stats([r["metrics"][k] for r in runs]) for k in LOC_METRICS})
                rows.append(row)
    return {"format": SUMMARY_FORMAT, "budget": json.loads(next(iter(budgets))) if budgets else None,
            "rows": rows, "goals": goals(rows), "reference": hier_reference(),
            "machines": sorted({r["machine"].get("cpu_model") or "?" for r in existing}),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def goals(rows: list[dict]) -> list[dict]:
    """The goals, checked on what was measured."""
    out = []
    for r in rows:
        if r["task"] == "mnist" and r["cell"] == "lstm":
            m = r["test_error_percent"]["mean"]
            out.append({"goal": f"row-sequential MNIST, LSTM {r['variant']}: test error < {MNIST_LSTM_GOAL}%",
                        "value": m, "met": m < MNIST_LSTM_GOAL})
    by = {(r["variant"], r["cell"]): r for r in rows if r["task"] == "mnist"}
    for cell in CELLS:
        if ("baseline", cell) in by and ("hal_case1", cell) in by:
            b = by[("baseline", cell)]["test_error_percent"]["mean"]
            h = by[("hal_case1", cell)]["test_error_percent"]["mean"]
            out.append({"goal": f"row-sequential MNIST, {cell}: HAL Case1 no worse than the baseline",
                        "value": h - b, "met": h <= b})
    for r in rows:
        if r["task"] == "localization":
            m = r["floor_hit_rate"]["mean"]
            out.append({"goal": f"localization by recurrence, {r['cell']}: floor hit rate > {PUBLISHED_FLOOR_HIT}%",
                        "value": m, "met": m > PUBLISHED_FLOOR_HIT})
    return out


def hier_reference() -> dict | None:
    """The non-recurrent ``hier_localization`` result, when benchmarks/localization.py has saved one."""
    if not HIER_RESULT.is_file():
        return None
    data = json.loads(HIER_RESULT.read_text())
    return {"source": rel(HIER_RESULT), "seeds": data.get("seeds"),
            **{k: data["summary"][k]["mean"] for k in LOC_METRICS if k in data.get("summary", {})}}


def _pm(s: dict, spec: str = ".2f") -> str:
    if not s or s["mean"] is None:
        return "–"
    return format(s["mean"], spec) + (f" ± {s['std']:{spec}}" if s["std"] is not None else "")


def _ms(lat: dict) -> str:
    if lat["median_ms"] is None:
        return "–"
    return f"{lat['median_ms']:.3f}" + ("" if lat["stable"] else " (unstable)")


def _parity(r: dict) -> str:
    ok = sum(r["parity_passed"])
    return f"{'pass' if ok == len(r['parity_passed']) else 'FAIL'} ({ok}/{len(r['parity_passed'])})"


def _budget_text(budget: dict | None) -> str:
    if not budget:
        return "no runs yet"
    parts = ["each config's own epochs" if budget["epochs"] is None else f"{budget['epochs']} epoch(s) per run",
             "full data" if budget["limit"] is None else f"data limited to {budget['limit']} samples per split"]
    if budget["extra"]:
        parts.append("overrides " + " ".join(f"`{o}`" for o in budget["extra"]))
    return ", ".join(parts)


def summary_markdown(s: dict) -> str:
    lines = ["# Recurrent cells: results", "",
             f"Budget: {_budget_text(s['budget'])}. Mean ± sample standard deviation over seeds. Latency: median "
             "of `edgehal.bench.run_bench`, batch 1, one thread, PyTorch eager (checkpoint) and onnxruntime CPU "
             "(export with auxiliary heads pruned); median over seeds. Parity: `edgehal parity` of the kept and "
             "pruned exports on the full test split, seeds passing. Machine: "
             f"{', '.join(s['machines']) or '–'}.", ""]
    mnist = [r for r in s["rows"] if r["task"] == "mnist"]
    if mnist:
        lines += ["## Row-sequential MNIST (28 steps of 28 pixels)", "",
                  f"Test error (%) on {mnist[0]['test_samples']:,} test images.", "",
                  "| cell | model | seeds | test error % | per seed | aux head error % | parameters "
                  "| PyTorch ms | onnxruntime ms | parity | train time |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in mnist:
            lines.append(
                f"| {r['cell']} | {'HAL Case1' if r['variant'] == 'hal_case1' else 'baseline'} | {len(r['seeds'])} | "
                f"{_pm(r['test_error_percent'])} | {', '.join(f'{v:.2f}' for v in r['per_seed'])} | "
                f"{'–' if r['aux_error_percent_mean'] is None else format(r['aux_error_percent_mean'], '.2f')} | "
                f"{r['parameters']:,} | {_ms(r['latency_ms']['torch'])} | {_ms(r['latency_ms']['ort-cpu'])} | "
                f"{_parity(r)} | {_duration(r['train_seconds_mean'])} |")
        lines.append("")
    loc = [r for r in s["rows"] if r["task"] == "localization"]
    if loc:
        lines += ["## Hierarchical localization by recurrence on UJIIndoorLoc (building -> floor -> coordinates)", "",
                  f"On validationData.csv ({loc[0]['test_samples']:,} fingerprints). Floor hit: building and floor "
                  "both right. Penalised: 2D error + 4 m per floor missed + 50 m for a wrong building.", "",
                  "| cell | seeds | building hit % | floor hit % | mean 2D error m | median m | penalised m "
                  "| parameters | PyTorch ms | onnxruntime ms | parity | train time |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in loc:
            lines.append(
                f"| {r['cell']} | {len(r['seeds'])} | {_pm(r['building_hit_rate'])} | {_pm(r['floor_hit_rate'])} | "
                f"{_pm(r['mean_error_m'])} | {_pm(r['median_error_m'])} | {_pm(r['penalised_error_m'])} | "
                f"{r['parameters']:,} | {_ms(r['latency_ms']['torch'])} | {_ms(r['latency_ms']['ort-cpu'])} | "
                f"{_parity(r)} | {_duration(r['train_seconds_mean'])} |")
        ref = s["reference"]
        if ref:
            lines += ["", f"Reference, not recurrent: `hier_localization` ({ref['source']}, seeds {ref['seeds']}): "
                      f"building {ref['building_hit_rate']:.2f}%, floor {ref['floor_hit_rate']:.2f}%, mean error "
                      f"{ref['mean_error_m']:.2f} m. Published (Elesawi and Kim 2021, hierarchical RNN): building "
                      f"100%, floor {PUBLISHED_FLOOR_HIT}%, 3D error 8.62 m."]
        lines.append("")
    if s["goals"]:
        lines += ["## Goals", ""]
        lines += [f"- {g['goal']}: **{'met' if g['met'] else 'not met'}** ({g['value']:+.2f})"
                  if "no worse" in g["goal"] else
                  f"- {g['goal']}: **{'met' if g['met'] else 'not met'}** ({g['value']:.2f}%)" for g in s["goals"]]
        lines.append("")
    sources = [f for r in s["rows"] for f in r["sources"]]
    lines += ["Every number comes from the result files in this folder: " + ", ".join(f"`{f}`" for f in sources)
              + f". Written {s['created']} by `benchmarks/rnn_results.py`."]
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def write_summary(results_dir: Path) -> dict[str, Any]:
    from edgehal.fileio import atomic_write_text

    summary = summarize(results_dir)
    text = summary_markdown(summary)
    atomic_write_text(results_dir / "results.md", text)
    write_json(results_dir / "results.json", summary)
    print("\n" + text)
    print(f"wrote {rel(results_dir)}/results.md and results.json")
    return summary


# --------------------------------------------------------------------------
# Command line


def _names(text: str, valid: tuple[str, ...], what: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise Failure(f"{what} {text!r} | has unknown name {bad[0] if bad else '(none)'!r}. "
                      f"Note: some of {', '.join(valid)}")
    return list(dict.fromkeys(names))


def _seeds(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise Failure(f"--seeds {text!r} | is not a comma-separated list of integers. Note: e.g. 0,1,2") from None
    if not values or len(set(values)) != len(values) or min(values) < 0:
        raise Failure(f"--seeds {text!r} | needs distinct integers >= 0. Note: e.g. 0,1,2")
    return values


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"tasks to run (default: {','.join(TASKS)})")
    ap.add_argument("--cells", default=",".join(CELLS), help=f"cells to run (default: {','.join(CELLS)})")
    ap.add_argument("--seeds", default="0", help="seeds, comma-separated (default: 0)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per run (default: each config's own)")
    ap.add_argument("--limit", type=int, default=None, help="cap on samples per split, for smoke runs "
                                                              "(default: full data)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads per training run (default: each config's own, else torch's choice)")
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                    help="another override for every run, as `edgehal train --set` (default: none)")
    ap.add_argument("--bench-seconds", type=float, default=3.0,
                    help="minimum timed seconds per backend in the latency measurement (default: 3)")
    ap.add_argument("--bench-runs", type=int, default=100, help="minimum timed runs per backend (default: 100)")
    ap.add_argument("--data-dir", default=None, help="data directory (default: $EDGEHAL_DATA)")
    ap.add_argument("--results-dir", type=Path, default=REPO / "benchmarks" / "results" / "rnn",
                    help="result JSONs and the table (default: benchmarks/results/rnn)")
    ap.add_argument("--runs-dir", type=Path, default=REPO / "runs" / "rnn",
                    help="checkpoints and exports, ignored by git (default: runs/rnn)")
    ap.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    ap.add_argument("--summary-only", action="store_true", help="only rebuild the table from saved results")
    ap.add_argument("--remeasure", action="store_true",
                    help="export, parity and latency again for the saved runs of the selection; trains nothing")
    args = ap.parse_args(argv)
    try:
        for name in ("epochs", "limit", "threads"):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise Failure(f"--{name} {value} | must be at least 1")
        if args.bench_seconds < 0 or args.bench_runs < 3:
            raise Failure("--bench-seconds/--bench-runs | must be >= 0 and >= 3")
        results_dir = args.results_dir.resolve()
        if not args.summary_only:
            budget = Budget(args.epochs, args.limit, args.threads, tuple(args.extra))
            runs = plan_runs(_names(args.tasks, TASKS, "--tasks"), _names(args.cells, CELLS, "--cells"),
                             _seeds(args.seeds), budget, args.runs_dir.resolve(), args.data_dir)
            results_dir.mkdir(parents=True, exist_ok=True)
            run_all(runs, budget, results_dir, dry_run=args.dry_run, bench_seconds=args.bench_seconds,
                    bench_runs=args.bench_runs, remeasure=args.remeasure)
        if not args.dry_run:
            write_summary(results_dir)
    except Failure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to continue where it stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
