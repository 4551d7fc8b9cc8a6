"""Your own images, end to end: an ImageFolder tree -> a torchvision MobileNetV3-Small with a HAL Case1 head
-> ONNX kept and pruned -> INT8 -> parity -> bench -> serve, all through edgehal's Python API.

1. Writes an ``ImageFolder`` tree of PNGs (``train/``, ``val/``, ``test/``, one folder per class named
   ``zero`` .. ``nine``) from the MNIST files in ``$EDGEHAL_DATA`` into ``--work-dir`` (ignored by git),
   and the HAL paper's Case1 (>= 5 against < 5) as a superclass mapping *by class name*.
2. Trains ``tv_hal`` (torchvision ``mobilenet_v3_small``, random init, 1-channel 32x32 input repeated to
   3 channels in the graph) on it for ``--epochs`` with ``edgehal train`` (a subprocess running the
   recorded command).
3. ``edgehal.export`` kept and pruned (the exporter proves the pruned main output bit-identical to the
   kept one), ``edgehal.quantize`` the pruned graph to INT8 calibrated on the tree's train split.
4. ``edgehal.parity`` of the checkpoint (PyTorch) against the three ONNX files on the full test split.
5. ``edgehal.bench``: PyTorch eager (the checkpoint), onnxruntime FP32 (pruned) and onnxruntime INT8, at
   batch 1 and 64, one thread, in one process (ratios, not absolute times, are the result).
6. ``edgehal.serve`` of the kept and the INT8 files in this process; a tritonclient asks the kept model
   for its auxiliary head only, and every test image is classified by the INT8 model over HTTP and
   compared with in-process onnxruntime.

Writes ``--out-dir`` (default ``benchmarks/results/own_images``): ``own_images.json`` (everything),
``own_images.md`` (the tables README quotes), ``own_images.png`` (latency per runtime and batch size),
``parity/`` and ``bench/`` (the library's own reports).

Usage::

    export EDGEHAL_DATA=../shared/data
    python benchmarks/own_images.py                              # the recorded run
    python benchmarks/own_images.py --train-per-class 30 --test-per-class 10 --epochs 1 \\
        --min-seconds 0.3 --out-dir /tmp/own/results --work-dir /tmp/own/work      # smoke run

Exit code 1 on a bad option, a failed step, or an FP32 export failing parity (INT8's verdict is reported).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FORMAT = "edgehal-own-images/1"
CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# The HAL paper's Case1 for digits, by class name: what a user writes for their own classes.
CASE1 = {"name": "case1", "semantics": ">= 5",
         "groups": {"ge5": ["five", "six", "seven", "eight", "nine"], "lt5": ["zero", "one", "two", "three", "four"]}}


def rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def write_tree(data_root: Path, tree: Path, *, per_class: dict[str, int], seed: int) -> dict[str, int]:
    """PNG files from the MNIST IDX files: train and val from MNIST's training set (disjoint), test from its
    test set, ``per_class[split]`` images per class, chosen at random with ``seed``."""
    from PIL import Image
    from torchvision.datasets import MNIST

    train_set = MNIST(str(data_root), train=True, download=False)
    test_set = MNIST(str(data_root), train=False, download=False)
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    sources = {"train": (train_set, 0), "val": (train_set, 1), "test": (test_set, 0)}
    for split, (source, part) in sources.items():
        labels = source.targets.numpy()
        images = source.data.numpy()
        n = per_class[split]
        written = 0
        for c, name in enumerate(CLASS_NAMES):
            idx = rng.permutation(np.flatnonzero(labels == c))
            # train takes the first images of each class and val the next ones, so they never overlap
            pick = idx[part * per_class["train"]:][:n] if split != "test" else idx[:n]
            folder = tree / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in pick:
                Image.fromarray(images[i], "L").save(folder / f"{int(i):05d}.png")
            written += len(pick)
        counts[split] = written
    return counts


def train(tree: Path, mapping: Path, work: Path, *, epochs: int, threads: int) -> dict[str, Any]:
    import yaml

    config = work / "mobilenet_v3_small_hal_case1.yaml"
    config.write_text(yaml.safe_dump({
        "name": "own_images_mobilenet_v3_small_hal_case1",
        "description": "torchvision MobileNetV3-Small (random init) with a HAL Case1 head on a user's image tree",
        "model": {"name": "tv_hal", "backbone": "mobilenet_v3_small",
                  "aux": [{"case": str(mapping), "name": "aux_case1"}], "bn_momentum": 0.1},
        "data": {"dataset": "image_folder", "root": str(tree), "options": {"size": 32, "mode": "L"}},
        "train": {"epochs": epochs, "batch_size": 64, "optimizer": "adamw", "lr": 0.003, "weight_decay": 0.01,
                  "warmup_epochs": 0.3, "threads": threads, "device": "cpu"},
    }, sort_keys=False))
    run_dir = work / "run"
    argv = ["edgehal", "train", str(config), "--output-dir", str(run_dir)]
    print("$", shlex.join(argv), flush=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edgehal.cli", *argv[1:]], check=True)
    return {"command": shlex.join(argv), "config": yaml.safe_load(config.read_text()),
            "seconds": time.perf_counter() - t0, "checkpoint": run_dir / "checkpoint.pt"}


def export_all(checkpoint: Path, tree: Path, work: Path, *, calib_samples: int) -> dict[str, Any]:
    import edgehal

    out: dict[str, Any] = {}
    for aux in ("keep", "prune"):
        path = work / f"mobilenet_v3_small_hal_case1.{aux}.onnx"
        t0 = time.perf_counter()
        rep = edgehal.export(checkpoint, path, aux=aux)
        out[aux] = {"path": path, "seconds": time.perf_counter() - t0, "bytes": rep.bytes, "nodes": rep.nodes,
                    "outputs": list(rep.outputs), "max_abs_diff": rep.max_abs_diff, "notes": rep.notes}
    int8 = work / "mobilenet_v3_small_hal_case1.prune.int8.onnx"
    t0 = time.perf_counter()
    q = edgehal.quantize(out["prune"]["path"], int8, calib_data=tree, calib_samples=calib_samples)
    out["int8"] = {"path": int8, "seconds": time.perf_counter() - t0, "bytes": q.bytes, "qdq_nodes": q.qdq_nodes,
                   "calibration": {"samples": q.samples, "method": q.method, "per_channel": q.per_channel,
                                   "source": rel(Path(q.source))}}
    return out


def parity(checkpoint: Path, exports: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    import edgehal
    from edgehal.parity import write_reports

    names = ("keep", "prune", "int8")
    report = edgehal.parity(checkpoint, [exports[n]["path"] for n in names], split="test")
    md, js = write_reports(report, out_dir / "parity")
    return {"passed": bool(report), "samples": report.samples, "seconds": report.seconds,
            "reference_metrics": report.reference_metrics if hasattr(report, "reference_metrics") else None,
            "artifacts": {n: {"passed": a.passed, "precision": a.precision,
                              "failures": [f"{h.head}: {f}" for h in a.heads for f in h.failures],
                              "heads": {h.head: {"error_percent": h.error, "reference_error_percent": h.reference_error,
                                                 "error_diff_pp": h.error_diff_pp, "agreement_percent": h.agreement,
                                                 "max_abs_diff": h.max_abs_diff} for h in a.heads}}
                          for n, a in zip(names, report.artifacts)},
            "reports": [rel(md), rel(js)]}


def runtime_graphs(exports: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Node counts per operator of the FP32 and INT8 graphs as onnxruntime's CPU provider runs them (after
    its graph optimisations, one thread): which convolutions became integer kernels and how many
    quantize/dequantize steps are left between them."""
    import collections
    import tempfile

    import onnx
    import onnxruntime as ort

    out = {}
    for name in ("prune", "int8"):
        with tempfile.TemporaryDirectory() as tmp:
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.log_severity_level = 3  # its warning that the saved graph is specific to this machine is the point
            so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            ort.InferenceSession(str(exports[name]["path"]), so, providers=["CPUExecutionProvider"])
            graph = onnx.load(so.optimized_model_filepath).graph
        out[name] = dict(collections.Counter(n.op_type for n in graph.node).most_common())
    return out


def bench(checkpoint: Path, exports: dict[str, Any], out_dir: Path, args) -> dict[str, Any]:
    import edgehal
    from edgehal.bench import format_table, write_reports
    from edgehal.bench.report import to_json

    report = edgehal.bench([checkpoint, exports["prune"]["path"], exports["int8"]["path"]],
                           batch_sizes=(1, 64), threads=1, warmup_seconds=args.warmup_seconds,
                           min_runs=args.min_runs, min_seconds=args.min_seconds,
                           note="own images: MobileNetV3-Small HAL Case1, 1 thread",
                           warn=lambda m: print(f"warning: {m}", file=sys.stderr))
    print(format_table(report))
    paths = write_reports(report, out_dir / "bench")
    saved = json.loads(to_json(report))
    return {"files": {k: rel(v) for k, v in paths.items()}, "results": saved["results"],
            "warnings": saved["warnings"], "machine": saved["machine"]}


def serve(tree: Path, exports: dict[str, Any]) -> dict[str, Any]:
    """Serve kept + INT8; ask for the aux head alone; classify every test image over HTTP (binary tensors)."""
    import onnxruntime as ort
    import tritonclient.http as http

    import edgehal
    from edgehal.data.image_folder import ImageTransform, read_image_folder

    meta = edgehal.load(exports["int8"]["path"])
    transform = ImageTransform.from_dict(meta.preprocessing.details["image_transform"])
    test = read_image_folder(tree / "test", transform=transform)
    x = test.x.float().numpy()
    session = ort.InferenceSession(str(exports["int8"]["path"]), providers=["CPUExecutionProvider"])
    local = session.run(["logits"], {"input": x})[0]
    kept_name, int8_name = exports["keep"]["path"].stem, exports["int8"]["path"].stem
    out: dict[str, Any] = {}
    with edgehal.serve([exports["keep"]["path"], exports["int8"]["path"]], threads=1) as server:
        client = http.InferenceServerClient(server.address)
        # the auxiliary head alone, from the kept model
        inp = http.InferInput("input", list(x[:8].shape), "FP32")
        inp.set_data_from_numpy(x[:8], binary_data=True)
        res = client.infer(kept_name, [inp], outputs=[http.InferRequestedOutput("aux_case1", binary_data=True)])
        aux = res.as_numpy("aux_case1")
        names = [o["name"] for o in res.get_response()["outputs"]]
        kept_local = ort.InferenceSession(str(exports["keep"]["path"]),
                                          providers=["CPUExecutionProvider"]).run(["aux_case1"], {"input": x[:8]})[0]
        out["aux_only"] = {"outputs": names, "max_abs_diff_vs_onnxruntime": float(np.abs(aux - kept_local).max())}
        # every test image, one request each, through the INT8 model
        latencies, served = [], []
        for i in range(len(x)):
            one = http.InferInput("input", [1, *x.shape[1:]], "FP32")
            one.set_data_from_numpy(x[i:i + 1], binary_data=True)
            t0 = time.perf_counter()
            r = client.infer(int8_name, [one], outputs=[http.InferRequestedOutput("logits", binary_data=True)])
            latencies.append(time.perf_counter() - t0)
            served.append(r.as_numpy("logits")[0])
        served_arr = np.stack(served)
        out["int8_requests"] = {
            "requests": len(x), "identical_to_onnxruntime": bool(np.array_equal(served_arr, local)),
            "max_abs_diff_vs_onnxruntime": float(np.abs(served_arr - local).max()),
            "served_error_percent": float((served_arr.argmax(1) != test.labels.numpy()).mean() * 100),
            "median_ms": float(np.median(latencies) * 1e3), "p99_ms": float(np.percentile(latencies, 99) * 1e3)}
        client.close()
    return out


def markdown(data: dict[str, Any]) -> str:
    from edgehal.bench.report import fmt_ms, fmt_rate

    m = data["bench"]["machine"]
    par, ex = data["parity"], data["exports"]
    lines = [f"# Your own images, end to end: {data['model']}", "",
             f"Tree: {data['tree_counts']['train']:,} train / {data['tree_counts']['val']:,} val / "
             f"{data['tree_counts']['test']:,} test PNGs written from MNIST; trained {data['train']['config']['train']['epochs']} "
             f"epoch(s) in {data['train']['seconds']:.0f} s. Machine: {m.get('cpu_model')}, one thread per runtime.", "",
             "## Files", "",
             "| artifact | size | nodes | outputs | note |", "| --- | --- | --- | --- | --- |"]
    for n in ("keep", "prune"):
        e = ex[n]
        lines.append(f"| ONNX FP32, aux {n} | {e['bytes'] / 1024:.0f} KiB | {e['nodes']} | {', '.join(e['outputs'])} | "
                     f"{'; '.join(e['notes']) or '–'} |")
    lines.append(f"| ONNX INT8 (pruned, Q/DQ) | {ex['int8']['bytes'] / 1024:.0f} KiB | – | logits | "
                 f"{ex['int8']['qdq_nodes']} Q/DQ nodes, calibrated on {ex['int8']['calibration']['samples']} train images |")
    lines += ["", f"## Parity against PyTorch on the full test split ({par['samples']:,} images)", "",
              "Pass criteria per precision as in README (FP32: identical predictions; INT8: at most 0.50 pp more "
              "error and at least 99.0% agreement).", "",
              "| artifact | head | error % | PyTorch error % | diff pp | agreement % | max abs diff | verdict |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for n, a in par["artifacts"].items():
        for head, h in a["heads"].items():
            why = "; ".join(f.split(": ", 1)[1] for f in a["failures"] if f.startswith(f"{head}: "))
            lines.append(f"| {n} ({a['precision']}) | {head} | {h['error_percent']:.2f} | "
                         f"{h['reference_error_percent']:.2f} | {h['error_diff_pp']:+.2f} | {h['agreement_percent']:.2f} | "
                         f"{h['max_abs_diff']:.3g} | {'FAIL: ' + why if why else 'PASS'} |")
    lines += ["", "## Latency, one thread", "",
              "| runtime | batch | median ms | p99 ms | samples/s | stable | vs PyTorch | INT8 vs FP32 |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in data["latency"]:
        lines.append(f"| {row['runtime']} | {row['batch_size']} | {fmt_ms(row['median_ms'])} | {fmt_ms(row['p99_ms'])} | "
                     f"{fmt_rate(row['throughput_per_s'])} | {'yes' if row['stable'] else 'no'} | "
                     f"{row['vs_pytorch']:.2f}× | {row['int8_vs_fp32']:.2f}× |" if row.get("int8_vs_fp32")
                     else f"| {row['runtime']} | {row['batch_size']} | {fmt_ms(row['median_ms'])} | {fmt_ms(row['p99_ms'])} | "
                     f"{fmt_rate(row['throughput_per_s'])} | {'yes' if row['stable'] else 'no'} | "
                     f"{row['vs_pytorch']:.2f}× | – |")
    g = data["runtime_graphs"]
    ops = ("Conv", "QLinearConv", "QuantizeLinear", "DequantizeLinear", "Transpose", "HardSigmoid", "Mul")
    lines += ["", "## What onnxruntime's CPU provider runs (node counts after its graph optimisations)", "",
              "| graph | " + " | ".join(ops) + " |", "| --- | " + " | ".join("---" for _ in ops) + " |"]
    for name, label in (("prune", "FP32"), ("int8", "INT8 (Q/DQ)")):
        lines.append(f"| {label} | " + " | ".join(str(g[name].get(op, 0)) for op in ops) + " |")
    s = data["serve"]
    lines += ["", "## Served", "",
              f"- kept model, only `aux_case1` requested: the response holds {s['aux_only']['outputs']}, "
              f"max |diff| to in-process onnxruntime {s['aux_only']['max_abs_diff_vs_onnxruntime']:.3g}",
              f"- INT8 model, {s['int8_requests']['requests']:,} single-image HTTP requests (binary tensors): logits "
              f"{'identical to' if s['int8_requests']['identical_to_onnxruntime'] else 'differ from'} in-process "
              f"onnxruntime (max |diff| {s['int8_requests']['max_abs_diff_vs_onnxruntime']:.3g}), error "
              f"{s['int8_requests']['served_error_percent']:.2f}%, round trip median "
              f"{s['int8_requests']['median_ms']:.2f} ms, p99 {s['int8_requests']['p99_ms']:.2f} ms "
              "(client and server in one process on the same cores)",
              "", f"Written {data['created']} by `{data['command']}`."]
    return "\n".join(lines) + "\n"


def latency_rows(results: list[dict]) -> list[dict]:
    def runtime(r: dict) -> str:
        if r["artifact"]["kind"] == "checkpoint":
            return "PyTorch eager"
        return "onnxruntime INT8" if r["artifact"].get("precision") == "int8" else "onnxruntime FP32"

    by = {(runtime(r), r["batch_size"]): r for r in results}
    rows = []
    for (rt, b), r in sorted(by.items(), key=lambda kv: (kv[0][1], ["PyTorch eager", "onnxruntime FP32",
                                                                   "onnxruntime INT8"].index(kv[0][0]))):
        s = r["stats"]
        torch_r, fp32 = by.get(("PyTorch eager", b)), by.get(("onnxruntime FP32", b))
        rows.append({"runtime": rt, "batch_size": b, "median_ms": s["median_ms"], "p99_ms": s["p99_ms"],
                     "throughput_per_s": s["throughput_per_s"], "stable": r["stability"]["stable"],
                     "vs_pytorch": torch_r["stats"]["median_ms"] / s["median_ms"] if torch_r else None,
                     "int8_vs_fp32": (fp32["stats"]["median_ms"] / s["median_ms"]
                                      if rt == "onnxruntime INT8" and fp32 else None)})
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["batch_size"] for r in rows})
    runtimes = ["PyTorch eager", "onnxruntime FP32", "onnxruntime INT8"]
    fig, axes = plt.subplots(1, len(batches), figsize=(4.2 * len(batches), 3.4))
    for ax, b in zip(np.atleast_1d(axes), batches):
        vals = [next((r["median_ms"] for r in rows if r["runtime"] == rt and r["batch_size"] == b), np.nan)
                for rt in runtimes]
        ax.bar(range(len(runtimes)), vals, color=["#888888", "#1f77b4", "#2ca02c"])
        ax.set_xticks(range(len(runtimes)), ["PyTorch", "ORT FP32", "ORT INT8"])
        ax.set_title(f"batch {b}")
        ax.set_ylabel("median latency (ms)")
        for i, v in enumerate(vals):
            ax.annotate(f"{v:.2f}", (i, v), ha="center", va="bottom", fontsize=8)
    fig.suptitle("MobileNetV3-Small + HAL Case1 on 1x32x32 images, one CPU thread")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-per-class", type=int, default=300, help="train images per class (default 300)")
    ap.add_argument("--val-per-class", type=int, default=50, help="val images per class (default 50)")
    ap.add_argument("--test-per-class", type=int, default=200, help="test images per class (default 200)")
    ap.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training (default 2)")
    ap.add_argument("--calib-samples", type=int, default=512, help="INT8 calibration images (default 512)")
    ap.add_argument("--warmup-seconds", type=float, default=1.0)
    ap.add_argument("--min-runs", type=int, default=100)
    ap.add_argument("--min-seconds", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0, help="which MNIST images go into the tree (default 0)")
    ap.add_argument("--work-dir", type=Path, default=REPO / "runs" / "own_images")
    ap.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results" / "own_images")
    args = ap.parse_args(argv)
    data_root = os.environ.get("EDGEHAL_DATA")
    if not data_root or not (Path(data_root) / "MNIST" / "raw").is_dir():
        print("error: set EDGEHAL_DATA to the shared data folder (it holds MNIST/raw)", file=sys.stderr)
        return 1
    for n in ("train_per_class", "val_per_class", "test_per_class", "epochs"):
        if getattr(args, n) < 1:
            print(f"error: --{n.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 1
    # Paths inside the repository are used relative to it (the process runs from its root), so the
    # results name no machine's directories.
    os.chdir(REPO)
    work, out_dir = Path(rel(args.work_dir)), Path(rel(args.out_dir))
    tree = work / "tree"
    if tree.exists():
        import shutil
        shutil.rmtree(tree)  # the tree is made from scratch each time, so its counts are the options'
    work.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    counts = write_tree(Path(data_root), tree, per_class={"train": args.train_per_class, "val": args.val_per_class,
                                                         "test": args.test_per_class}, seed=args.seed)
    tree_seconds = time.perf_counter() - t0
    print(f"wrote {sum(counts.values()):,} PNGs to {tree} in {tree_seconds:.1f}s: {counts}", flush=True)
    import yaml
    mapping = work / "superclasses.yaml"
    mapping.write_text(yaml.safe_dump(CASE1, sort_keys=False))

    trained = train(tree, mapping, work, epochs=args.epochs, threads=args.threads)
    checkpoint = trained.pop("checkpoint")
    exports = export_all(checkpoint, tree, work, calib_samples=args.calib_samples)
    par = parity(checkpoint, exports, out_dir)
    print(f"parity: {'PASS' if par['passed'] else 'FAIL'}", flush=True)
    ben = bench(checkpoint, exports, out_dir, args)
    graphs = runtime_graphs(exports)
    served = serve(tree, exports)
    rows = latency_rows(ben["results"])
    for e in exports.values():
        e["path"] = rel(e["path"])
    data = {"format": FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": "python benchmarks/own_images.py" + (" " + shlex.join(argv if argv is not None else sys.argv[1:])
                                                             if (argv if argv is not None else sys.argv[1:]) else ""),
            "model": "torchvision mobilenet_v3_small + HAL Case1 (tv_hal)", "python": platform.python_version(),
            "tree": rel(tree), "tree_counts": counts, "tree_seconds": tree_seconds, "mapping": CASE1,
            "train": trained, "exports": exports, "parity": par, "bench": ben, "latency": rows, "runtime_graphs": graphs, "serve": served}
    (out_dir / "own_images.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (out_dir / "own_images.md").write_text(markdown(data))
    plot(rows, out_dir / "own_images.png")
    print((out_dir / "own_images.md").read_text())
    # FP32 exports must match PyTorch exactly; INT8's verdict is a measurement, reported in the tables
    fp32_passed = all(par["artifacts"][n]["passed"] for n in ("keep", "prune"))
    return 0 if fp32_passed else 1


if __name__ == "__main__":
    sys.exit(main())
