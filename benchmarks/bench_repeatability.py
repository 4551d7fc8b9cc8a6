"""Do two runs of the same `edgehal bench` agree?

Goal: repeat runs of the same command on an idle machine agree
within 10% on the median, or the result says it is unstable.

Runs :func:`edgehal.bench.run_bench` twice with identical options on the same
artifacts and, per artifact x backend x batch size x mode, reports the median
disagreement ``|a - b| / min(a, b)`` and a verdict:

* ``agree``: within the tolerance (10%);
* ``flagged``: outside it, but at least one run flagged itself unstable, which
  is the honest outcome the goal allows;
* ``FAIL``: outside it and both runs claimed to be stable.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_repeatability.py [--model m.onnx ...] [--backend ort-cpu]
        [--batch-sizes 1,64] [--threads 1] [--min-seconds 3] [--note "..."]

Without ``--model`` it builds a small MLP (a stand-in for the MNIST HAL net).
Writes ``benchmarks/results/bench_repeatability.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _opener():
    """The real loader when it is there; onnxruntime on CPU for .onnx files otherwise."""
    try:
        from edgehal.runtime.loader import open_runner
        return open_runner
    except ImportError:
        from edgehal.runtime.onnxruntime import OnnxRuntimeRunner

        def open_ort(path, *, backend=None, threads=None, device=None):
            if backend not in (None, "ort-cpu"):
                raise SystemExit(f"backend {backend} needs edgehal.runtime.loader")
            return OnnxRuntimeRunner(path, providers=["cpu"], threads=threads)
        return open_ort


def compare(first, second, *, tolerance: float) -> list[dict]:
    def key(r):
        return (r.artifact.path, r.backend, r.batch_size, r.mode)

    b = {key(r): r for r in second.results}
    rows = []
    for r in first.results:
        other = b.get(key(r))
        if other is None:
            continue
        m1, m2 = r.stats.median_ms, other.stats.median_ms
        dis = abs(m1 - m2) / min(m1, m2)
        flagged = not (r.stability.stable and other.stability.stable)
        verdict = "agree" if dis <= tolerance else "flagged" if flagged else "FAIL"
        rows.append({"artifact": r.artifact.name, "backend": r.backend, "batch_size": r.batch_size, "mode": r.mode,
                     "median_ms_run1": m1, "median_ms_run2": m2, "disagreement": dis,
                     "stable_run1": r.stability.stable, "stable_run2": other.stability.stable, "verdict": verdict})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, action="append", help="artifact(s) to bench (repeatable)")
    ap.add_argument("--backend", action="append", help="backend(s), as for `edgehal bench` (default: per type)")
    ap.add_argument("--batch-sizes", default="1,64")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-seconds", type=float, default=3.0)
    ap.add_argument("--warmup-seconds", type=float, default=1.0)
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument("--note", default="")
    ap.add_argument("--output", type=Path, default=RESULTS / "bench_repeatability.json")
    args = ap.parse_args(argv)

    from edgehal.bench import BenchOptions, format_table, run_bench
    from edgehal.fileio import atomic_write_text

    options = BenchOptions(backends=tuple(args.backend) if args.backend else None,
                           batch_sizes=tuple(int(b) for b in args.batch_sizes.split(",")), threads=args.threads,
                           min_seconds=args.min_seconds, warmup_seconds=args.warmup_seconds, note=args.note).validate()
    with tempfile.TemporaryDirectory() as tmp:
        models = args.model
        if not models:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from harness_overhead import build_mlp

            models = [build_mlp(Path(tmp) / "mlp_256.onnx", width=256)]
        opener = _opener()
        runs = []
        for i in (1, 2):
            print(f"--- run {i}")
            report = run_bench(models, options, opener=opener, warn=lambda m: print(f"warning: {m}"))
            print(format_table(report))
            runs.append(report)
    rows = compare(runs[0], runs[1], tolerance=args.tolerance)
    passed = all(r["verdict"] != "FAIL" for r in rows)
    print(f"\n{'artifact':<20} {'backend':<10} {'batch':>5} {'run 1 ms':>10} {'run 2 ms':>10} {'diff':>7}  verdict")
    for r in rows:
        print(f"{r['artifact']:<20} {r['backend']:<10} {r['batch_size']:>5} {r['median_ms_run1']:>10.4f} "
              f"{r['median_ms_run2']:>10.4f} {r['disagreement']:>7.1%}  {r['verdict']}")
    out = {
        "benchmark": "bench_repeatability", "note": args.note, "tolerance": args.tolerance,
        "passed": passed, "comparisons": rows, "options": options.to_dict(),
        "runs": [r.to_dict() for r in runs], "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(args.output, json.dumps(out, indent=2, default=str) + "\n")
    print(f"\nrepeatability (goal: within {args.tolerance:.0%} or flagged unstable): {'PASS' if passed else 'FAIL'}")
    print(f"wrote {args.output}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
