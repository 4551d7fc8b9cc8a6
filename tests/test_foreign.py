"""Foreign PyTorch files: real files of every kind, told apart without running their code, and loaded."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from edgehal.errors import EdgehalError
from edgehal.foreign import identify, load_module, read_head_manifest


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 5)).eval()


def save_foreign_files(folder: Path) -> dict[str, Path]:
    """One file of each foreign kind, written the way their users write them."""
    import torchvision

    net, x = small_net(), torch.rand(2, 3, 16, 16)
    paths = {name: folder / name for name in
             ("resnet18_state_dict.pt", "nested_state_dict.pt", "pickled.pt", "scripted.pt", "traced.pt",
              "program.pt2")}
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), paths["resnet18_state_dict.pt"])
    torch.save({"epoch": 3, "state_dict": net.state_dict()}, paths["nested_state_dict.pt"])
    torch.save(net, paths["pickled.pt"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        torch.jit.script(net).save(str(paths["scripted.pt"]))
        torch.jit.trace(net, x).save(str(paths["traced.pt"]))
    batch = torch.export.Dim("batch", min=1)
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes=({0: batch},)), paths["program.pt2"])
    return paths


@pytest.fixture(scope="module")
def foreign_files(tmp_path_factory) -> dict[str, Path]:
    return save_foreign_files(tmp_path_factory.mktemp("foreign"))


def test_identify_tells_every_kind_apart(foreign_files, digits_checkpoint, tmp_path):
    kinds = {name: identify(p) for name, p in foreign_files.items()}
    assert {name: f.kind for name, f in kinds.items()} == {
        "resnet18_state_dict.pt": "state-dict", "nested_state_dict.pt": "state-dict",
        "pickled.pt": "pickled-module", "scripted.pt": "torchscript", "traced.pt": "torchscript",
        "program.pt2": "exported-program"}
    assert kinds["resnet18_state_dict.pt"].description.startswith(
        "a state dict of 122 tensors (conv1.weight, bn1.weight, bn1.bias, ...)")
    assert "under 'state_dict'" in kinds["nested_state_dict.pt"].description
    assert "torch.nn.modules.container.Sequential" in kinds["pickled.pt"].description
    assert identify(digits_checkpoint).kind == "edgehal-checkpoint"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(digits_checkpoint.read_bytes()[:2000])
    found = identify(truncated)
    assert found.kind == "unknown" and found.corrupt and found.description.startswith("corrupt or truncated")
    text = tmp_path / "notes.pt"
    text.write_text("not a model\n")
    assert identify(text).corrupt


def test_a_pickle_of_foreign_classes_is_named_without_being_loaded(tmp_path):
    # A class weights_only refuses is named, and its code never runs.
    path = tmp_path / "odd.pt"
    torch.save({"when": __import__("datetime").date(2024, 1, 2)}, path)
    found = identify(path)
    assert found.kind == "unknown" and not found.corrupt and "datetime.date" in found.description


def test_load_module_loads_what_carries_its_architecture(foreign_files):
    x = torch.rand(3, 3, 16, 16)
    want = small_net()(x)
    for name in ("scripted.pt", "traced.pt", "program.pt2"):
        module = load_module(foreign_files[name])
        assert torch.allclose(module(x), want, atol=1e-6), name


def test_a_pickled_module_loads_only_when_trusted(foreign_files):
    with pytest.raises(EdgehalError, match=r"unpickling runs whatever code the file names.*--trust-pickle"):
        load_module(foreign_files["pickled.pt"])
    module = load_module(foreign_files["pickled.pt"], trust_pickle=True)
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(module(x), small_net()(x)) and not module.training


def test_a_state_dict_needs_the_model_and_must_fit_it(foreign_files):
    import torchvision

    with pytest.raises(EdgehalError, match="weights without an architecture"):
        load_module(foreign_files["resnet18_state_dict.pt"])
    resnet = load_module(foreign_files["resnet18_state_dict.pt"], model=torchvision.models.resnet18(weights=None))
    stored = torch.load(foreign_files["resnet18_state_dict.pt"], weights_only=True)
    assert torch.equal(resnet.state_dict()["fc.weight"], stored["fc.weight"]) and not resnet.training
    net = load_module(foreign_files["nested_state_dict.pt"], model=nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)))
    assert torch.equal(net[4].weight, small_net()[4].weight)
    with pytest.raises(EdgehalError, match=r"shape mismatches \(first fc\.weight: file \[1000, 512\], "
                                           r"model \[10, 512\]\)"):
        load_module(foreign_files["resnet18_state_dict.pt"], model=torchvision.models.resnet18(num_classes=10))
    with pytest.raises(EdgehalError, match=r"122 unexpected keys \(conv1\.weight, bn1\.weight, bn1\.bias, \.\.\.\)"):
        load_module(foreign_files["resnet18_state_dict.pt"], model=small_net())
    with pytest.raises(EdgehalError, match="carries its own architecture"):
        load_module(foreign_files["scripted.pt"], model=small_net())


def test_read_head_manifest_short_form_and_preprocessing(tmp_path):
    path = tmp_path / "heads.yaml"
    path.write_text("heads:\n  - {name: logits, kind: main, level: 0, class_names: [a, b]}\n"
                    "evaluator: classification\n"
                    "preprocessing: {layout: NCHW, input_shape: [3, 8, 8], input_range: [0, 255]}\n")
    manifest, pre = read_head_manifest(path, input_shape=[3, 8, 8], model="net")
    assert manifest.model == "net" and manifest.input_name == "input" and manifest.input_shape == (3, 8, 8)
    assert manifest.head_names == ("logits",) and pre.input_range == (0.0, 255.0)
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text("input_shape: [3, 8, 8]\nheads: [{name: y, kind: main, level: 0}]\n")
    with pytest.raises(EdgehalError, match=r"--input-shape \| is \[3, 9, 9\] but fixed.yaml says input_shape"):
        read_head_manifest(fixed, input_shape=[3, 9, 9])


def test_read_head_manifest_takes_what_to_dict_writes(tmp_path, digits_checkpoint):
    import json

    from edgehal.checkpoint import load_checkpoint

    manifest = load_checkpoint(digits_checkpoint).manifest
    path = tmp_path / "heads.json"
    path.write_text(json.dumps(manifest.to_dict()))
    assert read_head_manifest(path) == (manifest, None)


def test_a_foreign_file_read_as_an_artifact_says_what_it_is(foreign_files):
    from edgehal.artifact import read_artifact

    with pytest.raises(EdgehalError, match=r"is a torch\.export program, not an edgehal artifact\. Note: export it"):
        read_artifact(foreign_files["program.pt2"])
    with pytest.raises(EdgehalError, match=r"is a TorchScript archive \(torch\.jit\.save\), not an edgehal checkpoint"):
        read_artifact(foreign_files["scripted.pt"])
