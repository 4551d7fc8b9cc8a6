"""The localization evaluator: building and floor hit rates, 2D errors in metres, the IPIN penalised error.

Everything it needs is in the manifest's ``building_floors`` (which
building-floor pair each class of ``building_floor`` is, and the IPIN
penalties), so PyTorch, onnxruntime and TensorRT outputs, kept or pruned,
get the same numbers.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from edgehal.errors import EdgehalError
from edgehal.manifest import HeadManifest
from edgehal.scoring.classification import error_entry
from edgehal.scoring.evaluators import register_evaluator


def _pairs(manifest: HeadManifest) -> np.ndarray:
    if manifest.building_floors is None:
        raise EdgehalError(f"manifest of {manifest.model}", "has no building_floors",
                           "a manifest written by a localization model")
    return np.asarray(manifest.building_floors.pairs, dtype=np.int64)


def _truth(manifest: HeadManifest, labels: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pairs = _pairs(manifest)
    if "building" in labels and "floor" in labels:
        building, floor = np.asarray(labels["building"]), np.asarray(labels["floor"])
    elif "label" in labels:
        lab = np.asarray(labels["label"])
        building, floor = pairs[lab, 0], pairs[lab, 1]
    else:
        raise EdgehalError("localization labels", f"have keys {sorted(labels)}",
                           "building and floor (or label = building-floor index), and coords")
    if "coords" not in labels:
        raise EdgehalError("localization labels", f"have keys {sorted(labels)}", "coords (metres) as well")
    return building.astype(np.int64), floor.astype(np.int64), np.asarray(labels["coords"], dtype=np.float64)


def _distance_entry(errors: np.ndarray) -> dict:
    n = int(errors.size)
    return {"mean_error_m": float(errors.mean()) if n else float("nan"),
            "median_error_m": float(np.median(errors)) if n else float("nan"),
            "p75_error_m": float(np.percentile(errors, 75)) if n else float("nan"),
            "max_error_m": float(errors.max()) if n else float("nan"), "count": n}


@register_evaluator("localization")
def localization_metrics(manifest: HeadManifest, outputs: Mapping[str, np.ndarray],
                         labels: Mapping[str, np.ndarray]) -> dict:
    """Per-head entries plus a ``summary``.

    ``summary``: building hit rate (%), floor hit rate (% with building *and*
    floor right), mean / median 2D error (m), and the IPIN penalised error:
    2D error + 4 m per floor missed (|floor difference|) + 50 m for a wrong
    building, averaged. All from the main outputs, so a pruned model scores the
    same. Per head: ``error_rate`` for classification heads (a ``floor_b<k>``
    head is scored on the samples of building k only), 2D errors for
    regression heads (``coords_b<k>`` on building k's samples).
    """
    pairs = _pairs(manifest)
    building, floor, coords = _truth(manifest, labels)
    decision = np.asarray(outputs["building_floor"]).argmax(axis=1)
    pred_b, pred_f = pairs[decision, 0], pairs[decision, 1]
    xy = np.asarray(outputs["coordinates"], dtype=np.float64)
    err2d = np.sqrt(((xy - coords) ** 2).sum(axis=1))
    building_ok = pred_b == building
    floor_ok = building_ok & (pred_f == floor)
    bf = manifest.building_floors
    penalised = err2d + bf.penalty_per_floor_m * np.abs(pred_f - floor) + bf.penalty_wrong_building_m * (~building_ok)
    n = max(len(building), 1)

    truth_pair = {tuple(p): i for i, p in enumerate(pairs.tolist())}
    target_pair = np.asarray([truth_pair.get((int(b), int(f)), -1) for b, f in zip(building, floor)])
    result: dict = {
        "building_floor": {**error_entry(decision, target_pair),
                           "building_hit_rate": 100.0 * float(building_ok.sum()) / n,
                           "floor_hit_rate": 100.0 * float(floor_ok.sum()) / n},
        "coordinates": {**_distance_entry(err2d), "penalised_error_m": float(penalised.mean()) if len(err2d) else
                        float("nan")},
    }
    if "building" in outputs:
        result["building"] = error_entry(np.asarray(outputs["building"]).argmax(axis=1), building)
    for k in range(int(pairs[:, 0].max()) + 1 if len(pairs) else 0):
        rows = building == k
        if f"floor_b{k}" in outputs:
            floors = pairs[pairs[:, 0] == k, 1]
            pred = floors[np.asarray(outputs[f"floor_b{k}"])[rows].argmax(axis=1)]
            result[f"floor_b{k}"] = error_entry(pred, floor[rows])
        if f"coords_b{k}" in outputs:
            e = np.sqrt(((np.asarray(outputs[f"coords_b{k}"], dtype=np.float64)[rows] - coords[rows]) ** 2).sum(1))
            result[f"coords_b{k}"] = _distance_entry(e)
    result["summary"] = {
        "building_hit_rate": 100.0 * float(building_ok.sum()) / n,
        "floor_hit_rate": 100.0 * float(floor_ok.sum()) / n,
        "mean_error_m": float(err2d.mean()) if len(err2d) else float("nan"),
        "median_error_m": float(np.median(err2d)) if len(err2d) else float("nan"),
        "penalised_error_m": float(penalised.mean()) if len(err2d) else float("nan"),
        "count": int(len(building)),
    }
    return result
