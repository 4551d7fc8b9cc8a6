"""Comparison rules on outputs built sample by sample, so each criterion is tested on its own."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgehal.errors import EdgehalError
from edgehal.parity import (DEFAULT_TOLERANCES, Tolerance, Tolerances, compare, default_tolerance, mcnemar_exact,
                            parse_tolerances, postprocess)

N = 10000


def _labels(n: int = N) -> dict[str, np.ndarray]:
    return {"label": (np.arange(n) % 10).astype(np.int64)}


def _confident(labels: np.ndarray) -> np.ndarray:
    """Logits that score each sample's label 5 and every other class 0."""
    logits = np.zeros((len(labels), 10), np.float32)
    logits[np.arange(len(labels)), labels] = 5.0
    return logits


def _near_tie(logits: np.ndarray, i: int, winner: int, loser: int, *, gap: float = 1e-5) -> None:
    """Sample ``i`` scores ``winner`` just above ``loser``: the kind of tie a reordered sum flips."""
    logits[i] = 0.0
    logits[i, winner], logits[i, loser] = 1.0 + gap, 1.0


def _verdict(make_run, manifest, ref_logits, got_logits, *, precision="fp32", tolerances=None, n=N):
    labels = _labels(n)
    ref = postprocess(make_run({"logits": ref_logits}, labels, kind="checkpoint"), manifest)
    got = postprocess(make_run({"logits": got_logits}, labels, precision=precision), manifest)
    tol = tolerances or Tolerances.for_precision(precision, manifest)
    return compare(ref, got, tol).head("logits")


# ---- the fp32 default: no error moves, at most 1 in 10,000 predictions flips, logits within 1e-3 ----------


def test_fp32_fails_one_extra_mistake_that_costs_only_0_01_pp(make_run, manifest):
    y = _labels()["label"]
    ref, got = _confident(y), _confident(y)
    _near_tie(ref, 3, winner=3, loser=4)
    _near_tie(got, 3, winner=4, loser=3)  # right in PyTorch, wrong in the artifact
    head = _verdict(make_run, manifest, ref, got)
    # agreement (99.99%) and logits (2e-5) are within the fp32 tolerance: only the error difference fails it
    assert head.agreement == pytest.approx(99.99) and head.max_abs_diff < 1e-4
    assert head.error_diff_pp == pytest.approx(0.01)
    assert not head and head.failures == ["error differs by +0.01 pp (> 0)"]


def test_fp32_fails_two_flipped_predictions_that_leave_the_error_unchanged(make_run, manifest):
    y = _labels()["label"]
    ref, got = _confident(y), _confident(y)
    for i in (3, 13):  # both wrong in both runs, on different classes: agreement 99.98%, same error
        _near_tie(ref, i, winner=5, loser=6)
        _near_tie(got, i, winner=6, loser=5)
    head = _verdict(make_run, manifest, ref, got)
    assert head.error_diff_pp == 0.0 and head.max_abs_diff < 1e-4
    assert not head and head.failures == ["agreement 99.98% (< 99.99%)"]


def test_fp32_fails_logits_that_moved_without_changing_a_prediction(make_run, manifest):
    y = _labels()["label"]
    ref = _confident(y)
    got = ref + np.float32(0.01)
    head = _verdict(make_run, manifest, ref, got)
    assert head.agreement == 100.0 and head.error_diff_pp == 0.0
    assert not head and head.failures == ["max abs diff 0.01 (> 0.001)"]


def test_fp32_passes_reordered_arithmetic(make_run, manifest):
    y = _labels()["label"]
    ref = _confident(y)
    head = _verdict(make_run, manifest, ref, ref + np.float32(1e-6))
    assert head and head.agreement == 100.0 and head.mcnemar_p == 1.0


# ---- McNemar: significantly worse fails even within the pp and agreement limits -----------------------------


def _worse_on(make_run, manifest, n_worse: int, n_better: int, *, tolerances=None):
    n = 2000
    y = _labels(n)["label"]
    ref, got = _confident(y), _confident(y)
    for k in range(n_worse):  # right in PyTorch, wrong in the artifact
        _near_tie(ref, 10 * k, winner=0, loser=1)
        _near_tie(got, 10 * k, winner=1, loser=0)
    for k in range(n_better):  # wrong in PyTorch, right in the artifact
        _near_tie(ref, 10 * k + 1, winner=0, loser=1)
        _near_tie(got, 10 * k + 1, winner=1, loser=0)
    return _verdict(make_run, manifest, ref, got, precision="int8", tolerances=tolerances, n=n)


def test_significantly_worse_int8_fails_within_its_pp_and_agreement_limits(make_run, manifest):
    head = _worse_on(make_run, manifest, 8, 0)
    # 8 of 2000: +0.40 pp (<= 0.5) and 99.6% agreement (>= 99%) pass int8's limits ...
    assert head.error_diff_pp == pytest.approx(0.4) and head.agreement == pytest.approx(99.6)
    assert (head.only_reference_right, head.only_artifact_right) == (8, 0)
    # ... but losing 8 of 8 discordant samples is no accident: p = 2 * 0.5**8
    assert head.mcnemar_p == pytest.approx(2 * 0.5 ** 8)
    assert not head and head.failures == ["significantly worse (McNemar p=0.0078)"]


def test_as_many_gains_as_losses_is_not_significant(make_run, manifest):
    head = _worse_on(make_run, manifest, 8, 8)
    assert head and head.mcnemar_p == 1.0 and head.error_diff_pp == 0.0


def test_mcnemar_alpha_is_a_tolerance_like_the_others(make_run, manifest):
    tol = Tolerances(default=Tolerance(max_error_diff=0.5, min_agreement=99.0, mcnemar_alpha=0.001))
    assert _worse_on(make_run, manifest, 8, 0, tolerances=tol)


def test_mcnemar_exact_values():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    # two-sided binomial: b=0, c=6 -> 2 * 0.5**6
    assert mcnemar_exact(0, 6) == pytest.approx(2 * 0.5 ** 6)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 2 ** 10)
    assert 0.0 < mcnemar_exact(100, 10) < 1e-15


# ---- heads, regression, tolerances per head ----------------------------------------------------------------


def _all_heads(make_run, manifest, *, where_shift: float, precision: str = "fp32", overrides=None, n: int = 100):
    labels = _labels(n)
    y = labels["label"]
    half = np.zeros((n, 2), np.float32)
    half[np.arange(n), np.asarray(manifest.head("half").parent_map)[y].clip(0)] = 3.0
    where = np.stack([y * 2.0, y * 3.0], axis=1).astype(np.float32)
    ref = postprocess(make_run({"logits": _confident(y), "half": half, "where": where}, labels,
                               kind="checkpoint"), manifest)
    got_outputs = {"logits": _confident(y), "half": half, "where": where + np.float32(where_shift)}
    got = postprocess(make_run(got_outputs, labels, precision=precision), manifest)
    return compare(ref, got, Tolerances.for_precision(precision, manifest, overrides=overrides))


def test_regression_head_is_judged_by_its_output_difference_in_its_units(make_run, manifest):
    ok = _all_heads(make_run, manifest, where_shift=5e-4)
    assert ok and ok.head("where").agreement is None and ok.head("where").error is None
    moved = _all_heads(make_run, manifest, where_shift=2e-3)
    assert not moved and [h.head for h in moved.heads if not h] == ["where"]
    assert moved.head("where").failures == ["max abs diff 0.002 (> 0.001)"]
    # int8 allows 2 m; a per-head override tightens one head and leaves the others at their default
    assert _all_heads(make_run, manifest, where_shift=1.0, precision="int8")
    tight = _all_heads(make_run, manifest, where_shift=1.0, precision="int8",
                       overrides=parse_tolerances(["where:max_abs_diff=0.5"]))
    assert [h.head for h in tight.heads if not h] == ["where"]


def test_aux_head_is_scored_only_where_it_applies(make_run, manifest):
    cmp = _all_heads(make_run, manifest, where_shift=0.0)
    half = cmp.head("half")
    # the digit 9 has no superclass (-1): its 10 samples are not scored, the other 90 are right
    assert half and half.reference_error == 0.0 and half.error == 0.0 and half.agreement == 100.0


def test_different_shapes_fail_and_different_sample_counts_are_an_error(make_run, manifest):
    labels = _labels(100)
    logits = _confident(labels["label"])
    ref = postprocess(make_run({"logits": logits}, labels, kind="checkpoint"), manifest)
    got = postprocess(make_run({"logits": logits[:, :9]}, labels), manifest)
    head = compare(ref, got, Tolerances.for_precision("fp32", manifest)).heads[0]
    assert not head and head.failures == ["shape (100, 9) differs from the reference's (100, 10)"]
    short = postprocess(make_run({"logits": logits[:50]}, _labels(50)), manifest)
    with pytest.raises(EdgehalError, match="has 50 samples.*reference's 100"):
        compare(ref, short, Tolerances.for_precision("fp32", manifest))


def test_non_finite_outputs_fail(make_run, manifest):
    labels = _labels(100)
    logits = _confident(labels["label"])
    bad = logits.copy()
    bad[0, 1] = np.nan
    ref = postprocess(make_run({"logits": logits}, labels, kind="checkpoint"), manifest)
    got = postprocess(make_run({"logits": bad}, labels), manifest)
    head = compare(ref, got, Tolerances.for_precision("fp32", manifest)).heads[0]
    assert not head and math.isinf(head.max_abs_diff)


def test_tolerances_default_per_precision_and_task_with_overrides(manifest):
    tol = Tolerances.for_precision("fp16", manifest, overrides=parse_tolerances(
        ["min_agreement=99.5", "half:max_error_diff=0.3"]))
    assert tol.for_head("logits") == Tolerance(max_error_diff=0.10, min_agreement=99.5)
    assert tol.for_head("half") == Tolerance(max_error_diff=0.3, min_agreement=99.5)
    assert tol.for_head("where").max_abs_diff == 0.5  # fp16 regression heads: metres, not logits
    assert default_tolerance("bf16") == DEFAULT_TOLERANCES["fp32"]  # unknown precision: the strictest


def test_parse_tolerances_and_invalid_tolerances():
    assert parse_tolerances(["max_abs_diff=1e-2", "aux:min_agreement=99"]) == {
        None: {"max_abs_diff": 0.01}, "aux": {"min_agreement": 99.0}}
    for item, message in (("speed=1", "'speed' is not a tolerance"), ("max_abs_diff", "has no '='"),
                          ("max_abs_diff=x", "'x' is not a number")):
        with pytest.raises(EdgehalError, match=message):
            parse_tolerances([item])
    with pytest.raises(EdgehalError, match="min_agreement 101 is outside 0..100"):
        Tolerance(max_error_diff=0.0, min_agreement=101)
    with pytest.raises(EdgehalError, match="negative"):
        Tolerance(max_error_diff=-1.0, min_agreement=99)
