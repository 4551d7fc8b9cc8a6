"""HAL's heads on any feature extractor: wiring, state_dict keys, and the manifest's heads from the config."""

import pytest
import torch
from torch import nn

from edgehal.errors import EdgehalError
from edgehal.hierarchy import CIFAR10_CLASSES, DIGIT_CLASSES, get_case
from edgehal.manifest import HeadManifest
from edgehal.nets.hal_head import HALClassifier, aux_specs, hal_heads
from edgehal.nets.registry import create_model


class _Tiny(HALClassifier):
    """A linear feature extractor under HAL's heads."""

    def __init__(self, manifest: HeadManifest, hidden: list[int]) -> None:
        super().__init__()
        self.manifest = manifest
        self.features = nn.Linear(4, 6)
        self.init_heads(features=6, aux_hidden=hidden, dropout=0.0)

    def forward_features(self, x):
        return self.features(x)


def _tiny(aux):
    heads, hidden = hal_heads(dataset="mnist", class_names=None, aux=aux, aux_hidden=5)
    torch.manual_seed(0)
    return _Tiny(HeadManifest(model="tiny", input_name="input", input_shape=(4,), heads=tuple(heads)), hidden).eval()


def test_feeding_aux_scores_are_concatenated_into_the_classifier_and_a_training_only_one_is_not():
    m = _tiny(["case1", {"case": "case4", "feeds_main": False, "hidden": 3}])
    assert m.feeding == ["aux_case1"]
    assert m.classifier.in_features == 6 + 2 and m.aux_blocks["aux_case4"].net[0].out_features == 3
    x = torch.randn(3, 4)
    out = m(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"logits": (3, 10), "aux_case1": (3, 2), "aux_case4": (3, 3)}
    with torch.no_grad():
        m.aux_blocks["aux_case4"].net[2].bias += 5.0
    assert torch.equal(m(x)["logits"], out["logits"])       # training-only: the main output does not see it
    with torch.no_grad():
        m.aux_blocks["aux_case1"].net[2].bias += 5.0
    assert not torch.allclose(m(x)["logits"], out["logits"])


def test_head_modules_sit_on_the_model_itself_so_checkpoint_keys_do_not_move():
    keys = set(_tiny(["case2"]).state_dict())
    assert {"aux_blocks.aux_case2.net.0.weight", "aux_blocks.aux_case2.net.2.bias", "classifier.weight",
            "classifier.bias"} <= keys


def test_both_hal_architectures_build_their_heads_here():
    resnet = create_model("hal_resnet", dataset="mnist", aux=["case3"], widths=[4], blocks=[1], strides=[1])
    rnn = create_model("rnn_classifier", dataset="mnist", aux=["case3"], hidden_size=8)
    assert isinstance(resnet, HALClassifier) and isinstance(rnn, HALClassifier)
    assert resnet.manifest.heads == rnn.manifest.heads


def test_class_names_come_from_the_data_set_when_not_given():
    heads, _ = hal_heads(dataset="cifar10", class_names=None, aux=["case4"], aux_hidden=8)
    assert heads[0].class_names == CIFAR10_CLASSES
    assert heads[1].parent_map == get_case("cifar10", "case4").mapping
    heads, _ = hal_heads(dataset="digits", class_names=None, aux=[], aux_hidden=8)
    assert heads[0].class_names == DIGIT_CLASSES
    heads, _ = hal_heads(dataset="mine", class_names=["cat", "dog"], aux=[], aux_hidden=8)
    assert heads[0].class_names == ("cat", "dog")
    with pytest.raises(EdgehalError, match=r"model.class_names \| are not given and data set 'mine'"):
        hal_heads(dataset="mine", class_names=None, aux=[], aux_hidden=8)


def test_a_mapping_file_is_checked_against_the_models_class_count(tmp_path):
    mapping = tmp_path / "pets.yaml"
    mapping.write_text("name: pets\ngroups: {0: [0, 1], 1: [2, 3]}\nnames: [small, large]\n")
    heads, _ = hal_heads(dataset="mine", class_names=["a", "b", "c", "d"], aux=[str(mapping)], aux_hidden=8)
    assert heads[1].name == "aux_pets" and heads[1].parent_map == (0, 0, 1, 1)
    with pytest.raises(EdgehalError, match="class 4 is missing"):
        hal_heads(dataset="mine", class_names=list("abcdef"), aux=[str(mapping)], aux_hidden=8)


def test_aux_entries_are_checked_for_their_keys():
    assert aux_specs(["case1", {"case": "case2", "name": "x"}]) == [{"case": "case1"}, {"case": "case2", "name": "x"}]
    with pytest.raises(EdgehalError, match=r"model.aux\[1\] \| has keys \['cse'\]"):
        aux_specs(["case1", {"cse": "case2"}])
    with pytest.raises(EdgehalError, match="maps 10 classes"):
        hal_heads(dataset="mnist", class_names=["a", "b"], aux=["case1"], aux_hidden=8)
