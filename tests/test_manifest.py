"""The head manifest: typed fields, exact JSON round trip, version handling, clear errors."""

from __future__ import annotations

import json

import pytest

from edgehal.errors import EdgehalError
from edgehal.manifest import (MANIFEST_VERSION, BuildingFloors, CoarseToFine, Head, HeadManifest, Preprocessing,
                              SequenceAxis)

DIGITS = tuple(str(i) for i in range(10))


def _hal() -> HeadManifest:
    return HeadManifest(model="hal_resnet", input_name="input", input_shape=(1, 28, 28),
                        heads=(Head("logits", "main", 0, class_names=DIGITS),
                               Head("aux_case1", "aux", 1, class_names=("ge5", "lt5"),
                                    parent_map=(1,) * 5 + (0,) * 5, feeds_main=True, case="case1")),
                        dataset="mnist")


def _every_field() -> HeadManifest:
    return HeadManifest(
        model="hdcnn", input_name="input", input_shape=(1, 28, 28),
        heads=(Head("fine", "main", 0, class_names=DIGITS),
               Head("coarse", "aux", 1, class_names=("a", "b"), parent_map=(0,) * 5 + (1,) * 5, feeds_main=True)),
        evaluator="hdcnn", dataset="mnist", sequence=SequenceAxis(axis=2, name="rows"),
        coarse_to_fine=CoarseToFine(case="case1", groups=((0, 1, 2, 3, 4), (5, 6, 7, 8, 9)),
                                    branch_classes="group", combine="hard"),
        notes={"cell": "gru", "steps": ("a", "b")})


def test_json_round_trip_is_exact_for_every_field():
    for m in (_hal(), _every_field()):
        again = HeadManifest.from_json(m.to_json())
        assert again == m
        assert again.to_json() == m.to_json()
    loc = HeadManifest(model="hier_localization", input_name="rssi", input_shape=(20,),
                       heads=(Head("building_floor", "main", 0, class_names=("B0F0", "B0F1", "B1F0")),),
                       evaluator="localization",
                       building_floors=BuildingFloors(pairs=((0, 0), (0, 1), (1, 0)), coordinate_origin=(1.5, -2.0),
                                                      penalty_per_floor_m=4.0))
    assert HeadManifest.from_json(loc.to_json()) == loc
    assert loc.building_floors.num_buildings == 2


def test_the_json_carries_the_schema_version_and_no_untyped_extra():
    d = json.loads(_every_field().to_json())
    assert d["version"] == MANIFEST_VERSION == 2
    assert "extra" not in d
    assert d["sequence"] == {"axis": 2, "name": "rows"}
    assert d["coarse_to_fine"]["groups"] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_a_newer_manifest_is_refused_naming_both_versions():
    d = _hal().to_dict()
    d["version"] = MANIFEST_VERSION + 1
    with pytest.raises(EdgehalError, match=r"schema version 3, newer than this edgehal reads \(2\).*upgrade"):
        HeadManifest.from_dict(d)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(colour="red"), "unknown key 'colour'"),
    (lambda d: d.pop("heads"), "lacks the key 'heads'"),
    (lambda d: d["heads"][0].update(kind="side"), "kind 'side' is unknown"),
    (lambda d: d["heads"][1].update(parent_map=[0] * 9 + [7]), "parent_map has the index 7"),
    (lambda d: d.update(input_shape=[1, "x", 28]), "input_shape"),
    (lambda d: d.update(evaluator="bleu"), "evaluator 'bleu' is unknown"),
    (lambda d: d.update(evaluator="localization"), "without building_floors"),
    (lambda d: d.update(sequence={"axis": 7}), "sequence axis 7 is not an input axis"),
    (lambda d: d["heads"][0].update(name="aux_case1"), "duplicate head names"),
])
def test_a_malformed_manifest_is_a_clear_error(mutate, message):
    d = _hal().to_dict()
    mutate(d)
    with pytest.raises(EdgehalError, match=message):
        HeadManifest.from_dict(d)


def test_invalid_json_is_a_clear_error():
    with pytest.raises(EdgehalError, match="is not valid JSON"):
        HeadManifest.from_json("{")


def test_version_1_with_extra_is_upgraded_to_typed_fields():
    # The form every checkpoint and ONNX file written before schema version 2 carries.
    v1 = {"model": "hdcnn", "input_name": "input", "input_shape": [1, 28, 28], "input_dtype": "float32",
          "version": 1, "heads": [{"name": "fine", "kind": "main", "level": 0, "class_names": list(DIGITS)}],
          "extra": {"dataset": "mnist", "evaluator": "hdcnn", "case": "case1", "combine": "soft",
                    "branch_classes": "all", "superclass_groups": [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]}}
    m = HeadManifest.from_dict(v1)
    assert m.version == 2 and m.evaluator == "hdcnn" and m.dataset == "mnist"
    assert m.coarse_to_fine == CoarseToFine(case="case1", groups=((0, 1, 2, 3, 4), (5, 6, 7, 8, 9)))
    assert m.notes == {}
    rows = {"model": "rnn_classifier", "input_name": "input", "input_shape": [1, 28, 28], "version": 1,
            "heads": [{"name": "logits", "kind": "main", "level": 0, "class_names": list(DIGITS)}],
            "extra": {"dataset": "mnist", "cell": "gru", "sequence": "rows", "sequence_axis": 2}}
    m = HeadManifest.from_dict(rows)
    assert m.sequence == SequenceAxis(axis=2, name="rows") and m.notes == {"cell": "gru"}
    loc = {"model": "hier_localization", "input_name": "rssi", "input_shape": [20], "version": 1,
           "heads": [{"name": "building_floor", "kind": "main", "level": 0, "class_names": ["B0F0", "B0F1"]}],
           "extra": {"evaluator": "localization", "dataset": "ujiindoorloc", "combine": "soft",
                     "building_floor_pairs": [[0, 0], [0, 1]], "coordinate_origin": [-7700.0, 4864740.0],
                     "undetected_dbm": -110.0, "penalty_m": {"per_floor": 4.0, "wrong_building": 50.0}}}
    m = HeadManifest.from_dict(loc)
    assert m.building_floors == BuildingFloors(pairs=((0, 0), (0, 1)), combine="soft",
                                               coordinate_origin=(-7700.0, 4864740.0), undetected_dbm=-110.0)


def test_select_and_only_keep_the_typed_fields():
    m = _every_field()
    pruned = m.select("prune")
    assert pruned.head_names == ("fine",) and pruned.coarse_to_fine == m.coarse_to_fine
    assert m.only(["coarse", "fine"]).head_names == ("fine", "coarse")
    with pytest.raises(EdgehalError, match="no main head"):
        m.only(["coarse"])
    with pytest.raises(EdgehalError, match="head 'nope'"):
        m.only(["nope"])
    with pytest.raises(EdgehalError, match="keep or prune"):
        m.select("drop")
    assert m.order(["coarse", "x", "fine"]) == ["fine", "coarse", "x"]


def test_differences_name_the_field_that_differs():
    a = _hal()
    assert a.differences(a) == []
    b = HeadManifest.from_dict({**a.to_dict(), "dataset": "svhn"})
    assert a.differences(b) == ["dataset"]
    d = a.to_dict()
    d["heads"][1]["parent_map"] = [0] * 5 + [1] * 5
    assert a.differences(HeadManifest.from_dict(d)) == ["heads[aux_case1].parent_map"]
    d = a.to_dict()
    d["heads"] = d["heads"][:1]
    assert a.differences(HeadManifest.from_dict(d))[0].startswith("heads (names")


def test_preprocessing_round_trip_and_errors():
    p = Preprocessing(layout="NCHW", input_shape=(1, 28, 28), input_range=(0, 255), scale=1 / 255, mean=(0.1307,),
                      std=(0.3081,), dataset="mnist", augment={"shift": 2}, details={"fitted_on": "train"})
    again = Preprocessing.from_json(p.to_json())
    assert again == p and again.to_json() == p.to_json()
    with pytest.raises(EdgehalError, match="layout 'NHWC' is unknown"):
        Preprocessing(layout="NHWC", input_shape=(28, 28, 1))
    with pytest.raises(EdgehalError, match="1 means and 2 stds"):
        Preprocessing(layout="NCHW", input_shape=(1, 2, 2), mean=(0.5,), std=(0.5, 0.5))
    with pytest.raises(EdgehalError, match="unknown key 'sclae'"):
        Preprocessing.from_dict({**p.to_dict(), "sclae": 2})
    with pytest.raises(EdgehalError, match="schema version 9"):
        Preprocessing.from_dict({**p.to_dict(), "version": 9})


def test_preprocessing_version_1_is_upgraded():
    image = {"layout": "NCHW", "input_shape": [1, 28, 28], "input_dtype": "float32", "input_range": [0, 255],
             "normalization": "in-graph: (x / 255 - mean) / std", "mean": [0.1307], "std": [0.3081],
             "augment": {"shift": 2}, "dataset": "mnist"}
    p = Preprocessing.from_dict(image)
    assert p.layout == "NCHW" and p.scale == pytest.approx(1 / 255) and p.input_range == (0.0, 255.0)
    uji = {"layout": "NC", "input_shape": [520], "input_range": {"rssi_dbm": [-120.0, 0.0], "not_detected": 100},
           "mean": [], "std": [], "dataset": "ujiindoorloc", "coordinate_origin": [-7700.0, 4864740.0]}
    p = Preprocessing.from_dict(uji)
    assert p.input_range == (-120.0, 0.0) and p.scale == 1.0
    assert p.details["coordinate_origin"] == [-7700.0, 4864740.0] and p.details["input_range"]["not_detected"] == 100


# ---- HeadManifest.classifier: declaring a user's model --------------------------------

ANIMALS = ("cat", "dog", "car", "truck", "ship")


def test_classifier_computes_parent_maps_from_class_names():
    superclasses = {"aux_kind": {"vehicle": ["car", "truck", "ship"], "animal": ["cat", "dog"]},
                    "aux_road": {"road": ["car", "truck"], "other": ["cat", "dog", "ship"]}}
    m = HeadManifest.classifier(class_names=ANIMALS, input_shape=(3, 32, 32), model="mine", superclasses=superclasses)
    assert m.head_names == ("logits", "aux_kind", "aux_road") and m.main.class_names == ANIMALS
    kind = m.head("aux_kind")
    assert kind.kind == "aux" and kind.class_names == ("vehicle", "animal") and kind.feeds_main
    assert kind.parent_map == (1, 1, 0, 0, 0)
    assert m.head("aux_road").parent_map == (1, 1, 0, 0, 1)
    assert m.model == "mine" and m.input_name == "input" and m.input_shape == (3, 32, 32)
    assert HeadManifest.from_json(m.to_json()) == m
    assert m.select("prune").head_names == ("logits",)


def test_classifier_without_superclasses_has_one_head_and_feeds_main_is_recorded():
    assert HeadManifest.classifier(class_names=["a", "b"], input_shape=(4,)).head_names == ("logits",)
    m = HeadManifest.classifier(class_names=["a", "b"], input_shape=(4,), feeds_main=False,
                                superclasses={"aux": {"x": ["a"], "y": ["b"]}})
    assert m.head("aux").feeds_main is False


@pytest.mark.parametrize("superclasses, message", [
    ({"aux": {"vehicle": ["car", "truk", "ship"], "animal": ["cat", "dog"]}},
     "superclasses['aux']['vehicle'] | names the unknown class 'truk'. Note: did you mean 'truck'?"),
    ({"aux": {"vehicle": ["car", "truck"], "animal": ["cat", "dog"]}},
     "superclasses['aux'] | leaves out the class 'ship'. Note: every class in exactly one superclass"),
    ({"aux": {"vehicle": ["car", "truck", "ship", "dog"], "animal": ["cat", "dog"]}},
     "superclasses['aux'] | puts class 'dog' in both 'vehicle' and 'animal'"),
    ({"aux": {"vehicle": [], "animal": list(ANIMALS)}}, "superclasses['aux']['vehicle'] | is []"),
    ({"aux": ["car"]}, "superclasses['aux'] | is ['car']"),
    ({"logits": {"all": list(ANIMALS)}}, "duplicate head names"),
])
def test_classifier_refuses_bad_superclasses_by_name(superclasses, message):
    with pytest.raises(EdgehalError) as err:
        HeadManifest.classifier(class_names=ANIMALS, input_shape=(3, 8, 8), superclasses=superclasses)
    assert message in str(err.value)


def test_classifier_refuses_bad_class_names():
    with pytest.raises(EdgehalError, match="class_names | repeats 'cat'"):
        HeadManifest.classifier(class_names=["cat", "cat"], input_shape=(4,))
    with pytest.raises(EdgehalError, match="a non-empty list of class names"):
        HeadManifest.classifier(class_names="cat", input_shape=(4,))
