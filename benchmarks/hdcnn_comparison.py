"""Baseline ResNet vs HAL Case1 vs HD-CNN (Case1 coarse classes), staged and joint, on MNIST, same budget.

Baseline and HAL Case1 runs come from ``benchmarks/reproduce_hal.py`` (its saved
results, same epochs and seeds). HD-CNN runs are trained here, one at a time,
in two variants of the same architecture (the coarse component has its own
residual stage, as each fine branch):

- ``staged`` (``mnist_hdcnn_case1.yaml``), as HD-CNN is published: the trunk
  and fine branches on the branch loss, then the coarse component on the
  coarse loss with everything else frozen, then everything on the whole loss;
- ``joint`` (``mnist_hdcnn_case1_joint.yaml``): everything, every epoch.

Each finished run is saved as ``<out>/hdcnn_<variant>_seed<k>.json`` (test error
of every head, coarse/fine consistency, the fine errors split by whether the
coarse prediction was also wrong, validation curve); an interrupted run
resumes from its last epoch. Then ``comparison.md``/``.json`` and
``errors.png`` are written from the saved files only, and seed 0's staged
model is exported kept and pruned and checked with parity on the full test
split (once: a report written after the checkpoint is kept).

    EDGEHAL_DATA=../shared/data python benchmarks/hdcnn_comparison.py --epochs 10 --seeds 0,1,2 \\
        --hal-results benchmarks/results/hal_mnist_10ep --out-dir benchmarks/results/hdcnn_mnist_10ep \\
        --runs-dir runs/hdcnn_mnist_10ep
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# The staged run whose exported model is checked with parity.
PARITY_SEED = 0
VARIANTS = {"staged": "models/configs/mnist_hdcnn_case1.yaml", "joint": "models/configs/mnist_hdcnn_case1_joint.yaml"}
RESULT_FORMAT = "edgehal-hdcnn-run/2"


def log(msg: str) -> None:
    print(msg, flush=True)


def config_epochs(variant: str) -> int:
    from edgehal.config import load_config

    return load_config(REPO / VARIANTS[variant]).train.epochs


def train_hdcnn(variant: str, seed: int, epochs: int, threads: int, runs: Path, results: Path,
                limit: int | None = None) -> dict:
    """Train (or resume, or read back) one HD-CNN run; return its saved result."""
    from edgehal.checkpoint import load_checkpoint
    from edgehal.fileio import atomic_write_text

    out = results / f"hdcnn_{variant}_seed{seed}.json"
    if out.is_file():
        log(f"hdcnn {variant} seed {seed}: done already ({out})")
        return json.loads(out.read_text())
    run_dir = runs / f"hdcnn_{variant}_seed{seed}"
    argv = ["edgehal", "train", VARIANTS[variant], "--set", f"seed={seed}", "--set", f"threads={threads}",
            "--output-dir", str(run_dir)]
    if variant == "joint":  # the staged config's stages fix its epochs; the joint one takes the budget
        argv[3:3] = ["--set", f"epochs={epochs}"]
    if limit:
        argv[3:3] = ["--set", f"data.limit={limit}"]
    ckpt_path = run_dir / "checkpoint.pt"
    done = int(load_checkpoint(ckpt_path).payload.get("training", {}).get("epoch", 0)) if ckpt_path.is_file() else 0
    resume = ["--resume", str(ckpt_path)] if 0 < done < epochs else []
    log("$ " + " ".join(argv + resume) + (f"   (resuming after epoch {done})" if resume else ""))
    t0 = time.perf_counter()
    if done < epochs or "test" not in load_checkpoint(ckpt_path).metrics:
        subprocess.run([sys.executable, "-m", "edgehal.cli", *argv[1:], *resume], check=True, cwd=REPO)
    ckpt = load_checkpoint(ckpt_path)
    test = ckpt.metrics["test"]
    result = {"format": RESULT_FORMAT, "model": "hdcnn_case1", "variant": variant, "seed": seed, "epochs": epochs,
              "limit": limit,
              "config": VARIANTS[variant], "command": " ".join(argv),
              "stages": ckpt.payload["config"]["train"].get("stages", []),
              "test_error_percent": {h: m["error_rate"] for h, m in test.items()
                                     if h != "summary" and isinstance(m, dict) and "error_rate" in m},
              "coarse_fine_consistency": test.get("coarse_fine_consistency"),
              "fine_error_sources": test.get("fine_error_sources"),
              "val_curve": [{"epoch": h["epoch"], "val_error_percent": h["val"]["fine"]["error_rate"]}
                            for h in ckpt.payload.get("history", [])],
              "checkpoint": str(ckpt_path), "wall_seconds": time.perf_counter() - t0,
              "resumed_from_epoch": done or None}
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    return result


def hal_runs(hal_results: Path, case: str, seeds: list[int], epochs: int) -> list[dict]:
    runs = []
    for seed in seeds:
        path = hal_results / f"{case}_seed{seed}.json"
        if not path.is_file():
            raise SystemExit(f"missing {path}: run benchmarks/reproduce_hal.py --dataset mnist "
                             f"--seeds {','.join(map(str, seeds))} --epochs {epochs} first")
        r = json.loads(path.read_text())
        if r["epochs"] != epochs:
            raise SystemExit(f"{path} was trained for {r['epochs']} epochs, not {epochs}: not the same budget")
        runs.append(r)
    return runs


def parameters(config: str, overrides: list[str] = ()) -> int:
    from edgehal.config import load_config
    from edgehal.nets import create_model

    cfg = load_config(REPO / config, list(overrides))
    kwargs = {k: v for k, v in cfg.model.items() if k != "name"}
    return sum(p.numel() for p in create_model(cfg.model["name"], **kwargs).parameters())


def _spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None}


def summarize(models: dict[str, list[dict]], seeds: list[int], epochs: int) -> list[dict]:
    """One row per model from the saved runs: main error over seeds and, for HD-CNN, where it comes from."""
    main_head = {"baseline": "logits", "hal_case1": "logits"}
    configs = {"baseline": "models/configs/mnist_baseline.yaml", "hal_case1": "models/configs/mnist_hal_case1.yaml",
               **{f"hdcnn_{v}": c for v, c in VARIANTS.items()}}
    rows = []
    for name, runs in models.items():
        head = main_head.get(name, "fine")
        errors = [r["test_error_percent"][head] for r in runs]
        row = {"model": name, "seeds": [r["seed"] for r in runs], "epochs": epochs, "test_error_percent": errors,
               **_spread(errors), "parameters": parameters(configs[name]), "sources": [r.get("_file") for r in runs]}
        if name.startswith("hdcnn_"):
            heads = sorted({h for r in runs for h in r["test_error_percent"] if h not in ("fine", "summary")})
            row["head_error_percent"] = {h: _spread([r["test_error_percent"][h] for r in runs]) for h in heads}
            row["consistency_percent"] = _spread([r["coarse_fine_consistency"]["consistency_rate"] for r in runs])
            row["fine_error_sources"] = {k: _spread([r["fine_error_sources"][k] for r in runs])
                                         for k in ("coarse_wrong", "coarse_right")}
        rows.append(row)
    # each model against the baseline as the HAL table does it: paired t over the seeds both have
    from reproduce_hal import paired_test

    for row, (name, runs) in zip(rows, models.items()):
        if name != "baseline" and "baseline" in models:
            row["against_baseline"] = paired_test(
                models["baseline"], [r | {"main_head": main_head.get(name, "fine")} for r in runs])
    return rows


def _against(test: dict | None) -> str:
    if not test:
        return ""
    return f"{test['mean_difference_pp']:+.2f} pp, p = {test['p_value']:.2f} (seeds {','.join(map(str, test['seeds']))})"


def _ms(s: dict) -> str:
    return "–" if s["mean"] is None else f"{s['mean']:.2f}" + ("" if s["std"] is None else f" ± {s['std']:.2f}")


def markdown(rows: list[dict], seeds: list[int], epochs: int, parity: dict | None) -> str:
    lines = [f"# MNIST: baseline vs HAL Case1 vs HD-CNN (Case1 coarse classes), staged and joint, {epochs} epochs, "
             f"seeds {','.join(map(str, seeds))}", "",
             "Test error (%) of the main head, mean ± sample standard deviation over seeds.", "",
             "| model | test error % | per seed | against the baseline, paired t over seeds | parameters |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['model']} | {_ms(r)} | {', '.join(f'{e:.2f}' for e in r['test_error_percent'])} | "
                     f"{_against(r.get('against_baseline'))} | {r['parameters']:,} |")
    hd = [r for r in rows if r["model"].startswith("hdcnn_")]
    if hd:
        heads = sorted({h for r in hd for h in r["head_error_percent"]})
        lines += ["", "Where HD-CNN's error comes from (% of the test images unless noted; mean ± std over seeds). "
                  "`coarse`: superclass error; `fine_b<k>`: branch k's error on its own superclass's images; "
                  "fine errors split by whether the coarse prediction was wrong too; consistency: the coarse "
                  "prediction is the superclass of the fine one.", "",
                  "| model | fine | " + " | ".join(heads) + " | fine error, coarse wrong | fine error, coarse right "
                  "| coarse/fine consistency |", "| --- " * (len(heads) + 5) + "|"]
        for r in hd:
            lines.append(f"| {r['model']} | {_ms(r)} | " + " | ".join(_ms(r["head_error_percent"][h]) for h in heads)
                         + f" | {_ms(r['fine_error_sources']['coarse_wrong'])} | "
                         f"{_ms(r['fine_error_sources']['coarse_right'])} | {_ms(r['consistency_percent'])} |")
    if parity:
        lines += ["", f"HD-CNN ({parity['model']}, seed {parity['seed']}) exported kept and pruned: parity "
                      f"{'PASS' if parity['passed'] else 'FAIL'} on the full test split ({parity['report']})."]
    sources = [s for r in rows for s in r["sources"] if s]
    lines += ["", "Every number comes from the result files: " + ", ".join(f"`{s}`" for s in sources) + "."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, epochs: int) -> None:
    """Main error per model (per-seed dots); HD-CNN's bars split by where the fine error comes from."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from edgehal.fileio import atomic_write_with

    fig = Figure(figsize=(7.5, 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    labelled = False
    for x, r in enumerate(rows):
        if "fine_error_sources" in r:
            wrong, right = (r["fine_error_sources"][k]["mean"] for k in ("coarse_wrong", "coarse_right"))
            ax.bar(x, wrong, 0.6, color="tab:red", alpha=0.7, label=None if labelled else "coarse also wrong")
            ax.bar(x, right, 0.6, bottom=wrong, color="tab:orange", alpha=0.7,
                   label=None if labelled else "coarse right (a branch's error)")
            labelled = True
        else:
            ax.bar(x, r["mean"], 0.6, color="tab:blue", alpha=0.7)
        ax.scatter([x] * len(r["test_error_percent"]), r["test_error_percent"], color="black", s=12, zorder=3)
        ax.annotate(f"{r['mean']:.2f}", (x, max(r["test_error_percent"])), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=8)
    ax.set_xticks(range(len(rows)), [r["model"] for r in rows])
    ax.set_ylabel("test error (%)")
    ax.set_title(f"MNIST, {epochs} epochs: main-head test error (bars: mean; dots: seeds)", fontsize=9)
    ax.margins(y=0.15)
    ax.grid(True, axis="y", alpha=0.3)
    if labelled:
        ax.legend(fontsize=8)
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))


def main() -> None:
    os.chdir(REPO)  # every path below, and in the saved results, is relative to the repository
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2", help="seeds (default: 0,1,2)")
    ap.add_argument("--epochs", type=int, default=10, help="epochs per run, as the HAL runs (default: 10)")
    ap.add_argument("--variants", default="staged,joint", help="HD-CNN variants: staged, joint (default: both)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training (default: 2)")
    ap.add_argument("--hal-results", type=Path, default=Path("benchmarks/results/hal_mnist_10ep"),
                    help="reproduce_hal.py results (default: benchmarks/results/hal_mnist_10ep)")
    ap.add_argument("--out-dir", type=Path, default=Path("benchmarks/results/hdcnn_mnist_10ep"),
                    help="results (default: benchmarks/results/hdcnn_mnist_10ep)")
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/hdcnn_mnist_10ep"),
                    help="checkpoints, ignored by git (default: runs/hdcnn_mnist_10ep)")
    ap.add_argument("--limit", type=int, default=None,
                    help="samples per split, for a smoke test (results then belong in another --out-dir)")
    ap.add_argument("--summary-only", action="store_true",
                    help="train nothing: rebuild the table and plot from the saved runs (missing ones are left out)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise SystemExit(f"--variants {bad}: unknown; expected some of {sorted(VARIANTS)}")
    if "staged" in variants and config_epochs("staged") != args.epochs:
        raise SystemExit(f"--epochs {args.epochs}: the staged config's stages add up to {config_epochs('staged')} "
                         f"epochs ({VARIANTS['staged']}); change its stages or pass --epochs "
                         f"{config_epochs('staged')}")
    args.out_dir.mkdir(parents=True, exist_ok=True)

    from edgehal.fileio import atomic_write_text

    hd: dict[str, list[dict]] = {}
    for variant in variants:
        for seed in seeds:
            path = args.out_dir / f"hdcnn_{variant}_seed{seed}.json"
            if args.summary_only and not path.is_file():
                log(f"hdcnn {variant} seed {seed}: not run yet, left out")
                continue
            r = train_hdcnn(variant, seed, args.epochs, args.threads, args.runs_dir, args.out_dir, args.limit)
            r["_file"] = str(path)
            hd.setdefault(f"hdcnn_{variant}", []).append(r)
    models = {"baseline": hal_runs(args.hal_results, "baseline", seeds, args.epochs),
              "hal_case1": hal_runs(args.hal_results, "case1", seeds, args.epochs), **hd}
    for name in ("baseline", "hal_case1"):
        for r in models[name]:
            r["_file"] = str(args.hal_results / f"{r['case']}_seed{r['seed']}.json")
    rows = summarize(models, seeds, args.epochs)

    parity = None
    staged = hd.get("hdcnn_staged", [])
    checked = next((r for r in staged if r["seed"] == PARITY_SEED), None)
    report = args.out_dir / "hdcnn_parity" / "parity.json"
    if checked and Path(checked["checkpoint"]).is_file():
        # a report on this checkpoint, written after it, is kept as it is: a rerun would only repeat it
        ckpt = Path(checked["checkpoint"])
        previous = (json.loads(report.read_text())
                    if report.is_file() and report.stat().st_mtime >= ckpt.stat().st_mtime else None)
        if previous and previous.get("checkpoint") == checked["checkpoint"]:
            passed = bool(previous["passed"])
        else:
            from edgehal.export.onnx import ExportOptions, export_onnx
            from edgehal.parity import run_parity, write_reports

            work = args.runs_dir / "onnx"
            work.mkdir(parents=True, exist_ok=True)
            keep, prune = work / "hdcnn_staged.keep.onnx", work / "hdcnn_staged.prune.onnx"
            export_onnx(ckpt, keep, options=ExportOptions(aux="keep"), log=log)
            export_onnx(ckpt, prune, options=ExportOptions(aux="prune"), log=log)
            rep = run_parity(ckpt, [keep, prune], log=log)
            write_reports(rep, args.out_dir / "hdcnn_parity")
            passed = rep.passed
        parity = {"model": "hdcnn_staged", "seed": PARITY_SEED, "passed": passed, "report": "hdcnn_parity/parity.md"}

    text = markdown(rows, seeds, args.epochs, parity)
    atomic_write_text(args.out_dir / "comparison.md", text)
    atomic_write_text(args.out_dir / "comparison.json",
                      json.dumps({"rows": rows, "parity": parity}, indent=2) + "\n")
    plot(rows, args.out_dir / "errors.png", args.epochs)
    log(text)


if __name__ == "__main__":
    main()
