"""Train the hierarchical localization config over several seeds; select on held-out users, report on validationData.csv.

For each seed: train from the config with ``data.options.read_test=false``
(training never opens validationData.csv), keep the metrics of the config's
validation split (held-out users of trainingData.csv), then, unless
``--validation-only``, score the test split (validationData.csv, the
published test set) in PyTorch, export to ONNX (opset 17, dynamic batch) and
score the same file with plain onnxruntime. Resumable: a seed whose
checkpoint already holds the same config and all its epochs is not trained
again (a partial one resumes from its last epoch), and a seed whose result
file exists is not scored again. Writes one JSON per seed and one with every
seed and the mean, standard deviation, min and max of each metric.

Design choices (selection, the test file never read):

    EDGEHAL_DATA=../shared/data OMP_NUM_THREADS=1 nice -n 10 \\
        python benchmarks/localization.py --seeds 0 --validation-only --tag power1 --set model.power=1

Final evaluation of the config as it stands (trained without the held-out users):

    EDGEHAL_DATA=../shared/data OMP_NUM_THREADS=1 nice -n 10 \\
        python benchmarks/localization.py --seeds 0,1,2

The same settings refitted on every row of trainingData.csv once the choices are made (nothing held out,
so no validation metrics; the test file still read only after training):

    EDGEHAL_DATA=../shared/data OMP_NUM_THREADS=1 nice -n 10 \\
        python benchmarks/localization.py --seeds 0,1,2 --tag refit_all_rows \\
        --set data.options.val_split=random --set data.val_size=0

Goals (validationData.csv, mean of >= 3 seeds): building 100%, floor
hit rate >= 95.5%, mean 2D error <= 8.5 m, trained on 2 CPU cores in < 15 min.
The metrics' definitions are in edgehal/scoring/localization.py.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
METRICS = ("building_hit_rate", "floor_hit_rate", "floor_number_hit_rate", "mean_error_m", "median_error_m",
           "mean_error_2d_correct_floor_m", "correct_floor_count", "mean_error_3d_m", "penalised_error_m")
GOALS = {"building_hit_rate": ">= 100", "floor_hit_rate": ">= 95.5", "mean_error_m": "<= 8.5",
         "train_seconds": "< 900 on 2 CPU cores"}


def _comparable(config: dict) -> dict:
    """What decides the trained weights: the config less where it is written and where the data lives."""
    data = {k: v for k, v in config["data"].items() if k != "root"}
    return {"model": config["model"], "data": data, "train": config["train"]}


def onnxruntime_metrics(model, test) -> dict:
    """Export ``model`` (all heads) and score ``test`` with plain onnxruntime."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from edgehal.nets.base import ExportWrapper
    from edgehal.pipeline import predict
    from edgehal.scoring import compute_metrics

    names = list(model.manifest.head_names)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(ExportWrapper(model, names).eval(), (test.x[:2],), buf,
                          input_names=[model.manifest.input_name], output_names=names, opset_version=17,
                          dynamo=False, dynamic_axes={model.manifest.input_name: {0: "batch"},
                                                      **{n: {0: "batch"} for n in names}})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    got = dict(zip(names, sess.run(None, {model.manifest.input_name: test.x.numpy()})))
    want = predict(model, test)
    summary = compute_metrics(model.manifest, got, test.numpy_labels())["summary"]
    summary["max_coordinate_diff_m"] = float(np.abs(got["coordinates"] - want["coordinates"]).max())
    summary["decisions_identical"] = bool(np.array_equal(got["building_floor"].argmax(1),
                                                         want["building_floor"].argmax(1)))
    return summary


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def train_seed(config: str, overrides: list[str], run_dir: Path, log) -> tuple[Path, float | None]:
    """Train (or resume, or reuse) one seed with the test file unread; return the checkpoint and training seconds."""
    from edgehal.checkpoint import load_checkpoint
    from edgehal.config import load_config
    from edgehal.pipeline import checkpoint_config
    from edgehal.train import train

    cfg = load_config(config, [*overrides, "data.options.read_test=false"])
    cfg.output_dir = str(run_dir)
    ckpt_path = run_dir / "checkpoint.pt"
    resume = None
    if ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path)
        same = _comparable(ckpt.config) == _comparable(checkpoint_config(cfg))
        done = int(ckpt.payload.get("training", {}).get("epoch", 0))
        if same and done >= cfg.train.epochs and "test" in ckpt.metrics:
            log(f"reusing {ckpt_path} ({done} epochs, same config)")
            return ckpt_path, None
        if same:
            resume = ckpt_path
    t0 = time.perf_counter()
    path = train(cfg, resume=resume, log=log, progress=False)
    return path, time.perf_counter() - t0 if resume is None else None


def test_split(ckpt_path: Path, data_dir: str | None):
    """The checkpoint's data with validationData.csv read: the final evaluation, and nothing else, opens it."""
    from edgehal.checkpoint import load_checkpoint
    from edgehal.config import config_from_dict
    from edgehal.pipeline import load_data

    cfg = config_from_dict(load_checkpoint(ckpt_path).config, what=f"config in {ckpt_path}")
    cfg.data.options = {**cfg.data.options, "read_test": True}
    if data_dir:
        cfg.data.root = data_dir
    return load_data(cfg).test


def main(argv: list[str] | None = None) -> int:
    os.chdir(REPO)  # every path below, and in the saved results, is relative to the repository
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="models/configs/ujiindoorloc_hier.yaml",
                    help="training config (default: models/configs/ujiindoorloc_hier.yaml)")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default: 0,1,2)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, repeatable (default: none)")
    ap.add_argument("--tag", default="", help="name of this variant in run and result names (default: none)")
    ap.add_argument("--validation-only", action="store_true",
                    help="a design-choice run: keep the validation metrics, never read validationData.csv")
    ap.add_argument("--data-dir", default=None, help="data folder (default: $EDGEHAL_DATA)")
    ap.add_argument("--runs", default="runs/bench_localization",
                    help="where checkpoints go (default: runs/bench_localization)")
    ap.add_argument("--out", default=None,
                    help="JSON result (default: benchmarks/results/ujiindoorloc/[selection/]<name>[_tag]_<n>seeds.json)")
    ap.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime re-scoring (default: run it)")
    args = ap.parse_args(argv)

    import torch

    from edgehal.checkpoint import load_checkpoint
    from edgehal.config import load_config
    from edgehal.fileio import atomic_write_text
    from edgehal.pipeline import evaluate

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    name = load_config(args.config, list(args.set)).name + (f"_{args.tag}" if args.tag else "")
    results_dir = Path("benchmarks/results/ujiindoorloc") / ("selection" if args.validation_only else "")
    runs = []
    for seed in seeds:
        seed_file = results_dir / "seeds" / f"{name}_seed{seed}.json"
        overrides = [*args.set, f"seed={seed}"] + ([f"data.root={args.data_dir}"] if args.data_dir else [])
        if seed_file.is_file():
            saved = json.loads(seed_file.read_text())
            if saved.get("overrides") == overrides:
                print(f"[seed {seed}] done before: {seed_file}", flush=True)
                runs.append(saved)
                continue
        path, seconds = train_seed(args.config, overrides, Path(args.runs) / f"{name}_seed{seed}",
                                   lambda line, s=seed: print(f"[seed {seed}] {line}", flush=True))
        ckpt = load_checkpoint(path)
        history = ckpt.payload.get("history", [])
        run = {"seed": seed, "overrides": overrides, "checkpoint": str(path),
               "train_seconds": seconds if seconds is not None else sum(h["seconds"] for h in history),
               "val": dict(ckpt.metrics["val"]["summary"]),  # {"count": 0} when nothing is held out
               "val_floor_hit_rate_by_epoch": [h["val"]["summary"].get("floor_hit_rate") for h in history]}
        if not args.validation_only:
            test = test_split(path, args.data_dir)
            model = ckpt.build_model()
            run["test"] = evaluate(model, test)["summary"]
            if not args.no_onnx:
                run["onnxruntime"] = onnxruntime_metrics(model, test)
        seed_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(seed_file, json.dumps(run, indent=2) + "\n")
        runs.append(run)
        shown = run.get("test", run["val"])
        print(f"[seed {seed}] {'test' if 'test' in run else 'val'}: building {shown['building_hit_rate']:.2f}%  "
              f"floor {shown['floor_hit_rate']:.2f}%  mean 2D {shown['mean_error_m']:.2f} m  "
              f"3D {shown['mean_error_3d_m']:.2f} m  train {run['train_seconds']:.0f} s", flush=True)

    splits = [s for s in ("val", "test") if all(r.get(s, {}).get("count") for r in runs)]
    summary = {split: {k: spread([r[split][k] for r in runs]) for k in METRICS} for split in splits}
    summary["train_seconds"] = spread([r["train_seconds"] for r in runs])
    result = {
        "benchmark": "ujiindoorloc hierarchical localization",
        "validation_split": "trainingData.csv rows of the held-out users (see edgehal/data/ujiindoorloc.py)",
        "test_set": "not read (--validation-only)" if args.validation_only else
        "validationData.csv (1,111 fingerprints)",
        "config": str(Path(args.config).resolve().relative_to(REPO)) if Path(args.config).resolve().is_relative_to(REPO)
        else args.config,
        "overrides": args.set, "seeds": seeds, "runs": runs, "summary": summary, "goals": GOALS,
        "metric_definitions": "edgehal/scoring/localization.py (module docstring)",
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version()},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out = Path(args.out or results_dir / f"{name}_{len(seeds)}seeds.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    for split in splits:
        print(f"\n{split}: {'metric':<30} {'mean':>9} {'std':>8} {'min':>9} {'max':>9}")
        for k in METRICS:
            s = summary[split][k]
            print(f"{split}: {k:<30} {s['mean']:>9.3f} {s['std']:>8.3f} {s['min']:>9.3f} {s['max']:>9.3f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
