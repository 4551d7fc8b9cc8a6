"""``edgehal eval``: every head's metrics on a full split, as a table, JSON and a picture."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from edgehal.checkpoint import load_checkpoint
from edgehal.fileio import atomic_write_text


def format_metrics_table(metrics: dict, manifest) -> list[str]:
    lines = [f"{'head':<16} {'kind':<5} {'classes':>7} {'errors':>7} {'count':>7} {'error %':>8}"]
    for head in manifest.heads:
        m = metrics.get(head.name)
        if isinstance(m, dict) and "error_rate" in m:
            lines.append(f"{head.name:<16} {head.kind:<5} {head.num_outputs:>7} {m['errors']:>7} "
                         f"{m['count']:>7} {m['error_rate']:>8.2f}")
    for key, value in metrics.get("summary", {}).items():
        lines.append(f"{key:<30} {value:>10.4g}")
    return lines


def evaluate_checkpoint(checkpoint: str | Path, *, split: str = "test", data_root: str | Path | None = None,
                        json_out: str | Path | None = None, confusion: str | Path | None = None,
                        batch_size: int = 1000, log: Callable[[str], None] = print) -> dict:
    """Metrics of every head of ``checkpoint`` on ``split``; optionally JSON and a confusion PNG."""
    from edgehal.pipeline import data_for_checkpoint, predict
    from edgehal.scoring import compute_metrics, confusion_matrix, head_target, save_confusion_png

    ckpt = load_checkpoint(checkpoint)
    model = ckpt.build_model()
    data = data_for_checkpoint(ckpt, data_root=data_root).split(split)
    outputs = predict(model, data, batch_size=batch_size)
    labels = data.numpy_labels()
    metrics = compute_metrics(model.manifest, outputs, labels)
    log(f"{ckpt.path} on the {split} split ({len(data)} samples):")
    for line in format_metrics_table(metrics, model.manifest):
        log("  " + line)
    result = {"checkpoint": str(ckpt.path), "split": split, "samples": len(data), "metrics": metrics}
    if json_out:
        atomic_write_text(json_out, json.dumps(result, indent=2, sort_keys=True))
        log(f"wrote {json_out}")
    if confusion:
        main = model.manifest.main
        if main.task == "classification":
            cm = confusion_matrix(outputs[main.name].argmax(1), head_target(main, labels), main.num_outputs)
            save_confusion_png(cm, main.class_names, confusion,
                               title=f"{ckpt.payload.get('name', main.name)}: {split}, "
                                     f"error {metrics[main.name]['error_rate']:.2f}%")
            log(f"wrote {confusion}")
    return result
