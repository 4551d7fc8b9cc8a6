"""HAL and HD-CNN heads on any torchvision classification network (``tv_hal``, ``tv_hdcnn``).

    raw pixels -> in-graph normalisation -> [channel repeat, 1 -> 3] -> torchvision network
               without its classifier (pooled features [N, F], see ``torchvision_backbones``)
               -> tv_hal:   HAL's auxiliary blocks and classifier (``HALClassifier.init_heads``)
               -> tv_hdcnn: HD-CNN's coarse head and fine branches (``HierarchicalHead``)

The heads sit where they sit on edgehal's own ResNets: on the pooled
features, before the final classifier. ``weights`` (a local state-dict file of
the torchvision network) only initialises the backbone; a checkpoint rebuilds
the model without it (``register_model(..., init_only=("weights",))``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch
from torch import nn

from edgehal.errors import EdgehalError
from edgehal.hierarchy import get_case
from edgehal.manifest import HeadManifest
from edgehal.nets.base import EdgehalModel, InputNormalization
from edgehal.nets.declared import class_names_for, input_shape_for
from edgehal.nets.hal_head import AuxSpec, HALClassifier, hal_heads
from edgehal.nets.hdcnn import HDCNN, hdcnn_manifest
from edgehal.nets.hierarchical import COMBINE_RULES, HierarchicalHead
from edgehal.nets.registry import register_model
from edgehal.nets.torchvision_backbones import (
    TorchvisionFeatures,
    backbone_features,
    check_input,
)


def torchvision_trunk(*, backbone: str, weights: str | None, input_shape: Sequence[int],
                      bn_momentum: float | None = None) -> TorchvisionFeatures:
    """torchvision network ``backbone`` as a feature extractor for inputs [C, H, W] = ``input_shape``,
    checked on a zero input of that shape.

    ``bn_momentum`` replaces the momentum of every batch-norm layer (None keeps the network's own).
    Some torchvision networks track their batch statistics slowly (MobileNetV3: 0.01, set for
    ImageNet schedules of hundreds of epochs); after a few hundred steps their running statistics are
    still near the initial ones and the model in eval mode (export, parity, serving) predicts little
    better than chance, while 0.1 (PyTorch's default) tracks them within a few dozen steps.
    """
    if len(input_shape) != 3:
        raise EdgehalError("model.input_shape", f"is {list(input_shape)}",
                           "[C, H, W] (an image; torchvision backbones are 2-D networks)")
    if bn_momentum is not None and not 0.0 < bn_momentum <= 1.0:
        raise EdgehalError("model.bn_momentum", f"is {bn_momentum}", "a momentum in (0, 1], e.g. 0.1")
    features, _ = backbone_features(backbone, weights=weights, in_channels=int(input_shape[0]))
    if bn_momentum is not None:
        for module in features.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = float(bn_momentum)
    check_input(features, backbone=backbone, input_shape=input_shape)
    return features


class TorchvisionHAL(HALClassifier):
    """A torchvision network's pooled features with zero or more auxiliary superclass heads."""

    def __init__(self, *, manifest: HeadManifest, backbone: TorchvisionFeatures, aux_hidden: Sequence[int],
                 mean: Sequence[float], std: Sequence[float], dropout: float = 0.0) -> None:
        super().__init__()
        self.manifest = manifest
        self.normalize = InputNormalization(mean=mean, std=std, scale=1.0 / 255.0)
        self.backbone = backbone
        self.init_heads(features=backbone.num_features, aux_hidden=aux_hidden, dropout=dropout)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))


@register_model("tv_hal", init_only=("weights",))
def tv_hal(*, backbone: str = "mobilenet_v3_small", weights: str | None = None, dataset: str = "mnist",
           class_names: Sequence[str] | None = None, input_shape: Sequence[int] | None = None,
           mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
           aux: Sequence[AuxSpec] | None = None, aux_hidden: int = 64, dropout: float = 0.0,
           bn_momentum: float | None = None) -> TorchvisionHAL:
    """A HAL classifier on torchvision network ``backbone`` (any name of
    ``torchvision_backbones.classification_backbones()`` whose classifier is a Linear layer).

    ``weights``: a local state-dict file of that network (initialisation only; nothing is
    downloaded). ``aux`` as for ``hal_resnet``: a case name or ``{case, feeds_main, hidden,
    name}`` per auxiliary head; ``aux=[]`` is the baseline. ``class_names`` and ``input_shape``
    default to what ``dataset`` declares; a 1-channel input is repeated to 3 channels in the graph.
    ``mean``/``std`` default to 0.5 per channel (the trainer passes the data set's).
    ``bn_momentum`` replaces the backbone's batch-norm momentum (see ``torchvision_trunk``; 0.1 for
    a short training of MobileNetV3).
    """
    shape = input_shape_for(dataset=dataset, input_shape=input_shape)
    heads, hidden = hal_heads(dataset=dataset, class_names=class_names, aux=aux, aux_hidden=aux_hidden)
    manifest = HeadManifest(model="tv_hal", input_name="input", input_shape=shape, heads=tuple(heads),
                            dataset=dataset, notes={"backbone": f"torchvision {backbone}"})
    c = shape[0]
    trunk = torchvision_trunk(backbone=backbone, weights=weights, input_shape=shape, bn_momentum=bn_momentum)
    return TorchvisionHAL(manifest=manifest, backbone=trunk, aux_hidden=hidden, mean=tuple(mean or [0.5] * c),
                          std=tuple(std or [0.5] * c), dropout=dropout)


def feature_mlp(cin: int, num_outputs: int, *, hidden: int, dropout: float) -> nn.Sequential:
    """Pooled features -> [Dropout] -> [Linear-ReLU] -> Linear: a coarse head or a fine branch."""
    layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout else []
    if hidden:
        layers += [nn.Linear(cin, hidden), nn.ReLU(), nn.Linear(hidden, num_outputs)]
    else:
        layers.append(nn.Linear(cin, num_outputs))
    return nn.Sequential(*layers)


class TorchvisionHDCNN(HDCNN):
    """A torchvision trunk + HD-CNN's hierarchical head, its outputs and its loss (those of ``HDCNN``).

    On edgehal's own ResNets a fine branch is a copy of the last residual stages; a torchvision
    network has no such cut shared by every family, so here the coarse head and each fine branch
    are small MLPs on the trunk's pooled features (HD-CNN's shared layers are the whole network).
    """

    def __init__(self, *, manifest: HeadManifest, backbone: TorchvisionFeatures, groups: Sequence[Sequence[int]],
                 num_classes: int, branch_classes: str, combine: str, coarse_hidden: int, branch_hidden: int,
                 mean: Sequence[float], std: Sequence[float], dropout: float, branch_weight: float) -> None:
        EdgehalModel.__init__(self)  # not HDCNN's: it builds a PreActResNet trunk and convolutional branches
        self.manifest = manifest
        self.normalize = InputNormalization(mean=mean, std=std, scale=1.0 / 255.0)
        self.trunk = backbone
        d = backbone.num_features
        self.groups = [list(g) for g in groups]
        own = branch_classes == "group"
        self.head = HierarchicalHead(
            coarse=feature_mlp(d, len(groups), hidden=coarse_hidden, dropout=dropout),
            branches=[feature_mlp(d, len(g) if own else num_classes, hidden=branch_hidden, dropout=dropout)
                      for g in groups],
            combine=combine, num_fine=num_classes, branch_classes=self.groups if own else None)
        self.register_buffer("coarse_of", torch.tensor(
            [next(k for k, g in enumerate(groups) if c in g) for c in range(num_classes)]))
        self.branch_weight = float(branch_weight)


@register_model("tv_hdcnn", init_only=("weights",))
def tv_hdcnn(*, backbone: str = "mobilenet_v3_small", weights: str | None = None, dataset: str = "mnist",
             case: str = "case1", class_names: Sequence[str] | None = None, input_shape: Sequence[int] | None = None,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None, combine: str = "weighted",
             branch_classes: str = "all", coarse_hidden: int = 64, branch_hidden: int = 64, dropout: float = 0.0,
             branch_weight: float = 1.0, bn_momentum: float | None = None) -> TorchvisionHDCNN:
    """An HD-CNN on torchvision network ``backbone`` with the superclasses of ``case`` as coarse classes.

    The coarse head and the fine branches are MLPs (``coarse_hidden``/``branch_hidden`` wide,
    0: linear) on the pooled features. ``combine``: ``weighted`` (HD-CNN) or ``hard``;
    ``branch_classes``: ``all`` or ``group``, as for ``hdcnn``. ``weights``, ``class_names``,
    ``input_shape``, ``mean``, ``std`` and ``bn_momentum`` as for ``tv_hal``.
    """
    if combine not in COMBINE_RULES:
        raise EdgehalError("model.combine", f"is {combine!r}", f"one of {COMBINE_RULES}")
    if branch_classes not in ("all", "group"):
        raise EdgehalError("model.branch_classes", f"is {branch_classes!r}", "all or group")
    shape = input_shape_for(dataset=dataset, input_shape=input_shape)
    names = class_names_for(dataset=dataset, class_names=class_names)
    sc = get_case(dataset, case, num_classes=len(names), class_names=names)
    if sc.num_classes != len(names):
        raise EdgehalError(f"case {case!r}", f"maps {sc.num_classes} classes", f"{len(names)} classes of {dataset}")
    manifest = replace(hdcnn_manifest(model="tv_hdcnn", dataset=dataset, case=sc, class_names=names,
                                      input_shape=shape, combine=combine, branch_classes=branch_classes),
                       notes={"backbone": f"torchvision {backbone}"})
    c = shape[0]
    trunk = torchvision_trunk(backbone=backbone, weights=weights, input_shape=shape, bn_momentum=bn_momentum)
    return TorchvisionHDCNN(manifest=manifest, backbone=trunk, groups=sc.groups, num_classes=len(names),
                            branch_classes=branch_classes, combine=combine, coarse_hidden=coarse_hidden,
                            branch_hidden=branch_hidden, mean=tuple(mean or [0.5] * c), std=tuple(std or [0.5] * c),
                            dropout=dropout, branch_weight=branch_weight)
