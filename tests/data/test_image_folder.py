"""ImageFolder trees: real PNGs written with PIL, read as torchvision's ImageFolder reads them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from edgehal.data import build_dataset
from edgehal.data.image_folder import ImageTransform, read_image, read_image_folder
from edgehal.errors import EdgehalError

CLASSES = ("cat", "dog", "eel")


def write_class(folder: Path, *, count: int = 6, seed: int = 0) -> None:
    """``count`` PNGs of different sizes, alternately grey (L) and colour (RGB)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        h, w = 9 + 3 * i, 15 - i
        if i % 2:
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").save(folder / f"img{i}.png")
        else:
            Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L").save(folder / f"img{i}.png")


def make_tree(root: Path, splits: dict[str, tuple[str, ...]] | None = None, *, count: int = 6) -> Path:
    """``root/<split>/<class>/img<i>.png``; by default only train/ with the three classes."""
    for s, (split, classes) in enumerate((splits or {"train": CLASSES}).items()):
        for c, name in enumerate(classes):
            write_class(root / split / name, count=count, seed=100 * s + c)
    return root


@pytest.fixture
def tree(tmp_path) -> Path:
    return make_tree(tmp_path / "tree")


def torchvision_reference(folder: Path, *, mode: str, steps: list) -> ImageFolder:
    # Written out independently of ImageTransform: what a torchvision user would write.
    return ImageFolder(str(folder), loader=lambda p: Image.open(p).convert(mode),
                       transform=v2.Compose([v2.PILToTensor(), *steps]))


@pytest.mark.parametrize("transform,steps", [
    (ImageTransform(size=(12, 10)), [v2.Resize([12, 10])]),
    (ImageTransform(resize=12, crop=(10, 8)), [v2.Resize(12), v2.CenterCrop([10, 8])]),
    (ImageTransform(crop=11, mode="L"), [v2.CenterCrop([11, 11])]),
    (ImageTransform(size=16, crop=12, mode="L"), [v2.Resize([16, 16]), v2.CenterCrop([12, 12])]),
])
def test_read_image_folder_matches_torchvision_image_folder(tree, transform, steps):
    split = read_image_folder(tree / "train", transform=transform)
    ref = torchvision_reference(tree / "train", mode=transform.mode, steps=steps)
    assert split.class_names == tuple(ref.classes) == CLASSES
    assert split.files == tuple(p for p, _ in ref.samples)
    assert split.labels.dtype == torch.int64 and split.labels.tolist() == ref.targets
    assert split.x.dtype == torch.uint8 and split.x.shape == (18, *transform.output_shape)
    for i in range(len(ref)):
        assert torch.equal(split.x[i], ref[i][0]), split.files[i]
    assert torch.equal(read_image(split.files[5], transform=transform), split.x[5])


def test_read_image_folder_takes_a_relative_path_and_records_absolute_files(tree, monkeypatch):
    monkeypatch.chdir(tree)
    split = read_image_folder("train", transform=ImageTransform(size=8))
    assert all(Path(f).is_absolute() and Path(f).is_file() for f in split.files)


def test_limit_spreads_over_the_classes(tree):
    split = read_image_folder(tree / "train", transform=ImageTransform(size=8), limit=6)
    assert split.labels.tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(EdgehalError, match=r"limit \| is 0"):
        read_image_folder(tree / "train", transform=ImageTransform(size=8), limit=0)


def test_given_class_names_must_be_exactly_the_folders(tree):
    t = ImageTransform(size=8)
    split = read_image_folder(tree / "train", class_names=CLASSES, transform=t)
    assert split.class_names == CLASSES
    with pytest.raises(EdgehalError, match=rf"image folder {re.escape(str(tree / 'train'))} \| lacks class folders "
                                           r"\['fox'\] and has class folders \['eel'\] that are not classes"):
        read_image_folder(tree / "train", class_names=("cat", "dog", "fox"), transform=t)


def test_the_transform_round_trips_and_knows_its_shape():
    t = ImageTransform(resize=20, crop=[16, 12], mode="L")
    assert t.crop == (16, 12) and t.channels == 1 and t.output_shape == (1, 16, 12)
    d = t.to_dict()
    assert d == {"size": None, "resize": 20, "crop": [16, 12], "mode": "L", "interpolation": "bilinear",
                 "antialias": True, "output_shape": [1, 16, 12]}
    assert ImageTransform.from_dict(d) == t
    assert ImageTransform(size=8).output_shape == (3, 8, 8)
    with pytest.raises(EdgehalError, match=r"image transform interpolation \| is 'nearest'"):
        ImageTransform.from_dict({**d, "interpolation": "nearest"})
    with pytest.raises(EdgehalError, match=r"output_shape \| is \[3, 16, 12\]"):
        ImageTransform.from_dict({**d, "output_shape": [3, 16, 12]})


@pytest.mark.parametrize("kwargs,match", [
    ({"size": 8, "resize": 10}, r"image transform \| has both size \[8, 8\] and resize 10"),
    ({"resize": 10}, r"image transform \| gives no fixed shape \(resize 10 keeps the aspect ratio\)"),
    ({}, r"image transform \| gives no fixed shape. Note: size"),
    ({"size": [8, 0]}, r"image transform size \| is \[8, 0\]"),
    ({"size": [8, 8, 3]}, r"image transform size \| is \[8, 8, 3\]"),
    ({"crop": "8"}, r"image transform crop \| is '8'"),
    ({"resize": 1.5, "crop": 1}, r"image transform resize \| is 1.5"),
    ({"size": 8, "mode": "CMYK"}, r"image transform mode \| is 'CMYK'. Note: one of \['L', 'RGB'\]"),
    ({"size": [8, 10], "crop": [9, 9]}, r"image transform crop \| \[9, 9\] is larger than the resized image"),
    ({"resize": 8, "crop": [6, 9]}, r"image transform crop \| \[6, 9\] is larger .*shorter edge 8"),
])
def test_a_bad_transform_is_refused_naming_the_option(kwargs, match):
    with pytest.raises(EdgehalError, match=match):
        ImageTransform(**kwargs)


def test_the_data_set_holds_out_val_from_train_and_tests_on_it(tree):
    data = build_dataset("image_folder", root=str(tree), size=[10, 12], val_size=0.25, seed=1)
    assert data.name == "image_folder" and data.class_names == CLASSES and data.input_shape == (3, 10, 12)
    assert data.model_kwargs == {"dataset": "image_folder"} and data.layout == "NCHW"
    assert (len(data.train), len(data.val)) == (13, 5) and data.test is data.val  # 0.25 * 18 = 4.5, rounded up
    # Train and val together are every image once: compare against the whole folder read directly.
    whole = read_image_folder(tree / "train", transform=ImageTransform(size=(10, 12)))
    together = torch.cat([data.train.x, data.val.x]).flatten(1)
    assert sorted(map(bytes, together.numpy())) == sorted(map(bytes, whole.x.flatten(1).numpy()))
    again = build_dataset("image_folder", root=str(tree), size=[10, 12], val_size=5, seed=1)
    other = build_dataset("image_folder", root=str(tree), size=[10, 12], val_size=5, seed=2)
    assert torch.equal(again.val.x, data.val.x) and not torch.equal(other.val.x, data.val.x)
    # mean/std fitted on the train split, per channel
    f = data.train.x.float() / 255
    assert data.mean == pytest.approx(f.mean(dim=(0, 2, 3)).tolist(), abs=1e-4)
    assert data.std == pytest.approx(f.std(dim=(0, 2, 3)).tolist(), abs=1e-4)
    details = data.preprocessing().details
    assert details["tree"] == str(tree.resolve())
    assert details["image_transform"] == ImageTransform(size=(10, 12)).to_dict()
    assert details["counts"] == {"train": 13, "val": 5, "test": 5}
    assert details["sources"]["test"] == "the val split (the tree has no test/)"
    assert "5 images held out of train/ with seed 1" in details["sources"]["val"]


def test_val_and_test_folders_are_used_and_options_are_kept(tmp_path):
    root = make_tree(tmp_path / "t", {"train": CLASSES, "val": CLASSES, "test": CLASSES}, count=2)
    data = build_dataset("image_folder", root=str(root), crop=6, mode="L", mean=[0.5], std=[0.25], limit=4)
    assert data.input_shape == (1, 6, 6) and (data.mean, data.std) == ((0.5,), (0.25,))
    assert [len(s) for s in (data.train, data.val, data.test)] == [4, 4, 4]
    assert data.test is not data.val and data.preprocessing().details["sources"] == {
        "train": "train/", "val": "val/", "test": "test/"}
    test = read_image_folder(root / "test", transform=ImageTransform(crop=6, mode="L"), limit=4)
    assert torch.equal(data.test.x, test.x) and torch.equal(data.test.labels["label"], test.labels)


def test_a_tree_without_train_is_refused_naming_it(tmp_path):
    make_tree(tmp_path / "t", {"val": CLASSES}, count=1)
    with pytest.raises(EdgehalError, match=rf"image folder tree {re.escape(str(tmp_path / 't'))} \| has no train/"):
        build_dataset("image_folder", root=str(tmp_path / "t"), size=8)
    with pytest.raises(EdgehalError, match=r"image folder tree .*nowhere \| does not exist"):
        build_dataset("image_folder", root=str(tmp_path / "nowhere"), size=8)
    with pytest.raises(EdgehalError, match=r"data.root \| is not set"):
        build_dataset("image_folder", size=8)


def test_an_empty_class_folder_is_named(tree):
    (tree / "train" / "fox").mkdir()
    (tree / "train" / "fox" / "notes.txt").write_text("not an image")
    with pytest.raises(EdgehalError, match=rf"class folder {re.escape(str(tree / 'train' / 'fox'))} holds no image"):
        build_dataset("image_folder", root=str(tree), size=8)
    (tree / "train" / "cat").rename(tree / "cat")
    (tree / "train" / "cat").mkdir()
    with pytest.raises(EdgehalError, match=r"class folders .*cat, .*fox hold no image"):
        read_image_folder(tree / "train", transform=ImageTransform(size=8))


@pytest.mark.parametrize("split", ["val", "test"])
def test_a_class_missing_from_val_or_test_or_an_extra_one_is_named(tmp_path, split):
    root = make_tree(tmp_path / "t", {"train": CLASSES, split: ("cat", "dog", "fox")}, count=2)
    with pytest.raises(EdgehalError, match=rf"image folder {re.escape(str(root / split))} \| lacks class folders "
                                           r"\['eel'\] and has class folders \['fox'\] that are not classes"):
        build_dataset("image_folder", root=str(root), size=8)


@pytest.mark.parametrize("content,reason", [
    (b"this is not a PNG", "cannot identify image file"),
    (None, "truncated"),
])
def test_an_unreadable_image_is_named_with_pils_reason(tree, content, reason):
    bad = tree / "train" / "dog" / "img3.png"
    content = content if content is not None else bad.read_bytes()[:60]  # a PNG cut off in its pixel data
    bad.write_bytes(content)
    with pytest.raises(EdgehalError, match=rf"image {re.escape(str(bad))} \| could not be read \(.*{reason}"):
        build_dataset("image_folder", root=str(tree), size=8)


@pytest.mark.parametrize("options,match", [
    ({"size": 8, "mean": [0.5], "std": [0.2, 0.2, 0.2]}, r"data.options.mean \| is \[0.5\]. Note: 3 numbers"),
    ({"size": 8, "mean": [0.5] * 3, "std": [0.2, 0, 0.2]}, r"data.options.std \| is \[0.2, 0, 0.2\]"),
    ({"size": 8, "mean": [0.5] * 3}, r"data.options \| gives only one of mean and std"),
    ({"size": 8, "val_size": 18}, r"data.val_size \| holds out 18 of 18 training images"),
    ({"size": 8, "val_size": 1.0}, r"data.val_size \| is 1.0"),
    ({"size": 8, "val_size": 0}, r"has no val/ or test/ and data.val_size holds out nothing"),
    ({"mode": "RGBA", "size": 8}, r"image transform mode \| is 'RGBA'"),
])
def test_bad_options_are_refused(tree, options, match):
    with pytest.raises(EdgehalError, match=match):
        build_dataset("image_folder", root=str(tree), **options)
