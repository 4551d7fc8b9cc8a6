"""Metrics computed from the head manifest alone, so PyTorch, onnxruntime and
TensorRT outputs are scored by one function.

Classification heads are scored by error rate (percent). A model family with
other metrics (localization: hit rates and metres) registers an evaluator and
names it in ``manifest.evaluator``.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from edgehal.errors import EdgehalError
from edgehal.hierarchy import Head, HeadManifest

Evaluator = Callable[[HeadManifest, Mapping[str, np.ndarray], Mapping[str, np.ndarray]], dict]
_EVALUATORS: dict[str, Evaluator] = {}


def register_evaluator(name: str) -> Callable[[Evaluator], Evaluator]:
    def decorator(fn: Evaluator) -> Evaluator:
        _EVALUATORS[name] = fn
        return fn
    return decorator


def head_target(head: Head, labels: Mapping):
    """The target of one head: its own label if given, else derived from the main label."""
    if head.name in labels:
        return labels[head.name]
    if "label" not in labels:
        raise EdgehalError(f"head {head.name!r}", "has no target in the data",
                           f"labels named {head.name!r} or 'label'; got {sorted(labels)}")
    y = labels["label"]
    if head.parent_map is not None:
        lut = np.asarray(head.parent_map)
        if hasattr(y, "device"):  # torch tensor
            import torch
            return torch.as_tensor(lut, device=y.device)[y]
        return lut[np.asarray(y)]
    return y


def head_targets(manifest: HeadManifest, labels: Mapping) -> dict:
    return {h.name: head_target(h, labels) for h in manifest.heads if h.task == "classification"}


def predictions(manifest: HeadManifest, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Predicted class index per classification head present in ``outputs``."""
    return {h.name: np.asarray(outputs[h.name]).argmax(axis=1)
            for h in manifest.heads if h.task == "classification" and h.name in outputs}


def classification_metrics(manifest: HeadManifest, outputs: Mapping[str, np.ndarray],
                           labels: Mapping[str, np.ndarray]) -> dict:
    """``{head: {"error_rate": %, "errors": n, "count": n}}`` for every classification head."""
    result: dict[str, dict] = {}
    for name, pred in predictions(manifest, outputs).items():
        target = np.asarray(head_target(manifest.head(name), labels))
        scored = target >= 0  # -1: the head does not apply to that sample
        errors = int((pred[scored] != target[scored]).sum())
        count = int(scored.sum())
        result[name] = {"error_rate": 100.0 * errors / max(count, 1), "errors": errors, "count": count}
    return result


_EVALUATORS["classification"] = classification_metrics


def compute_metrics(manifest: HeadManifest, outputs: Mapping[str, np.ndarray],
                    labels: Mapping[str, np.ndarray]) -> dict:
    name = manifest.evaluator
    if name not in _EVALUATORS:
        # Evaluators of other model families register on import of their module.
        from edgehal.nets.registry import list_models
        list_models()
    if name not in _EVALUATORS:
        raise EdgehalError(f"evaluator {name!r}", "is unknown", f"one of {sorted(_EVALUATORS)}")
    return _EVALUATORS[name](manifest, outputs, labels)


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(target), np.asarray(pred)), 1)
    return cm


def save_confusion_png(cm: np.ndarray, class_names, path, *, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgehal.fileio import atomic_path

    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    ax.imshow(np.log1p(cm), cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
