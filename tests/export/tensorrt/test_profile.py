"""The optimisation profile: how it is derived, how dimensions are named, and the check before every run."""

from __future__ import annotations

import pytest

from edgehal.errors import EdgehalError
from edgehal.export.tensorrt.profile import (
    ProfileShape,
    check_profile,
    default_dim_range,
    derive_profiles,
    dim_keys,
)
from edgehal.hierarchy import DIGIT_CLASSES
from edgehal.manifest import Head, HeadManifest, SequenceAxis
from edgehal.tensors import TensorSpec


def test_profiles_fill_the_batch_and_dimension_ranges_in():
    inputs = [TensorSpec("x", "float32", (-1, -1, 16), ("batch", "time", None))]
    profiles = derive_profiles(inputs, (1, 4, 8), {("x", 1): (1, 10, 20)})
    assert profiles[0].to_dict() == {"input": "x", "min": [1, 1, 16], "opt": [4, 10, 16], "max": [8, 20, 16]}
    assert profiles[0].dynamic_batch
    assert ProfileShape.from_dict(profiles[0].to_dict()) == profiles[0]
    fixed = derive_profiles([TensorSpec("x", "float32", (4, 16))], (4, 4, 4))
    assert fixed[0].min == fixed[0].max == (4, 16) and not fixed[0].dynamic_batch


def test_a_dimension_is_named_by_its_name_in_the_file_then_by_input_and_axis():
    t = TensorSpec("x", "float32", (-1, -1, -1), ("batch", "rows", None))
    assert dim_keys(t, 1) == ("rows", "x:1")
    assert dim_keys(t, 2) == ("x:2",)


def test_the_sequence_axis_defaults_to_one_up_to_the_trained_length():
    manifest = HeadManifest(model="rows", input_name="input", input_shape=(1, 28, 28),
                            heads=(Head("digit", "main", 0, class_names=DIGIT_CLASSES),),
                            sequence=SequenceAxis(axis=2, name="rows"))
    t = TensorSpec("input", "float32", (-1, 1, -1, 28))
    assert default_dim_range(t, 2, manifest) == (1, 28, 28)
    assert default_dim_range(t, 3, manifest) == (28, 28, 28)  # another dimension: the trained size alone
    assert default_dim_range(t, 2, None) is None
    assert default_dim_range(TensorSpec("other", "float32", (-1, -1)), 1, manifest) is None


def test_batch_outside_the_profile_is_refused():
    profiles = (ProfileShape("input", (2, 1, 28, 28), (8, 1, 28, 28), (8, 1, 28, 28)),)
    check_profile(profiles, {"input": (2, 1, 28, 28)}, what="TensorRT engine m.plan")
    check_profile(profiles, {"input": (8, 1, 28, 28)}, what="TensorRT engine m.plan")
    with pytest.raises(EdgehalError, match=r"batch 9 is outside the engine's profile \(batch 2..8\).*"
                                           r"--max-batch 9"):
        check_profile(profiles, {"input": (9, 1, 28, 28)}, what="TensorRT engine m.plan")
    with pytest.raises(EdgehalError, match=r"batch 1 is outside the engine's profile \(batch 2..8\)"):
        check_profile(profiles, {"input": (1, 1, 28, 28)}, what="TensorRT engine m.plan")


def test_a_shape_outside_the_profile_on_another_dimension_is_refused():
    profiles = (ProfileShape("input", (1, 1, 1, 28), (8, 1, 28, 28), (8, 1, 28, 28)),)
    check_profile(profiles, {"input": (3, 1, 5, 28)}, what="TensorRT engine m.plan")
    with pytest.raises(EdgehalError, match=r"dimension 2 is 40, outside the engine's profile \(1..28\).*"
                                           r"--dim input:2=1,28,40"):
        check_profile(profiles, {"input": (3, 1, 40, 28)}, what="TensorRT engine m.plan")


