"""The one model API every architecture implements (timm's forward_features/forward_head).

``forward`` returns a dict of named outputs, one per head of the manifest, so
the exporter, the trainer and parity never guess output positions. Inputs are
*raw* values (image pixels 0..255, RSSI in dBm): normalisation lives inside
the graph (``InputNormalization``), so a deployed model takes what a sensor gives.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from edgehal.manifest import HeadManifest
from edgehal.targets import head_targets


class InputNormalization(nn.Module):
    """``(x * scale - mean) / std`` per channel, stored as buffers so it exports."""

    def __init__(self, *, mean: Sequence[float], std: Sequence[float], scale: float = 1.0,
                 channel_dim: int = 1, ndim: int = 4) -> None:
        super().__init__()
        shape = [1] * ndim
        shape[channel_dim] = len(mean)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(shape))
        self.register_buffer("inv_std", (1.0 / torch.tensor(std, dtype=torch.float32)).view(shape))
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale != 1.0:
            x = x * self.scale
        return (x - self.mean) * self.inv_std


class EdgehalModel(nn.Module):
    """Base class: subclasses set ``self.manifest`` and implement the two halves."""

    manifest: HeadManifest
    # Names of the terms ``loss`` can be restricted to (``terms=``), for staged training; empty: one loss.
    loss_terms: tuple[str, ...] = ()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_heads(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_heads(self.forward_features(x))

    def loss(self, outputs: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], *,
             aux_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
        """CE(main) + aux_weight * sum CE(aux) for classifiers; override for other tasks."""
        targets = head_targets(self.manifest, labels)
        total = outputs[self.manifest.main.name].new_zeros(())
        parts: dict[str, float] = {}
        for head in self.manifest.heads:
            ce = nn.functional.cross_entropy(outputs[head.name], targets[head.name])
            total = total + (ce if head.kind == "main" else aux_weight * ce)
            parts[head.name] = float(ce.detach())
        return total, parts


class ExportWrapper(nn.Module):
    """Returns a tuple of the named outputs, in ``names`` order, for torch.onnx.export."""

    def __init__(self, model: EdgehalModel, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = list(names)

    def forward(self, x: torch.Tensor):
        out = self.model(x)
        return tuple(out[n] for n in self.names)
