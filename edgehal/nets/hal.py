"""HAL classifiers (Cha, Kim, Lee, arXiv:1906.00852) on a pre-activation ResNet.

The auxiliary block sits between the last residual stage and the final fully
connected layer. It predicts superclass scores from the pooled features; when
it *feeds* the classifier (HAL) those scores are concatenated with the pooled
features as the classifier's input. A *training-only* auxiliary branch (deep
supervision) sees the same features but does not feed the classifier, so
pruning it at export removes its nodes. The baseline has no auxiliary block.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from edgehal.errors import EdgehalError
from edgehal.hierarchy import Head, HeadManifest, aux_head_from_case, get_case
from edgehal.nets.base import EdgehalModel, InputNormalization
from edgehal.nets.registry import register_model

# Input presets: shape, and the backbone that suits it.
PRESETS: dict[str, dict[str, Any]] = {
    "mnist": {"input_shape": (1, 28, 28), "widths": (16, 32, 64), "blocks": (2, 2, 2), "strides": (1, 2, 2)},
    "svhn": {"input_shape": (3, 32, 32), "widths": (64, 128, 256), "blocks": (2, 2, 2), "strides": (1, 2, 2)},
    "cifar10": {"input_shape": (3, 32, 32), "widths": (64, 128, 256), "blocks": (3, 3, 3), "strides": (1, 2, 2)},
    "digits": {"input_shape": (1, 8, 8), "widths": (16, 32), "blocks": (1, 1), "strides": (1, 2)},
}


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with an identity (or 1x1 conv) shortcut (He et al. 2016)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                         if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        short = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + short


def residual_stages(cin: int, *, widths: Sequence[int], blocks: Sequence[int],
                    strides: Sequence[int]) -> tuple[nn.Sequential, int]:
    """``blocks[k]`` pre-activation blocks of ``widths[k]`` channels per stage; returns them and the output width."""
    layers: list[nn.Module] = []
    for width, n, stride in zip(widths, blocks, strides):
        for i in range(n):
            layers.append(PreActBlock(cin, width, stride if i == 0 else 1))
            cin = width
    return nn.Sequential(*layers), cin


class PreActResNet(nn.Module):
    """Stem, residual stages, final BN-ReLU, global average pool -> feature vector."""

    def __init__(self, *, in_channels: int, widths: Sequence[int], blocks: Sequence[int],
                 strides: Sequence[int]) -> None:
        super().__init__()
        if not (len(widths) == len(blocks) == len(strides)) or not widths:
            raise EdgehalError("model backbone", f"widths {list(widths)}, blocks {list(blocks)} and "
                               f"strides {list(strides)} differ in length", "one entry per stage in each")
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.stages, cin = residual_stages(widths[0], widths=widths, blocks=blocks, strides=strides)
        self.bn = nn.BatchNorm2d(cin)
        self.num_features = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return torch.relu(self.bn(x)).mean(dim=(2, 3))


class AuxBlock(nn.Module):
    """Pooled features -> hidden -> superclass scores."""

    def __init__(self, cin: int, hidden: int, num_superclasses: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(cin, hidden), nn.ReLU(inplace=False),
                                 nn.Linear(hidden, num_superclasses))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class HALResNet(EdgehalModel):
    """Pre-activation ResNet with zero or more auxiliary superclass heads."""

    def __init__(self, *, manifest: HeadManifest, in_channels: int, widths: Sequence[int],
                 blocks: Sequence[int], strides: Sequence[int], aux_hidden: Sequence[int],
                 mean: Sequence[float], std: Sequence[float], dropout: float = 0.0) -> None:
        super().__init__()
        self.manifest = manifest
        self.normalize = InputNormalization(mean=mean, std=std, scale=1.0 / 255.0)
        self.backbone = PreActResNet(in_channels=in_channels, widths=widths, blocks=blocks, strides=strides)
        d = self.backbone.num_features
        self.aux_names = [h.name for h in manifest.aux_heads]
        self.aux_blocks = nn.ModuleDict({
            h.name: AuxBlock(d, hidden, h.num_outputs) for h, hidden in zip(manifest.aux_heads, aux_hidden)})
        self.feeding = [h.name for h in manifest.aux_heads if h.feeds_main]
        fed = sum(manifest.head(n).num_outputs for n in self.feeding)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.classifier = nn.Linear(d + fed, manifest.main.num_outputs)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))

    def forward_heads(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {name: block(features) for name, block in self.aux_blocks.items()}
        head_in = torch.cat([features] + [out[n] for n in self.feeding], dim=1) if self.feeding else features
        return {self.manifest.main.name: self.classifier(self.dropout(head_in)), **out}


def _aux_specs(aux: Sequence[Mapping[str, Any] | str] | None) -> list[dict[str, Any]]:
    specs = []
    for i, a in enumerate(aux or ()):
        spec = {"case": a} if isinstance(a, str) else dict(a)
        unknown = set(spec) - {"case", "feeds_main", "hidden", "name"}
        if unknown or "case" not in spec:
            raise EdgehalError(f"model.aux[{i}]", f"has keys {sorted(spec)}",
                               "keys: case (required), feeds_main, hidden, name")
        specs.append(spec)
    return specs


def hal_heads(*, dataset: str, class_names: Sequence[str] | None, aux: Sequence[Mapping[str, Any] | str] | None,
              aux_hidden: int) -> tuple[list[Head], list[int]]:
    """The heads of a HAL classifier (main ``logits`` plus one per auxiliary case) and each aux block's width."""
    names = tuple(class_names or (str(i) for i in range(10)))
    heads = [Head(name="logits", kind="main", level=0, class_names=names, description="class scores (logits)")]
    hidden = []
    for spec in _aux_specs(aux):
        case = get_case(dataset, spec["case"])
        if case.num_classes != len(names):
            raise EdgehalError(f"case {spec['case']!r}", f"maps {case.num_classes} classes",
                               f"{len(names)} classes of {dataset}")
        heads.append(aux_head_from_case(case, name=spec.get("name"),
                                        feeds_main=bool(spec.get("feeds_main", True))))
        hidden.append(int(spec.get("hidden", aux_hidden)))
    return heads, hidden


@register_model("hal_resnet")
def hal_resnet(*, dataset: str = "mnist", class_names: Sequence[str] | None = None,
               input_shape: Sequence[int] | None = None, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, preset: str | None = None,
               widths: Sequence[int] | None = None, blocks: Sequence[int] | None = None,
               strides: Sequence[int] | None = None, aux: Sequence[Mapping[str, Any] | str] | None = None,
               aux_hidden: int = 64, dropout: float = 0.0) -> HALResNet:
    """A HAL classifier; ``aux=[]`` is the baseline.

    ``aux`` lists auxiliary heads: a case name (``case1``..``case4`` or a mapping
    file) or ``{case, feeds_main (default true), hidden (default aux_hidden), name}``.
    ``preset`` defaults to ``dataset``; ``widths``/``blocks``/``strides`` override it.
    ``mean``/``std`` default to 0.5 per channel (the trainer passes the data set's).
    """
    preset_name = preset or dataset
    if preset_name not in PRESETS:
        raise EdgehalError(f"model preset {preset_name!r}", "is unknown", f"one of {sorted(PRESETS)}")
    p = PRESETS[preset_name]
    shape = tuple(input_shape or p["input_shape"])
    heads, hidden = hal_heads(dataset=dataset, class_names=class_names, aux=aux, aux_hidden=aux_hidden)
    manifest = HeadManifest(model="hal_resnet", input_name="input", input_shape=shape,
                            heads=tuple(heads), dataset=dataset)
    c = shape[0]
    return HALResNet(manifest=manifest, in_channels=c, widths=tuple(widths or p["widths"]),
                     blocks=tuple(blocks or p["blocks"]), strides=tuple(strides or p["strides"]),
                     aux_hidden=hidden, mean=tuple(mean or [0.5] * c), std=tuple(std or [0.5] * c),
                     dropout=dropout)
