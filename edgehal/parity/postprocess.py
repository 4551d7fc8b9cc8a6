"""Postprocess: a run's raw outputs -> per-head predictions, targets and the evaluator's metrics.

Turning outputs into predictions is a step of its own, per head with a
default per task (argmax for a classification head, identity for a
regression head), as Polygraphy's comparator postprocessing is, so the
comparison never assumes what an output means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from edgehal.manifest import HeadManifest
from edgehal.parity.runs import RunResult
from edgehal.scoring import compute_metrics, head_target  # the one import of the evaluators

Step = Callable[[np.ndarray], np.ndarray]


def argmax(outputs: np.ndarray) -> np.ndarray:
    """The predicted class of each sample from its scores (logits or probabilities)."""
    return np.asarray(outputs).argmax(axis=1)


def identity(outputs: np.ndarray) -> np.ndarray:
    """The output is the prediction (coordinates of a regression head)."""
    return np.asarray(outputs)


DEFAULT_STEPS: Mapping[str, Step] = {"classification": argmax, "regression": identity}


@dataclass(frozen=True)
class Postprocessed:
    """One run scored: the model's manifest, the heads the run returned (in manifest order), their
    raw outputs and predictions, the target of each classification head (-1 where the head does not
    apply to a sample) and the evaluator's metrics."""

    manifest: HeadManifest
    heads: tuple[str, ...]
    outputs: Mapping[str, np.ndarray]
    predictions: Mapping[str, np.ndarray]
    targets: Mapping[str, np.ndarray]
    metrics: Mapping[str, Any]
    samples: int


def postprocess(run: RunResult, manifest: HeadManifest, *, steps: Mapping[str, Step] | None = None) -> Postprocessed:
    """Apply each head's prediction step and ``manifest``'s evaluator to ``run``.

    ``manifest`` is the reference model's; the run may return a subset of its
    heads (a pruned export); a head it does not have is an error. ``steps`` maps a head name, or a task, to its
    step; defaults to :data:`DEFAULT_STEPS`. The evaluator scores the run only
    when it returns the main head (evaluators combine heads around it).
    """
    chosen = {**DEFAULT_STEPS, **(steps or {})}
    heads = [manifest.head(name) for name in manifest.order(list(run.outputs))]
    labels = run.labels
    predictions = {h.name: chosen.get(h.name, chosen[h.task])(run.outputs[h.name]) for h in heads}
    targets = {h.name: np.asarray(head_target(h, labels)) for h in heads if h.task == "classification" and labels}
    names = [h.name for h in heads]
    scored = bool(labels) and manifest.main.name in names
    metrics = compute_metrics(manifest.only(names), run.outputs, labels) if scored else {}
    return Postprocessed(manifest=manifest, heads=tuple(names), outputs={n: run.outputs[n] for n in names},
                         predictions=predictions, targets=targets, metrics=metrics, samples=len(run))
