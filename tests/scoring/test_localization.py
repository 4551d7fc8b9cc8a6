"""The localization evaluator: hit rates, 2D errors and the IPIN penalised error, from the manifest alone."""

import numpy as np
import pytest

from edgehal.errors import EdgehalError
from edgehal.manifest import Head, HeadManifest
from edgehal.nets import create_model
from edgehal.scoring import compute_metrics
from edgehal.scoring.localization import localization_metrics

FLOORS = [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3, 4]]
PAIRS = [(b, f) for b, fl in enumerate(FLOORS) for f in fl]


def _model():
    return create_model("hier_localization", building_floors=FLOORS, coord_mean=[200.0, 100.0], coord_scale=150.0,
                        coordinate_origin=[-7700.0, 4864740.0], input_shape=[20], hidden=[32], branch_hidden=[16],
                        coord_hidden=[16], dropout=0.0)


def test_evaluator_arithmetic_on_a_hand_made_example():
    m = _model()
    man = m.manifest

    def onehot(pairs):
        z = np.full((len(pairs), len(PAIRS)), -5.0, dtype=np.float32)
        for n, p in enumerate(pairs):
            z[n, PAIRS.index(p)] = 0.0
        return z

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
