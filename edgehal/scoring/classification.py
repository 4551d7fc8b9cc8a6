"""Classification heads scored by error rate (percent), the default evaluator."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from edgehal.manifest import HeadManifest
from edgehal.scoring.evaluators import register_evaluator
from edgehal.targets import head_target


def predictions(manifest: HeadManifest, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Predicted class index per classification head present in ``outputs``."""
    return {h.name: np.asarray(outputs[h.name]).argmax(axis=1)
            for h in manifest.heads if h.task == "classification" and h.name in outputs}


def error_entry(pred: np.ndarray, target: np.ndarray) -> dict:
    """``{"error_rate": %, "errors": n, "count": n}`` of ``pred`` against ``target``, every sample scored."""
    errors = int((np.asarray(pred) != np.asarray(target)).sum())
    count = int(np.asarray(target).size)
    return {"error_rate": 100.0 * errors / max(count, 1), "errors": errors, "count": count}


@register_evaluator("classification")
def classification_metrics(manifest: HeadManifest, outputs: Mapping[str, np.ndarray],
                           labels: Mapping[str, np.ndarray]) -> dict:
    """``{head: {"error_rate": %, "errors": n, "count": n}}`` for every classification head in ``outputs``.

    A sample whose target is -1 (the head does not apply to it) is not scored.
    """
    result: dict[str, dict] = {}
    for name, pred in predictions(manifest, outputs).items():
        target = np.asarray(head_target(manifest.head(name), labels))
        scored = target >= 0
        result[name] = error_entry(pred[scored], target[scored])
    return result
