"""Whether an artifact came from the reference checkpoint, from the sha256 it records."""

from __future__ import annotations

import numpy as np

from edgehal.parity import check_source

LABELS = {"label": np.arange(4, dtype=np.int64)}
OUT = {"logits": np.zeros((4, 10), np.float32)}
CKPT_SHA = "c" * 64


def _infos(make_run, *, reference_kind="checkpoint", candidate_kind="onnx", source=CKPT_SHA):
    ref = make_run(OUT, LABELS, kind=reference_kind, sha256=CKPT_SHA, artifact="runs/hal/checkpoint.pt")
    got = make_run(OUT, LABELS, kind=candidate_kind, source_sha256=source)
    return ref.info, got.info


def test_an_export_of_the_reference_checkpoint_matches(make_run):
    check = check_source(*_infos(make_run))
    assert check.status == "match" and not check.mismatch and "cccccccccccc" in check.message


def test_an_export_of_another_checkpoint_is_a_mismatch_naming_both(make_run):
    check = check_source(*_infos(make_run, source="d" * 64))
    assert check.status == "mismatch" and check.mismatch
    assert check.message == ("was exported from a checkpoint with sha256 dddddddddddd..., not from the reference "
                             "runs/hal/checkpoint.pt (cccccccccccc...)")


def test_an_artifact_without_a_recorded_source_is_noted_not_failed(make_run):
    check = check_source(*_infos(make_run, source=None))
    assert check.status == "unrecorded" and not check.mismatch
    assert "records no source checkpoint" in check.message


def test_nothing_is_checked_against_a_reference_that_is_not_a_checkpoint(make_run):
    assert check_source(*_infos(make_run, reference_kind="onnx", source="d" * 64)).status == "unchecked"
    assert check_source(*_infos(make_run, candidate_kind="checkpoint", source=None)).status == "unchecked"
