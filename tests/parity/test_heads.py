"""The heads of a plain reference: from --head mappings, or a manifest file; output widths checked."""

from __future__ import annotations

import pytest
import yaml

from edgehal.errors import EdgehalError
from edgehal.manifest import Head, HeadManifest
from edgehal.parity.heads import check_widths, load_manifest_file, plain_manifest


def test_the_first_mapped_head_is_the_main_classifier_and_the_others_values_only():
    m = plain_manifest({"colour": "scores", "superclass": "super"}, class_names=("blue", "red"), model="model",
                       input_name="pixels", input_shape=(3, 8, 8), dataset="image_folder")
    main, aux = m.heads
    assert (main.name, main.kind, main.task, main.class_names) == ("colour", "main", "classification", ("blue", "red"))
    assert (aux.name, aux.kind, aux.task, aux.class_names) == ("superclass", "aux", "regression", ())
    assert "values only" in aux.description and m.input_name == "pixels" and m.input_shape == (3, 8, 8)
    assert HeadManifest.from_dict(m.to_dict()) == m  # saved runs carry it as JSON
    with pytest.raises(EdgehalError, match="has no head mapped"):
        plain_manifest({}, class_names=("a",), model="m", input_name="x", input_shape=(1,))


def test_widths_must_match_the_class_names():
    m = plain_manifest({"colour": "scores", "superclass": "super"}, class_names=("blue", "red"), model="model",
                       input_name="pixels", input_shape=(3, 8, 8))
    check_widths(m, {"colour": 2, "superclass": 7}, what="reference m.onnx")  # values-only heads have any width
    check_widths(m, {}, what="reference m.onnx")  # widths not known yet: checked after the run
    with pytest.raises(EdgehalError, match="reference m.onnx: head 'colour' \\| has 3 outputs per sample. Note: one "
                                           "per class name: 2 \\(blue, red\\)"):
        check_widths(m, {"colour": 3}, what="reference m.onnx")


def test_a_manifest_file_in_yaml_or_json(tmp_path):
    m = HeadManifest(model="m", input_name="x", input_shape=(3, 8, 8), heads=(
        Head("main", "main", 0, class_names=("a", "b", "c")),
        Head("sup", "aux", 1, class_names=("ab", "c"), parent_map=(0, 0, 1))))
    (tmp_path / "heads.yaml").write_text(yaml.safe_dump(m.to_dict()))
    (tmp_path / "heads.json").write_text(m.to_json())
    assert load_manifest_file(tmp_path / "heads.yaml") == m == load_manifest_file(tmp_path / "heads.json")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"model": "m", "heads": []}))
    with pytest.raises(EdgehalError, match="--manifest .*bad.yaml \\| lacks the key 'input_name'"):
        load_manifest_file(tmp_path / "bad.yaml")
    (tmp_path / "broken.yaml").write_text("heads: [unclosed")
    with pytest.raises(EdgehalError, match="is not YAML or JSON"):
        load_manifest_file(tmp_path / "broken.yaml")
    with pytest.raises(EdgehalError, match="file not found"):
        load_manifest_file(tmp_path / "missing.yaml")
