"""What each head is trained and scored against, derived from the data's labels and the manifest.

A head's target is its own label when the data has one, else the main label
lifted to the head's level through its ``parent_map`` (-1 where the head does
not apply). Models use it for their losses and :mod:`edgehal.scoring` for the
metrics; it lives outside both so that the architectures never import the
scoring stage that comes after them.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from edgehal.errors import EdgehalError
from edgehal.manifest import Head, HeadManifest


def head_target(head: Head, labels: Mapping):
    """The target of one head: its own label if given, else derived from the main label.

    Works on numpy arrays and on torch tensors (kept on their device).
    """
    if head.name in labels:
        return labels[head.name]
    if "label" not in labels:
        raise EdgehalError(f"head {head.name!r}", "has no target in the data",
                           f"labels named {head.name!r} or 'label'; got {sorted(labels)}")
    y = labels["label"]
    if head.parent_map is not None:
        lut = np.asarray(head.parent_map)
        if isinstance(y, np.ndarray) or not _is_torch_tensor(y):
            return lut[np.asarray(y)]
        import torch
        return torch.as_tensor(lut, device=y.device)[y]
    return y


def _is_torch_tensor(value: object) -> bool:
    # Asked without importing torch: a deployment target that scores numpy outputs may have none.
    # (numpy 2 arrays have a ``device`` attribute too, so duck typing would misfire.)
    return type(value).__module__.split(".")[0] == "torch"


def head_targets(manifest: HeadManifest, labels: Mapping) -> dict:
    """The target of every classification head of ``manifest``."""
    return {h.name: head_target(h, labels) for h in manifest.heads if h.task == "classification"}
