import json

import pytest

from edgehal.errors import EdgehalError
from edgehal.hierarchy import SUPERCLASS_CASES, aux_head_from_case, get_case, load_case_file, validate_groups
from edgehal.manifest import Head, HeadManifest

# The tables of the paper, written out again independently of the code.
PAPER = {
    "mnist": {
        "case1": {0: {5, 6, 7, 8, 9}, 1: {0, 1, 2, 3, 4}},
        "case2": {0: {1, 3, 5, 7, 9}, 1: {0, 2, 4, 6, 8}},
        "case3": {0: {2, 3, 5, 7}, 1: {0, 1, 4, 6, 8, 9}},
        "case4": {0: {0, 6, 8, 9}, 1: {2, 3, 5}, 2: {1, 4, 7}},
    },
    "cifar10": {
        "case1": {0: {5, 6, 7, 8, 9}, 1: {0, 1, 2, 3, 4}},
        "case2": {0: {1, 3, 5, 7, 9}, 1: {0, 2, 4, 6, 8}},
        "case3": {0: {2, 3, 4, 5, 6, 7}, 1: {0, 1, 8, 9}},
        "case4": {0: {1, 9}, 1: {3, 5}, 2: {4, 7}, 3: {0, 8}, 4: {2, 6}},
    },
}
PAPER["svhn"] = PAPER["mnist"]


@pytest.mark.parametrize("dataset", ["mnist", "svhn", "cifar10"])
@pytest.mark.parametrize("case", ["case1", "case2", "case3", "case4"])
def test_cases_match_the_paper_exactly(dataset, case):
    c = get_case(dataset, case)
    assert {k: set(g) for k, g in enumerate(c.groups)} == PAPER[dataset][case]
    for k, group in PAPER[dataset][case].items():
        for cls in group:
            assert c.mapping[cls] == k


def test_every_dataset_has_exactly_four_cases():
    for dataset in ("mnist", "svhn", "cifar10"):
        assert sorted(SUPERCLASS_CASES[dataset]) == ["case1", "case2", "case3", "case4"]


def test_unknown_case_and_dataset_are_named():
    with pytest.raises(EdgehalError, match="case5.*case1"):
        get_case("mnist", "case5")
    with pytest.raises(EdgehalError, match="imagenet"):
        get_case("imagenet", "case1")


@pytest.mark.parametrize("groups,match", [
    ({0: [0, 1, 2, 3, 4], 1: [5, 6, 7, 8]}, "class 9 is missing"),
    ({0: [0, 1, 2, 3, 4, 5], 1: [5, 6, 7, 8, 9]}, "class 5 is repeated"),
    ({0: [0, 1, 2, 3, 4], 1: [5, 6, 7, 8, 9, 10]}, "class 10 .*out of range"),
    ({0: [0, 1, 2, 3, 4], 2: [5, 6, 7, 8, 9]}, "ids are \\[0, 2\\]"),
    ({1: [0, 1, 2, 3, 4], 2: [5, 6, 7, 8, 9]}, "ids are \\[1, 2\\]"),
    ([[0, 1, 2, 3, 4], []], "superclass 1 is empty"),
])
def test_bad_mappings_are_refused_naming_the_offender(groups, match):
    with pytest.raises(EdgehalError, match=match):
        validate_groups(groups, num_classes=10, what="mapping")


def test_custom_mapping_from_yaml_and_json(tmp_path):
    y = tmp_path / "m.yaml"
    y.write_text("name: small_large\ngroups:\n  0: [0, 1, 2]\n  1: [3, 4, 5, 6, 7, 8, 9]\nnames: [small, large]\n")
    case = load_case_file(y, num_classes=10)
    assert case.mapping == (0, 0, 0, 1, 1, 1, 1, 1, 1, 1)
    assert case.superclass_names == ("small", "large")
    j = tmp_path / "m.json"
    j.write_text(json.dumps({"groups": {"0": [0, 1, 2], "1": [3, 4, 5, 6, 7, 8]}}))
    with pytest.raises(EdgehalError, match="class 9 is missing"):
        get_case("mnist", str(j))


def test_manifest_round_trip_and_select():
    case = get_case("mnist", "case4")
    m = HeadManifest(model="m", input_name="input", input_shape=(1, 28, 28),
                     heads=(Head(name="logits", kind="main", level=0, class_names=tuple("0123456789")),
                            aux_head_from_case(case)))
    back = HeadManifest.from_json(m.to_json())
    assert back == m
    assert back.head("aux_case4").parent_map == case.mapping
    assert m.select("prune").head_names == ("logits",)
    with pytest.raises(EdgehalError, match="one of"):
        m.head("nope")
    with pytest.raises(EdgehalError, match="duplicate"):
        HeadManifest(model="m", input_name="input", input_shape=(1,), heads=(m.heads[0], m.heads[0]))
