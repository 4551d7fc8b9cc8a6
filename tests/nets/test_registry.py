"""The model registry: every architecture listed, options checked against the builder, duplicates refused."""

import pytest

from edgehal.errors import EdgehalError
from edgehal.nets.registry import MODELS, create_model, get_builder, list_models, model_parameters, register_model


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
