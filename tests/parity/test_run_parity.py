"""run_parity end to end: the shipped MNIST model on all 10,000 test images, the digits model, HD-CNN,
saved references and the source checksum."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgehal.errors import EdgehalError
from edgehal.parity import RunResult, run_parity, write_reports

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's legacy ONNX exporter

quiet = lambda _: None  # noqa: E731


def comparable(report) -> dict:
    """The report without what differs between two runs of the same check: times, and where the reference came from."""
    d = report.to_dict()
    d.pop("seconds")
    d["reference"].pop("saved_run")
    for a in d["artifacts"]:
        a.pop("seconds")
    return d


# ---- the shipped MNIST model ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(mnist_checkpoint, mnist_exports):
    return run_parity(mnist_checkpoint, [mnist_exports["keep"], mnist_exports["prune"], mnist_exports["int8"]],
                      log=quiet)


def test_fp32_kept_and_pruned_make_exactly_the_same_mistakes(report):
    assert report.samples == 10000
    keep, prune, _ = report.artifacts
    assert [h.head for h in keep.heads] == ["logits", "aux_case1"]
    assert [h.head for h in prune.heads] == ["logits"]
    for result in (keep, prune):
        assert result.passed and result.precision == "fp32" and result.source_check == "match"
        for h in result.heads:
            assert h.error_diff_pp == 0.0 and h.agreement == 100.0 and h.max_abs_diff < 1e-3


def test_int8_within_its_tolerance(report):
    int8 = report.artifacts[2]
    assert int8.precision == "int8" and int8.passed, int8.heads
    assert abs(int8.heads[0].error_diff_pp) <= 0.5 and int8.heads[0].agreement >= 99.0
    assert int8.source_check == "match"  # quantize keeps the checkpoint's checksum


def test_reports_are_written(report, tmp_path):
    md, js = write_reports(report, tmp_path)
    assert "| `keep.onnx` | fp32 | logits |" in md.read_text()
    doc = json.loads(js.read_text())
    assert doc["passed"] is True and doc["reference"]["kind"] == "checkpoint" and doc["reference"]["saved_run"] is None


# ---- saved references -------------------------------------------------------------------------------------


def test_a_saved_reference_gives_the_same_verdict_and_numbers_as_a_direct_run(digits_checkpoint, digits_exports,
                                                                              tmp_path):
    artifacts = [digits_exports["keep"], digits_exports["prune"]]
    # a tolerance the aux head cannot meet, so that a failing verdict is compared too
    tolerances = ["aux_case1:max_abs_diff=1e-12"]
    direct = run_parity(digits_checkpoint, artifacts, tolerances=tolerances, save_run=tmp_path / "ref", log=quiet)
    lines: list[str] = []
    again = run_parity(None, artifacts, reference=tmp_path / "ref", tolerances=tolerances, log=lines.append)
    assert not direct.artifacts[0] and direct.artifacts[1]
    assert comparable(again) == comparable(direct)
    assert again.reference["saved_run"] == str(tmp_path / "ref") and again.checkpoint == str(digits_checkpoint)
    assert lines[0].startswith(f"parity on test split: 360 samples; reference: saved run {tmp_path / 'ref'}")
    # a loaded run serves as well as its folder
    loaded = run_parity(artifacts=artifacts, reference=RunResult.load(tmp_path / "ref"), tolerances=tolerances,
                        log=quiet)
    assert comparable(loaded) == comparable(direct)


def test_a_saved_reference_fixes_the_samples(digits_checkpoint, tmp_path):
    run_parity(digits_checkpoint, [], split="val", limit=40, save_run=tmp_path / "ref", log=quiet)
    saved = RunResult.load(tmp_path / "ref")
    assert saved.info.split == "val" and len(saved) == 40
    for kwargs, message in (({"split": "test"}, "split 'test' | differs from the saved reference run's \\(val\\)"),
                            ({"data_root": tmp_path}, "data_root | cannot be combined with a saved reference"),
                            ({"limit": 10}, "limit | cannot be combined"),
                            ({"save_run": tmp_path / "x"}, "save_run | cannot be combined")):
        with pytest.raises(EdgehalError, match=message):
            run_parity(artifacts=[], reference=tmp_path / "ref", log=quiet, **kwargs)
    assert run_parity(artifacts=[], reference=tmp_path / "ref", split="val", log=quiet).samples == 40


def test_one_reference_exactly(digits_checkpoint, digits_exports, tmp_path):
    with pytest.raises(EdgehalError, match="needs one reference: got neither"):
        run_parity(None, [digits_exports["keep"]], log=quiet)
    with pytest.raises(EdgehalError, match="needs one reference: got both"):
        run_parity(digits_checkpoint, [digits_exports["keep"]], reference=tmp_path, log=quiet)
    with pytest.raises(EdgehalError, match="is an onnx file. Note: a PyTorch checkpoint"):
        run_parity(digits_exports["keep"], [digits_exports["prune"]], log=quiet)


# ---- source checksum --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resaved_checkpoint(digits_checkpoint, tmp_path_factory) -> Path:
    """The digits checkpoint's weights in another checkpoint file: the same numbers, another sha256."""
    from edgehal.checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path_factory.mktemp("resaved") / "checkpoint.pt"
    save_checkpoint(path, {**load_checkpoint(digits_checkpoint).payload, "note": "re-saved"})
    return path


def test_an_export_of_another_checkpoint_warns_and_fails_when_strict(resaved_checkpoint, digits_exports):
    lines: list[str] = []
    rep = run_parity(resaved_checkpoint, [digits_exports["prune"]], log=lines.append)
    result = rep.artifacts[0]
    assert result.passed and all(result.heads)  # the same weights: the numbers agree
    assert result.source_check == "mismatch" and result.failures == []
    assert len(result.warnings) == 1 and f"not from the reference {resaved_checkpoint}" in result.warnings[0]
    assert any(line.startswith("  warning: was exported from a checkpoint with sha256") for line in lines)
    assert "warning: was exported from a checkpoint" in rep.markdown()

    strict = run_parity(resaved_checkpoint, [digits_exports["prune"]], strict=True, log=lines.append)
    result = strict.artifacts[0]
    assert not strict and not result and all(result.heads)
    assert result.warnings == [] and "not from the reference" in result.failures[0]
    assert "FAIL: was exported from a checkpoint" in strict.markdown()


def test_an_artifact_without_a_recorded_source_gets_a_note(digits_checkpoint, plain_onnx):
    rep = run_parity(digits_checkpoint, [plain_onnx], head_map={"logits": "output0"}, strict=True, log=quiet)
    result = rep.artifacts[0]
    assert rep.passed and result.source_check == "unrecorded" and result.heads[0].agreement == 100.0
    assert result.notes and "records no source checkpoint" in result.notes[0]


# ---- heads, tolerances, model families --------------------------------------------------------------------


def test_plain_onnx_needs_named_outputs_and_known_heads_and_tolerances(digits_checkpoint, plain_onnx):
    with pytest.raises(EdgehalError, match="no edgehal metadata.*--head"):
        run_parity(digits_checkpoint, [plain_onnx], log=quiet)
    with pytest.raises(EdgehalError, match="head 'superclass'.*one of"):
        run_parity(digits_checkpoint, [plain_onnx], head_map={"superclass": "output0"}, log=quiet)
    with pytest.raises(EdgehalError, match="not a tolerance"):
        run_parity(digits_checkpoint, [plain_onnx], head_map={"logits": "output0"}, tolerances=["speed=1"],
                   log=quiet)
    with pytest.raises(EdgehalError, match="head 'nope'.*one of"):
        run_parity(digits_checkpoint, [plain_onnx], head_map={"logits": "output0"}, tolerances=["nope:min_agreement=1"],
                   log=quiet)


def test_tolerance_override_per_head(digits_checkpoint, digits_exports):
    rep = run_parity(digits_checkpoint, [digits_exports["keep"]], tolerances=["aux_case1:max_abs_diff=1e-12"],
                     log=quiet)
    logits, aux = rep.artifacts[0].heads
    assert logits.passed and not aux.passed and "max abs diff" in aux.failures[0]


def test_hdcnn_parity_scores_branches_on_their_own_superclass_and_reports_consistency(tmp_path):
    from edgehal.config import load_config
    from edgehal.export.onnx import ExportOptions, export_onnx
    from edgehal.train import train

    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(repo / "models" / "configs" / "mnist_hdcnn_case1.yaml",
                      ["data.dataset=digits", "epochs=3", "threads=2", f"output_dir={tmp_path / 'h'}",
                       "train.stages=[{epochs: 1, train: [trunk, head.branches]}, {epochs: 1, train: [head.coarse]},"
                       " {epochs: 1, train: [all]}]"])
    ckpt = train(cfg, log=quiet, progress=False)
    keep, prune = tmp_path / "k.onnx", tmp_path / "p.onnx"
    export_onnx(ckpt, keep, options=ExportOptions(aux="keep"), log=quiet)
    export_onnx(ckpt, prune, options=ExportOptions(aux="prune"), log=quiet)
    lines = []
    rep = run_parity(ckpt, [keep, prune], log=lines.append)
    assert rep.passed
    kept = {h.head: h for h in rep.artifacts[0].heads}
    assert set(kept) == {"fine", "coarse", "fine_b0", "fine_b1"}
    assert [h.head for h in rep.artifacts[1].heads] == ["fine"]
    # each branch is scored only on its superclass's samples: the same numbers the evaluator gives
    for branch in ("fine_b0", "fine_b1"):
        assert kept[branch].reference_error == pytest.approx(rep.reference_metrics[branch]["error_rate"])
    assert any("coarse_fine_consistency" in line for line in lines)
    assert "coarse_fine_consistency" in rep.markdown()
