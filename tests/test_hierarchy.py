import json
import re

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


# -- mapping files that name classes --------------------------------------------

NUMBERS = ("zero", "one", "two", "three")


def write(tmp_path, text: str, name: str = "m.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_a_mapping_by_name_needs_and_uses_the_class_names(tmp_path):
    p = write(tmp_path, "name: parity\ngroups:\n  even: [zero, two]\n  odd: [three, one]\n")
    case = get_case("image_folder", str(p), class_names=NUMBERS)
    assert case.name == "parity" and case.superclass_names == ("even", "odd")
    assert case.groups == ((0, 2), (3, 1)) and case.mapping == (0, 1, 0, 1)
    assert load_case_file(p, num_classes=4, class_names=NUMBERS) == case
    with pytest.raises(EdgehalError, match=r"names class 'zero' but the class names are not known"):
        load_case_file(p, num_classes=4)
    with pytest.raises(EdgehalError, match=r"has no class count to check: 'image_folder' .*Note: the class names"):
        get_case("image_folder", str(p))
    with pytest.raises(EdgehalError, match=r"asked for 5 classes but given 4 class names"):
        get_case("image_folder", str(p), num_classes=5, class_names=NUMBERS)


def test_indices_and_names_mix_and_integer_files_keep_working(tmp_path):
    # superclass-name keys with class indices, and id keys with class names
    a = write(tmp_path, "groups: {low: [0, 1], high: [2, 3]}\n", "a.yaml")
    assert load_case_file(a, num_classes=4).groups == ((0, 1), (2, 3))
    b = write(tmp_path, json.dumps({"groups": {"0": ["one", 3], "1": ["zero", "two"]}, "names": ["o", "e"]}), "b.json")
    case = get_case("image_folder", str(b), class_names=NUMBERS)
    assert case.mapping == (1, 0, 1, 0) and case.superclass_names == ("o", "e")
    c = write(tmp_path, "groups: {0: [0, 2], 1: [1, 3]}\n", "c.yaml")
    assert get_case("image_folder", str(c), class_names=NUMBERS).groups == ((0, 2), (1, 3))


def test_a_name_that_is_not_a_class_lists_close_matches_and_the_classes(tmp_path):
    p = write(tmp_path, "groups:\n  even: [zero, tow]\n  odd: [one, three]\n")
    with pytest.raises(EdgehalError, match=re.escape(
            f"superclass mapping {p} | class 'tow' in superclass 'even' is not a class. "
            "Note: did you mean 'two'? the classes: ['zero', 'one', 'two', 'three']")):
        get_case("image_folder", str(p), class_names=NUMBERS)
    p = write(tmp_path, "groups:\n  even: [zero, unicorn]\n  odd: [one, three]\n")
    with pytest.raises(EdgehalError, match=r"'unicorn' in superclass 'even' is not a class. Note: the classes"):
        get_case("image_folder", str(p), class_names=NUMBERS)


@pytest.mark.parametrize("groups,match", [
    ("{even: [zero, two], odd: [one]}", r"class 'three' is missing"),
    ("{even: [zero, two], odd: [one, two, three]}", r"class 'two' is repeated \(superclasses 'even' and 'odd'\)"),
    ("{even: [zero, two, one], odd: []}", r"superclass 'odd' is empty"),
    ("{even: [zero, two], odd: [one, 7]}", r"class 7 in superclass 'odd' is out of range"),
    ("{even: [zero, two], odd: [one, yes]}", r"class True in superclass 'odd' is not a class name. Note: quote"),
    ("{yes: [zero, two], odd: [one, three]}", r"superclass name True is not a string. Note: quote"),
])
def test_a_mapping_by_name_is_a_partition_named_in_its_own_terms(tmp_path, groups, match):
    p = write(tmp_path, f"groups: {groups}\n")
    with pytest.raises(EdgehalError, match=match):
        get_case("image_folder", str(p), class_names=NUMBERS)


def test_a_number_that_is_also_another_class_name_is_ambiguous(tmp_path):
    # class folders named 1, 2, 3: label 0 is class '1'
    names = ("1", "2", "3")
    p = write(tmp_path, "groups: {low: [1, 2], high: [3]}\n")
    with pytest.raises(EdgehalError, match=r"class 1 in superclass 'low' is both the index of class '2' and the "
                                           r"name of class 0. Note: quote it \('1'\)"):
        get_case("image_folder", str(p), class_names=names)
    q = write(tmp_path, "groups: {low: ['1', '2'], high: ['3']}\n", "q.yaml")
    assert get_case("image_folder", str(q), class_names=names).mapping == (0, 0, 1)
    # digits: the name of class c is str(c), so a bare number is unambiguous
    r = write(tmp_path, "groups: {small: [0, 1, 2], large: [3, 4, 5, 6, 7, 8, 9]}\n", "r.yaml")
    assert get_case("mnist", str(r), class_names=[str(i) for i in range(10)]).mapping == (0,) * 3 + (1,) * 7


def test_superclass_names_given_twice_are_refused(tmp_path):
    p = write(tmp_path, "groups: {even: [zero, two], odd: [one, three]}\nnames: [a, b]\n")
    with pytest.raises(EdgehalError, match=r"names its superclasses twice"):
        get_case("image_folder", str(p), class_names=NUMBERS)
