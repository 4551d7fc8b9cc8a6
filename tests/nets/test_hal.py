import pytest
import torch

from edgehal.errors import EdgehalError
from edgehal.nets.registry import create_model


def test_baseline_has_one_head_and_hal_feeds_aux_scores_to_classifier():
    base = create_model("hal_resnet", dataset="mnist")
    assert base.manifest.head_names == ("logits",)
    hal = create_model("hal_resnet", dataset="mnist", aux=["case1", {"case": "case4"}])
    assert hal.manifest.head_names == ("logits", "aux_case1", "aux_case4")
    assert hal.classifier.in_features == base.classifier.in_features + 2 + 3
    x = torch.rand(4, 1, 28, 28) * 255
    out = hal.eval()(x)
    assert out["logits"].shape == (4, 10) and out["aux_case4"].shape == (4, 3)
    # the main output depends on the aux block's parameters (it feeds the classifier)
    with torch.no_grad():
        hal.aux_blocks["aux_case1"].net[2].bias += 5.0
    assert not torch.allclose(hal(x)["logits"], out["logits"])


def test_training_only_branch_does_not_feed_the_classifier():
    ds = create_model("hal_resnet", dataset="mnist", aux=[{"case": "case1", "feeds_main": False}]).eval()
    assert not ds.manifest.head("aux_case1").feeds_main
    x = torch.rand(2, 1, 28, 28) * 255
    before = ds(x)["logits"]
    with torch.no_grad():
        ds.aux_blocks["aux_case1"].net[2].bias += 5.0
    assert torch.equal(ds(x)["logits"], before)


def test_presets_configurable_depth_and_width():
    m = create_model("hal_resnet", dataset="cifar10", aux=["case4"], widths=[8, 16, 32], blocks=[1, 1, 1])
    assert m.manifest.input_shape == (3, 32, 32)
    assert m.manifest.head("aux_case4").num_outputs == 5
    assert m.eval()(torch.rand(2, 3, 32, 32) * 255)["logits"].shape == (2, 10)
    with pytest.raises(EdgehalError, match="differ in length"):
        create_model("hal_resnet", widths=[8, 16], blocks=[1, 1, 1])
    with pytest.raises(EdgehalError, match="preset 'imagenet'"):
        create_model("hal_resnet", preset="imagenet")
    with pytest.raises(EdgehalError, match="model.aux\\[0\\]"):
        create_model("hal_resnet", aux=[{"cse": "case1"}])
