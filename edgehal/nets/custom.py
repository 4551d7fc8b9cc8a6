"""HAL heads on a user's own backbone: any ``nn.Module`` that turns an input into features.

``attach_hal_heads`` wraps the backbone as an :class:`EdgehalModel`:

    raw input -> (x * scale - mean) / std in the graph -> backbone -> features [N, F]
              (or [N, F, h, w], average-pooled) -> HAL's auxiliary blocks and classifier

The heads are :class:`edgehal.nets.hal_head.HALClassifier`'s, as on every
edgehal classifier: one auxiliary block per entry of ``superclasses``, whose
scores feed the main classifier (HAL) or not (training-only, pruned at
export). Superclasses are given by class *name*, so a user never numbers
their classes by hand.
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Mapping, Sequence

import torch
from torch import nn

from edgehal.errors import EdgehalError
from edgehal.manifest import HeadManifest
from edgehal.nets.base import InputNormalization
from edgehal.nets.hal_head import HALClassifier

_NO_SUPERCLASSES: Mapping[str, Mapping[str, Sequence[str]]] = MappingProxyType({})


class CustomHAL(HALClassifier):
    """A user's backbone with HAL's heads on its (pooled) features."""

    def __init__(self, *, manifest: HeadManifest, backbone: nn.Module, num_features: int, pool: bool,
                 aux_hidden: int, mean: Sequence[float], std: Sequence[float], scale: float) -> None:
        super().__init__()
        self.manifest = manifest
        self.normalize = InputNormalization(mean=mean, std=std, scale=scale, ndim=len(manifest.input_shape) + 1)
        self.backbone = backbone
        self.pool = pool
        self.init_heads(features=num_features, aux_hidden=[aux_hidden] * len(manifest.aux_heads), dropout=0.0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(self.normalize(x))
        return features.mean(dim=(2, 3)) if self.pool else features


def attach_hal_heads(backbone: nn.Module, *, input_shape: Sequence[int], class_names: Sequence[str],
                     superclasses: Mapping[str, Mapping[str, Sequence[str]]] = _NO_SUPERCLASSES,
                     feeds_main: bool = True, aux_hidden: int = 64, mean: Sequence[float] | None = None,
                     std: Sequence[float] | None = None, scale: float = 1 / 255,
                     model: str = "custom_hal") -> CustomHAL:
    """``backbone`` (input [N, *input_shape] -> features [N, F] or [N, F, h, w]) with HAL's heads.

    The main head ``logits`` scores ``class_names``; ``superclasses`` maps each auxiliary
    head's name to ``{superclass name: [class names]}``, every class in exactly one
    superclass. ``feeds_main``: the auxiliary scores are inputs of the classifier (HAL), or
    training-only (deep supervision; pruned at export). The model takes raw values: it
    computes ``(x * scale - mean) / std`` itself, ``mean``/``std`` per channel (axis 1; one
    value for all; default 0 and 1). ``model`` is the name its manifest records.
    The feature width is found by running two zero inputs through ``backbone``.
    """
    shape = _check_input_shape(input_shape)
    if aux_hidden < 1:
        raise EdgehalError("aux_hidden", f"is {aux_hidden}", "a positive width of the auxiliary blocks")
    # the heads are declared as HeadManifest.classifier declares any classifier's: superclasses by class name
    manifest = replace(HeadManifest.classifier(class_names=class_names, superclasses=superclasses, input_shape=shape,
                                               model=model, feeds_main=feeds_main),
                       notes={"backbone": type(backbone).__name__})
    num_features, pool = probe_features(backbone, input_shape=shape)
    channels = shape[0]
    mean_t = _per_channel(mean, 0.0, channels=channels, what="mean")
    std_t = _per_channel(std, 1.0, channels=channels, what="std")
    if len(mean_t) != len(std_t):  # one value for all channels next to one per channel
        mean_t, std_t = (v * channels if len(v) == 1 else v for v in (mean_t, std_t))
    if any(s == 0 for s in std_t):
        raise EdgehalError("std", f"is {list(std_t)}", "non-zero values")
    return CustomHAL(manifest=manifest, backbone=backbone, num_features=num_features, pool=pool,
                     aux_hidden=aux_hidden, mean=mean_t, std=std_t, scale=scale)


def probe_features(backbone: nn.Module, *, input_shape: Sequence[int]) -> tuple[int, bool]:
    """Feature width F of ``backbone`` on two zero inputs of ``input_shape`` (eval mode, no gradient),
    and whether its features are a map [N, F, h, w] to pool."""
    shape = [2, *input_shape]
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            out = backbone(torch.zeros(shape))
    except Exception as exc:  # the user's module: any failure means it does not take this input
        detail = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"
        raise EdgehalError("backbone", f"fails on a zero input of shape {shape} ({detail})",
                           "input_shape is one sample's shape, without the batch axis, as the backbone "
                           "takes it") from exc
    finally:
        backbone.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise EdgehalError("backbone", f"returns a {type(out).__name__} for an input of shape {shape}",
                           "one tensor of features [N, F] or [N, F, h, w]")
    if out.ndim not in (2, 4) or out.shape[0] != 2 or out.shape[1] < 1:
        raise EdgehalError("backbone", f"returns features of shape {list(out.shape)} for an input of shape {shape}",
                           "features [N, F] or [N, F, h, w] (N = 2 here)")
    return int(out.shape[1]), out.ndim == 4


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if not shape or any(v < 1 for v in shape):
        raise EdgehalError("input_shape", f"is {input_shape!r}",
                           "one sample's shape without the batch axis, e.g. [3, 32, 32]")
    return shape


def _per_channel(values: Sequence[float] | None, default: float, *, channels: int, what: str) -> tuple[float, ...]:
    if values is None:
        return (default,)
    out = tuple(float(v) for v in values)
    if len(out) not in (1, channels):
        raise EdgehalError(what, f"has {len(out)} values", f"1, or {channels} (one per channel of axis 1)")
    return out
