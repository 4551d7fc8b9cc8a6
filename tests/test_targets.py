"""A head's target: its own label, else the main label lifted through its parent_map (numpy and torch)."""

import numpy as np
import pytest
import torch

from edgehal.errors import EdgehalError
from edgehal.hierarchy import DIGIT_CLASSES, aux_head_from_case, get_case
from edgehal.manifest import Head, HeadManifest
from edgehal.targets import head_target, head_targets

MAIN = Head(name="logits", kind="main", level=0, class_names=DIGIT_CLASSES)
AUX = aux_head_from_case(get_case("mnist", "case2"))   # odd -> 0, even -> 1


def test_an_aux_target_is_the_main_label_lifted_through_the_parent_map():
    y = np.array([0, 1, 2, 7])
    assert head_target(AUX, {"label": y}).tolist() == [1, 0, 1, 0]
    assert head_target(MAIN, {"label": y}) is y
    t = head_target(AUX, {"label": torch.tensor([3, 4])})
    assert isinstance(t, torch.Tensor) and t.tolist() == [0, 1]


def test_a_heads_own_label_wins_and_a_missing_one_is_a_clear_error():
    own = np.array([1, 1])
    assert head_target(AUX, {"label": np.array([1, 3]), "aux_case2": own}) is own
    with pytest.raises(EdgehalError, match=r"head 'aux_case2' \| has no target in the data"):
        head_target(AUX, {"building": np.array([0])})


def test_targets_of_every_classification_head():
    reg = Head(name="xy", kind="main", level=0, task="regression", class_names=("x", "y"))
    man = HeadManifest(model="m", input_name="input", input_shape=(1,), heads=(MAIN, AUX, reg))
    targets = head_targets(man, {"label": torch.tensor([5, 6])})
    assert set(targets) == {"logits", "aux_case2"} and targets["aux_case2"].tolist() == [0, 1]


def test_numpy_labels_are_lifted_without_importing_torch():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np\n"
            "from edgehal.manifest import Head\n"
            "from edgehal.targets import head_target\n"
            "h = Head('aux', 'aux', 1, class_names=('a', 'b'), parent_map=(1, 0, 1))\n"
            "print(head_target(h, {'label': np.array([0, 1, 2])}).tolist())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[1, 0, 1]"
