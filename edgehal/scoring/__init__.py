"""Scoring: metrics computed from the head manifest alone, so PyTorch, onnxruntime and TensorRT
outputs are scored by one function.

``compute_metrics`` calls the evaluator that ``manifest.evaluator`` names:
``classification`` (error rate per head), ``hdcnn`` (plus each branch on its
own superclass and the coarse/fine consistency), ``localization`` (hit rates
and metres). A model family with other metrics registers an evaluator with
``register_evaluator`` and names it in its manifest. Scoring comes after the
architectures in the pipeline and never imports them.
"""

from edgehal.scoring.classification import predictions
from edgehal.scoring.confusion import confusion_matrix, save_confusion_png
from edgehal.scoring.evaluators import Evaluator, compute_metrics, register_evaluator
from edgehal.targets import head_target, head_targets

__all__ = ["Evaluator", "compute_metrics", "confusion_matrix", "head_target", "head_targets", "predictions",
           "register_evaluator", "save_confusion_png"]
