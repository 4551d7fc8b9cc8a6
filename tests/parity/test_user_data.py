"""A user's samples for parity: image folder trees and splits, class checks, the image transform, .npy inputs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgehal.data.image_folder import ImageTransform
from edgehal.errors import EdgehalError
from edgehal.manifest import Preprocessing
from edgehal.parity.user_data import (array_inputs, check_classes, folder_classes, folder_inputs, image_transform_for,
                                      is_array_file, split_folder)


def test_a_tree_is_read_by_split_and_a_split_as_it_is(colour_images):
    assert split_folder(colour_images) == (colour_images / "test", "test")
    assert split_folder(colour_images, split="train") == (colour_images / "train", "train")
    with pytest.raises(EdgehalError, match=r"has no val/ split. Note: one of its splits: \['test', 'train'\]"):
        split_folder(colour_images, split="val")
    assert split_folder(colour_images / "train") == (colour_images / "train", "train")
    with pytest.raises(EdgehalError, match="--split \\| names no split of .*: it holds class sub-folders itself"):
        split_folder(colour_images / "train", split="test")
    with pytest.raises(EdgehalError, match="does not exist"):
        split_folder(colour_images / "nowhere")
    assert is_array_file("x.NPY") and not is_array_file(colour_images)


def test_classes_are_the_sorted_folder_names_and_a_difference_is_named(colour_images, tmp_path):
    assert folder_classes(colour_images / "test") == ("blue", "dark", "green", "red")
    with pytest.raises(EdgehalError, match="has no class sub-folders"):
        folder_classes(tmp_path)
    check_classes(("a", "b"), ("b", "a"), folder=tmp_path, what="the reference")  # order is the model's, not a fault
    with pytest.raises(EdgehalError, match=r"classes differ from the reference's: lacks \['c'\]; has classes the "
                                           r"reference has not: \['x'\]. Note: one sub-folder per class"):
        check_classes(("a", "x"), ("a", "c"), folder=tmp_path, what="the reference")


def test_the_transform_comes_from_metadata_else_the_input_shape_else_input_size():
    recorded = ImageTransform(size=None, resize=40, crop=(32, 32), mode="RGB")
    pre = Preprocessing(layout="NCHW", input_shape=(3, 32, 32), details={"image_transform": recorded.to_dict()})
    assert image_transform_for(preprocessing=pre, input_shape=(-1, 3, 32, 32)) == recorded
    assert image_transform_for(preprocessing=pre, input_shape=(-1, 3, -1, -1)) == recorded
    grey = image_transform_for(preprocessing=None, input_shape=(-1, 1, 28, 20))
    assert (grey.size, grey.mode, grey.output_shape) == ((28, 20), "L", (1, 28, 20))
    plain = Preprocessing(layout="NCHW", input_shape=(3, 8, 8))  # metadata without a recorded transform
    assert image_transform_for(preprocessing=plain, input_shape=(1, 3, 8, 8)).output_shape == (3, 8, 8)
    sized = image_transform_for(preprocessing=None, input_shape=(-1, 3, -1, -1), input_size=(64, 48))
    assert (sized.output_shape, sized.mode) == ((3, 64, 48), "RGB")
    with pytest.raises(EdgehalError, match="has dynamic height or width .* Note: --input-size H,W"):
        image_transform_for(preprocessing=None, input_shape=(-1, 3, -1, -1))
    with pytest.raises(EdgehalError, match="--input-size 16,16 \\| differs from the reference's input shape \\(8,8\\)"):
        image_transform_for(preprocessing=None, input_shape=(-1, 3, 8, 8), input_size=(16, 16))
    with pytest.raises(EdgehalError, match="has 4 channels. Note: 1 \\(mode L\\) or 3 \\(RGB\\)"):
        image_transform_for(preprocessing=None, input_shape=(-1, 4, 8, 8))
    with pytest.raises(EdgehalError, match="has shape \\[-1, 520\\]. Note: an image input"):
        image_transform_for(preprocessing=None, input_shape=(-1, 520))


def test_folder_inputs_are_raw_pixels_labelled_in_the_models_class_order(tmp_path):
    for name, value in (("a", 10), ("b", 200)):
        (tmp_path / name).mkdir()
        Image.fromarray(np.full((4, 6), value, dtype=np.uint8), "L").save(tmp_path / name / "0.png")
    transform = ImageTransform(size=(4, 6), resize=None, crop=None, mode="L")
    inputs = folder_inputs(tmp_path, transform=transform, split="mine")
    assert inputs.x.dtype == np.uint8 and inputs.x.shape == (2, 1, 4, 6)
    assert inputs.x[:, 0, 0, 0].tolist() == [10, 200] and inputs.labels["label"].tolist() == [0, 1]
    assert (inputs.split, inputs.dataset) == ("mine", "image_folder")
    swapped = folder_inputs(tmp_path, transform=transform, split="mine", class_names=("b", "a"))
    # labels index the model's classes: b is its class 0
    assert swapped.x[:, 0, 0, 0].tolist() == [10, 200] and swapped.labels["label"].tolist() == [1, 0]


def test_array_inputs_with_and_without_labels(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(24, dtype=np.float32).reshape(6, 4))
    np.save(tmp_path / "y.npy", np.array([0, 1, 2, 0, 1, 2]))
    inputs = array_inputs(tmp_path / "x.npy", labels=tmp_path / "y.npy", limit=4)
    assert inputs.x.shape == (4, 4) and inputs.labels["label"].tolist() == [0, 1, 2, 0] and inputs.split == "x"
    assert array_inputs(tmp_path / "x.npy").labels == {}
    np.save(tmp_path / "short.npy", np.array([0, 1]))
    with pytest.raises(EdgehalError, match="has 2 labels. Note: one per input of --data \\(6\\)"):
        array_inputs(tmp_path / "x.npy", labels=tmp_path / "short.npy")
    np.save(tmp_path / "float.npy", np.zeros(6))
    with pytest.raises(EdgehalError, match="holds float64 values of shape \\(6,\\). Note: one integer class index"):
        array_inputs(tmp_path / "x.npy", labels=tmp_path / "float.npy")
    np.save(tmp_path / "flat.npy", np.zeros(6))
    with pytest.raises(EdgehalError, match="holds an array of shape \\(6,\\). Note: raw inputs \\[N, ...\\]"):
        array_inputs(tmp_path / "flat.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(EdgehalError, match="is not a readable .npy"):
        array_inputs(tmp_path / "objects.npy")
    with pytest.raises(EdgehalError, match="file not found"):
        array_inputs(tmp_path / "missing.npy")
