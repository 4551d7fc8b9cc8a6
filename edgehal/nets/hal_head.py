"""HAL's heads (Cha, Kim, Lee, arXiv:1906.00852) on any feature extractor.

Auxiliary blocks predict superclass scores from the feature vector; the
scores of the blocks that *feed* the classifier (HAL) are concatenated with
the features as the classifier's input, while a *training-only* block (deep
supervision) sees the same features but does not feed the classifier, so
pruning it at export removes its nodes. ``HALClassifier`` is that wiring for
every architecture with HAL heads (the pre-activation ResNet, the
row-sequential recurrent classifier); ``hal_heads`` builds their manifest's
heads from the config's ``aux`` list.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from edgehal.errors import EdgehalError
from edgehal.hierarchy import aux_head_from_case, get_case
from edgehal.manifest import Head
from edgehal.nets.base import EdgehalModel
from edgehal.nets.declared import class_names_for

AuxSpec = Mapping[str, Any] | str


class AuxBlock(nn.Module):
    """Pooled features -> hidden -> superclass scores."""

    def __init__(self, cin: int, hidden: int, num_superclasses: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(cin, hidden), nn.ReLU(inplace=False),
                                 nn.Linear(hidden, num_superclasses))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class HALClassifier(EdgehalModel):
    """A classifier whose heads are HAL's: subclasses build a feature extractor, call
    ``init_heads`` with its width and implement ``forward_features``.

    The head modules are attributes of the model itself (``aux_blocks``,
    ``dropout``, ``classifier``), not of a sub-module, so state_dict keys are
    those every saved checkpoint has.
    """

    def init_heads(self, *, features: int, aux_hidden: Sequence[int], dropout: float) -> None:
        """One ``AuxBlock`` per aux head of ``self.manifest`` (``aux_hidden[i]`` wide) and the classifier."""
        manifest = self.manifest
        self.aux_blocks = nn.ModuleDict({
            h.name: AuxBlock(features, hidden, h.num_outputs) for h, hidden in zip(manifest.aux_heads, aux_hidden)})
        self.feeding = [h.name for h in manifest.aux_heads if h.feeds_main]
        fed = sum(manifest.head(n).num_outputs for n in self.feeding)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.classifier = nn.Linear(features + fed, manifest.main.num_outputs)

    def forward_heads(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {name: block(features) for name, block in self.aux_blocks.items()}
        head_in = torch.cat([features] + [out[n] for n in self.feeding], dim=1) if self.feeding else features
        return {self.manifest.main.name: self.classifier(self.dropout(head_in)), **out}


def aux_specs(aux: Sequence[AuxSpec] | None) -> list[dict[str, Any]]:
    """The config's ``aux`` list as dicts, each checked for its keys."""
    specs = []
    for i, a in enumerate(aux or ()):
        spec = {"case": a} if isinstance(a, str) else dict(a)
        unknown = set(spec) - {"case", "feeds_main", "hidden", "name"}
        if unknown or "case" not in spec:
            raise EdgehalError(f"model.aux[{i}]", f"has keys {sorted(spec)}",
                               "keys: case (required), feeds_main, hidden, name")
        specs.append(spec)
    return specs


def hal_heads(*, dataset: str, class_names: Sequence[str] | None, aux: Sequence[AuxSpec] | None,
              aux_hidden: int) -> tuple[list[Head], list[int]]:
    """The heads of a HAL classifier (main ``logits`` plus one per auxiliary case) and each aux block's width.

    ``class_names`` defaults to the classes ``dataset`` declares.
    """
    names = class_names_for(dataset=dataset, class_names=class_names)
    heads = [Head(name="logits", kind="main", level=0, class_names=names, description="class scores (logits)")]
    hidden = []
    for spec in aux_specs(aux):
        case = get_case(dataset, spec["case"], num_classes=len(names), class_names=names)
        if case.num_classes != len(names):
            raise EdgehalError(f"case {spec['case']!r}", f"maps {case.num_classes} classes",
                               f"{len(names)} classes of {dataset}")
        heads.append(aux_head_from_case(case, name=spec.get("name"),
                                        feeds_main=bool(spec.get("feeds_main", True))))
        hidden.append(int(spec.get("hidden", aux_hidden)))
    return heads, hidden
