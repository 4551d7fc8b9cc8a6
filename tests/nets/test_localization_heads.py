"""The localization heads both architectures publish: one manifest builder, one argument check, one loss."""

import math

import pytest
import torch

from edgehal.errors import EdgehalError
from edgehal.nets.localization_heads import (BUILDING_PENALTY_M, FLOOR_PENALTY_M, check_localization_args,
                                             floor_branch_classes, localization_loss, localization_manifest)

FLOORS = [[0, 1], [1, 2, 3]]
NAMES = ("B0F0", "B0F1", "B1F1", "B1F2", "B1F3")


def _manifest(**kw):
    args = dict(model="m", building_floors=FLOORS, class_names=NAMES, num_inputs=7, combine="hard",
                coordinate_origin=[10.0, 20.0], undetected_dbm=-100.0, coords_per_building=True)
    return localization_manifest(**{**args, **kw})


def test_manifest_heads_and_their_hierarchy():
    man = _manifest()
    assert man.head_names == ("building_floor", "coordinates", "building", "floor_b0", "floor_b1",
                              "coords_b0", "coords_b1")
    assert man.main.class_names == NAMES and man.head("coordinates").task == "regression"
    assert man.head("building").parent_map == (0, 0, 1, 1, 1)
    assert man.head("floor_b1").class_names == ("B1F1", "B1F2", "B1F3")
    assert man.head("floor_b1").parent_map == (-1, -1, 0, 1, 2)
    assert all(h.feeds_main for h in man.aux_heads)
    assert man.evaluator == "localization" and man.input_name == "rssi" and man.input_shape == (7,)
    bf = man.building_floors
    assert bf.pairs == ((0, 0), (0, 1), (1, 1), (1, 2), (1, 3)) and bf.coordinate_origin == (10.0, 20.0)
    assert (bf.undetected_dbm, bf.penalty_per_floor_m, bf.penalty_wrong_building_m) == \
        (-100.0, FLOOR_PENALTY_M, BUILDING_PENALTY_M)


def test_without_per_building_regressors_and_with_the_models_own_descriptions():
    man = _manifest(coords_per_building=False, descriptions={"floor_b": "step 2, building {k}"},
                    notes={"cell": "gru"})
    assert "coords_b0" not in man.head_names
    assert man.head("floor_b1").description == "step 2, building 1"
    assert man.head("building").description == "building logits" and man.notes == {"cell": "gru"}


def test_floor_branches_are_consecutive_classes():
    assert floor_branch_classes(FLOORS) == [[0, 1], [2, 3, 4]]
    assert floor_branch_classes([[2], [0, 5], [1]]) == [[0], [1, 2], [3]]


def _check(**kw):
    args = dict(combine="hard", building_floors=FLOORS, access_points_heard=None, input_shape=[7], class_names=None,
                dropout=0.1, input_dropout=0.0, rssi_shift_db=0.0, rssi_noise_db=0.0)
    return check_localization_args(**{**args, **kw})


def test_argument_check_returns_what_the_builders_use():
    heard, pairs, names = _check()
    assert heard == [1] * 7 and pairs == [(0, 0), (0, 1), (1, 1), (1, 2), (1, 3)] and names == NAMES


@pytest.mark.parametrize("bad,match", [
    ({"combine": "vote"}, "model.combine"), ({"building_floors": [[0], []]}, "model.building_floors"),
    ({"access_points_heard": [1, 0]}, "access_points_heard \\| has 2 entries"), ({"dropout": 1.0}, "model.dropout"),
    ({"rssi_noise_db": -1.0}, "model.rssi_noise_db"), ({"class_names": ["a"]}, "model.class_names \\| has 1 names")])
def test_argument_check_refuses_by_name(bad, match):
    with pytest.raises(EdgehalError, match=match):
        _check(**bad)


def test_loss_terms():
    building_logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    # floor log-probabilities in the building-floor space: each sample certain of its true pair
    floor_scores = torch.full((2, 2, 5), -1.0e4)
    floor_scores[0, 0, 1] = 0.0
    floor_scores[1, 1, 3] = 0.0
    xy = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    labels = {"building": torch.tensor([0, 1]), "label": torch.tensor([1, 3]), "coords": torch.zeros(2, 2)}
    weights = {"building": 1.0, "floor": 1.0, "coords": 1.0}
    total, parts = localization_loss(building_logits, floor_scores, xy, labels, coord_scale=5.0, weights=weights,
                                     aux_weight=0.5)
    ce = -math.log(math.exp(2.0) / (math.exp(2.0) + 1.0))
    assert parts["building"] == pytest.approx(ce, rel=1e-5)
    assert parts["floor"] == pytest.approx(0.0, abs=1e-5)
    assert parts["coords"] == pytest.approx((1.0 + 0.0) / 2, rel=1e-3)  # 5 m and 0 m in units of 5 m
    assert float(total) == pytest.approx(0.5 * ce + parts["floor"] + parts["coords"], rel=1e-5)
