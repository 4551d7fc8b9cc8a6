"""The localization evaluator: hit rates, 2D and 3D errors and the IPIN penalised error, from the manifest alone."""

import math

import numpy as np
import pytest

from edgehal.errors import EdgehalError
from edgehal.manifest import Head, HeadManifest
from edgehal.nets import create_model
from edgehal.scoring import compute_metrics
from edgehal.scoring.localization import FLOOR_HEIGHT_M, localization_metrics

FLOORS = [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3, 4]]
PAIRS = [(b, f) for b, fl in enumerate(FLOORS) for f in fl]


def _model():
    return create_model("hier_localization", building_floors=FLOORS, coord_mean=[200.0, 100.0], coord_scale=150.0,
                        coordinate_origin=[-7700.0, 4864740.0], input_shape=[20], hidden=[32], branch_hidden=[16],
                        coord_hidden=[16], dropout=0.0)


def onehot(pairs):
    z = np.full((len(pairs), len(PAIRS)), -5.0, dtype=np.float32)
    for n, p in enumerate(pairs):
        z[n, PAIRS.index(p)] = 0.0
    return z


def test_evaluator_arithmetic_on_a_hand_made_example():
    m = _model()
    man = m.manifest

    truth_pairs = [(0, 1), (1, 2), (2, 4), (2, 0)]
    predicted = [(0, 1), (1, 0), (2, 3), (1, 0)]  # right; 2 floors off; 1 floor off; wrong building
    coords_true = np.array([[0, 0], [10, 10], [100, 100], [0, 0]], dtype=np.float32)
    coords_pred = np.array([[3, 4], [10, 10], [106, 108], [0, 1]], dtype=np.float32)  # errors 5, 0, 10, 1
    outputs = {"building_floor": onehot(predicted), "coordinates": coords_pred}
    labels = {"building": np.array([b for b, _ in truth_pairs]), "floor": np.array([f for _, f in truth_pairs]),
              "label": np.array([PAIRS.index(p) for p in truth_pairs]), "coords": coords_true}
    r = compute_metrics(man, outputs, labels)
    s = r["summary"]
    assert s["building_hit_rate"] == 75.0
    assert s["floor_hit_rate"] == 25.0
    assert s["mean_error_m"] == pytest.approx((5 + 0 + 10 + 1) / 4)
    # + 4 m per floor missed, + 50 m for the wrong building
    assert s["penalised_error_m"] == pytest.approx((5 + (0 + 8) + (10 + 4) + (1 + 0 + 50)) / 4)
    assert r["building_floor"]["error_rate"] == 75.0
    assert r["coordinates"]["mean_error_m"] == pytest.approx(4.0)
    # aux heads, when present, are scored too; floor_b2 only on building 2's samples
    outputs["building"] = np.eye(3, dtype=np.float32)[[0, 1, 2, 1]]
    outputs["floor_b2"] = np.eye(5, dtype=np.float32)[[3, 0, 4, 0]]
    r = compute_metrics(man, outputs, labels)
    assert r["building"]["error_rate"] == 25.0
    assert r["floor_b2"] == {"error_rate": 0.0, "errors": 0, "count": 2}
    # the building-floor label alone is enough for the evaluator
    r2 = compute_metrics(man, {k: outputs[k] for k in ("building_floor", "coordinates")},
                         {"label": labels["label"], "coords": coords_true})
    assert r2["summary"] == s


def test_labels_without_coordinates_or_a_manifest_without_building_floors_are_refused():
    man = _model().manifest
    outputs = {"building_floor": np.zeros((1, len(PAIRS)), np.float32), "coordinates": np.zeros((1, 2), np.float32)}
    with pytest.raises(EdgehalError, match="coords"):
        compute_metrics(man, outputs, {"label": np.array([0])})
    plain = HeadManifest(model="m", input_name="x", input_shape=(4,),
                         heads=(Head(name="building_floor", kind="main", level=0, class_names=("a",)),))
    with pytest.raises(EdgehalError, match="has no building_floors"):
        localization_metrics(plain, outputs, {"label": np.array([0]), "coords": np.zeros((1, 2))})


def test_each_published_definition_is_computed_on_its_own_subset_and_dimension():
    man = _model().manifest
    truth_pairs = [(0, 1), (1, 2), (2, 4), (2, 0), (0, 3)]
    # right; 2 floors off; 1 floor off; wrong building but the right floor number; right
    predicted = [(0, 1), (1, 0), (2, 3), (1, 0), (0, 3)]
    coords_true = np.zeros((5, 2), dtype=np.float32)
    coords_pred = np.array([[3, 4], [0, 0], [6, 8], [0, 1], [0, 2]], dtype=np.float32)  # 2D errors 5, 0, 10, 1, 2
    outputs = {"building_floor": onehot(predicted), "coordinates": coords_pred}
    labels = {"building": np.array([b for b, _ in truth_pairs]), "floor": np.array([f for _, f in truth_pairs]),
              "coords": coords_true}
    s = compute_metrics(man, outputs, labels)["summary"]
    assert s["floor_hit_rate"] == 40.0                      # building and floor right: samples 0 and 4
    assert s["floor_number_hit_rate"] == 60.0               # floor number right whatever the building: 0, 3, 4
    assert s["mean_error_m"] == pytest.approx((5 + 0 + 10 + 1 + 2) / 5)   # all fingerprints
    # only building-and-floor-right fingerprints (not the floor-number-right ones, which would give 8/3)
    assert s["mean_error_2d_correct_floor_m"] == pytest.approx((5 + 2) / 2)
    assert s["median_error_2d_correct_floor_m"] == pytest.approx(3.5)
    assert s["correct_floor_count"] == 2
    h = FLOOR_HEIGHT_M
    assert h == s["floor_height_m"] == 3.7
    # every fingerprint, the missed floors adding height: sqrt(2D^2 + (h * floors missed)^2)
    want_3d = (5 + math.hypot(0, 2 * h) + math.hypot(10, h) + 1 + 2) / 5
    assert s["mean_error_3d_m"] == pytest.approx(want_3d)
    assert s["mean_error_3d_m"] > s["mean_error_m"]
    # no fingerprint with building and floor right: the subset mean is undefined, not 0
    wrong = compute_metrics(man, {"building_floor": onehot([(1, 0)]), "coordinates": coords_pred[:1]},
                            {"building": np.array([0]), "floor": np.array([1]), "coords": coords_true[:1]})["summary"]
    assert wrong["correct_floor_count"] == 0 and math.isnan(wrong["mean_error_2d_correct_floor_m"])


def test_an_empty_split_scores_as_a_count_of_zero():
    man = _model().manifest
    empty = {"building": np.zeros(0, np.int64), "floor": np.zeros(0, np.int64), "coords": np.zeros((0, 2))}
    assert compute_metrics(man, {}, empty) == {"summary": {"count": 0}}
