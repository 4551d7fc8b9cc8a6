"""tv_hal and tv_hdcnn: HAL / HD-CNN heads on torchvision networks, trained, checkpointed and exported."""

import onnx
import pytest
import torch
import torchvision
import yaml

from edgehal.checkpoint import load_checkpoint
from edgehal.config import load_config
from edgehal.errors import EdgehalError
from edgehal.export.onnx import ExportOptions, export_onnx
from edgehal.nets.registry import create_model
from edgehal.train import train

DIGITS = dict(dataset="digits", input_shape=[3, 32, 32])  # 10 classes, HAL's digit superclass cases


@pytest.mark.parametrize("backbone, width", [("resnet18", 512), ("mobilenet_v3_small", 1024)])
def test_hal_heads_sit_between_the_pooled_features_and_the_classifier(backbone, width):
    hal = create_model("tv_hal", backbone=backbone, aux=["case1"], **DIGITS).eval()
    assert hal.manifest.model == "tv_hal" and hal.manifest.head_names == ("logits", "aux_case1")
    assert hal.backbone.num_features == width
    assert hal.classifier.in_features == width + 2  # features + the case1 superclass scores
    x = torch.rand(4, 3, 32, 32) * 255
    out = hal(x)
    assert out["logits"].shape == (4, 10) and out["aux_case1"].shape == (4, 2)
    with torch.no_grad():  # the aux scores feed the classifier
        hal.aux_blocks["aux_case1"].net[2].bias += 5.0
    assert not torch.allclose(hal(x)["logits"], out["logits"])


def test_baseline_and_training_only_heads_leave_the_classifier_on_the_features():
    base = create_model("tv_hal", backbone="mobilenet_v3_small", aux=[], **DIGITS)
    ds = create_model("tv_hal", backbone="mobilenet_v3_small", aux=[{"case": "case1", "feeds_main": False}], **DIGITS)
    assert base.manifest.head_names == ("logits",)
    assert base.classifier.in_features == ds.classifier.in_features == 1024
    assert not ds.manifest.head("aux_case1").feeds_main


def test_normalisation_is_in_the_graph_and_a_grayscale_input_stays_one_channel():
    gray = create_model("tv_hal", backbone="mobilenet_v3_small", dataset="mnist", mean=[0.1307], std=[0.3081],
                        aux=["case2"]).eval()
    assert gray.manifest.input_shape == (1, 28, 28)
    x = torch.randint(0, 256, (2, 1, 28, 28)).float()
    normalised = (x / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(gray.forward_features(x), gray.backbone.net(normalised.expand(-1, 3, -1, -1)))


def test_hdcnn_coarse_head_and_fine_branches_on_the_pooled_features():
    m = create_model("tv_hdcnn", backbone="mobilenet_v3_small", case="case4", branch_classes="group", **DIGITS)
    manifest = m.manifest
    assert manifest.model == "tv_hdcnn" and manifest.evaluator == "hdcnn"
    assert manifest.head_names == ("fine", "coarse", "fine_b0", "fine_b1", "fine_b2")
    assert manifest.coarse_to_fine.groups == ((0, 6, 8, 9), (2, 3, 5), (1, 4, 7))
    out = m(torch.rand(6, 3, 32, 32) * 255)
    assert out["fine"].shape == (6, 10) and out["coarse"].shape == (6, 3) and out["fine_b1"].shape == (6, 3)
    torch.testing.assert_close(out["fine"].exp().sum(1), torch.ones(6))  # log p(y|x) over all classes
    loss, parts = m.loss(out, {"label": torch.tensor([0, 1, 2, 3, 4, 5])}, aux_weight=1.0)
    loss.backward()
    assert set(parts) == {"fine", "coarse", "branches"}
    assert m.trunk.net.features[0][0].weight.grad is not None  # the torchvision trunk learns from it
    with pytest.raises(EdgehalError, match="model.combine"):
        create_model("tv_hdcnn", combine="soft", **DIGITS)


def test_bad_backbone_and_input_shape_are_refused_before_anything_is_built():
    with pytest.raises(EdgehalError, match="did you mean 'resnet18'"):
        create_model("tv_hal", backbone="resnet_18", **DIGITS)
    with pytest.raises(EdgehalError, match=r"model.input_shape \| is \[64\]"):
        create_model("tv_hal", dataset="digits", input_shape=[64])
    with pytest.raises(EdgehalError, match=r"'vit_b_16' \| cannot take input \[3, 32, 32\]"):
        create_model("tv_hal", backbone="vit_b_16", **DIGITS)


def test_weights_initialise_the_model_but_a_rebuild_from_a_checkpoint_does_not_read_them(tmp_path, data_root):
    """1 epoch of tv_hal on 300 MNIST images from a weights file, the file deleted, then kept and pruned exports."""
    weights = tmp_path / "mobilenet.pt"
    torch.save(torchvision.models.get_model("mobilenet_v3_small", weights=None).state_dict(), weights)
    config = tmp_path / "tv.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tv", "model": {"name": "tv_hal", "backbone": "mobilenet_v3_small", "weights": str(weights),
                                "aux": ["case1"]},
        "data": {"dataset": "mnist", "limit": 300},
        "train": {"epochs": 1, "batch_size": 64, "lr": 0.05, "threads": 1, "device": "cpu"}}))
    checkpoint = train(load_config(config, [f"output_dir={tmp_path / 'run'}"]), log=lambda _: None, progress=False)
    assert load_checkpoint(checkpoint).model_kwargs["weights"] == str(weights)  # recorded, for provenance
    weights.unlink()
    with pytest.raises(EdgehalError, match="file not found"):
        create_model("tv_hal", backbone="mobilenet_v3_small", weights=str(weights), aux=["case1"])
    rebuilt = load_checkpoint(checkpoint).build_model()  # the state dict replaces the file
    assert rebuilt.manifest.model == "tv_hal"
    # so does a resumed run: one more epoch from the checkpoint, without the file
    resumed = train(load_config(config, ["epochs=2", f"output_dir={tmp_path / 'resumed'}"]), resume=checkpoint,
                    log=lambda _: None, progress=False)
    assert load_checkpoint(resumed).payload["training"]["epoch"] == 2

    options = dict(check_samples=32)
    kept = export_onnx(checkpoint, tmp_path / "keep.onnx", options=ExportOptions(aux="keep", **options),
                       log=lambda _: None)
    pruned = export_onnx(checkpoint, tmp_path / "prune.onnx", options=ExportOptions(aux="prune", **options),
                         log=lambda _: None)
    assert kept.outputs == ["logits", "aux_case1"] and pruned.outputs == ["logits"]
    assert any("main output 'logits' bit-for-bit identical to the kept graph's" in n for n in pruned.notes)
    graph = onnx.load(tmp_path / "prune.onnx").graph
    assert [o.name for o in graph.output] == ["logits"]
    assert any(node.op_type == "Expand" for node in graph.node)  # the 1-channel input is repeated in the graph
    assert list(graph.input[0].type.tensor_type.shape.dim)[1].dim_value == 1


def test_superclass_mappings_may_name_the_classes_of_a_users_data(tmp_path):
    mapping = tmp_path / "kind.yaml"
    mapping.write_text("name: kind\ngroups: {animal: [cat, dog], vehicle: [car, bus, van]}\n")
    own = dict(dataset="image_folder", class_names=["bus", "car", "cat", "dog", "van"], input_shape=[3, 32, 32])
    hal = create_model("tv_hal", backbone="mobilenet_v3_small", aux=[str(mapping)], **own)
    assert hal.manifest.head("aux_kind").parent_map == (1, 1, 0, 0, 1)
    hd = create_model("tv_hdcnn", backbone="mobilenet_v3_small", case=str(mapping), **own)
    assert hd.manifest.coarse_to_fine.groups == ((2, 3), (1, 0, 4))


def test_bn_momentum_replaces_the_backbones_own_and_is_checked():
    from torch import nn

    def momenta(model):
        return {m.momentum for m in model.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}

    shape = dict(class_names=[str(i) for i in range(10)], input_shape=[1, 32, 32])
    assert momenta(create_model("tv_hal", backbone="mobilenet_v3_small", **shape)) == {0.01}  # torchvision's
    assert momenta(create_model("tv_hal", backbone="mobilenet_v3_small", bn_momentum=0.1, **shape)) == {0.1}
    hd = create_model("tv_hdcnn", backbone="mobilenet_v3_small", bn_momentum=0.2, **shape)
    assert {m.momentum for m in hd.trunk.modules() if isinstance(m, nn.BatchNorm2d)} == {0.2}
    with pytest.raises(EdgehalError, match="model.bn_momentum"):
        create_model("tv_hal", backbone="mobilenet_v3_small", bn_momentum=1.5, **shape)
