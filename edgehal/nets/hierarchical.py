"""One hierarchical head: a coarse classifier and one branch per coarse class.

This is the shape shared by HD-CNN (coarse superclasses -> fine classifiers,
Yan et al., ICCV 2015) and hierarchical Wi-Fi localization (building ->
per-building floor classifiers and coordinate regressors). Two models use this
one implementation (``edgehal.nets.hdcnn`` and ``edgehal.nets.localization``).

    features ─┬─> coarse ──────────────> coarse logits            (N, K)
              ├─> branch 0 ─┐
              ├─> ...       ├─> branch scores (N, K, C) ─┐
              └─> branch K-1┘                            ├─> combined (N, C)
                      coarse logits ─> routing weights ──┘

A classification branch scores its own classes; its log-softmax is placed
into the common fine label space of C classes (classes it does not cover get
``IMPOSSIBLE``, a log-probability of "never", finite so that fp16 and
logsumexp stay well-defined). A regression branch outputs C values.

Combination rules (chosen in the config):

* ``weighted``: HD-CNN's p(y|x) = sum_k P(k|x) p_k(y|x), computed in log space
  (logsumexp), so ``combined`` is log p(y|x). For regression, the
  probability-weighted mean of the branch outputs.
* ``hard``: routed by the predicted coarse class k* = argmax_k P(k|x):
  ``combined`` is branch k*'s output (log p_k*(y|x) for classification).

Routing is a ``gather`` with the argmax index, never Python control flow, so
both rules trace to ONNX (``torch.onnx.export(..., dynamo=False)``) with a
dynamic batch. In training, ``route(scores, coarse_target)`` gives the output
of each sample's *true* coarse class's branch (teacher forcing), which is how
each sample trains its own branch only.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import nn

from edgehal.errors import EdgehalError

COMBINE_RULES = ("weighted", "hard")
TASKS = ("classification", "regression")
# log-probability of a class a branch does not cover: exp(-1e4) == 0 in fp32
# and fp16, yet finite (and representable in fp16), so no inf - inf NaNs.
IMPOSSIBLE = -1.0e4


class HierarchicalOutput(NamedTuple):
    """What a hierarchical head computes.

    ``coarse``: coarse logits (N, K). ``branches``: each branch's raw output,
    in its own width. ``scores``: branch outputs in the common space (N, K, C):
    log-probabilities for classification, values for regression.
    ``combined``: (N, C), as described by the combination rule.
    """

    coarse: torch.Tensor
    branches: tuple[torch.Tensor, ...]
    scores: torch.Tensor
    combined: torch.Tensor


class HierarchicalHead(nn.Module):
    """Coarse head + K independent branches + a combination rule.

    ``coarse`` maps features to K coarse logits; it may be ``None`` when the
    router is shared with another hierarchical head, and then ``forward`` takes
    ``coarse_logits``. ``branches`` are K modules on the same features.
    ``branch_classes[k]`` lists the fine classes (indices into 0..C-1) that
    branch k scores, in the order of its outputs; defaults to every branch
    scoring all ``num_fine`` classes (HD-CNN). Regression branches all output
    ``num_fine`` values.
    """

    def __init__(self, *, coarse: nn.Module | None, branches: Sequence[nn.Module], combine: str,
                 num_fine: int, task: str = "classification",
                 branch_classes: Sequence[Sequence[int]] | None = None) -> None:
        super().__init__()
        if combine not in COMBINE_RULES:
            raise EdgehalError("combine", f"{combine!r} is not a combination rule", f"one of {COMBINE_RULES}")
        if task not in TASKS:
            raise EdgehalError("hierarchical head task", f"{task!r} is unknown", f"one of {TASKS}")
        if not branches:
            raise EdgehalError("hierarchical head", "has no branches", "one branch per coarse class")
        if branch_classes is not None and task == "regression":
            raise EdgehalError("hierarchical head", "branch_classes was given for a regression head",
                               "branch_classes only for classification")
        self.coarse = coarse
        self.branches = nn.ModuleList(branches)
        self.combine = combine
        self.task = task
        self.num_fine = int(num_fine)
        self.num_coarse = len(branches)
        self.placed = branch_classes is not None
        if self.placed:
            if len(branch_classes) != self.num_coarse:
                raise EdgehalError("branch_classes", f"has {len(branch_classes)} entries",
                                   f"{self.num_coarse}, one per branch")
            # placement[k]: (D_k, C) one-hot rows; mask[k]: 0 on covered classes, IMPOSSIBLE elsewhere.
            for k, classes in enumerate(branch_classes):
                bad = [c for c in classes if not 0 <= int(c) < self.num_fine]
                if bad or len(set(classes)) != len(classes) or not classes:
                    raise EdgehalError(f"branch_classes[{k}]", f"is {list(classes)}",
                                       f"distinct classes in 0..{self.num_fine - 1}")
                place = torch.zeros(len(classes), self.num_fine)
                place[torch.arange(len(classes)), torch.as_tensor([int(c) for c in classes])] = 1.0
                self.register_buffer(f"placement_{k}", place)
                self.register_buffer(f"mask_{k}", (1.0 - place.sum(0)) * IMPOSSIBLE)

    # -- the three steps -------------------------------------------------------
    def branch_outputs(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(branch(features) for branch in self.branches)

    def scores(self, outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Branch outputs in the common space, stacked: (N, K, C)."""
        if self.task == "regression":
            return torch.stack(list(outputs), dim=1)
        placed = []
        for k, out in enumerate(outputs):
            logp = torch.log_softmax(out, dim=1)
            if self.placed:
                logp = logp @ getattr(self, f"placement_{k}") + getattr(self, f"mask_{k}")
            placed.append(logp)
        return torch.stack(placed, dim=1)

    def combine_scores(self, coarse_logits: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Apply the combination rule: (N, K) coarse logits, (N, K, C) scores -> (N, C)."""
        if self.combine == "hard":
            return route(scores, coarse_logits.argmax(dim=1))
        if self.task == "regression":
            return (torch.softmax(coarse_logits, dim=1).unsqueeze(2) * scores).sum(dim=1)
        return torch.logsumexp(torch.log_softmax(coarse_logits, dim=1).unsqueeze(2) + scores, dim=1)

    def forward(self, features: torch.Tensor, coarse_logits: torch.Tensor | None = None) -> HierarchicalOutput:
        if coarse_logits is None:
            if self.coarse is None:
                raise EdgehalError("hierarchical head", "has no coarse head and no coarse_logits were given")
            coarse_logits = self.coarse(features)
        outputs = self.branch_outputs(features)
        scores = self.scores(outputs)
        return HierarchicalOutput(coarse_logits, outputs, scores, self.combine_scores(coarse_logits, scores))


def route(scores: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``scores[n, index[n], :]`` for every n, as one ``gather`` (exports as GatherElements)."""
    n, _, c = scores.shape
    idx = index.to(torch.int64).view(-1, 1, 1).expand(-1, 1, c)
    # [:, 0] rather than squeeze(1): squeeze of a dynamic dimension exports as an If node.
    return scores.gather(1, idx)[:, 0]


def routed_nll(scores: torch.Tensor, coarse_target: torch.Tensor, fine_target: torch.Tensor,
               *, weight: torch.Tensor | None = None) -> torch.Tensor:
    """NLL of each sample's fine target under its *true* coarse class's branch.

    Only that branch gets a gradient from the sample: the rule "each sample
    trains its true building's floor head" (and HD-CNN's fine components
    trained on their own coarse category).
    """
    return nn.functional.nll_loss(route(scores, coarse_target), fine_target, weight=weight)
