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
computation. The evaluator is ``edgehal.scoring.localization``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from edgehal.errors import EdgehalError
from edgehal.manifest import BuildingFloors, Head, HeadManifest
from edgehal.nets.base import EdgehalModel
from edgehal.nets.hierarchical import COMBINE_RULES, HierarchicalHead, route, routed_nll
from edgehal.nets.registry import register_model

FLOOR_PENALTY_M = 4.0      # IPIN competitions: per floor missed
BUILDING_PENALTY_M = 50.0  # IPIN competitions: wrong building
NOT_DETECTED_THRESHOLD = 0.0  # RSSI is <= 0 dBm; anything above (100 in the files) is "not detected"


class RssiTransform(nn.Module):
    """Raw RSSI -> [0, 1]: not detected (and never-heard access points) -> 0, ``floor`` dBm -> 0, 0 dBm -> 1.

    The "positive" representation of Torres-Sospedra et al. (2015), optionally
    raised to ``power`` (their "powed" representation, which weakens noisy
    low readings). Buffers, so it exports and a deployed model takes raw values.
    """

    def __init__(self, *, undetected_dbm: float, heard: Sequence[int], power: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("floor_dbm", torch.tensor(float(undetected_dbm)))
        self.register_buffer("heard", torch.tensor([float(bool(h)) for h in heard]).view(1, -1))
        self.power = float(power)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """dBm -> [0, 1], linear in dB (the positive representation)."""
        detected = (x <= NOT_DETECTED_THRESHOLD).to(x.dtype) * self.heard
        return torch.clamp((x - self.floor_dbm) / -self.floor_dbm, 0.0, 1.0) * detected

    def curve(self, pos: torch.Tensor) -> torch.Tensor:
        return pos.pow(self.power) if self.power != 1.0 else pos

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.curve(self.linear(x))


def mlp(cin: int, hidden: Sequence[int], cout: int | None, *, dropout: float, batchnorm: bool) -> nn.Sequential:
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


class HierLocalization(EdgehalModel):
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
        self.rssi = RssiTransform(undetected_dbm=undetected_dbm, heard=heard, power=power)
        self.input_dropout = float(input_dropout)
        self.rssi_shift_db = float(rssi_shift_db)
        self.rssi_noise_db = float(rssi_noise_db)
        self.shared = mlp(len(heard), hidden, None, dropout=dropout, batchnorm=batchnorm)
        d = hidden[-1] if hidden else len(heard)
        pairs = [(b, f) for b, floors in enumerate(self.building_floors) for f in floors]
        branch_classes, start = [], 0
        for floors in self.building_floors:
            branch_classes.append(list(range(start, start + len(floors))))
            start += len(floors)
        self.floors = HierarchicalHead(
            coarse=nn.Linear(d, self.num_buildings),
            branches=[mlp(d, branch_hidden, len(f), dropout=dropout, batchnorm=batchnorm)
                      for f in self.building_floors],
            combine=combine, num_fine=len(pairs), branch_classes=branch_classes)
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

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        pos = self.rssi.linear(x)
        if self.training:
            pos = self._augment(pos)
        return self.shared(self.rssi.curve(pos))

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        """Training only: what another phone, person or day does to a fingerprint.

        A per-fingerprint gain offset (phones differ by several dB), per-reading
        noise, and missed detections. Readings pushed below the floor become
        "not detected", as they would on a less sensitive phone.
        """
        detected = (x > 0).to(x.dtype)
        per_db = 1.0 / float(-self.rssi.floor_dbm)
        if self.rssi_shift_db:
            x = x + torch.randn(x.shape[0], 1, device=x.device, dtype=x.dtype) * (self.rssi_shift_db * per_db)
        if self.rssi_noise_db:
            x = x + torch.randn_like(x) * (self.rssi_noise_db * per_db)
        if self.input_dropout:
            detected = detected * (torch.rand_like(x) >= self.input_dropout).to(x.dtype)
        return torch.clamp(x, 0.0, 1.0) * detected

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


def localization_loss(building_logits: torch.Tensor, floor_scores: torch.Tensor, xy: torch.Tensor,
                      labels: Mapping[str, torch.Tensor], *, coord_scale: float, weights: Mapping[str, float],
                      aux_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The hierarchical localization loss both localization models train with.

    CE(building) scaled by ``aux_weight`` (the auxiliary head's loss, as for
    every model) + NLL of the floor among the *true* building's floors
    (``routed_nll`` of the combined floor scores) + mean Euclidean error of
    ``xy`` (metres) in units of ``coord_scale``; each term times its entry in
    ``weights`` (``building``, ``floor``, ``coords``). Returns the total and the
    three terms as floats for the progress bar.
    """
    building = labels["building"]
    ce_b = nn.functional.cross_entropy(building_logits, building)
    ce_f = routed_nll(floor_scores, building, labels["label"])
    diff = (xy - labels["coords"].to(xy.dtype)) / coord_scale
    dist = torch.sqrt((diff * diff).sum(dim=1) + 1e-8).mean()
    total = aux_weight * weights["building"] * ce_b + weights["floor"] * ce_f + weights["coords"] * dist
    return total, {"building": float(ce_b.detach()), "floor": float(ce_f.detach()), "coords": float(dist.detach())}


def check_localization_args(*, combine: str, building_floors: Sequence[Sequence[int]],
                            access_points_heard: Sequence[int] | None, input_shape: Sequence[int] | None,
                            class_names: Sequence[str] | None, dropout: float, input_dropout: float,
                            rssi_shift_db: float, rssi_noise_db: float
                            ) -> tuple[list[int], list[tuple[int, int]], tuple[str, ...]]:
    """The checks both localization builders share; returns (access points heard, (building, floor)
    pairs, building-floor class names)."""
    if combine not in COMBINE_RULES:
        raise EdgehalError("model.combine", f"is {combine!r}", f"one of {COMBINE_RULES}")
    if not building_floors or any(not f for f in building_floors):
        raise EdgehalError("model.building_floors", f"is {building_floors!r}",
                           "a non-empty list of floors for every building")
    n_in = int(input_shape[0]) if input_shape else (len(access_points_heard) if access_points_heard else 520)
    heard = list(access_points_heard) if access_points_heard is not None else [1] * n_in
    if len(heard) != n_in:
        raise EdgehalError("model.access_points_heard", f"has {len(heard)} entries", f"{n_in}, one per input")
    for name, value in (("dropout", dropout), ("input_dropout", input_dropout)):
        if not 0.0 <= value < 1.0:
            raise EdgehalError(f"model.{name}", f"is {value}", "a probability in [0, 1)")
    for name, value in (("rssi_shift_db", rssi_shift_db), ("rssi_noise_db", rssi_noise_db)):
        if value < 0:
            raise EdgehalError(f"model.{name}", f"is {value}", "a standard deviation in dB, >= 0")
    pairs = [(b, int(f)) for b, floors in enumerate(building_floors) for f in floors]
    names = tuple(class_names) if class_names else tuple(f"B{b}F{f}" for b, f in pairs)
    if len(names) != len(pairs):
        raise EdgehalError("model.class_names", f"has {len(names)} names",
                           f"{len(pairs)}, one per building-floor pair")
    return heard, pairs, names


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
    heard, pairs, names = check_localization_args(
        combine=combine, building_floors=building_floors, access_points_heard=access_points_heard,
        input_shape=input_shape, class_names=class_names, dropout=dropout, input_dropout=input_dropout,
        rssi_shift_db=rssi_shift_db, rssi_noise_db=rssi_noise_db)
    heads = [
        Head(name="building_floor", kind="main", level=0, class_names=names,
             description="building-floor decision: log-probabilities; the predicted building's floor "
                         "head decides" if combine == "hard" else
                         "building-floor log-probabilities, floor heads weighted by building probability"),
        Head(name="coordinates", kind="main", level=0, task="regression", class_names=("x", "y"), units="m",
             description="position in metres east (x) and north (y) of coordinate_origin (EPSG:3857)"),
        Head(name="building", kind="aux", level=1, class_names=tuple(f"B{b}" for b in range(len(building_floors))),
             parent_map=tuple(b for b, _ in pairs), feeds_main=True, description="building logits"),
    ]
    for k, floors in enumerate(building_floors):
        heads.append(Head(
            name=f"floor_b{k}", kind="aux", level=0, class_names=tuple(f"B{k}F{f}" for f in floors),
            parent_map=tuple(floors.index(f) if b == k else -1 for b, f in pairs), feeds_main=True,
            description=f"floor logits of building {k}'s head (parent_map -1: pair not in building {k})"))
    if coord_branches == "per_building":
        for k in range(len(building_floors)):
            heads.append(Head(name=f"coords_b{k}", kind="aux", level=0, task="regression", class_names=("x", "y"),
                              units="m", feeds_main=True, description=f"building {k}'s coordinate regressor"))
    manifest = HeadManifest(model="hier_localization", input_name="rssi", input_shape=(len(heard),),
                            heads=tuple(heads), evaluator="localization", dataset="ujiindoorloc",
                            building_floors=building_floors_of(pairs, combine=combine,
                                                               coordinate_origin=coordinate_origin,
                                                               undetected_dbm=undetected_dbm))
    return HierLocalization(
        manifest=manifest, building_floors=building_floors, heard=heard, undetected_dbm=undetected_dbm,
        coord_mean=coord_mean, coord_scale=coord_scale, hidden=tuple(hidden), branch_hidden=tuple(branch_hidden),
        coord_hidden=tuple(coord_hidden), combine=combine, coord_branches=coord_branches, dropout=dropout,
        input_dropout=input_dropout, rssi_shift_db=rssi_shift_db, rssi_noise_db=rssi_noise_db,
        batchnorm=batchnorm, power=power, building_weight=building_weight, floor_weight=floor_weight,
        coord_weight=coord_weight)


def building_floors_of(pairs: Sequence[Sequence[int]], *, combine: str,
                       coordinate_origin: Sequence[float] | None, undetected_dbm: float) -> BuildingFloors:
    """The manifest's localization facts, for every localization architecture."""
    return BuildingFloors(pairs=tuple((int(b), int(f)) for b, f in pairs), combine=combine,
                          coordinate_origin=tuple(float(v) for v in coordinate_origin)
                          if coordinate_origin is not None else None,
                          undetected_dbm=float(undetected_dbm), penalty_per_floor_m=FLOOR_PENALTY_M,
                          penalty_wrong_building_m=BUILDING_PENALTY_M)
