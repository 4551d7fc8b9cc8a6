"""The classification evaluator: error rate per head, a head scored only where it applies."""

import numpy as np

from edgehal.hierarchy import DIGIT_CLASSES, aux_head_from_case, get_case
from edgehal.manifest import Head, HeadManifest
from edgehal.scoring import compute_metrics, predictions
from edgehal.scoring.classification import classification_metrics, error_entry

CASE1 = get_case("mnist", "case1")   # {5..9} -> 0, {0..4} -> 1


def _manifest(*extra: Head) -> HeadManifest:
    return HeadManifest(model="m", input_name="input", input_shape=(1, 8, 8),
                        heads=(Head(name="logits", kind="main", level=0, class_names=DIGIT_CLASSES),
                               aux_head_from_case(CASE1), *extra))


def test_error_rate_of_every_head_present_with_aux_targets_from_the_main_label():
    man = _manifest()
    labels = {"label": np.array([0, 5, 9, 3])}
    outputs = {"logits": np.eye(10, dtype=np.float32)[[0, 5, 8, 1]],      # 2 of 4 wrong
               "aux_case1": np.eye(2, dtype=np.float32)[[1, 0, 1, 1]]}    # true superclasses 1, 0, 0, 1
    r = compute_metrics(man, outputs, labels)
    assert r == {"logits": {"error_rate": 50.0, "errors": 2, "count": 4},
                 "aux_case1": {"error_rate": 25.0, "errors": 1, "count": 4}}
    # a pruned artifact (main head only) is scored on what it has
    assert set(compute_metrics(man, {"logits": outputs["logits"]}, labels)) == {"logits"}
    # a head's own label wins over the derived one
    r = classification_metrics(man, outputs, {**labels, "aux_case1": np.array([1, 0, 1, 1])})
    assert r["aux_case1"]["errors"] == 0


def test_a_head_is_not_scored_on_samples_it_does_not_apply_to():
    branch = Head(name="low", kind="aux", level=0, class_names=("0", "1", "2", "3", "4"),
                  parent_map=(0, 1, 2, 3, 4, -1, -1, -1, -1, -1))
    man = _manifest(branch)
    labels = {"label": np.array([0, 7, 4, 9])}
    outputs = {"logits": np.eye(10, dtype=np.float32)[[0, 7, 4, 9]], "low": np.eye(5, dtype=np.float32)[[0, 3, 1, 2]]}
    assert compute_metrics(man, outputs, labels)["low"] == {"error_rate": 50.0, "errors": 1, "count": 2}


def test_predictions_are_the_argmax_of_classification_heads_only():
    man = HeadManifest(model="m", input_name="x", input_shape=(3,),
                       heads=(Head(name="c", kind="main", level=0, class_names=("a", "b")),
                              Head(name="r", kind="main", level=0, task="regression", class_names=("x",))))
    pred = predictions(man, {"c": np.array([[0.1, 0.9], [2.0, 1.0]]), "r": np.array([[5.0], [6.0]])})
    assert set(pred) == {"c"} and pred["c"].tolist() == [1, 0]


def test_error_entry_counts_every_sample():
    assert error_entry(np.array([1, 2, 3]), np.array([1, 0, 3])) == {"error_rate": 100.0 / 3, "errors": 1,
                                                                      "count": 3}
    assert error_entry(np.array([], dtype=int), np.array([], dtype=int)) == {"error_rate": 0.0, "errors": 0,
                                                                              "count": 0}
