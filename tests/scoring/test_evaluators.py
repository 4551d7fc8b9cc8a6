"""The evaluator registry: the manifest's ``evaluator`` picks the function; names are registered once."""

import numpy as np
import pytest

from edgehal.errors import EdgehalError
from edgehal.manifest import EVALUATORS as MANIFEST_EVALUATORS
from edgehal.nets import create_model
from edgehal.scoring import compute_metrics, register_evaluator
from edgehal.scoring.evaluators import EVALUATORS


def test_every_evaluator_a_manifest_may_name_is_registered():
    assert EVALUATORS.names() == sorted(MANIFEST_EVALUATORS)
    assert EVALUATORS.place("localization") == "edgehal.scoring.localization.localization_metrics"


def test_the_manifest_chooses_the_evaluator():
    hdcnn = create_model("hdcnn", dataset="mnist", case="case1", widths=[4, 4], blocks=[1, 1], strides=[1, 1])
    fine = np.eye(10, dtype=np.float32)[[1, 2]]
    r = compute_metrics(hdcnn.manifest, {"fine": fine}, {"label": np.array([1, 3])})
    assert r["summary"] == {"error_rate": 50.0}          # hdcnn's, which has a summary
    hal = create_model("hal_resnet", dataset="mnist", widths=[4], blocks=[1], strides=[1])
    r = compute_metrics(hal.manifest, {"logits": fine}, {"label": np.array([1, 3])})
    assert r == {"logits": {"error_rate": 50.0, "errors": 1, "count": 2}}


def test_a_second_evaluator_of_a_registered_name_is_refused_and_an_unknown_one_lists_the_known():
    def classification(manifest, outputs, labels):
        return {}

    with pytest.raises(EdgehalError, match="evaluator 'classification' \\| is registered twice: by "
                                           "edgehal.scoring.classification.classification_metrics and by "):
        register_evaluator("classification")(classification)
    with pytest.raises(EdgehalError, match=r"evaluator 'ranking' \| is not a known evaluator. Note: one of "
                                           r"\['classification', 'hdcnn', 'localization'\]"):
        EVALUATORS.get("ranking")
