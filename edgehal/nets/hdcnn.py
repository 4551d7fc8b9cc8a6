"""HD-CNN coarse-to-fine classifiers (Yan et al., "HD-CNN", ICCV 2015) on the HAL presets.

    image -> in-graph normalisation -> shared trunk (the first stages of HAL's PreActResNet)
          -> HierarchicalHead: coarse component over the superclasses of a case (Case1..Case4)
                               + one fine branch per superclass (the last ``branch_stages``
                                 residual stages, their own copy each, pool, linear)
          -> fine: log p(y|x) = log sum_k P(k|x) p_k(y|x)   (combine: weighted, HD-CNN)
                   or log p_k*(y|x), k* = argmax_k P(k|x)     (combine: hard)

The hierarchical head is ``edgehal.nets.hierarchical.HierarchicalHead``, the
one the localization network uses. Outputs: main ``fine`` (log-probabilities:
argmax is the prediction, softmax gives them back as probabilities); aux
``coarse`` (superclass logits) and ``fine_b<k>`` (branch k's logits). The aux
outputs feed ``fine``, so pruning them at export removes outputs only. They
are scored by ``edgehal.scoring.hdcnn``, named in the manifest.

The coarse component is a pooled-feature MLP (``coarse_stages: 0``) or, with
``coarse_stages: N``, has its own copy of the last N residual stages, as a fine
branch does, so that it is not the weakest part of the model.

Training (``train.stages``, see ``edgehal.train``): HD-CNN pretrains the trunk
and fine branches as classifiers of every fine class (``branches_all``: each
branch on every sample, HD-CNN's building-block network), trains the coarse
component on the coarse loss with the trunk frozen, then fine-tunes everything
on the whole loss; or all jointly.
The loss is NLL(fine) + aux_weight * CE(coarse) + branch_weight * NLL of each
sample under its true superclass's branch (a fine component learns from its
own coarse category, as in HD-CNN's pretraining of fine components); with
``combine: hard`` the NLL(fine) term is left out (see ``HDCNN.loss``). A stage
names the terms it trains on (``loss: [branches_all]``): the pretraining stage
must not push the trunk through a coarse component that is still random.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from edgehal.errors import EdgehalError
from edgehal.hierarchy import SuperclassCase, aux_head_from_case, get_case
from edgehal.manifest import CoarseToFine, Head, HeadManifest
from edgehal.nets.base import EdgehalModel, InputNormalization
from edgehal.nets.declared import class_names_for, input_shape_for
from edgehal.nets.hal import PRESETS, PreActResNet, residual_stages
from edgehal.nets.hierarchical import COMBINE_RULES, HierarchicalHead, routed_nll
from edgehal.nets.registry import register_model


class SharedTrunk(PreActResNet):
    """HAL's PreActResNet without its final BN-ReLU-pool: the feature map the branches continue from."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        del self.bn  # each branch and the coarse component has its own

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class ConvBranch(nn.Module):
    """Residual stages (maybe none) -> BN-ReLU -> global average pool -> [Linear-ReLU] -> Linear."""

    def __init__(self, *, cin: int, widths: Sequence[int], blocks: Sequence[int], strides: Sequence[int],
                 num_outputs: int, hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.stages, cin = residual_stages(cin, widths=widths, blocks=blocks, strides=strides)
        self.bn = nn.BatchNorm2d(cin)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = (nn.Sequential(nn.Linear(cin, hidden), nn.ReLU(), nn.Linear(hidden, num_outputs)) if hidden
                   else nn.Linear(cin, num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stages(x))).mean(dim=(2, 3))
        return self.fc(self.dropout(x))


class HDCNN(EdgehalModel):
    """Shared trunk + hierarchical head (coarse component, fine branches, combination rule)."""

    # The whole loss. ``branches_all`` (every branch on every sample, as HD-CNN's building-block network
    # is pretrained on all fine classes) is only for a stage that names it.
    WHOLE_LOSS = ("fine", "coarse", "branches")

    @property
    def loss_terms(self) -> tuple[str, ...]:
        # a branch that scores only its superclass's classes cannot be trained on every sample
        return self.WHOLE_LOSS + (() if self.head.placed else ("branches_all",))

    def __init__(self, *, manifest: HeadManifest, in_channels: int, widths: Sequence[int],
                 blocks: Sequence[int], strides: Sequence[int], branch_stages: int,
                 groups: Sequence[Sequence[int]], num_classes: int, branch_classes: str, combine: str,
                 coarse_hidden: int, branch_hidden: int, mean: Sequence[float], std: Sequence[float],
                 dropout: float, branch_weight: float, coarse_stages: int = 0) -> None:
        super().__init__()
        self.manifest = manifest
        self.normalize = InputNormalization(mean=mean, std=std, scale=1.0 / 255.0)
        cut = len(widths) - branch_stages
        self.trunk = SharedTrunk(in_channels=in_channels, widths=widths[:cut], blocks=blocks[:cut],
                                 strides=strides[:cut])
        d = self.trunk.num_features
        self.groups = [list(g) for g in groups]
        own = branch_classes == "group"
        tail = dict(widths=widths[cut:], blocks=blocks[cut:], strides=strides[cut:])
        coarse_tail = {k: v[:coarse_stages] for k, v in tail.items()}
        self.head = HierarchicalHead(
            coarse=ConvBranch(cin=d, **coarse_tail, num_outputs=len(groups), hidden=coarse_hidden,
                              dropout=dropout),
            branches=[ConvBranch(cin=d, **tail, num_outputs=len(g) if own else num_classes,
                                 hidden=branch_hidden, dropout=dropout) for g in groups],
            combine=combine, num_fine=num_classes, branch_classes=self.groups if own else None)
        self.register_buffer("coarse_of", torch.tensor(
            [next(k for k, g in enumerate(groups) if c in g) for c in range(num_classes)]))
        self.branch_weight = float(branch_weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.normalize(x))

    def forward_heads(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.head(features)
        out = {"fine": h.combined, "coarse": h.coarse}
        for k, logits in enumerate(h.branches):
            out[f"fine_b{k}"] = logits
        return {head.name: out[head.name] for head in self.manifest.heads}

    def loss(self, outputs: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], *,
             aux_weight: float, terms: Sequence[str] = WHOLE_LOSS) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted sum of the ``terms`` asked for (the whole loss by default); each is reported."""
        y = labels["label"]
        coarse_y = self.coarse_of[y]
        nll = nn.functional.nll_loss(outputs["fine"].float(), y)
        ce = nn.functional.cross_entropy(outputs["coarse"].float(), coarse_y)
        scores = self.head.scores([outputs[f"fine_b{k}"].float() for k in range(len(self.groups))])
        branch = routed_nll(scores, coarse_y, y)
        total = nll.new_zeros(())
        if "coarse" in terms:
            total = total + aux_weight * ce
        if "branches" in terms:
            total = total + self.branch_weight * branch
        if "fine" in terms and self.head.combine == "weighted":
            # Under hard routing the combined output has no gradient to the coarse component and a
            # constant IMPOSSIBLE log-probability when it routes wrongly: the two terms above train it.
            total = total + nll
        parts = {"fine": float(nll.detach()), "coarse": float(ce.detach()), "branches": float(branch.detach())}
        if "branches_all" in terms:
            if self.head.placed:
                raise EdgehalError("loss term branches_all", "needs branches that score every class",
                                   "model.branch_classes: all")
            every = torch.stack([nn.functional.cross_entropy(outputs[f"fine_b{k}"].float(), y)
                                 for k in range(len(self.groups))]).mean()
            total = total + self.branch_weight * every
            parts["branches_all"] = float(every.detach())
        return total, parts


@register_model("hdcnn")
def hdcnn(*, dataset: str = "mnist", case: str = "case1", class_names: Sequence[str] | None = None,
          input_shape: Sequence[int] | None = None, mean: Sequence[float] | None = None,
          std: Sequence[float] | None = None, preset: str | None = None, widths: Sequence[int] | None = None,
          blocks: Sequence[int] | None = None, strides: Sequence[int] | None = None, branch_stages: int = 1,
          combine: str = "weighted", branch_classes: str = "all", coarse_hidden: int = 64,
          branch_hidden: int = 0, dropout: float = 0.0, branch_weight: float = 1.0,
          coarse_stages: int = 0) -> HDCNN:
    """An HD-CNN with the superclasses of ``case`` (``case1``..``case4`` or a mapping file) as coarse classes.

    ``branch_stages`` of the preset's residual stages are copied into every
    fine branch (0: branches are linear heads on the shared trunk);
    ``coarse_stages`` (0..branch_stages) of them into the coarse component
    (0: an MLP with ``coarse_hidden`` units on the pooled trunk features).
    ``combine``: ``weighted`` (HD-CNN) or ``hard``. ``branch_classes``: ``all``
    (a branch scores every class, as in HD-CNN) or ``group`` (only its
    superclass's classes). ``preset`` defaults to ``dataset``. ``class_names``
    and ``input_shape`` default to what ``dataset`` declares.
    """
    preset_name = preset or dataset
    if preset_name not in PRESETS:
        raise EdgehalError(f"model preset {preset_name!r}", "is unknown", f"one of {sorted(PRESETS)}")
    if combine not in COMBINE_RULES:
        raise EdgehalError("model.combine", f"is {combine!r}", f"one of {COMBINE_RULES}")
    if branch_classes not in ("all", "group"):
        raise EdgehalError("model.branch_classes", f"is {branch_classes!r}", "all or group")
    p = PRESETS[preset_name]
    w, b, s = tuple(widths or p["widths"]), tuple(blocks or p["blocks"]), tuple(strides or p["strides"])
    if not (len(w) == len(b) == len(s)):
        raise EdgehalError("model backbone", f"widths {list(w)}, blocks {list(b)} and strides {list(s)} "
                           "differ in length", "one entry per stage in each")
    if not 0 <= branch_stages < len(w):
        raise EdgehalError("model.branch_stages", f"is {branch_stages}",
                           f"0..{len(w) - 1} (the trunk keeps at least one of the {len(w)} stages)")
    if not 0 <= coarse_stages <= branch_stages:
        raise EdgehalError("model.coarse_stages", f"is {coarse_stages}",
                           f"0..{branch_stages} (at most the branch_stages the trunk leaves to the head)")
    shape = input_shape_for(dataset=dataset, input_shape=input_shape)
    names = class_names_for(dataset=dataset, class_names=class_names)
    sc = get_case(dataset, case, num_classes=len(names), class_names=names)
    if sc.num_classes != len(names):
        raise EdgehalError(f"case {case!r}", f"maps {sc.num_classes} classes", f"{len(names)} classes of {dataset}")
    manifest = hdcnn_manifest(model="hdcnn", dataset=dataset, case=sc, class_names=names, input_shape=shape,
                              combine=combine, branch_classes=branch_classes)
    c = shape[0]
    return HDCNN(manifest=manifest, in_channels=c, widths=w, blocks=b, strides=s, branch_stages=branch_stages,
                 groups=sc.groups, num_classes=len(names), branch_classes=branch_classes, combine=combine,
                 coarse_hidden=coarse_hidden, branch_hidden=branch_hidden, mean=tuple(mean or [0.5] * c),
                 std=tuple(std or [0.5] * c), dropout=dropout, branch_weight=branch_weight,
                 coarse_stages=coarse_stages)


def hdcnn_manifest(*, model: str, dataset: str, case: SuperclassCase, class_names: Sequence[str],
                   input_shape: Sequence[int], combine: str, branch_classes: str) -> HeadManifest:
    """The heads of an HD-CNN: main ``fine``, aux ``coarse`` (the superclasses of ``case``) and
    one ``fine_b<k>`` per superclass, with the coarse-to-fine groups its evaluator reads."""
    names = tuple(class_names)
    own = branch_classes == "group"
    heads = [Head(name="fine", kind="main", level=0, class_names=names,
                  description=f"log p(y|x), fine branches combined ({combine})"),
             aux_head_from_case(case, name="coarse", feeds_main=True)]
    for k, group in enumerate(case.groups):
        cls = tuple(names[c] for c in group) if own else names
        # -1: the branch does not apply to samples of other superclasses (it is trained on its own only)
        pmap = tuple((group.index(c) if own else c) if c in group else -1 for c in range(len(names)))
        heads.append(Head(name=f"fine_b{k}", kind="aux", level=0, class_names=cls, parent_map=pmap,
                          feeds_main=True, case=case.name,
                          description=f"fine branch of superclass {case.superclass_names[k]} (logits); "
                                      "parent_map -1: not scored on other superclasses' samples"))
    return HeadManifest(model=model, input_name="input", input_shape=tuple(input_shape), heads=tuple(heads),
                        dataset=dataset, evaluator="hdcnn",
                        coarse_to_fine=CoarseToFine(case=case.name, groups=tuple(tuple(g) for g in case.groups),
                                                    branch_classes=branch_classes, combine=combine))
