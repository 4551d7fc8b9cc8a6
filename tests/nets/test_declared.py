"""Builder defaults from a data set's declaration: given values win, a data set without one fails clearly."""

import pytest

from edgehal.data import dataset_info
from edgehal.errors import EdgehalError
from edgehal.nets.declared import class_names_for, input_shape_for


def test_given_values_win_over_the_declaration():
    assert class_names_for(dataset="mnist", class_names=["a", "b"]) == ("a", "b")
    assert input_shape_for(dataset="mnist", input_shape=[3, 8, 8]) == (3, 8, 8)


@pytest.mark.parametrize("name", ["mnist", "svhn", "cifar10", "digits", "ujiindoorloc"])
def test_missing_values_are_the_data_sets_declared_ones(name):
    info = dataset_info(name)
    assert class_names_for(dataset=name, class_names=None) == info.class_names
    assert input_shape_for(dataset=name, input_shape=None) == info.input_shape


def test_an_unknown_data_set_names_the_argument_to_pass():
    with pytest.raises(EdgehalError, match=r"model.class_names \| are not given and data set 'imagenet' cannot tell "
                                           r"them \(is not a known data set\). Note: class_names"):
        class_names_for(dataset="imagenet", class_names=None)
    with pytest.raises(EdgehalError, match=r"model.input_shape \| is not given .* Note: input_shape"):
        input_shape_for(dataset="imagenet", input_shape=())
