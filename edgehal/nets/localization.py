"""Hierarchical Wi-Fi fingerprint localization (UJIIndoorLoc): building -> floor, and coordinates.

    raw RSSI (520, dBm, 100 = not detected)
      -> in-graph preprocessing (buffers fitted on training data)
      -> shared layers
      -> HierarchicalHead: building classifier (coarse) + one floor classifier per building
      -> HierarchicalHead: one coordinate regressor per building, routed by the same building logits
         (or one shared regressor), de-normalised in-graph to metres

At inference the floor head of the *predicted* building decides (``combine:
hard``, a gather, no Python control flow) and so does its coordinate
regressor; in training each sample trains its *true* building's floor head and
regressor (``routed_nll`` / ``route`` with the building label). Both
hierarchical heads are ``edgehal.nets.hierarchical.HierarchicalHead``, the
module HD-CNN uses too.

Outputs (manifest): main ``building_floor`` (log-probabilities over the
building-floor pairs: the decision is its argmax) and ``coordinates`` (metres
from ``coordinate_origin``); aux ``building`` (logits), ``floor_b<k>`` (floor
logits of building k's head) and ``coords_b<k>`` (building k's regressor).
The aux outputs all feed the main ones, so pruning them removes outputs, not
computation. The manifest, argument checks and loss are
:mod:`edgehal.nets.localization_heads`' (shared with
``recurrent_localization``); the RSSI transform and augmentation are
:mod:`edgehal.nets.rssi`'s; the evaluator is ``edgehal.scoring.localization``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from edgehal.errors import EdgehalError
from edgehal.manifest import HeadManifest
from edgehal.nets.base import EdgehalModel
from edgehal.nets.hierarchical import HierarchicalHead, route
from edgehal.nets.localization_heads import (check_localization_args, floor_branch_classes, localization_loss,
                                             localization_manifest)
from edgehal.nets.registry import register_model
from edgehal.nets.rssi import RssiAugmentation, RssiTransform


def mlp(cin: int, hidden: Sequence[int], cout: int | None, *, dropout: float, batchnorm: bool) -> nn.Sequential:
    """Linear [-BatchNorm] -ReLU [-Dropout] per ``hidden`` width, then a Linear to ``cout`` unless it is None."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers.append(nn.Linear(cin, width))
        if batchnorm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(nn.ReLU())
        if dropout:
            layers.append(nn.Dropout(dropout))
        cin = width
    if cout is not None:
        layers.append(nn.Linear(cin, cout))
    return nn.Sequential(*layers)


class FingerprintModel(EdgehalModel):
    """A model on raw RSSI fingerprints: in-graph RSSI transform, training-only augmentation, shared layers.

    Both localization architectures start this way. Subclasses call
    ``init_input`` and build their heads on the width it returns; ``rssi`` and
    ``shared`` are attributes of the model itself, so state_dict keys stay
    those of saved checkpoints.
    """

    def init_input(self, *, heard: Sequence[int], undetected_dbm: float, power: float, hidden: Sequence[int],
                   dropout: float, batchnorm: bool, input_dropout: float, rssi_shift_db: float,
                   rssi_noise_db: float) -> int:
        """Build the input side; returns the width of the shared features."""
        self.rssi = RssiTransform(undetected_dbm=undetected_dbm, heard=heard, power=power)
        self.augment = RssiAugmentation(undetected_dbm=undetected_dbm, shift_db=rssi_shift_db,
                                        noise_db=rssi_noise_db, dropout=input_dropout)
        self.shared = mlp(len(heard), hidden, None, dropout=dropout, batchnorm=batchnorm)
        return hidden[-1] if hidden else len(heard)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        pos = self.rssi.linear(x)
        if self.training:
            pos = self.augment(pos)
        return self.shared(self.rssi.curve(pos))


class HierLocalization(FingerprintModel):
    """Shared layers, building -> per-building floor heads, per-building (or shared) coordinate regressors."""

    def __init__(self, *, manifest: HeadManifest, building_floors: Sequence[Sequence[int]],
                 heard: Sequence[int], undetected_dbm: float, coord_mean: Sequence[float], coord_scale: float,
                 hidden: Sequence[int], branch_hidden: Sequence[int], coord_hidden: Sequence[int],
                 combine: str, coord_branches: str, dropout: float, input_dropout: float,
                 rssi_shift_db: float, rssi_noise_db: float, batchnorm: bool, power: float,
                 building_weight: float, floor_weight: float, coord_weight: float) -> None:
        super().__init__()
        self.manifest = manifest
        self.building_floors = [list(f) for f in building_floors]
        self.num_buildings = len(self.building_floors)
        d = self.init_input(heard=heard, undetected_dbm=undetected_dbm, power=power, hidden=hidden, dropout=dropout,
                            batchnorm=batchnorm, input_dropout=input_dropout, rssi_shift_db=rssi_shift_db,
                            rssi_noise_db=rssi_noise_db)
        branch_classes = floor_branch_classes(self.building_floors)
        self.floors = HierarchicalHead(
            coarse=nn.Linear(d, self.num_buildings),
            branches=[mlp(d, branch_hidden, len(f), dropout=dropout, batchnorm=batchnorm)
                      for f in self.building_floors],
            combine=combine, num_fine=sum(len(c) for c in branch_classes), branch_classes=branch_classes)
        self.per_building_coords = coord_branches == "per_building"
        if self.per_building_coords:
            self.coords = HierarchicalHead(
                coarse=None, task="regression", combine=combine, num_fine=2,
                branches=[mlp(d, coord_hidden, 2, dropout=dropout, batchnorm=batchnorm)
                          for _ in self.building_floors])
        else:
            self.coords_shared = mlp(d, coord_hidden, 2, dropout=dropout, batchnorm=batchnorm)
        self.register_buffer("coord_mean", torch.tensor([float(v) for v in coord_mean]).view(1, 2))
        self.register_buffer("coord_scale", torch.tensor(float(coord_scale)))
        self.weights = {"building": float(building_weight), "floor": float(floor_weight),
                        "coords": float(coord_weight)}

    def _metres(self, normalised: torch.Tensor) -> torch.Tensor:
        return normalised * self.coord_scale + self.coord_mean

    def forward_heads(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        fl = self.floors(features)
        out = {"building_floor": fl.combined, "building": fl.coarse}
        for k, logits in enumerate(fl.branches):
            out[f"floor_b{k}"] = logits
        if self.per_building_coords:
            co = self.coords(features, coarse_logits=fl.coarse)
            out["coordinates"] = self._metres(co.combined)
            for k, value in enumerate(co.branches):
                out[f"coords_b{k}"] = self._metres(value)
        else:
            out["coordinates"] = self._metres(self.coords_shared(features))
        return {h.name: out[h.name] for h in self.manifest.heads}

    def loss(self, outputs: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], *,
             aux_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
        """CE(building) + CE(true building's floor head) + mean 2D error (normalised units).

        ``aux_weight`` scales the building term (the auxiliary head's loss, as
        for every model); the floor and coordinate terms are what the main
        outputs are made of. Coordinates are trained through the true
        building's regressor.
        """
        scores = self.floors.scores([outputs[f"floor_b{k}"] for k in range(self.num_buildings)])
        if self.per_building_coords:
            stacked = torch.stack([outputs[f"coords_b{k}"] for k in range(self.num_buildings)], dim=1)
            pred = route(stacked, labels["building"])
        else:
            pred = outputs["coordinates"]
        return localization_loss(outputs["building"], scores, pred, labels, coord_scale=self.coord_scale,
                                 weights=self.weights, aux_weight=aux_weight)


@register_model("hier_localization")
def hier_localization(*, building_floors: Sequence[Sequence[int]], coord_mean: Sequence[float],
                      coord_scale: float, access_points_heard: Sequence[int] | None = None,
                      undetected_dbm: float = -110.0, coordinate_origin: Sequence[float] | None = None,
                      class_names: Sequence[str] | None = None, input_shape: Sequence[int] | None = None,
                      hidden: Sequence[int] = (512, 256), branch_hidden: Sequence[int] = (64,),
                      coord_hidden: Sequence[int] = (128,), combine: str = "hard",
                      coord_branches: str = "per_building", dropout: float = 0.2,
                      input_dropout: float = 0.0, rssi_shift_db: float = 0.0, rssi_noise_db: float = 0.0,
                      batchnorm: bool = True, power: float = 1.0,
                      building_weight: float = 1.0, floor_weight: float = 1.0,
                      coord_weight: float = 1.0) -> HierLocalization:
    """Hierarchical localization network for fingerprints of ``input_shape`` access points.

    The data set supplies ``building_floors`` (floors of each building),
    ``coord_mean``/``coord_scale`` (coordinate normalisation, in metres from
    ``coordinate_origin``), ``access_points_heard`` (defaults to all) and
    ``undetected_dbm``. ``combine`` is ``hard`` (the predicted building's heads
    decide) or ``weighted`` (mixtures weighted by building probabilities).
    ``coord_branches`` is ``per_building`` or ``shared``. Training-only
    augmentation: ``input_dropout`` (probability of dropping a detected access
    point), ``rssi_shift_db`` (std of a per-fingerprint gain offset),
    ``rssi_noise_db`` (std of per-reading noise).
    """
    if coord_branches not in ("per_building", "shared"):
        raise EdgehalError("model.coord_branches", f"is {coord_branches!r}", "per_building or shared")
    heard, _, names = check_localization_args(
        combine=combine, building_floors=building_floors, access_points_heard=access_points_heard,
        input_shape=input_shape, class_names=class_names, dropout=dropout, input_dropout=input_dropout,
        rssi_shift_db=rssi_shift_db, rssi_noise_db=rssi_noise_db)
    manifest = localization_manifest(
        model="hier_localization", building_floors=building_floors, class_names=names, num_inputs=len(heard),
        combine=combine, coordinate_origin=coordinate_origin, undetected_dbm=undetected_dbm,
        coords_per_building=coord_branches == "per_building")
    return HierLocalization(
        manifest=manifest, building_floors=building_floors, heard=heard, undetected_dbm=undetected_dbm,
        coord_mean=coord_mean, coord_scale=coord_scale, hidden=tuple(hidden), branch_hidden=tuple(branch_hidden),
        coord_hidden=tuple(coord_hidden), combine=combine, coord_branches=coord_branches, dropout=dropout,
        input_dropout=input_dropout, rssi_shift_db=rssi_shift_db, rssi_noise_db=rssi_noise_db,
        batchnorm=batchnorm, power=power, building_weight=building_weight, floor_weight=floor_weight,
        coord_weight=coord_weight)
