"""HAL heads on a user's own backbone: feature width found, superclasses by class name, loss and export."""

import numpy as np
import pytest
import torch
from torch import nn

from edgehal.errors import EdgehalError
from edgehal.export.graph import prune_outputs, run_onnx
from edgehal.export.onnx import ExportOptions, _torch_export
from edgehal.nets.base import EdgehalModel
from edgehal.nets.custom import attach_hal_heads

CLASSES = ["cat", "dog", "car", "bus", "apple"]
SUPERCLASSES = {"kind": {"animal": ["cat", "dog"], "vehicle": ["car", "bus"], "fruit": ["apple"]},
                "legs": {"four": ["cat", "dog"], "none": ["car", "bus", "apple"]}}


def conv_backbone() -> nn.Module:
    """Features as a map [N, 8, h, w]: attach_hal_heads pools them."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())


def test_heads_from_class_names_on_a_feature_map_backbone():
    model = attach_hal_heads(conv_backbone(), input_shape=[3, 16, 16], class_names=CLASSES,
                             superclasses=SUPERCLASSES)
    assert isinstance(model, EdgehalModel)
    manifest = model.manifest
    assert manifest.model == "custom_hal" and manifest.input_shape == (3, 16, 16)
    assert manifest.head_names == ("logits", "kind", "legs")
    kind = manifest.head("kind")
    assert kind.class_names == ("animal", "vehicle", "fruit") and kind.parent_map == (0, 0, 1, 1, 2)
    assert manifest.head("legs").parent_map == (0, 0, 1, 1, 1) and kind.feeds_main
    assert model.classifier.in_features == 8 + 3 + 2  # pooled features + both heads' scores
    out = model(torch.rand(4, 3, 16, 16) * 255)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"logits": (4, 5), "kind": (4, 3), "legs": (4, 2)}
    assert model.training  # finding the width left the backbone's mode alone


def test_the_loss_trains_every_head_and_the_backbone():
    torch.manual_seed(0)
    model = attach_hal_heads(nn.Sequential(nn.Linear(6, 16), nn.ReLU()), input_shape=[6], class_names=CLASSES,
                             superclasses=SUPERCLASSES, scale=1.0)
    x, y = torch.randn(40, 6), torch.arange(40) % 5
    x[torch.arange(40), y] += 3.0  # separable: class c lights up feature c
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    first = None
    for _ in range(60):
        loss, parts = model.loss(model(x), {"label": y}, aux_weight=0.5)
        first = first if first is not None else parts
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert set(parts) == {"logits", "kind", "legs"}
    assert all(parts[h] < first[h] / 2 for h in parts)
    assert model.backbone[0].weight.grad.abs().sum() > 0
    assert (model.eval()(x)["logits"].argmax(1) == y).float().mean() > 0.9


def test_normalisation_runs_in_the_graph_on_raw_values():
    backbone = nn.Flatten()
    model = attach_hal_heads(backbone, input_shape=[2, 3], class_names=["a", "b"], mean=[0.5, 0.25],
                             std=[0.5], scale=0.1)
    x = torch.rand(3, 2, 3) * 10
    want = (x * 0.1 - torch.tensor([0.5, 0.25]).view(1, 2, 1)) / 0.5
    torch.testing.assert_close(model.forward_features(x), want.flatten(1))
    with pytest.raises(EdgehalError, match=r"mean \| has 3 values. Note: 1, or 2"):
        attach_hal_heads(backbone, input_shape=[2, 3], class_names=["a", "b"], mean=[0.1, 0.2, 0.3])


def test_a_training_only_head_does_not_feed_the_classifier():
    model = attach_hal_heads(conv_backbone(), input_shape=[3, 16, 16], class_names=CLASSES,
                             superclasses={"kind": SUPERCLASSES["kind"]}, feeds_main=False).eval()
    assert model.classifier.in_features == 8 and not model.manifest.head("kind").feeds_main
    x = torch.rand(2, 3, 16, 16) * 255
    before = model(x)["logits"]
    with torch.no_grad():
        model.aux_blocks["kind"].net[2].bias += 5.0
    assert torch.equal(model(x)["logits"], before)


def test_exports_with_named_outputs_and_prunes_the_aux_head():
    model = attach_hal_heads(conv_backbone(), input_shape=[3, 16, 16], class_names=CLASSES,
                             superclasses=SUPERCLASSES).eval()
    x = (np.random.default_rng(0).random((4, 3, 16, 16)) * 255).astype(np.float32)
    kept = _torch_export(model, "input", model.manifest.head_names, x, ExportOptions())
    got = run_onnx(kept.SerializeToString(), {"input": x})
    with torch.no_grad():
        want = model(torch.from_numpy(x))
    for name in model.manifest.head_names:
        np.testing.assert_allclose(got[name], want[name].numpy(), atol=1e-4)
    pruned = prune_outputs(kept, ["logits"])
    assert [o.name for o in pruned.graph.output] == ["logits"]
    assert np.array_equal(run_onnx(pruned.SerializeToString(), {"input": x})["logits"], got["logits"])


def test_bad_superclasses_are_refused_naming_the_class():
    def attach(superclasses, classes=CLASSES):
        return attach_hal_heads(conv_backbone(), input_shape=[3, 16, 16], class_names=classes,
                                superclasses=superclasses)

    with pytest.raises(EdgehalError, match=r"superclasses\['kind'\]\['animal'\] \| names the unknown class 'dgo'. "
                                           r"Note: did you mean 'dog'\?"):
        attach({"kind": {"animal": ["cat", "dgo"], "other": ["car", "bus", "apple"]}})
    with pytest.raises(EdgehalError, match=r"puts class 'dog' in both 'animal' and 'other'"):
        attach({"kind": {"animal": ["cat", "dog"], "other": ["dog", "car", "bus", "apple"]}})
    with pytest.raises(EdgehalError, match=r"leaves out the class 'apple'"):
        attach({"kind": {"animal": ["cat", "dog"], "other": ["car", "bus"]}})
    with pytest.raises(EdgehalError, match=r"duplicate head names"):
        attach({"logits": {"animal": ["cat", "dog"], "other": ["car", "bus", "apple"]}})
    with pytest.raises(EdgehalError, match=r"\['kind'\]\['animal'\] \| is 'cat'"):
        attach({"kind": {"animal": "cat", "other": ["dog", "car", "bus", "apple"]}})
    with pytest.raises(EdgehalError, match=r"class_names \| repeats 'cat'"):
        attach({}, classes=["cat", "cat", "dog"])


class TupleOut(nn.Module):
    def forward(self, x):
        return x.flatten(1), x.mean()


@pytest.mark.parametrize("backbone, input_shape, message", [
    (conv_backbone(), [1, 3, 16, 16], r"fails on a zero input of shape \[2, 1, 3, 16, 16\] \(RuntimeError"),
    (conv_backbone(), [4, 16, 16], r"fails on a zero input of shape \[2, 4, 16, 16\]"),
    (nn.Conv1d(3, 4, 3), [3, 10], r"returns features of shape \[2, 4, 8\] for an input of shape \[2, 3, 10\]"),
    (nn.Flatten(0), [3], r"returns features of shape \[6\]"),
    (TupleOut(), [3], r"returns a tuple"),
])
def test_a_backbone_that_does_not_give_features_is_refused_naming_the_shape(backbone, input_shape, message):
    with pytest.raises(EdgehalError, match=message):
        attach_hal_heads(backbone, input_shape=input_shape, class_names=CLASSES)
