"""HD-CNN's evaluator: per-head error rates, each branch on its own superclass, coarse/fine consistency."""

import numpy as np

from edgehal.nets import create_model
from edgehal.scoring import compute_metrics


def test_evaluator_reports_coarse_fine_consistency():
    man = create_model("hdcnn", dataset="mnist", case="case1").manifest  # {5..9} -> 0, {0..4} -> 1
    fine = np.eye(10, dtype=np.float32)[[0, 5, 7, 3]]
    coarse = np.eye(2, dtype=np.float32)[[1, 0, 1, 0]]      # consistent, consistent, not, not
    labels = {"label": np.array([0, 6, 7, 3])}
    r = compute_metrics(man, {"fine": fine, "coarse": coarse}, labels)
    assert r["fine"]["error_rate"] == 25.0
    assert r["coarse"]["error_rate"] == 50.0                 # true superclasses 1, 0, 0, 1
    assert r["coarse_fine_consistency"] == {"consistency_rate": 50.0, "inconsistent": 2, "count": 4}
    assert r["summary"]["coarse_fine_consistency"] == 50.0
    # the one fine error (6 taken for 5) had its superclass right
    assert r["fine_error_sources"] == {"coarse_wrong": 0.0, "coarse_right": 25.0, "count": 4}
    wrong_coarse = np.eye(2, dtype=np.float32)[[1, 1, 1, 0]]  # sample 1's superclass is 0
    r = compute_metrics(man, {"fine": fine, "coarse": wrong_coarse}, labels)
    assert r["fine_error_sources"] == {"coarse_wrong": 25.0, "coarse_right": 0.0, "count": 4}
    # a pruned model (fine only) is still scored
    assert compute_metrics(man, {"fine": fine}, labels)["summary"] == {"error_rate": 25.0}
    # a branch is scored on its own superclass's samples
    r = compute_metrics(man, {"fine": fine, "fine_b0": np.eye(10, dtype=np.float32)[[5, 6, 8, 0]]}, labels)
    assert r["fine_b0"] == {"error_rate": 50.0, "errors": 1, "count": 2}


def test_a_group_branch_is_mapped_back_to_its_superclass_classes():
    man = create_model("hdcnn", dataset="mnist", case="case4", branch_classes="group").manifest
    groups = man.coarse_to_fine.groups                      # circle {0,6,8,9}, curve {2,3,5}, straight {1,4,7}
    labels = {"label": np.array([2, 3, 5, 0])}
    # branch 1 scores only the curve classes, in group order: index 1 is class 3
    branch = np.eye(3, dtype=np.float32)[[0, 0, 2, 1]]
    fine = np.eye(10, dtype=np.float32)[[2, 3, 5, 0]]
    r = compute_metrics(man, {"fine": fine, "fine_b1": branch}, labels)
    assert groups[1] == (2, 3, 5)
    assert r["fine_b1"] == {"error_rate": 100.0 / 3, "errors": 1, "count": 3}   # 2 right, 3 predicted as 2
    assert r["summary"] == {"error_rate": 0.0}
