"""HAL classifiers (Cha, Kim, Lee, arXiv:1906.00852) on a pre-activation ResNet.

The auxiliary blocks sit between the last residual stage and the final fully
connected layer, on the pooled features; their wiring (HAL or training-only)
is :mod:`edgehal.nets.hal_head`'s. The baseline has no auxiliary block.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from edgehal.errors import EdgehalError
from edgehal.manifest import HeadManifest
from edgehal.nets.base import InputNormalization
from edgehal.nets.declared import input_shape_for
from edgehal.nets.hal_head import AuxSpec, HALClassifier, hal_heads
from edgehal.nets.registry import register_model

# The backbone that suits each data set's images (their shape is the data set's own declaration).
PRESETS: dict[str, dict[str, Any]] = {
    "mnist": {"widths": (16, 32, 64), "blocks": (2, 2, 2), "strides": (1, 2, 2)},
    "svhn": {"widths": (64, 128, 256), "blocks": (2, 2, 2), "strides": (1, 2, 2)},
    "cifar10": {"widths": (64, 128, 256), "blocks": (3, 3, 3), "strides": (1, 2, 2)},
    "digits": {"widths": (16, 32), "blocks": (1, 1), "strides": (1, 2)},
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


class HALResNet(HALClassifier):
    """Pre-activation ResNet with zero or more auxiliary superclass heads."""

    def __init__(self, *, manifest: HeadManifest, in_channels: int, widths: Sequence[int],
                 blocks: Sequence[int], strides: Sequence[int], aux_hidden: Sequence[int],
                 mean: Sequence[float], std: Sequence[float], dropout: float = 0.0) -> None:
        super().__init__()
        self.manifest = manifest
        self.normalize = InputNormalization(mean=mean, std=std, scale=1.0 / 255.0)
        self.backbone = PreActResNet(in_channels=in_channels, widths=widths, blocks=blocks, strides=strides)
        self.init_heads(features=self.backbone.num_features, aux_hidden=aux_hidden, dropout=dropout)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))


@register_model("hal_resnet")
def hal_resnet(*, dataset: str = "mnist", class_names: Sequence[str] | None = None,
               input_shape: Sequence[int] | None = None, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, preset: str | None = None,
               widths: Sequence[int] | None = None, blocks: Sequence[int] | None = None,
               strides: Sequence[int] | None = None, aux: Sequence[AuxSpec] | None = None,
               aux_hidden: int = 64, dropout: float = 0.0) -> HALResNet:
    """A HAL classifier; ``aux=[]`` is the baseline.

    ``aux`` lists auxiliary heads: a case name (``case1``..``case4`` or a mapping
    file) or ``{case, feeds_main (default true), hidden (default aux_hidden), name}``.
    ``preset`` defaults to ``dataset``; ``widths``/``blocks``/``strides`` override it.
    ``class_names`` and ``input_shape`` default to what ``dataset`` declares.
    ``mean``/``std`` default to 0.5 per channel (the trainer passes the data set's).
    """
    preset_name = preset or dataset
    if preset_name not in PRESETS:
        raise EdgehalError(f"model preset {preset_name!r}", "is unknown", f"one of {sorted(PRESETS)}")
    p = PRESETS[preset_name]
    shape = input_shape_for(dataset=dataset, input_shape=input_shape)
    heads, hidden = hal_heads(dataset=dataset, class_names=class_names, aux=aux, aux_hidden=aux_hidden)
    manifest = HeadManifest(model="hal_resnet", input_name="input", input_shape=shape,
                            heads=tuple(heads), dataset=dataset)
    c = shape[0]
    return HALResNet(manifest=manifest, in_channels=c, widths=tuple(widths or p["widths"]),
                     blocks=tuple(blocks or p["blocks"]), strides=tuple(strides or p["strides"]),
                     aux_hidden=hidden, mean=tuple(mean or [0.5] * c), std=tuple(std or [0.5] * c),
                     dropout=dropout)
