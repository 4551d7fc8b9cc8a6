"""Train the hierarchical localization config over several seeds and report on validationData.csv.

For each seed: train from the config (trainingData.csv minus the held-out
rows), score the test split (validationData.csv, the published test set) in
PyTorch, export to ONNX (opset 17, dynamic batch) and score the same file with
plain onnxruntime. Prints a table and writes JSON with every seed and the mean,
standard deviation, min and max of each metric, plus the training time.

    EDGEHAL_DATA=../shared/data OMP_NUM_THREADS=1 nice -n 10 \\
        python benchmarks/localization.py --seeds 0,1,2

Goals (validationData.csv, mean of >= 3 seeds): building 100%, floor
hit rate >= 95.5%, mean 2D error <= 8.5 m, trained on 2 CPU cores in < 15 min.
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
METRICS = ("building_hit_rate", "floor_hit_rate", "mean_error_m", "median_error_m", "penalised_error_m",
           "train_seconds")
GOALS = {"building_hit_rate": ">= 100", "floor_hit_rate": ">= 95.5", "mean_error_m": "<= 8.5",
         "train_seconds": "< 900 on 2 CPU cores"}


def onnxruntime_metrics(ckpt_path: Path, data_root: str | None) -> dict:
    """Export the checkpoint (all heads) and score validationData.csv with plain onnxruntime."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from edgehal.checkpoint import load_checkpoint
    from edgehal.scoring import compute_metrics
    from edgehal.nets.base import ExportWrapper
    from edgehal.pipeline import data_for_checkpoint, predict

    ckpt = load_checkpoint(ckpt_path)
    model = ckpt.build_model()
    data = data_for_checkpoint(ckpt, data_root=data_root)
    names = list(model.manifest.head_names)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(ExportWrapper(model, names).eval(), (data.test.x[:2],), buf,
                          input_names=[model.manifest.input_name], output_names=names, opset_version=17,
                          dynamo=False, dynamic_axes={model.manifest.input_name: {0: "batch"},
                                                      **{n: {0: "batch"} for n in names}})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    got = dict(zip(names, sess.run(None, {model.manifest.input_name: data.test.x.numpy()})))
    want = predict(model, data.test)
    summary = compute_metrics(model.manifest, got, data.test.numpy_labels())["summary"]
    summary["max_coordinate_diff_m"] = float(np.abs(got["coordinates"] - want["coordinates"]).max())
    summary["decisions_identical"] = bool(np.array_equal(got["building_floor"].argmax(1),
                                                         want["building_floor"].argmax(1)))
    return summary


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    os.chdir(REPO)  # every path below, and in the saved results, is relative to the repository
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="models/configs/ujiindoorloc_hier.yaml",
                    help="training config (default: models/configs/ujiindoorloc_hier.yaml)")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default: 0,1,2)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, repeatable (default: none)")
    ap.add_argument("--data-dir", default=None, help="data folder (default: $EDGEHAL_DATA)")
    ap.add_argument("--runs", default="runs/bench_localization",
                    help="where checkpoints go (default: runs/bench_localization)")
    ap.add_argument("--out", default=None,
                    help="JSON result (default: benchmarks/results/<config name>_<n>seeds.json)")
    ap.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime re-scoring (default: run it)")
    args = ap.parse_args(argv)

    import torch

    from edgehal.checkpoint import load_checkpoint
    from edgehal.config import load_config
    from edgehal.train import train

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    runs = []
    name = None
    for seed in seeds:
        overrides = [*args.set, f"seed={seed}"] + ([f"data.root={args.data_dir}"] if args.data_dir else [])
        cfg = load_config(args.config, overrides)
        name = cfg.name
        cfg.output_dir = str(Path(args.runs) / f"{cfg.name}_seed{seed}")
        t0 = time.perf_counter()
        path = train(cfg, log=lambda line: print(f"[seed {seed}] {line}", flush=True), progress=False)
        seconds = time.perf_counter() - t0
        test = load_checkpoint(path).metrics["test"]["summary"]
        run = {"seed": seed, "checkpoint": str(path), "train_seconds": seconds,
               **{k: test[k] for k in METRICS if k in test}}
        if not args.no_onnx:
            run["onnxruntime"] = onnxruntime_metrics(path, args.data_dir)
        runs.append(run)
        print(f"[seed {seed}] building {run['building_hit_rate']:.2f}%  floor {run['floor_hit_rate']:.2f}%  "
              f"mean {run['mean_error_m']:.2f} m  penalised {run['penalised_error_m']:.2f} m  "
              f"train {seconds:.0f} s", flush=True)

    summary = {k: spread([r[k] for r in runs]) for k in METRICS}
    result = {
        "benchmark": "ujiindoorloc hierarchical localization",
        "test_set": "validationData.csv (1,111 fingerprints)",
        "config": str(Path(args.config).resolve().relative_to(REPO)) if Path(args.config).resolve().is_relative_to(REPO)
        else args.config,
        "overrides": args.set, "seeds": seeds, "runs": runs, "summary": summary, "goals": GOALS,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version()},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out = Path(args.out or Path("benchmarks/results") / f"{name}_{len(seeds)}seeds.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'metric':<20} {'mean':>9} {'std':>8} {'min':>9} {'max':>9}")
    for k in METRICS:
        s = summary[k]
        print(f"{k:<20} {s['mean']:>9.3f} {s['std']:>8.3f} {s['min']:>9.3f} {s['max']:>9.3f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
