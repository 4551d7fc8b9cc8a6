"""Postprocessing: per-head prediction steps, targets and the manifest's evaluator, on numpy alone."""

from __future__ import annotations

import numpy as np
import pytest

from edgehal.errors import EdgehalError
from edgehal.parity import argmax, identity, postprocess

LABELS = {"label": np.array([0, 4, 5, 9, 9], np.int64)}


def _outputs() -> dict[str, np.ndarray]:
    logits = np.zeros((5, 10), np.float32)
    logits[np.arange(5), [0, 4, 6, 9, 1]] = 1.0  # right, right, wrong, right, wrong
    half = np.array([[1, 0], [0, 1], [0, 1], [1, 0], [1, 0]], np.float32)  # right, wrong, right, n/a, n/a
    where = np.arange(10, dtype=np.float32).reshape(5, 2)
    return {"logits": logits, "half": half, "where": where}


def test_default_steps_argmax_classification_and_pass_regression_through(make_run, manifest):
    out = postprocess(make_run(_outputs(), LABELS), manifest)
    assert out.heads == ("logits", "half", "where")
    assert out.predictions["logits"].tolist() == [0, 4, 6, 9, 1]
    assert out.predictions["half"].tolist() == [0, 1, 1, 0, 0]
    np.testing.assert_array_equal(out.predictions["where"], _outputs()["where"])
    # targets: the label, lifted through parent_map for the aux head (-1: the digit 9 has no superclass)
    assert out.targets["logits"].tolist() == [0, 4, 5, 9, 9]
    assert out.targets["half"].tolist() == [0, 0, 1, -1, -1]
    assert set(out.targets) == {"logits", "half"}  # no targets for a regression head


def test_evaluator_metrics_score_each_head_where_it_applies(make_run, manifest):
    metrics = postprocess(make_run(_outputs(), LABELS), manifest).metrics
    assert metrics["logits"] == {"error_rate": 40.0, "errors": 2, "count": 5}
    assert metrics["half"] == {"error_rate": 100.0 / 3, "errors": 1, "count": 3}


def test_a_step_per_head_or_per_task_replaces_the_default(make_run, manifest):
    def least(outputs: np.ndarray) -> np.ndarray:
        return np.asarray(outputs).argmin(axis=1)

    out = postprocess(make_run(_outputs(), LABELS), manifest, steps={"half": least, "regression": argmax})
    assert out.predictions["half"].tolist() == [1, 0, 0, 1, 1]
    assert out.predictions["logits"].tolist() == [0, 4, 6, 9, 1]  # untouched: the default
    assert out.predictions["where"].tolist() == [1, 1, 1, 1, 1]
    assert identity(np.ones(3)).tolist() == [1.0, 1.0, 1.0]


def test_a_run_of_some_heads_is_scored_on_those_and_without_its_main_head_has_no_metrics(make_run, manifest):
    outputs = _outputs()
    pruned = postprocess(make_run({"logits": outputs["logits"]}, LABELS), manifest)
    assert pruned.heads == ("logits",) and set(pruned.metrics) == {"logits"}
    # evaluators combine heads around the main one: without it, nothing is scored
    aux_only = postprocess(make_run({"half": outputs["half"]}, LABELS), manifest)
    assert aux_only.metrics == {} and aux_only.targets["half"].tolist() == [0, 0, 1, -1, -1]


def test_a_head_the_manifest_does_not_have_is_an_error(make_run, manifest):
    run = make_run({"logits": _outputs()["logits"]}, LABELS)
    run = type(run)(info=run.info, outputs={**run.outputs, "extra": np.zeros((5, 2), np.float32)},
                    inputs=run.inputs)
    with pytest.raises(EdgehalError, match="head 'extra'.*one of"):
        postprocess(run, manifest)
