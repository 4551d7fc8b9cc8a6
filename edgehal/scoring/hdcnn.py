"""HD-CNN's evaluator: fine and coarse error rates, each branch on its own superclass, coarse/fine consistency.

Everything it needs is the manifest's ``coarse_to_fine`` (which fine classes
each coarse category holds, whether a branch scores all classes or only its
group's), so a pruned model, an ONNX graph or an engine is scored like the
PyTorch model.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from edgehal.manifest import HeadManifest
from edgehal.scoring.classification import error_entry
from edgehal.scoring.evaluators import register_evaluator


@register_evaluator("hdcnn")
def hdcnn_metrics(manifest: HeadManifest, outputs: Mapping[str, np.ndarray],
                  labels: Mapping[str, np.ndarray]) -> dict:
    """Error rate per head, the coarse/fine consistency, and a ``summary``.

    ``fine`` and ``coarse``: error rate on every sample. ``fine_b<k>``: error
    rate of branch k on the samples of superclass k (what it is trained for).
    ``coarse_fine_consistency`` (when the coarse output is present): the share
    of samples whose coarse prediction is the superclass of the fine prediction.
    ``fine_error_sources``: the fine error rate split by whether the coarse
    prediction was also wrong, which shows where the model's mistakes come from.
    """
    y = np.asarray(labels["label"])
    c2f = manifest.coarse_to_fine
    groups = c2f.groups
    coarse_of = np.asarray(c2f.coarse_of, dtype=np.int64)
    n = max(len(y), 1)

    fine_pred = np.asarray(outputs["fine"]).argmax(axis=1)
    result: dict = {"fine": error_entry(fine_pred, y)}
    summary = {"error_rate": result["fine"]["error_rate"]}
    if "coarse" in outputs:
        coarse_pred = np.asarray(outputs["coarse"]).argmax(axis=1)
        result["coarse"] = error_entry(coarse_pred, coarse_of[y])
        agree = int((coarse_pred == coarse_of[fine_pred]).sum())
        result["coarse_fine_consistency"] = {"consistency_rate": 100.0 * agree / n,
                                             "inconsistent": int(len(y) - agree), "count": int(len(y))}
        wrong, coarse_right = fine_pred != y, coarse_pred == coarse_of[y]
        result["fine_error_sources"] = {"coarse_wrong": 100.0 * int((wrong & ~coarse_right).sum()) / n,
                                        "coarse_right": 100.0 * int((wrong & coarse_right).sum()) / n,
                                        "count": int(len(y))}
        summary["coarse_error_rate"] = result["coarse"]["error_rate"]
        summary["coarse_fine_consistency"] = result["coarse_fine_consistency"]["consistency_rate"]
    for k in range(len(groups)):
        name = f"fine_b{k}"
        if name not in outputs:
            continue
        rows = coarse_of[y] == k
        local = np.asarray(outputs[name])[rows].argmax(axis=1)
        # a "group" branch scores only its superclass's classes, in group order
        to_class = np.asarray(groups[k]) if c2f.branch_classes == "group" else np.arange(len(coarse_of))
        result[name] = error_entry(to_class[local], y[rows])
    result["summary"] = summary
    return result
