"""The evaluator registry: ``manifest.evaluator`` names the function that scores a model's outputs.

An evaluator takes the manifest, the named outputs (numpy arrays from
PyTorch, onnxruntime or TensorRT alike) and the data's labels, and returns a
dict of per-head entries (and a ``summary`` where a family has one).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from edgehal.manifest import HeadManifest
from edgehal.registry import Registry

Evaluator = Callable[[HeadManifest, Mapping[str, np.ndarray], Mapping[str, np.ndarray]], dict]

EVALUATORS: Registry[Evaluator] = Registry("evaluator", builtin=(
    "edgehal.scoring.classification", "edgehal.scoring.hdcnn", "edgehal.scoring.localization"))


def register_evaluator(name: str) -> Callable[[Evaluator], Evaluator]:
    """Decorator registering an evaluator; a name registered twice is refused, naming both functions."""
    return EVALUATORS.register(name)


def compute_metrics(manifest: HeadManifest, outputs: Mapping[str, np.ndarray],
                    labels: Mapping[str, np.ndarray]) -> dict:
    """Score ``outputs`` with the evaluator the manifest names."""
    return EVALUATORS.get(manifest.evaluator)(manifest, outputs, labels)
