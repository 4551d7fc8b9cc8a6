"""Baseline ResNet vs HAL Case1 vs HD-CNN (Case1 coarse classes) on MNIST, same budget.

Baseline and HAL Case1 runs come from ``benchmarks/reproduce_hal.py`` (its saved
results, same epochs and seeds); HD-CNN runs are trained here with the same
budget (``mnist_hdcnn_case1_joint.yaml``: joint training, since a 2-epoch budget
leaves no room for HD-CNN's three stages) and saved the same way, resumably.
Then, for each model: test error (mean and spread over seeds), parameters,
CPU latency from ``edgehal bench`` (seed-0 checkpoint, PyTorch eager and its
ONNX export under onnxruntime, batch 1, one thread), and for HD-CNN the
kept/pruned export with parity on the full test split, coarse/fine
consistency included.

    EDGEHAL_DATA=../shared/data python benchmarks/hdcnn_comparison.py --epochs 2 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import os
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def log(msg: str) -> None:
    print(msg, flush=True)


def train_hdcnn(seed: int, epochs: int, threads: int, runs: Path, results: Path) -> dict:
    out = results / f"hdcnn_case1_seed{seed}.json"
    if out.is_file():
        log(f"hdcnn seed {seed}: done already ({out})")
        return json.loads(out.read_text())
    run_dir = runs / f"hdcnn_case1_seed{seed}"
    argv = ["edgehal", "train", "models/configs/mnist_hdcnn_case1_joint.yaml", "--set", f"seed={seed}",
            "--set", f"epochs={epochs}", "--set", f"threads={threads}", "--output-dir", str(run_dir)]
    log("$ " + " ".join(argv))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edgehal.cli", *argv[1:]], check=True, cwd=REPO)
    from edgehal.checkpoint import load_checkpoint
    from edgehal.fileio import atomic_write_text

    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    test = ckpt.metrics["test"]
    result = {"model": "hdcnn_case1", "seed": seed, "epochs": epochs, "command": " ".join(argv),
              "test_error_percent": {h: m["error_rate"] for h, m in test.items()
                                     if isinstance(m, dict) and "error_rate" in m},
              "coarse_fine_consistency": test.get("coarse_fine_consistency"),
              "checkpoint": str(run_dir / "checkpoint.pt"), "wall_seconds": time.perf_counter() - t0}
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


def latency(checkpoint: Path, work: Path, name: str) -> dict:
    from edgehal.bench import BenchOptions, run_bench
    from edgehal.export.onnx import ExportOptions, export_onnx

    onnx_path = work / f"{name}.onnx"
    export_onnx(checkpoint, onnx_path, options=ExportOptions(aux="prune"), log=lambda _: None)
    opts = BenchOptions(backends=("torch", "ort-cpu"), batch_sizes=(1,), threads=1, min_seconds=3.0)
    report = run_bench([checkpoint, onnx_path], opts, progress=False)
    return {r.backend: {"median_ms": r.stats.median_ms, "p99_ms": r.stats.p99_ms,
                        "stable": r.stability.stable} for r in report.results}


def main() -> None:
    os.chdir(REPO)  # every path below, and in the saved results, is relative to the repository
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2", help="seeds (default: 0,1,2)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per run, as the HAL runs (default: 2)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training (default: 2)")
    ap.add_argument("--hal-results", type=Path, default=Path("benchmarks/results/hal_mnist"),
                    help="reproduce_hal.py results (default: benchmarks/results/hal_mnist)")
    ap.add_argument("--out-dir", type=Path, default=Path("benchmarks/results/hdcnn_comparison"),
                    help="results (default: benchmarks/results/hdcnn_comparison)")
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/hdcnn_mnist"),
                    help="checkpoints, ignored by git (default: runs/hdcnn_mnist)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out_dir.mkdir(parents=True, exist_ok=True)

    from edgehal.checkpoint import load_checkpoint
    from edgehal.fileio import atomic_write_text
    from edgehal.parity import run_parity, write_reports

    models = {"baseline": hal_runs(args.hal_results, "baseline", seeds, args.epochs),
              "hal_case1": hal_runs(args.hal_results, "case1", seeds, args.epochs),
              "hdcnn_case1": [train_hdcnn(s, args.epochs, args.threads, args.runs_dir, args.out_dir)
                              for s in seeds]}
    main_head = {"baseline": "logits", "hal_case1": "logits", "hdcnn_case1": "fine"}
    work = args.runs_dir / "onnx"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, runs in models.items():
        errors = [r["test_error_percent"][main_head[name]] for r in runs]
        ckpt_path = Path(runs[0]["checkpoint"])
        model = load_checkpoint(ckpt_path).build_model()
        log(f"{name}: benchmarking {ckpt_path}")
        row = {"model": name, "seeds": seeds, "epochs": args.epochs, "test_error_percent": errors,
               "mean": statistics.mean(errors), "std": statistics.stdev(errors) if len(errors) > 1 else 0.0,
               "parameters": sum(p.numel() for p in model.parameters()),
               "latency_batch1_threads1": latency(ckpt_path, work, name)}
        if name == "hdcnn_case1":
            row["coarse_fine_consistency"] = [r.get("coarse_fine_consistency") for r in runs]
            keep, prune = work / "hdcnn.keep.onnx", work / "hdcnn.prune.onnx"
            from edgehal.export.onnx import ExportOptions, export_onnx
            export_onnx(ckpt_path, keep, options=ExportOptions(aux="keep"), log=log)
            export_onnx(ckpt_path, prune, options=ExportOptions(aux="prune"), log=log)
            rep = run_parity(ckpt_path, [keep, prune], log=log)
            write_reports(rep, args.out_dir / "hdcnn_parity")
            row["parity"] = {"passed": rep.passed, "report": "hdcnn_parity/parity.md"}
        rows.append(row)

    lines = [f"# MNIST: baseline vs HAL Case1 vs HD-CNN (Case1 coarse classes), {args.epochs} epochs, "
             f"seeds {args.seeds}", "",
             "| model | test error % (mean ± std) | per seed | parameters | PyTorch ms (b1, 1 thread) "
             "| onnxruntime ms (b1, 1 thread) |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lat = r["latency_batch1_threads1"]
        lines.append(f"| {r['model']} | {r['mean']:.2f} ± {r['std']:.2f} | "
                     f"{', '.join(f'{e:.2f}' for e in r['test_error_percent'])} | {r['parameters']:,} | "
                     f"{lat['torch']['median_ms']:.3f} | {lat['ort-cpu']['median_ms']:.3f} |")
    hd = rows[-1]
    cons = [c["consistency_rate"] for c in hd["coarse_fine_consistency"] if c]
    if cons:
        lines += ["", f"HD-CNN coarse/fine consistency (the coarse head's prediction equals the superclass of "
                      f"the fine prediction), per seed: {', '.join(f'{c:.2f}%' for c in cons)}."]
    lines += [f"HD-CNN seed {seeds[0]} exported kept and pruned: parity "
              f"{'PASS' if hd['parity']['passed'] else 'FAIL'} on the full test split ({hd['parity']['report']})."]
    atomic_write_text(args.out_dir / "comparison.md", "\n".join(lines) + "\n")
    atomic_write_text(args.out_dir / "comparison.json", json.dumps(rows, indent=2) + "\n")
    log("\n".join(lines))


if __name__ == "__main__":
    main()
