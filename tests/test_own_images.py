"""A user's own images, end to end: torchvision backbones with a HAL Case1 head on an ImageFolder tree of PNGs,
trained, exported kept and pruned, quantized from the tree and checked for parity through the Python API.

The parity report's error rates are checked against ones this test computes itself with plain onnxruntime and
numpy from the PNG files, so a wrong label order, a wrong resize or a wrong head in edgehal fails here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml

import edgehal
from edgehal.checkpoint import load_checkpoint
from edgehal.config import config_from_dict
from edgehal.train import train

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CASE1 = {"name": "case1", "groups": {"ge5": list(NAMES[5:]), "lt5": list(NAMES[:5])}}
PER_CLASS = {"train": 30, "test": 6}


@pytest.fixture(scope="module")
def tree(data_root, tmp_path_factory) -> Path:
    """PNG files from MNIST: train/ and test/ (no val/: it is held out of train), one folder per class name."""
    from PIL import Image
    from torchvision.datasets import MNIST

    root = tmp_path_factory.mktemp("own_images") / "tree"
    for split, per_class in PER_CLASS.items():
        source = MNIST(str(data_root), train=split == "train", download=False)
        labels = source.targets.numpy()
        for c, name in enumerate(NAMES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in np.flatnonzero(labels == c)[:per_class]:
                Image.fromarray(source.data[i].numpy(), "L").save(folder / f"{i}.png")
    (root.parent / "case1.yaml").write_text(yaml.safe_dump(CASE1))
    return root


def train_tv_hal(tree: Path, backbone: str, out: Path) -> Path:
    # bn_momentum: MobileNetV3's own 0.01 leaves the running statistics near their initial values after the
    # few dozen steps of this test, and the model in eval mode near chance
    cfg = config_from_dict({
        "name": f"own_{backbone}", "output_dir": str(out),
        "model": {"name": "tv_hal", "backbone": backbone,
                  "aux": [{"case": str(tree.parent / "case1.yaml"), "name": "aux_case1"}], "bn_momentum": 0.3},
        "data": {"dataset": "image_folder", "root": str(tree), "val_size": 0.125,
                 "options": {"size": 32, "mode": "L"}},
        "train": {"epochs": 3, "batch_size": 16, "optimizer": "adamw", "lr": 0.002, "device": "cpu", "threads": 1}})
    return train(cfg, log=lambda _: None, progress=False)


def plain_errors(onnx_path: Path, tree: Path, parent_map: tuple[int, ...]) -> dict[str, float]:
    """Error % per head of an ONNX file on the tree's test split: PIL + torchvision's resize + onnxruntime + numpy,
    with the labels from the sorted class folder names (torchvision's ImageFolder order)."""
    import torch
    from PIL import Image
    from torchvision.transforms.v2 import functional as F

    classes = sorted(p.name for p in (tree / "test").iterdir())
    files = [(f, k) for k, c in enumerate(classes) for f in sorted((tree / "test" / c).iterdir())]
    x = torch.stack([F.resize(F.pil_to_tensor(Image.open(f).convert("L")), [32, 32], antialias=True)
                     for f, _ in files]).float().numpy()
    labels = np.array([k for _, k in files])
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    logits, aux = session.run(["logits", "aux_case1"], {"input": x})
    return {"logits": float((logits.argmax(1) != labels).mean() * 100),
            "aux_case1": float((aux.argmax(1) != np.array(parent_map)[labels]).mean() * 100)}


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v3_small"])
def test_a_torchvision_backbone_with_a_hal_head_trains_exports_and_passes_parity_on_a_folder(
        backbone, tree, tmp_path):
    checkpoint = train_tv_hal(tree, backbone, tmp_path / "run")
    ckpt = load_checkpoint(checkpoint)
    manifest = ckpt.manifest
    assert manifest.main.class_names == tuple(sorted(NAMES)) and manifest.input_shape == (1, 32, 32)
    parent_map = manifest.head("aux_case1").parent_map
    assert [manifest.main.class_names[c] for c, s in enumerate(parent_map) if s == 0] == sorted(NAMES[5:])

    kept = edgehal.export(checkpoint, tmp_path / "kept.onnx", check_samples=32, log=lambda _: None)
    pruned = edgehal.export(checkpoint, tmp_path / "pruned.onnx", aux="prune", check_samples=32, log=lambda _: None)
    assert kept.outputs == ["logits", "aux_case1"] and pruned.outputs == ["logits"]
    assert any("bit-for-bit identical" in note for note in pruned.notes)
    assert [o.name for o in onnx.load(tmp_path / "pruned.onnx").graph.output] == ["logits"]

    report = edgehal.parity(checkpoint, [tmp_path / "kept.onnx", tmp_path / "pruned.onnx"], log=lambda _: None)
    assert report and report.samples == PER_CLASS["test"] * len(NAMES)
    independent = plain_errors(tmp_path / "kept.onnx", tree, parent_map)
    # the model has learnt something, so a wrong label order or a wrong resize in edgehal would change the errors
    assert independent["logits"] < 75 and independent["aux_case1"] < 45
    for artifact in report.artifacts:
        for head in artifact.heads:
            assert head.error == pytest.approx(independent[head.head], abs=1e-9), (artifact.artifact, head.head)
            assert head.reference_error == pytest.approx(independent[head.head], abs=1e-9)


def test_int8_calibrates_on_the_trees_images_as_they_were_trained(tree, tmp_path):
    from edgehal.export.quantize import calibration_inputs

    checkpoint = train_tv_hal(tree, "mobilenet_v3_small", tmp_path / "run")
    edgehal.export(checkpoint, tmp_path / "pruned.onnx", aux="prune", check_samples=16, log=lambda _: None)
    calib = calibration_inputs(tmp_path / "pruned.onnx", tree, samples=1000, seed=0)
    # every train image (the whole train/ split), resized to the recorded 1x32x32, raw 0..255 pixels
    assert calib.shape == (PER_CLASS["train"] * len(NAMES), 1, 32, 32) and calib.max() > 200
    q = edgehal.quantize(tmp_path / "pruned.onnx", tmp_path / "int8.onnx", calib_data=tree, calib_samples=64,
                         log=lambda _: None)
    assert q.samples == 64 and q.qdq_nodes > 0
    assert edgehal.load(tmp_path / "int8.onnx").precision == "int8"
