"""The heads every hierarchical localization architecture has: their manifest, argument checks and loss.

``hier_localization`` and ``recurrent_localization`` compute building, floor
and coordinates differently but publish the same heads with the same
meanings (main ``building_floor`` and ``coordinates``; aux ``building``,
``floor_b<k>`` and, with per-building regressors, ``coords_b<k>``), so one
evaluator, exporter and server handle both. This module builds that manifest
once, checks the arguments both builders take, and holds the loss both train
with.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from edgehal.errors import EdgehalError
from edgehal.manifest import BuildingFloors, Head, HeadManifest
from edgehal.nets.hierarchical import COMBINE_RULES, routed_nll

FLOOR_PENALTY_M = 4.0      # IPIN competitions: per floor missed
BUILDING_PENALTY_M = 50.0  # IPIN competitions: wrong building


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


def floor_branch_classes(building_floors: Sequence[Sequence[int]]) -> list[list[int]]:
    """Building k's classes of the ``building_floor`` head: the indices of its pairs, which are consecutive."""
    out, start = [], 0
    for floors in building_floors:
        out.append(list(range(start, start + len(floors))))
        start += len(floors)
    return out


def building_floors_of(pairs: Sequence[Sequence[int]], *, combine: str,
                       coordinate_origin: Sequence[float] | None, undetected_dbm: float) -> BuildingFloors:
    """The manifest's localization facts, for every localization architecture."""
    return BuildingFloors(pairs=tuple((int(b), int(f)) for b, f in pairs), combine=combine,
                          coordinate_origin=tuple(float(v) for v in coordinate_origin)
                          if coordinate_origin is not None else None,
                          undetected_dbm=float(undetected_dbm), penalty_per_floor_m=FLOOR_PENALTY_M,
                          penalty_wrong_building_m=BUILDING_PENALTY_M)


def _default_descriptions(combine: str) -> dict[str, str]:
    return {
        "building_floor": "building-floor decision: log-probabilities; the predicted building's floor head decides"
                          if combine == "hard" else
                          "building-floor log-probabilities, floor heads weighted by building probability",
        "coordinates": "position in metres east (x) and north (y) of coordinate_origin (EPSG:3857)",
        "building": "building logits",
        "floor_b": "floor logits of building {k}'s head (parent_map -1: pair not in building {k})",
        "coords_b": "building {k}'s coordinate regressor",
    }


def localization_manifest(*, model: str, building_floors: Sequence[Sequence[int]], class_names: Sequence[str],
                          num_inputs: int, combine: str, coordinate_origin: Sequence[float] | None,
                          undetected_dbm: float, coords_per_building: bool,
                          descriptions: Mapping[str, str] | None = None,
                          notes: Mapping[str, Any] | None = None) -> HeadManifest:
    """The manifest of a hierarchical localization model of ``model``'s name.

    ``class_names`` name the building-floor pairs in order (building 0's
    floors first). ``coords_per_building`` adds a ``coords_b<k>`` head per
    building. ``descriptions`` replaces the default text of a head by its name
    (``floor_b`` and ``coords_b`` for the per-building heads, with ``{k}`` for
    the building): what the model computes, for people reading the manifest.
    """
    text = {**_default_descriptions(combine), **(descriptions or {})}
    floors_of = [[int(f) for f in floors] for floors in building_floors]
    pairs = [(b, f) for b, floors in enumerate(floors_of) for f in floors]
    heads = [
        Head(name="building_floor", kind="main", level=0, class_names=tuple(class_names),
             description=text["building_floor"]),
        Head(name="coordinates", kind="main", level=0, task="regression", class_names=("x", "y"), units="m",
             description=text["coordinates"]),
        Head(name="building", kind="aux", level=1, class_names=tuple(f"B{b}" for b in range(len(floors_of))),
             parent_map=tuple(b for b, _ in pairs), feeds_main=True, description=text["building"]),
    ]
    for k, floors in enumerate(floors_of):
        heads.append(Head(
            name=f"floor_b{k}", kind="aux", level=0, class_names=tuple(f"B{k}F{f}" for f in floors),
            parent_map=tuple(floors.index(f) if b == k else -1 for b, f in pairs), feeds_main=True,
            description=text["floor_b"].format(k=k)))
    if coords_per_building:
        for k in range(len(floors_of)):
            heads.append(Head(name=f"coords_b{k}", kind="aux", level=0, task="regression", class_names=("x", "y"),
                              units="m", feeds_main=True, description=text["coords_b"].format(k=k)))
    return HeadManifest(model=model, input_name="rssi", input_shape=(int(num_inputs),), heads=tuple(heads),
                        evaluator="localization", dataset="ujiindoorloc",
                        building_floors=building_floors_of(pairs, combine=combine,
                                                           coordinate_origin=coordinate_origin,
                                                           undetected_dbm=undetected_dbm),
                        notes=dict(notes or {}))


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
