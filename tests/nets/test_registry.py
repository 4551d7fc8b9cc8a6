"""The model registry: every architecture listed, options checked against the builder, duplicates refused."""

import pytest

from edgehal.errors import EdgehalError
from edgehal.nets.registry import (
    MODELS,
    create_model,
    get_builder,
    init_only_parameters,
    list_models,
    model_parameters,
    register_model,
)


def test_lists_every_architecture_and_rejects_unknown_names_and_options():
    assert list_models() == ["hal_resnet", "hdcnn", "hier_localization", "recurrent_localization", "rnn_classifier",
                             "tv_hal", "tv_hdcnn"]
    with pytest.raises(EdgehalError, match=r"model 'resnet9000' \| is not a known model.*hal_resnet"):
        create_model("resnet9000")
    with pytest.raises(EdgehalError, match="unknown option 'depth'.*widths"):
        create_model("hal_resnet", depth=3)
    with pytest.raises(EdgehalError, match="option 'building_floors' is required"):
        create_model("hier_localization")
    assert "aux" in model_parameters("hal_resnet")
    assert MODELS.place("hdcnn") == "edgehal.nets.hdcnn.hdcnn" and get_builder("hdcnn").__name__ == "hdcnn"


def test_a_second_builder_under_a_registered_name_is_refused_naming_both():
    def hal_resnet():
        return None

    with pytest.raises(EdgehalError, match="model 'hal_resnet' \\| is registered twice: by "
                                           "edgehal.nets.hal.hal_resnet and by .*hal_resnet"):
        register_model("hal_resnet")(hal_resnet)
    assert get_builder("hal_resnet").__module__ == "edgehal.nets.hal"


def test_init_only_arguments_are_left_out_when_a_checkpoint_rebuilds_the_model(tmp_path):
    assert init_only_parameters("tv_hal") == ("weights",) and init_only_parameters("hal_resnet") == ()
    absent = str(tmp_path / "gone.pt")
    with pytest.raises(EdgehalError, match=r"weights file .*gone.pt \| file not found"):
        create_model("tv_hal", weights=absent, dataset="digits", input_shape=[1, 32, 32])
    model = create_model("tv_hal", initialise=False, weights=absent, dataset="digits", input_shape=[1, 32, 32])
    assert model.manifest.model == "tv_hal"
    with pytest.raises(EdgehalError, match="unknown option 'depth'"):  # the other arguments are still checked
        create_model("hal_resnet", initialise=False, depth=3)


def test_an_init_only_argument_must_be_an_optional_keyword_of_the_builder():
    def builder(*, dataset: str = "mnist", weights: str):
        return None

    with pytest.raises(EdgehalError, match=r"model 'needs_weights' \| init-only argument 'weights' is not an optional"):
        register_model("needs_weights", init_only=("weights",))(builder)
    with pytest.raises(EdgehalError, match=r"init-only argument 'pretrained'"):
        register_model("needs_weights", init_only=("pretrained",))(builder)
    assert "needs_weights" not in list_models()
