"""Where the HAL table is heading: test error against the training budget.

``reproduce_hal.py`` keeps one budget per results folder (a folder never mixes
epochs). This script reads several such folders, each one budget, and puts
them side by side: test error of the main head (mean ± sample standard
deviation over seeds) per case against the epochs each run trained, next to
the published numbers, as a table (``<out>.md``), data (``<out>.json``) and a
plot (``<out>.png``). It computes every number from the saved per-run result
files (``<case>_seed<k>.json``) through ``reproduce_hal.summarize``, so it
trains nothing and needs no data.

Usage::

    python benchmarks/hal_budgets.py --dataset mnist \\
        benchmarks/results/hal_mnist benchmarks/results/hal_mnist_8ep \\
        --out benchmarks/results/hal_mnist_budgets

Exit code: 0 on success; 1 on a missing folder or one without results.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduce_hal import (CASES, GOALS, PUBLISHED, Failure, _figure, _save, rel,  # noqa: E402
                           summarize, write_json)

FORMAT = "edgehal-hal-budgets/1"


def collect(dataset: str, folders: list[Path]) -> dict[str, Any]:
    """One entry per folder (budget), sorted by epochs; each with the per-case rows it holds."""
    budgets = []
    for folder in folders:
        if not folder.is_dir():
            raise Failure(f"results folder {folder} | not found. Note: a --results-dir of reproduce_hal.py")
        summary = summarize(dataset, folder, list(CASES))
        rows = [r for r in summary["rows"] if r["n"]]
        if not rows or summary["budget"] is None:
            raise Failure(f"results folder {rel(folder)} | holds no {dataset} run results. "
                          "Note: <case>_seed<k>.json files written by reproduce_hal.py")
        budgets.append({"folder": rel(folder), "epochs": summary["budget"]["epochs"],
                        "limit": summary["budget"]["limit"], "overrides": summary["budget"]["overrides"],
                        "rows": [{k: r[k] for k in ("case", "seeds", "test_error_percent", "n", "mean", "std",
                                                    "min", "max", "sources")} for r in rows]})
    budgets.sort(key=lambda b: b["epochs"])
    goal = None
    if dataset in GOALS:
        case, target, min_seeds = GOALS[dataset]
        goal = {"case": case, "target_mean": target, "min_seeds": min_seeds}
    return {"format": FORMAT, "dataset": dataset, "budgets": budgets, "goal": goal,
            "published": {c: {"mean": m, "std": s} for c, (m, s) in PUBLISHED.get(dataset, {}).items()},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _cell(row: dict | None) -> str:
    if row is None:
        return "–"
    std = f" ± {row['std']:.2f}" if row["std"] is not None else ""
    return f"{row['mean']:.2f}{std} (n={row['n']})"


def markdown(data: dict[str, Any]) -> str:
    cases = [c for c in CASES if any(r["case"] == c for b in data["budgets"] for r in b["rows"])]
    lines = [f"# HAL on {data['dataset']}: test error against the training budget", "",
             "Test error (%) of the main head, mean ± sample standard deviation over seeds (n = seeds), "
             "one row per budget; each budget is one results folder of `benchmarks/reproduce_hal.py`, "
             "full training data unless a limit is shown.", "",
             "| epochs per run | " + " | ".join(cases) + " | folder |",
             "| --- | " + " | ".join("---" for _ in cases) + " | --- |"]
    for b in data["budgets"]:
        by_case = {r["case"]: r for r in b["rows"]}
        extra = f", limit {b['limit']}" if b["limit"] else ""
        lines.append(f"| {b['epochs']}{extra} | " + " | ".join(_cell(by_case.get(c)) for c in cases)
                     + f" | `{b['folder']}` |")
    pub = data["published"]
    if pub:
        lines.append("| published | " + " | ".join(
            "–" if c not in pub else f"{pub[c]['mean']:.2f}" + (f" ± {pub[c]['std']:.2f}" if pub[c]["std"]
                                                               is not None else "") for c in cases) + " | |")
    goal = data["goal"]
    if goal:
        lines += ["", f"Goal: {goal['case']} mean at most {goal['target_mean']:.2f}% over at least "
                  f"{goal['min_seeds']} seeds, with the baseline under the same budget."]
        for b in data["budgets"]:
            by_case = {r["case"]: r for r in b["rows"]}
            row, base = by_case.get(goal["case"]), by_case.get("baseline")
            if row is None:
                continue
            met = row["mean"] <= goal["target_mean"] and row["n"] >= goal["min_seeds"]
            gain = ""
            if base is not None:
                gain = f"; baseline {base['mean']:.2f}%, difference {row['mean'] - base['mean']:+.2f} pp"
            lines.append(f"- {b['epochs']} epochs: {goal['case']} {row['mean']:.2f}% over {row['n']} seeds, "
                         f"**{'met' if met else 'not met'}**{gain}.")
    lines += ["", "Every number is recomputed from the per-run result files in the folders above. Plot: the "
              "`.png` next to this file.", "",
              f"Written {data['created']} by `benchmarks/hal_budgets.py`.", ""]
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> None:
    fig = _figure(7.5, 4.2)
    ax = fig.add_subplot()
    cases = [c for c in CASES if any(r["case"] == c for b in data["budgets"] for r in b["rows"])]
    for case in cases:
        points = [(b["epochs"], r) for b in data["budgets"] for r in b["rows"] if r["case"] == case]
        xs = [e for e, _ in points]
        line = ax.errorbar(xs, [r["mean"] for _, r in points], yerr=[r["std"] or 0.0 for _, r in points],
                           marker="o", markersize=4, capsize=3, label=case)
        pub = data["published"].get(case)
        if pub and pub["mean"] is not None:
            ax.axhline(pub["mean"], color=line.lines[0].get_color(), linestyle="--", linewidth=0.8, alpha=0.6)
    if data["goal"]:
        ax.axhline(data["goal"]["target_mean"], color="tab:green", linestyle=":", linewidth=1,
                   label=f"goal: {data['goal']['case']} ≤ {data['goal']['target_mean']:.2f}%")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epochs per run (training budget)")
    ax.set_ylabel("test error (%), mean ± std over seeds")
    ax.set_title(f"HAL on {data['dataset']}: test error against budget (dashed: published)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path, help="results folders of reproduce_hal.py, one per budget")
    ap.add_argument("--dataset", required=True, choices=sorted(PUBLISHED))
    ap.add_argument("--out", type=Path, required=True, help="output path without suffix (.md, .json, .png)")
    args = ap.parse_args(argv)
    try:
        data = collect(args.dataset, args.folders)
    except Failure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from edgehal.fileio import atomic_write_text

    text = markdown(data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_suffix(".md"), text)
    write_json(args.out.with_suffix(".json"), data)
    plot(data, args.out.with_suffix(".png"))
    print(text)
    print(f"wrote {rel(args.out)}.md, .json, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
