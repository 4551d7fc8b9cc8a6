"""Reproduce the HAL error-rate table: baseline and Case1..Case4 over several seeds.

One command trains every (case, seed) of a data set with ``edgehal train``
(``models/configs/<dataset>_baseline.yaml`` and ``<dataset>_hal_case{1..4}.yaml``)
and writes, per finished run, ``<results>/<case>_seed<k>.json``: the exact
command and overrides, the budget, the test error of every head and the
per-epoch validation curve (both read from the checkpoint), the test images
the main head gets wrong (one pass over the test split), training time,
machine and versions. Checkpoints go to ``runs/hal_<dataset>/`` (ignored by
git). It is resumable: a finished run (its JSON exists) is skipped, and a run
that was interrupted continues from its last epoch's checkpoint (the JSON
then says ``resumed_from_epoch``). At the end it writes ``summary.md``,
``summary.json``, ``errors.png`` (mean ± std per case against the published
numbers) and ``curves.png`` (validation error per epoch, per case), from the
saved result files only; each case is compared with the baseline by a paired
t-test over seeds and, where both record their wrong test images, McNemar's
exact test (``--add-wrong-images`` adds them to older results whose
checkpoint is still there).

Every run is a subprocess running the command it records, so what is saved is
what ran: ``--rerun-check CASE --seed K`` runs one recorded command again (into
``runs/hal_<dataset>/rerun/``) and says whether it lands within the reported
spread (the check of the goal).

Usage::

    export EDGEHAL_DATA=../shared/data
    python benchmarks/reproduce_hal.py --dataset mnist --seeds 0,1,2            # epochs: the configs' own
    python benchmarks/reproduce_hal.py --dataset mnist --seeds 0,1,2 --dry-run  # what would run
    python benchmarks/reproduce_hal.py --dataset mnist --rerun-check case1 --seed 0
    # smoke test: tiny budget, results and checkpoints kept out of the repository
    python benchmarks/reproduce_hal.py --dataset mnist --seeds 0,1 --epochs 1 --limit 500 \\
        --results-dir /tmp/hal_smoke/results --runs-dir /tmp/hal_smoke/runs

Exit code: 0 on success; 1 on a bad option, a failed run, or a rerun check
that lands outside the spread.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "models" / "configs"
CASES = ("baseline", "case1", "case2", "case3", "case4")
RESULT_FORMAT = "edgehal-hal-run/1"
SUMMARY_FORMAT = "edgehal-hal-summary/1"

# Test error (%) of the published table: (mean, std); the baselines were reported without a spread.
PUBLISHED: dict[str, dict[str, tuple[float, float | None]]] = {
    "mnist": {"baseline": (0.93, None), "case1": (0.43, 0.03), "case2": (0.73, 0.06), "case3": (0.70, 0.05),
              "case4": (0.69, 0.00)},
    "svhn": {"baseline": (4.05, None), "case1": (2.53, 0.06), "case2": (2.64, 0.11), "case3": (2.66, 0.07),
             "case4": (2.86, 0.07)},
    "cifar10": {"baseline": (6.81, None), "case1": (3.30, 0.06), "case2": (5.30, 0.14), "case3": (6.46, 0.08),
                "case4": (5.13, 0.09)},
}
# The goal: (case, mean test error % to reach or beat, minimum seeds).
GOALS = {"mnist": ("case1", 0.40, 3)}


class Failure(Exception):
    """A user-facing failure of this script: printed as one line, exit code 1."""


def rel(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (commands run from there)."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(Path(path).resolve())


def config_for(dataset: str, case: str) -> Path:
    name = f"{dataset}_baseline.yaml" if case == "baseline" else f"{dataset}_hal_{case}.yaml"
    path = CONFIGS / name
    if not path.is_file():
        raise Failure(f"config {rel(path)} | file not found. Note: one config per case in models/configs/")
    return path


def train_argv(config: Path, overrides, data_dir: str | None, output_dir: Path) -> list[str]:
    """The ``edgehal train`` command line of one run, as saved with its result."""
    argv = ["edgehal", "train", rel(config)]
    for item in overrides:
        argv += ["--set", item]
    if data_dir:
        argv += ["--data-dir", data_dir]
    return argv + ["--output-dir", rel(output_dir)]


@dataclass(frozen=True)
class Budget:
    """What one run may spend; ``epochs``/``limit`` None mean the config's own (full data)."""

    epochs: int | None = None
    limit: int | None = None
    threads: int | None = None
    extra: tuple[str, ...] = ()

    def overrides(self, seed: int) -> list[str]:
        items = [f"seed={seed}"]
        if self.epochs is not None:
            items.append(f"epochs={self.epochs}")
        if self.limit is not None:
            items.append(f"data.limit={self.limit}")
        if self.threads is not None:
            items.append(f"threads={self.threads}")
        return items + list(self.extra)


@dataclass(frozen=True, kw_only=True)
class TrainRun:
    """One ``edgehal train`` subprocess: its config, seed and overrides, and where it writes.

    Shared by the result scripts (this one, ``rnn_results.py``); each adds what
    names and groups its runs.
    """

    seed: int
    config: Path
    overrides: tuple[str, ...]
    output_dir: Path
    data_dir: str | None
    epochs: int                 # effective, after overrides

    @property
    def checkpoint(self) -> Path:
        return self.output_dir / "checkpoint.pt"

    @property
    def argv(self) -> list[str]:
        return train_argv(self.config, self.overrides, self.data_dir, self.output_dir)

    def resolved_config(self) -> dict[str, Any]:
        """The config ``edgehal train`` will build from :attr:`argv` (as the CLI does; what
        ``checkpoint_state`` compares)."""
        from edgehal.config import load_config

        extra = list(self.overrides) + ([f"data.root={self.data_dir}"] if self.data_dir else [])
        return load_config(self.config, extra + [f"output_dir={rel(self.output_dir)}"]).to_dict()


def load_run_config(path: Path, overrides: list[str]):
    """A run's config with its overrides, a bad one as a :class:`Failure` (before any work)."""
    from edgehal.config import load_config
    from edgehal.errors import EdgehalError

    try:
        return load_config(path, overrides)
    except EdgehalError as exc:
        raise Failure(str(exc)) from None


@dataclass(frozen=True, kw_only=True)
class Run(TrainRun):
    dataset: str
    case: str
    limit: int | None

    @property
    def name(self) -> str:
        return f"{self.case}_seed{self.seed}"

    def comparable(self) -> dict[str, Any]:
        """What must match between runs that are averaged together (everything but the seed)."""
        return {"epochs": self.epochs, "limit": self.limit,
                "overrides": [o for o in self.overrides
                              if not o.startswith(("seed=", "threads=", "epochs=", "data.limit="))]}


def plan_runs(dataset: str, cases: list[str], seeds: list[int], budget: Budget, runs_dir: Path,
              data_dir: str | None) -> list[Run]:
    """Every (case, seed) run, its config loaded with its overrides: bad options fail before any work."""
    runs = []
    for case in cases:
        path = config_for(dataset, case)
        for seed in seeds:
            overrides = budget.overrides(seed)
            cfg = load_run_config(path, overrides)
            if cfg.data.dataset != dataset:
                raise Failure(f"config {rel(path)} | trains on {cfg.data.dataset!r}, not {dataset!r}")
            runs.append(Run(dataset=dataset, case=case, seed=seed, config=path, overrides=tuple(overrides),
                            output_dir=runs_dir / f"{case}_seed{seed}", data_dir=data_dir,
                            epochs=cfg.train.epochs, limit=cfg.data.limit))
    return runs


# --------------------------------------------------------------------------
# One run


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    if env.get("EDGEHAL_DATA"):  # the child runs in the repository; keep a relative data dir meaning the same
        env["EDGEHAL_DATA"] = str(Path(env["EDGEHAL_DATA"]).resolve())
    return env


def execute(argv: list[str], *, resume: Path | None = None) -> float:
    """Run a recorded ``edgehal train`` command from the repository root; return its wall time."""
    cmd = [sys.executable, "-m", "edgehal.cli", *argv[1:]] + (["--resume", str(resume)] if resume else [])
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, cwd=REPO, env=_child_env()).returncode
    if rc != 0:
        raise Failure(f"run `{shlex.join(argv)}` | exited with code {rc}. Note: its output is above; "
                      "rerunning this script resumes from the last finished epoch")
    return time.perf_counter() - t0


def checkpoint_state(run: TrainRun) -> tuple[str, int]:
    """``("new" | "resume" | "finished", epochs done)`` for the run's checkpoint folder."""
    from edgehal.checkpoint import load_checkpoint
    from edgehal.errors import EdgehalError

    if not run.checkpoint.is_file():
        return "new", 0
    try:
        payload = load_checkpoint(run.checkpoint).payload
    except EdgehalError:
        return "new", 0  # a truncated file from a killed run: start again
    stored, wanted = payload.get("config", {}), run.resolved_config()
    for c in (stored, wanted):
        c.get("data", {}).pop("root", None)
    if stored != wanted:
        raise Failure(f"{rel(run.checkpoint)} | holds a run of another config or budget. Note: delete "
                      f"{rel(run.output_dir)} or choose another --runs-dir")
    done = int(payload.get("training", {}).get("epoch", 0))
    finished = done >= run.epochs and "test" in payload.get("metrics", {})
    return ("finished" if finished else "resume"), done


def wrong_test_images(checkpoint: Path, data_dir: str | None, recorded_error_percent: float) -> list[int]:
    """Indices of the test images the checkpoint's main head gets wrong, for McNemar's test between runs
    (the data set is read as the checkpoint records it; ``data_dir`` overrides its root). They must give
    the error rate recorded for the run, or the data or the model is not what was measured."""
    import numpy as np
    import torch

    from edgehal.checkpoint import load_checkpoint
    from edgehal.pipeline import data_for_checkpoint, predict

    ckpt = load_checkpoint(checkpoint)
    data = data_for_checkpoint(ckpt, data_root=data_dir)
    with torch.no_grad():
        out = predict(ckpt.build_model(), data.test)
    labels = data.test.numpy_labels()["label"]
    wrong = [int(i) for i in np.flatnonzero(out[ckpt.manifest.main.name].argmax(1) != labels)]
    if abs(100.0 * len(wrong) / max(len(labels), 1) - recorded_error_percent) > 1e-6:
        raise Failure(f"{rel(checkpoint)} | gets {len(wrong)} of {len(labels)} test images wrong now but "
                      f"{recorded_error_percent}% was recorded. Note: was the data set or the checkpoint changed?")
    return wrong


def result_of(run: Run, *, wall_seconds: float | None, resumed_from: int | None) -> dict[str, Any]:
    """The saved record of a finished run, everything read from its checkpoint (and, for the images
    it gets wrong, from one pass over the test split)."""
    from edgehal.checkpoint import load_checkpoint
    from edgehal.doctor import machine_info
    from edgehal.fileio import sha256_file

    ckpt = load_checkpoint(run.checkpoint)
    p = ckpt.payload
    manifest = ckpt.manifest
    test = p["metrics"]["test"]
    errors = {h: m["error_rate"] for h, m in test.items() if isinstance(m, dict) and "error_rate" in m}
    wrong = wrong_test_images(run.checkpoint, run.data_dir, errors[manifest.main.name])
    curve = [{"epoch": r["epoch"], "train_loss": r.get("train_loss"), "seconds": r.get("seconds"),
              "val_error_percent": {h: m["error_rate"] for h, m in r.get("val", {}).items()
                                    if isinstance(m, dict) and "error_rate" in m}}
             for r in p.get("history", [])]
    return {
        "format": RESULT_FORMAT, "dataset": run.dataset, "case": run.case, "seed": run.seed,
        "config": rel(run.config), "overrides": list(run.overrides), "argv": run.argv,
        "command": shlex.join(run.argv), "comparable": run.comparable(),
        "epochs": int(p["training"]["epoch"]), "limit": run.limit,
        "main_head": manifest.main.name, "test_error_percent": errors,
        "test_samples": test[manifest.main.name].get("count"), "test_wrong_images": wrong,
        "val_curve": curve,
        "train_seconds": sum(float(r.get("seconds") or 0.0) for r in p.get("history", [])),
        "wall_seconds": wall_seconds, "resumed_from_epoch": resumed_from,
        "checkpoint": rel(run.checkpoint), "checkpoint_sha256": sha256_file(run.checkpoint),
        "resolved_config": p["config"],
        "threads": p["config"]["train"].get("threads") or "torch default",
        "versions": p.get("versions", {}), "machine": machine_info(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_json(path: Path, data: Any) -> None:
    from edgehal.fileio import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def load_results(results_dir: Path, cases: list[str]) -> dict[str, list[dict]]:
    """Saved runs per case, sorted by seed (only ``<case>_seed<k>.json`` directly in ``results_dir``)."""
    out: dict[str, list[dict]] = {}
    for case in cases:
        found = []
        for path in sorted(results_dir.glob(f"{case}_seed*.json")):
            data = json.loads(path.read_text())
            if data.get("format") != RESULT_FORMAT or data.get("case") != case:
                raise Failure(f"{path} | is not a result of this script. Note: format {RESULT_FORMAT}")
            data["_file"] = path.name
            found.append(data)
        out[case] = sorted(found, key=lambda d: d["seed"])
    return out


def _config_key(config: dict[str, Any]) -> str:
    """A resolved config without what may differ between the seeds of one case."""
    c = json.loads(json.dumps(config))
    c.pop("output_dir", None)
    c.get("data", {}).pop("root", None)
    for key in ("seed", "threads"):
        c.get("train", {}).pop(key, None)
    return json.dumps(c, sort_keys=True)


def check_comparable(existing: dict[str, list[dict]], runs: list[Run] | None = None) -> dict | None:
    """All saved (and planned) runs share one budget, and the seeds of a case one config; return the budget.

    Otherwise a mean would mix budgets, or runs from a config file edited between them.
    """
    budgets = {json.dumps(d["comparable"], sort_keys=True): d["_file"] for ds in existing.values() for d in ds}
    for run in runs or []:
        budgets.setdefault(json.dumps(run.comparable(), sort_keys=True), f"requested {run.name}")
    if len(budgets) > 1:
        shown = "; ".join(f"{f}: {b}" for b, f in list(budgets.items())[:2])
        raise Failure(f"results | mix budgets ({shown}). Note: one budget per --results-dir; "
                      "pick another --results-dir for a different budget")
    for case, saved in existing.items():
        configs = {_config_key(d["resolved_config"]): d["_file"] for d in saved}
        for run in runs or []:
            if run.case == case:
                configs.setdefault(_config_key(run.resolved_config()), f"requested {run.name}")
        if len(configs) > 1:
            a, b = list(configs.values())[:2]
            raise Failure(f"{case} | {a} and {b} were trained from different configs (was "
                          f"{rel(config_for(saved[0]['dataset'] if saved else runs[0].dataset, case))} edited?). "
                          "Note: the seeds of a case must differ only in the seed; move the old results away")
    return json.loads(next(iter(budgets))) if budgets else None


# --------------------------------------------------------------------------
# Summary: table, JSON, plots


def _stats(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values) if values else None, "max": max(values) if values else None}


def paired_test(base: list[dict], runs: list[dict]) -> dict[str, Any] | None:
    """Two-sided paired t-test of a case's main-head test error against the baseline's, over the seeds
    both have (seed k against seed k: same data order and augmentation stream, another model).

    With 3 seeds it finds only large effects: a p-value above 0.05 says the seeds cannot tell the two
    apart, not that they are equal. None with fewer than two common seeds.
    """
    from scipy import stats

    base_by_seed = {r["seed"]: r["test_error_percent"][r["main_head"]] for r in base}
    pairs = [(r["test_error_percent"][r["main_head"]], base_by_seed[r["seed"]]) for r in runs
             if r["seed"] in base_by_seed]
    if len(pairs) < 2:
        return None
    diffs = [a - b for a, b in pairs]
    if len(set(diffs)) == 1:  # no spread: the t statistic is undefined
        p_value = 1.0 if diffs[0] == 0 else 0.0
    else:
        p_value = float(stats.ttest_rel([a for a, _ in pairs], [b for _, b in pairs]).pvalue)
    return {"test": "paired t-test over seeds, two-sided", "n": len(pairs),
            "seeds": sorted(r["seed"] for r in runs if r["seed"] in base_by_seed),
            "mean_difference_pp": statistics.fmean(diffs), "p_value": p_value,
            "better_in": sum(d < 0 for d in diffs), "worse_in": sum(d > 0 for d in diffs)}


def mcnemar_test(base: list[dict], runs: list[dict]) -> dict[str, Any] | None:
    """Exact McNemar test of a case against the baseline on the test images pooled over the seeds both
    have with per-image results (seed k against seed k): only the images one of the two gets wrong count.
    None when no pair has them (results saved before they were recorded)."""
    from scipy import stats

    base_by_seed = {r["seed"]: r for r in base if "test_wrong_images" in r}
    pairs = [(base_by_seed[r["seed"]], r) for r in runs if "test_wrong_images" in r and r["seed"] in base_by_seed]
    if not pairs:
        return None
    only_base = only_case = 0
    for b, r in pairs:
        wb, wr = set(b["test_wrong_images"]), set(r["test_wrong_images"])
        only_base, only_case = only_base + len(wb - wr), only_case + len(wr - wb)
    n = only_base + only_case
    p_value = float(stats.binomtest(min(only_base, only_case), n, 0.5).pvalue) if n else 1.0
    return {"test": "exact McNemar, pooled over seeds", "seeds": sorted(r["seed"] for _, r in pairs),
            "images": sum(r["test_samples"] for _, r in pairs), "wrong_only_baseline": only_base,
            "wrong_only_case": only_case, "p_value": p_value}


def summarize(dataset: str, results_dir: Path, cases: list[str],
              baseline_rerun_dir: Path | None = None) -> dict[str, Any]:
    existing = load_results(results_dir, cases)
    budget = check_comparable(existing)
    rerun = load_results(baseline_rerun_dir, ["baseline"])["baseline"] if baseline_rerun_dir else None
    if rerun is not None:
        if not rerun:
            raise Failure(f"--baseline-rerun {rel(baseline_rerun_dir)} | has no baseline_seed<k>.json. "
                          "Note: run the baseline there first (--cases baseline --results-dir DIR)")
        rerun_budget = check_comparable({"baseline": rerun})
        if rerun_budget != budget:
            raise Failure(f"--baseline-rerun {rel(baseline_rerun_dir)} | ran another budget "
                          f"({_budget_text(rerun_budget)}) than {rel(results_dir)} ({_budget_text(budget)})")
    rows = []
    for case in cases:
        runs = existing[case]
        main = [r["test_error_percent"][r["main_head"]] for r in runs]
        aux = {}
        for r in runs:
            for head, v in r["test_error_percent"].items():
                if head != r["main_head"]:
                    aux.setdefault(head, []).append(v)
        pub_mean, pub_std = PUBLISHED.get(dataset, {}).get(case, (None, None))
        s = _stats(main)
        rows.append({"case": case, "seeds": [r["seed"] for r in runs], "test_error_percent": main, **s,
                     "aux_test_error_percent_mean": {h: statistics.fmean(v) for h, v in aux.items()},
                     "published_mean": pub_mean, "published_std": pub_std,
                     "diff_from_published_pp": (s["mean"] - pub_mean) if s["mean"] is not None and pub_mean
                     is not None else None,
                     "train_seconds_mean": statistics.fmean(r["train_seconds"] for r in runs) if runs else None,
                     "vs_baseline": (paired_test(existing["baseline"], runs)
                                     if case != "baseline" and "baseline" in existing else None),
                     "mcnemar_vs_baseline": (mcnemar_test(existing["baseline"], runs)
                                             if case != "baseline" and "baseline" in existing else None),
                     # against the baseline run again elsewhere; for the baseline itself, the rerun
                     # minus the recorded runs: how far the same seeds move on another machine
                     "vs_baseline_rerun": (None if rerun is None else paired_test(runs, rerun) if case == "baseline"
                                           else paired_test(rerun, runs)),
                     "mcnemar_vs_baseline_rerun": (mcnemar_test(rerun, runs)
                                                   if rerun is not None and case != "baseline" else None),
                     "sources": [r["_file"] for r in runs]})
    goal = None
    if dataset in GOALS:
        case, target, min_seeds = GOALS[dataset]
        row = next((r for r in rows if r["case"] == case), None)
        base = next((r for r in rows if r["case"] == "baseline"), None)
        if row and row["n"]:
            goal = {"case": case, "target_mean": target, "min_seeds": min_seeds, "mean": row["mean"], "n": row["n"],
                    "met": row["mean"] <= target and row["n"] >= min_seeds,
                    "baseline_mean": base["mean"] if base else None}
    machines = sorted({r["machine"].get("cpu_model") or "?" for rs in existing.values() for r in rs})
    rerun_errors = [r["test_error_percent"][r["main_head"]] for r in rerun or []]
    baseline_rerun = None if rerun is None else {
        "results_dir": rel(baseline_rerun_dir), "seeds": [r["seed"] for r in rerun],
        "test_error_percent": rerun_errors, **_stats(rerun_errors),
        "machines": sorted({r["machine"].get("cpu_model") or "?" for r in rerun}),
        "sources": [f"{rel(baseline_rerun_dir)}/{r['_file']}" for r in rerun]}
    return {"format": SUMMARY_FORMAT, "dataset": dataset, "budget": budget, "rows": rows, "goal": goal,
            "machines": machines, "baseline_rerun": baseline_rerun,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "curves": {case: [{"seed": r["seed"], "val_curve": r["val_curve"], "main_head": r["main_head"]}
                              for r in existing[case]] for case in cases}}


def _f(v: float | None, spec: str = ".2f") -> str:
    return "–" if v is None else format(v, spec)


def _budget_text(budget: dict | None, *, markdown: bool = True) -> str:
    if not budget:
        return "no runs yet"
    epochs = budget["epochs"]
    parts = [f"{epochs} epoch{'s' if epochs != 1 else ''} per run",
             "full data" if budget["limit"] is None else f"data limited to {budget['limit']} samples per split"]
    if budget["overrides"]:
        q = "`" if markdown else ""
        parts.append("overrides " + " ".join(f"{q}{o}{q}" for o in budget["overrides"]))
    return ", ".join(parts)


def _paired_text(vs: dict | None) -> str:
    if not vs:
        return "–"
    return (f"{vs['mean_difference_pp']:+.2f} pp, p = {vs['p_value']:.2f} "
            f"(n={vs['n']}; better in {vs['better_in']}, worse in {vs['worse_in']})")


def _mcnemar_text(mc: dict, case: str) -> str:
    return (f"p = {mc['p_value']:.2f} ({mc['wrong_only_baseline']} images wrong only for the baseline, "
            f"{mc['wrong_only_case']} only for {case}; seeds {','.join(map(str, mc['seeds']))})")


def summary_markdown(summary: dict[str, Any]) -> str:
    ds = summary["dataset"]
    lines = [f"# HAL reproduction: {ds}", "",
             f"Test error (%) of the main head, mean ± sample standard deviation over seeds. "
             f"Budget: {_budget_text(summary['budget'])}. Machine: {', '.join(summary['machines']) or '–'}.", "",
             "| case | seeds | measured | per seed | published | measured − published (pp) | aux head error (mean) "
             "| against the baseline (paired t over seeds) | train time per run |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in summary["rows"]:
        measured = "not run" if not r["n"] else (f"{r['mean']:.2f}" + (f" ± {r['std']:.2f}" if r["std"] is not None
                                                                      else " (1 seed)"))
        pub = _f(r["published_mean"]) + (f" ± {r['published_std']:.2f}" if r["published_std"] is not None else "")
        per_seed = ", ".join(f"{v:.2f}" for v in r["test_error_percent"])
        aux = ", ".join(f"{h} {v:.2f}" for h, v in r["aux_test_error_percent_mean"].items()) or "–"
        tt = "–" if not r["train_seconds_mean"] else (f"{r['train_seconds_mean']:.0f} s" if
                                                       r["train_seconds_mean"] < 120 else
                                                       f"{r['train_seconds_mean'] / 60:.0f} min")
        against = _paired_text(r.get("vs_baseline"))
        if r.get("mcnemar_vs_baseline"):
            against += "; McNemar " + _mcnemar_text(r["mcnemar_vs_baseline"], r["case"])
        lines.append(f"| {r['case']} | {r['n']} | {measured} | {per_seed or '–'} | {pub} | "
                     f"{_f(r['diff_from_published_pp'], '+.2f')} | {aux} | {against} | {tt} |")
    g = summary["goal"]
    if g:
        verdict = "**met**" if g["met"] else "**not met**"
        lines += ["", f"Goal: {g['case']} mean at most {g['target_mean']:.2f}% over at least "
                  f"{g['min_seeds']} seeds: {verdict} ({g['mean']:.2f}% over {g['n']} seed(s); baseline under the "
                  f"same budget: {_f(g['baseline_mean'])}%)."]
    if any(r.get("vs_baseline") for r in summary["rows"]):
        lines += ["", "Against the baseline: the case's error minus the baseline's, seed k paired with seed k (same "
                  "data order and augmentation stream), two-sided paired t-test (scipy.stats.ttest_rel). With three "
                  "seeds it finds only large effects: p above 0.05 means the seeds cannot tell the two apart, not "
                  "that they are equal. McNemar's exact test (scipy.stats.binomtest on the images exactly one of "
                  "the two gets wrong, pooled over the seed pairs) is shown where both runs of a pair record the "
                  "test images they get wrong (`test_wrong_images`; result files written before that was "
                  "recorded do not)."]
    rb = summary.get("baseline_rerun")
    if rb:
        lines += ["", f"**The baseline run again** (`{rb['results_dir']}`, machine {', '.join(rb['machines'])}; "
                  f"same seeds and budget): {rb['mean']:.2f}"
                  + (f" ± {rb['std']:.2f}" if rb["std"] is not None else "")
                  + f" ({', '.join(f'{v:.2f}' for v in rb['test_error_percent'])}). Each case against it:", "",
                  "| case | paired t over seeds | McNemar, pooled over seeds |", "| --- | --- | --- |"]
        for r in summary["rows"]:
            mc = r.get("mcnemar_vs_baseline_rerun")
            name = "baseline (rerun − recorded)" if r["case"] == "baseline" else r["case"]
            lines.append(f"| {name} | {_paired_text(r.get('vs_baseline_rerun'))} "
                         f"| {_mcnemar_text(mc, r['case']) if mc else '–'} |")
    sources = [s for r in summary["rows"] for s in r["sources"]] + (rb["sources"] if rb else [])
    where = "this folder and the baseline rerun's" if rb else "this folder"
    lines += ["", f"Every number comes from the result files in {where}: " + ", ".join(f"`{s}`" for s in sources)
              + ". Plots: `errors.png` (against the published table), `curves.png` (validation error per epoch).",
              "", f"Written {summary['created']} by `benchmarks/reproduce_hal.py`."]
    return "\n".join(lines) + "\n"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    from edgehal.fileio import atomic_write_with

    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))


def plot_errors(summary: dict[str, Any], path: Path) -> None:
    """Measured mean ± std per case next to the published mean ± std."""
    rows = [r for r in summary["rows"] if r["n"] or r["published_mean"] is not None]
    fig = _figure(7.5, 4.2)
    ax = fig.add_subplot()
    xs = range(len(rows))
    w = 0.38
    meas = [r["mean"] if r["n"] else 0.0 for r in rows]
    bars = ax.bar([x - w / 2 for x in xs], meas, w, yerr=[r["std"] or 0.0 for r in rows], capsize=4,
                  label="measured (this repository)", color="tab:blue")
    pub = [r["published_mean"] or 0.0 for r in rows]
    pub_bars = ax.bar([x + w / 2 for x in xs], pub, w, yerr=[r["published_std"] or 0.0 for r in rows], capsize=4,
                      label="published", color="tab:gray", alpha=0.7)
    for bar, r in zip(pub_bars, rows):
        if r["published_mean"] is not None:
            ax.annotate(f"{r['published_mean']:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7, color="dimgray")
    for bar, r in zip(bars, rows):
        text = "not run" if not r["n"] else f"{r['mean']:.2f}\n(n={r['n']})"
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=7)
    if summary["goal"]:
        ax.axhline(summary["goal"]["target_mean"], linestyle=":", color="tab:green", linewidth=1,
                   label=f"goal: {summary['goal']['case']} ≤ {summary['goal']['target_mean']:.2f}%")
    ax.set_xticks(list(xs), [r["case"] for r in rows])
    ax.set_ylabel("test error (%)")
    ax.set_title(f"HAL on {summary['dataset']}: {_budget_text(summary['budget'], markdown=False)}", fontsize=9)
    ax.margins(y=0.2)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    _save(fig, path)


def plot_curves(summary: dict[str, Any], path: Path) -> None:
    """Validation error of the main head per epoch: mean over seeds, band from min to max."""
    fig = _figure(7.5, 4.2)
    ax = fig.add_subplot()
    values = []
    for case, runs in summary["curves"].items():
        per_epoch: dict[int, list[float]] = {}
        for r in runs:
            for point in r["val_curve"]:
                per_epoch.setdefault(point["epoch"], []).append(point["val_error_percent"][r["main_head"]])
        if not per_epoch:
            continue
        epochs = sorted(per_epoch)
        mean = [statistics.fmean(per_epoch[e]) for e in epochs]
        line, = ax.plot(epochs, mean, marker="o", markersize=3, label=f"{case} (n={len(runs)})")
        ax.fill_between(epochs, [min(per_epoch[e]) for e in epochs], [max(per_epoch[e]) for e in epochs],
                        color=line.get_color(), alpha=0.15, linewidth=0)
        values += [v for e in epochs for v in per_epoch[e]]
    if values and min(values) > 0 and max(values) / min(values) > 5:
        ax.set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation error (%)")
    ax.set_title(f"HAL on {summary['dataset']}: validation error per epoch (mean over seeds, band: min–max)",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if values:
        ax.legend(fontsize=8)
    _save(fig, path)


def write_summary(dataset: str, results_dir: Path, cases: list[str],
                  baseline_rerun_dir: Path | None = None) -> dict[str, Any]:
    summary = summarize(dataset, results_dir, cases, baseline_rerun_dir)
    text = summary_markdown(summary)
    from edgehal.fileio import atomic_write_text

    atomic_write_text(results_dir / "summary.md", text)
    write_json(results_dir / "summary.json", summary)
    plot_errors(summary, results_dir / "errors.png")
    plot_curves(summary, results_dir / "curves.png")
    print(text)
    print(f"wrote {rel(results_dir)}/summary.md, summary.json, errors.png, curves.png")
    return summary


# --------------------------------------------------------------------------
# Commands


def run_all(runs: list[Run], results_dir: Path, *, dry_run: bool) -> None:
    existing = load_results(results_dir, sorted({r.case for r in runs}, key=CASES.index))
    check_comparable(existing, runs)
    todo = [r for r in runs if not (results_dir / f"{r.name}.json").is_file()]
    print(f"{len(runs)} runs planned, {len(runs) - len(todo)} already finished, {len(todo)} to do "
          f"(results: {rel(results_dir)})", flush=True)
    walls: list[float] = []
    for i, run in enumerate(todo, 1):
        state, done = checkpoint_state(run)
        eta = ""
        if walls:
            eta = f", about {statistics.fmean(walls) * (len(todo) - i + 1) / 60:.0f} min left"
        what = {"new": "training", "resume": f"resuming from epoch {done}", "finished": "recording finished run"}
        print(f"\n[{i}/{len(todo)}] {run.dataset} {run.name}: {what[state]} ({run.epochs} epochs{eta})\n"
              f"  $ {shlex.join(run.argv)}", flush=True)
        if dry_run:
            continue
        wall = None
        if state != "finished":
            wall = execute(run.argv, resume=run.checkpoint if state == "resume" else None)
            walls.append(wall)
        result = result_of(run, wall_seconds=wall, resumed_from=done if state != "new" else None)
        write_json(results_dir / f"{run.name}.json", result)
        errs = ", ".join(f"{h} {v:.2f}%" for h, v in result["test_error_percent"].items())
        print(f"  done: test error {errs}; saved {rel(results_dir / (run.name + '.json'))}", flush=True)


def add_wrong_images(results_dir: Path, cases: list[str], data_dir: str | None) -> None:
    """Record ``test_wrong_images`` in saved results that lack it, where the checkpoint they name is the one
    they were read from (same sha256); say which cannot be completed."""
    from edgehal.fileio import sha256_file

    for case, runs in load_results(results_dir, cases).items():
        for r in runs:
            path, ckpt = results_dir / r.pop("_file"), REPO / r["checkpoint"]
            if "test_wrong_images" in r:
                continue
            if not ckpt.is_file() or sha256_file(ckpt) != r["checkpoint_sha256"]:
                print(f"{rel(path)}: checkpoint {r['checkpoint']} is gone or changed; rerun the run to record "
                      "its wrong test images", flush=True)
                continue
            r["test_wrong_images"] = wrong_test_images(ckpt, data_dir, r["test_error_percent"][r["main_head"]])
            write_json(path, r)
            print(f"{rel(path)}: recorded {len(r['test_wrong_images'])} wrong test images", flush=True)


def rerun_check(dataset: str, case: str, seed: int, results_dir: Path, runs_dir: Path,
                data_dir: str | None) -> bool:
    """Run one recorded command again and check it lands within the spread the summary reports."""
    path = results_dir / f"{case}_seed{seed}.json"
    if not path.is_file():
        raise Failure(f"{rel(path)} | not found. Note: run that case and seed first")
    recorded = json.loads(path.read_text())
    argv = list(recorded["argv"])
    out = runs_dir / "rerun" / f"{case}_seed{seed}"
    argv[argv.index("--output-dir") + 1] = rel(out)
    if data_dir:
        if "--data-dir" in argv:
            argv[argv.index("--data-dir") + 1] = data_dir
        else:
            argv[-2:-2] = ["--data-dir", data_dir]
    print(f"rerunning the recorded command of {rel(path)} into {rel(out)}:\n  $ {shlex.join(argv)}", flush=True)
    wall = execute(argv)
    from edgehal.checkpoint import load_checkpoint
    from edgehal.doctor import machine_info

    payload = load_checkpoint(out / "checkpoint.pt").payload
    head = recorded["main_head"]
    got = payload["metrics"]["test"][head]["error_rate"]
    want = recorded["test_error_percent"][head]
    runs = load_results(results_dir, [case])[case]
    s = _stats([r["test_error_percent"][r["main_head"]] for r in runs])
    within_std = s["std"] is not None and abs(got - s["mean"]) <= s["std"] + 1e-9
    within_range = s["min"] - 1e-9 <= got <= s["max"] + 1e-9
    passed = within_std or within_range
    report = {"dataset": dataset, "case": case, "seed": seed, "recorded_file": path.name,
              "recorded_command": recorded["command"], "rerun_command": shlex.join(argv), "head": head,
              "recorded_error_percent": want, "rerun_error_percent": got, "diff_from_recorded_pp": got - want,
              "reported": s, "within_mean_plus_minus_std": within_std, "within_min_max_of_seeds": within_range,
              "passed": passed, "wall_seconds": wall, "machine": machine_info(),
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_json(results_dir / "rerun" / f"{case}_seed{seed}.json", report)
    spread = f"{s['mean']:.2f}" + (f" ± {s['std']:.2f}" if s["std"] is not None else "") + \
        f" (seeds range {s['min']:.2f}–{s['max']:.2f}, n={s['n']})"
    print(f"\nrerun of {case} seed {seed}: {head} test error {got:.2f}% (recorded {want:.2f}%, "
          f"{got - want:+.2f} pp); reported {spread}: "
          f"{'PASS, within the reported spread' if passed else 'FAIL, outside the reported spread'}")
    print(f"wrote {rel(results_dir / 'rerun' / f'{case}_seed{seed}.json')}")
    return passed


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise Failure(f"{what} {text!r} | is not a comma-separated list of integers. Note: e.g. 0,1,2") from None
    if not values or len(set(values)) != len(values) or min(values) < 0:
        raise Failure(f"{what} {text!r} | needs distinct integers >= 0. Note: e.g. 0,1,2")
    return values


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, choices=sorted(PUBLISHED), help="which column of the table")
    ap.add_argument("--seeds", default="0,1,2", help="seeds to run, comma-separated (default: 0,1,2)")
    ap.add_argument("--cases", default=",".join(CASES), help=f"cases to run (default: {','.join(CASES)})")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per run (default: each config's own)")
    ap.add_argument("--limit", type=int, default=None,
                    help="cap on samples per split, for smoke runs (default: full data)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's choice)")
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                    help="another override for every run, as for `edgehal train --set` (default: none)")
    ap.add_argument("--data-dir", default=None, help="data directory (default: $EDGEHAL_DATA)")
    ap.add_argument("--results-dir", type=Path, default=None,
                    help="result JSONs and summary (default: benchmarks/results/hal_<dataset>)")
    ap.add_argument("--runs-dir", type=Path, default=None, help="checkpoints (default: runs/hal_<dataset>)")
    ap.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    ap.add_argument("--summary-only", action="store_true", help="only rebuild the summary from saved results")
    ap.add_argument("--add-wrong-images", action="store_true",
                    help="add the test images each saved run gets wrong to result files written before they were "
                         "recorded, from the run's checkpoint when it is still there unchanged; then the summary")
    ap.add_argument("--rerun-check", metavar="CASE", choices=CASES, default=None,
                    help="rerun the recorded command of CASE --seed K and check it lands within the spread")
    ap.add_argument("--seed", type=int, default=None, help="the seed for --rerun-check")
    ap.add_argument("--baseline-rerun", type=Path, default=None, metavar="DIR",
                    help="a results folder of the baseline run again with the same seeds and budget (e.g. on the "
                         "machine the cases ran on, with each run's wrong test images): the summary also compares "
                         "every case with it (paired t and McNemar)")
    args = ap.parse_args(argv)

    data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None  # runs start in the repository
    results_dir = (args.results_dir or REPO / "benchmarks" / "results" / f"hal_{args.dataset}").resolve()
    runs_dir = (args.runs_dir or REPO / "runs" / f"hal_{args.dataset}").resolve()
    try:
        cases = [c.strip() for c in args.cases.split(",") if c.strip()]
        bad = [c for c in cases if c not in CASES]
        if bad or not cases:
            raise Failure(f"--cases {args.cases!r} | has unknown case {bad[0] if bad else '(none)'!r}. "
                          f"Note: some of {', '.join(CASES)}")
        for name in ("epochs", "limit", "threads"):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise Failure(f"--{name} {value} | must be at least 1")
        if args.rerun_check:
            if args.seed is None:
                raise Failure("--rerun-check | needs --seed K. Note: e.g. --rerun-check case1 --seed 0")
            ok = rerun_check(args.dataset, args.rerun_check, args.seed, results_dir, runs_dir, data_dir)
            return 0 if ok else 1
        if args.add_wrong_images:
            add_wrong_images(results_dir, cases, data_dir)
        elif not args.summary_only:
            budget = Budget(args.epochs, args.limit, args.threads, tuple(args.extra))
            runs = plan_runs(args.dataset, cases, _int_list(args.seeds, "--seeds"), budget, runs_dir, data_dir)
            run_all(runs, results_dir, dry_run=args.dry_run)
        if not args.dry_run:
            write_summary(args.dataset, results_dir, cases,
                          args.baseline_rerun.resolve() if args.baseline_rerun else None)
    except Failure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to continue where it stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
