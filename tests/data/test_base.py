"""The data set registry and what each data set declares before it is read."""

import pytest

from edgehal.data import DatasetInfo, build_dataset, dataset_info, dataset_parameters, list_datasets, register_dataset
from edgehal.data.base import DATASETS
from edgehal.errors import EdgehalError
from edgehal.hierarchy import CIFAR10_CLASSES, DIGIT_CLASSES


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made by the test are gone after it (the built-in ones stay)."""
    DATASETS.load_builtin()
    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))
    monkeypatch.setattr(DATASETS, "_places", dict(DATASETS._places))


def test_builtin_data_sets_and_their_builders_parameters():
    assert list_datasets() == ["cifar10", "digits", "image_folder", "mnist", "svhn", "ujiindoorloc"]
    assert {"root", "val_size", "seed", "limit", "download"} <= set(dataset_parameters("mnist"))
    assert "undetected_dbm" in dataset_parameters("ujiindoorloc") and "download" not in dataset_parameters("digits")
    with pytest.raises(EdgehalError, match=r"data set 'imagenet' \| is not a known data set. Note: one of "
                                           r"\['cifar10', 'digits', 'image_folder', 'mnist', 'svhn', 'ujiindoorloc'\]"):
        dataset_parameters("imagenet")


def test_every_builtin_data_set_declares_its_shape_and_classes():
    assert dataset_info("mnist") == DatasetInfo(input_shape=(1, 28, 28), class_names=DIGIT_CLASSES,
                                                model_kwargs={"dataset": "mnist"})
    assert dataset_info("cifar10").class_names == CIFAR10_CLASSES and dataset_info("svhn").input_shape == (3, 32, 32)
    uji = dataset_info("ujiindoorloc")
    assert uji.layout == "NC" and uji.input_shape == (520,) and len(uji.class_names) == 13
    assert uji.model_kwargs == {"building_floors": [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3, 4]]}


def test_declarations_agree_with_the_loaded_data():
    # digits needs no files; MNIST and UJIIndoorLoc are compared on the real files in their own tests
    info, data = dataset_info("digits"), build_dataset("digits", limit=8)
    assert (info.input_shape, info.class_names, info.layout) == (data.input_shape, data.class_names, data.layout)
    assert info.model_kwargs == data.model_kwargs


def test_a_registered_data_set_without_a_declaration_and_a_duplicate(scratch_registry):
    @register_dataset("scratch")
    def scratch(*, root=None, size: int = 3):
        raise AssertionError("not built in this test")

    assert "scratch" in list_datasets() and set(dataset_parameters("scratch")) == {"root", "size"}
    with pytest.raises(EdgehalError, match=r"data set 'scratch' \| declares no input shape or classes"):
        dataset_info("scratch")

    def mnist(*, root=None):
        raise AssertionError("never registered")

    with pytest.raises(EdgehalError, match=r"data set 'mnist' \| is registered twice: by edgehal.data.images.mnist "
                                           r"and by .*mnist"):
        register_dataset("mnist", info=DatasetInfo(input_shape=(1,), class_names=("a",)))(mnist)


def test_a_declaration_is_checked():
    with pytest.raises(EdgehalError, match="layout 'NHWC' is unknown"):
        DatasetInfo(input_shape=(28, 28, 1), class_names=("a",), layout="NHWC")
    assert DatasetInfo(input_shape=[2, 3], class_names=[1, 2]).class_names == ("1", "2")
