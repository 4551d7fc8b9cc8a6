"""torchvision networks as feature extractors: classifier removed, local weights loaded or refused by key."""

import pytest
import torch
import torchvision
from torch import nn

from edgehal.errors import EdgehalError
from edgehal.nets.torchvision_backbones import (
    backbone_features,
    check_input,
    classification_backbones,
)


def reference_features(net: nn.Module, classifier: str) -> nn.Module:
    """The torchvision network with its final Linear replaced by hand: what backbone_features must compute."""
    parent, _, leaf = classifier.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, leaf, nn.Identity())
    return net.eval()


def test_lists_torchvision_classification_builders_only():
    names = classification_backbones()
    assert {"resnet18", "mobilenet_v3_small", "efficientnet_b0", "vit_b_16"} <= set(names)
    assert "fasterrcnn_resnet50_fpn" not in names and "raft_small" not in names  # detection, optical flow


@pytest.mark.parametrize("name, classifier, width", [
    ("resnet18", "fc", 512),
    ("mobilenet_v3_small", "classifier.3", 1024),
    ("efficientnet_b0", "classifier.1", 1280),
])
def test_the_final_linear_is_removed_and_the_module_returns_pooled_features(name, classifier, width):
    features, num_features = backbone_features(name)
    assert num_features == width == features.num_features
    assert isinstance(features.net.get_submodule(classifier), nn.Identity)
    assert not any(isinstance(m, nn.Linear) and m.out_features == 1000 for m in features.modules())
    out = features.eval()(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, width)
    check_input(features, backbone=name, input_shape=(3, 32, 32))


def test_unknown_names_and_networks_without_a_linear_classifier_are_refused():
    with pytest.raises(EdgehalError, match=r"backbone 'resnet81' \| is not a torchvision classification network"
                                           r".*did you mean 'resnet18'"):
        backbone_features("resnet81")
    with pytest.raises(EdgehalError, match=r"backbone 'mobilenet_v3_smal' .*did you mean 'mobilenet_v3_small'"):
        backbone_features("mobilenet_v3_smal")
    with pytest.raises(EdgehalError, match=r"'squeezenet1_1' \| has no final Linear classifier to remove"):
        backbone_features("squeezenet1_1")
    with pytest.raises(EdgehalError, match=r"input has 4 channels.*3 channels, or 1"):
        backbone_features("resnet18", in_channels=4)


def test_an_input_the_network_cannot_take_is_refused_naming_it():
    features, _ = backbone_features("mobilenet_v3_small")
    with pytest.raises(EdgehalError, match=r"cannot take input \[3, 32\]"):
        check_input(features, backbone="mobilenet_v3_small", input_shape=(3, 32))
    assert features.training  # the probe leaves the mode as it found it


def test_weights_of_the_torchvision_network_load_and_its_own_head_is_ignored(tmp_path):
    # A user's fine-tuned 10-class network: its head does not fit the 1000-class builder, and is dropped.
    net = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=10)
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, tmp_path / "wrapped.pt")
    torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "ddp.pt")
    want = reference_features(net, "classifier.3")
    x = torch.rand(2, 3, 32, 32)
    for file in ("plain.pt", "wrapped.pt", "ddp.pt"):
        features, _ = backbone_features("mobilenet_v3_small", weights=tmp_path / file)
        assert torch.equal(features.eval()(x), want(x)), file
    # a file saved from the headless extractor loads as well
    torch.save(features.net.state_dict(), tmp_path / "headless.pt")
    again, _ = backbone_features("mobilenet_v3_small", weights=tmp_path / "headless.pt")
    assert torch.equal(again.eval()(x), want(x))


def test_weights_that_do_not_fit_are_refused_naming_keys_and_shapes(tmp_path):
    state = torchvision.models.get_model("mobilenet_v3_small", weights=None).state_dict()
    cases = {
        "missing": ({k: v for k, v in state.items() if k != "features.0.0.weight"},
                    r"1 missing keys \(features.0.0.weight\)"),
        "unexpected": ({**state, "extra.weight": torch.zeros(1)}, r"1 unexpected keys \(extra.weight\)"),
        "shape": ({**state, "features.0.0.weight": torch.zeros(16, 1, 3, 3)},
                  r"1 shape mismatches \(first features.0.0.weight: file \[16, 1, 3, 3\], model \[16, 3, 3, 3\]\)"),
        "resnet": (torchvision.models.get_model("resnet18", weights=None).state_dict(),
                   r"does not fit torchvision's mobilenet_v3_small: \d+ missing keys \(features.0.0.weight"),
    }
    for name, (bad, message) in cases.items():
        torch.save(bad, tmp_path / f"{name}.pt")
        with pytest.raises(EdgehalError, match=message):
            backbone_features("mobilenet_v3_small", weights=tmp_path / f"{name}.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(EdgehalError, match=r"holds no state dict"):
        backbone_features("mobilenet_v3_small", weights=tmp_path / "list.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(EdgehalError, match=r"cannot be read as tensors only"):
        backbone_features("mobilenet_v3_small", weights=tmp_path / "junk.pt")
    with pytest.raises(EdgehalError, match=r"nothere.pt \| file not found"):
        backbone_features("mobilenet_v3_small", weights=tmp_path / "nothere.pt")


def test_a_grayscale_input_is_repeated_to_three_channels_in_the_graph():
    gray, width = backbone_features("resnet18", in_channels=1)
    gray.eval()
    x = torch.rand(2, 1, 32, 32)
    assert gray(x).shape == (2, width)
    assert torch.equal(gray(x), gray.net(x.repeat(1, 3, 1, 1)))
    assert gray.net.conv1.in_channels == 3  # the pretrained stem is kept as it is
