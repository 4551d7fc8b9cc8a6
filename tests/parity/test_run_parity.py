"""run_parity end to end: the shipped MNIST model on all 10,000 test images, the digits model, HD-CNN,
saved references and the source checksum."""

from __future__ import annotations

import json
import re
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
                       "train.stages=[{epochs: 1, train: [trunk, head.branches], loss: [branches]},"
                       " {epochs: 1, train: [head.coarse], loss: [coarse]}, {epochs: 1, train: [all]}]"])
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


# ---- an ONNX file as the reference, on a user's own images ------------------------------------------------

COLOUR_HEADS = {"colour": "scores", "superclass": "super"}


def independent_error(model: Path, folder: Path, output: str = "scores", *, parent=None) -> float:
    """The error rate of one output on a split folder, computed with PIL, onnxruntime and numpy alone:
    labels are the sorted class folders' indices (mapped through ``parent`` for a superclass head)."""
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    wrong = total = 0
    for label, name in enumerate(sorted(p.name for p in folder.iterdir())):
        for png in sorted((folder / name).glob("*.png")):
            x = np.asarray(Image.open(png).convert("RGB"), dtype=np.float32).transpose(2, 0, 1)[None]
            pred = int(session.run([output], {"pixels": x})[0].argmax())
            wrong += pred != (label if parent is None else parent[label])
            total += 1
    return 100.0 * wrong / total


@pytest.fixture(scope="module")
def colour_report(colour_onnx, colour_images):
    return run_parity(reference_artifact=colour_onnx["fp32"], artifacts=[colour_onnx["fp16"], colour_onnx["broken"]],
                      data=colour_images, head_map=COLOUR_HEADS, precision="fp16", log=quiet)


def test_an_onnx_reference_passes_its_fp16_conversion_on_a_user_image_folder_per_head(colour_report, colour_onnx,
                                                                                       colour_images):
    from tests.parity.conftest import COLOURS

    rep = colour_report
    assert rep.samples == 4 * 12 and rep.split == "test" and rep.checkpoint == str(colour_onnx["fp32"])
    assert rep.reference["kind"] == "onnx" and rep.reference["runner"] == "onnxruntime"
    fp16 = rep.artifacts[0]
    assert fp16.passed and fp16.precision == "fp16" and fp16.source_check == "unchecked"
    colour, superclass = fp16.heads
    assert colour.head == "colour" and colour.task == "classification"
    # the main head's error rate is the one plain onnxruntime gives on the same PNGs, labelled by sorted folders
    expected = independent_error(colour_onnx["fp32"], colour_images / "test")
    assert 0 < expected < 25  # the hand-set model tells the colours apart: a wrong label order could not pass
    assert colour.reference_error == pytest.approx(expected) and colour.error == pytest.approx(expected)
    assert colour.agreement == 100.0 and 0 < colour.max_abs_diff < 0.05 and colour.mcnemar_p == 1.0
    assert rep.reference_metrics["colour"]["error_rate"] == pytest.approx(expected)
    # the aux output has no class names: compared by values against the fp16 tolerance
    assert superclass.head == "superclass" and superclass.error is None and superclass.agreement is None
    assert superclass.passed and 0 < superclass.max_abs_diff < 0.05
    md = rep.markdown()
    assert f"- reference: `{colour_onnx['fp32']}` (onnx, onnxruntime)" in md and "| reference error % |" in md
    assert "| `model_fp16.onnx` | fp16 | colour |" in md
    assert len(COLOURS) == 4


def test_an_artifact_that_really_differs_fails(colour_report):
    broken = colour_report.artifacts[1]
    assert not colour_report and not broken
    colour, superclass = broken.heads
    assert not colour and colour.error > colour.reference_error + 10 and colour.agreement < 90
    assert any(f.startswith("error differs by") for f in colour.failures)
    assert superclass.passed  # the perturbed weights are the main head's only


def test_split_picks_a_split_of_the_tree_and_limit_the_first_samples(colour_onnx, colour_images):
    rep = run_parity(reference_artifact=colour_onnx["fp32"], artifacts=[colour_onnx["fp32"]], data=colour_images,
                     split="train", head_map=COLOUR_HEADS, log=quiet)
    assert rep.split == "train" and rep.samples == 4 * 5 and rep.passed
    assert rep.artifacts[0].heads[0].reference_error == pytest.approx(
        independent_error(colour_onnx["fp32"], colour_images / "train"))
    # a split folder itself (class sub-folders) is read as it is, under its own name
    lines: list[str] = []
    rep = run_parity(reference_artifact=colour_onnx["fp32"], artifacts=[colour_onnx["fp32"]],
                     data=colour_images / "train", head_map=COLOUR_HEADS, limit=7, log=lines.append)
    assert rep.split == "train" and rep.samples == 7
    assert lines[0] == f"parity on train split: 7 samples; reference an ONNX file ({colour_onnx['fp32']})"


def test_a_npy_of_raw_inputs_with_labels_gives_the_folder_numbers_and_without_labels_agreement(
        colour_onnx, colour_images, colour_report, tmp_path):
    import numpy as np
    from PIL import Image

    from tests.parity.conftest import COLOURS

    files = [(k, png) for k, name in enumerate(COLOURS) for png in sorted((colour_images / "test" / name).glob("*"))]
    x = np.stack([np.asarray(Image.open(png).convert("RGB")).transpose(2, 0, 1) for _, png in files])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.array([k for k, _ in files]))
    kwargs = dict(reference_artifact=colour_onnx["fp32"], artifacts=[colour_onnx["fp16"]], head_map=COLOUR_HEADS,
                  precision="fp16", log=quiet)
    labelled = run_parity(data=tmp_path / "x.npy", labels=tmp_path / "y.npy", **kwargs)
    folder = colour_report.artifacts[0].heads[0]
    got = labelled.artifacts[0].heads[0]
    assert labelled.passed and labelled.samples == 48
    assert (got.reference_error, got.error, got.agreement) == (folder.reference_error, folder.error, folder.agreement)
    unlabelled = run_parity(data=tmp_path / "x.npy", **kwargs)
    head = unlabelled.artifacts[0].heads[0]
    assert unlabelled.passed and head.agreement == 100.0 and head.error is None and head.reference_error is None
    assert unlabelled.reference_metrics == {} and "n/a" in unlabelled.markdown()
    broken = run_parity(data=tmp_path / "x.npy", **{**kwargs, "artifacts": [colour_onnx["broken"]]})
    assert not broken and "agreement" in broken.artifacts[0].heads[0].failures[0]
    np.save(tmp_path / "bad.npy", np.array([k + 1 for k, _ in files]))
    with pytest.raises(EdgehalError, match=r"bad.npy \| has the class index 4. Note: 0..3: one of the main head's 4"):
        run_parity(data=tmp_path / "x.npy", labels=tmp_path / "bad.npy", **kwargs)


def test_a_manifest_file_names_superclasses_so_the_aux_head_is_scored_too(colour_onnx, colour_images, tmp_path):
    import yaml

    from edgehal.manifest import Head, HeadManifest
    from tests.parity.conftest import COLOUR_PARENT, COLOUR_SUPERCLASSES, COLOURS

    manifest = HeadManifest(model="colours", input_name="pixels", input_shape=(3, 8, 8), heads=(
        Head("scores", "main", 0, class_names=COLOURS),
        Head("super", "aux", 1, class_names=COLOUR_SUPERCLASSES, parent_map=COLOUR_PARENT)))
    (tmp_path / "heads.yaml").write_text(yaml.safe_dump(manifest.to_dict()))
    rep = run_parity(reference_artifact=colour_onnx["fp32"], artifacts=[colour_onnx["fp16"]], data=colour_images,
                     manifest=tmp_path / "heads.yaml", precision="fp16", log=quiet)
    main, aux = rep.artifacts[0].heads
    assert rep.passed and aux.head == "super" and aux.task == "classification"
    assert aux.reference_error == pytest.approx(
        independent_error(colour_onnx["fp32"], colour_images / "test", "super", parent=COLOUR_PARENT))
    # class folders the manifest does not name are refused, naming the difference
    other = tmp_path / "other"
    for name in ("blue", "dark", "green", "purple"):
        (other / name).mkdir(parents=True)
    with pytest.raises(EdgehalError, match=r"classes differ from the reference's: lacks \['red'\]; has classes the "
                                           r"reference has not: \['purple'\]"):
        run_parity(reference_artifact=colour_onnx["fp32"], artifacts=[], data=other,
                   manifest=tmp_path / "heads.yaml", log=quiet)


def test_an_edgehal_export_as_the_reference_brings_its_heads_and_classes(digits_exports, plain_onnx, tmp_path):
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for i in range(60):
        folder = tmp_path / "digits" / str(d.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(d.images[i] * 255 / 16).astype(np.uint8), "L").save(folder / f"{i}.png")
    rep = run_parity(reference_artifact=digits_exports["keep"], artifacts=[digits_exports["prune"]],
                     data=tmp_path / "digits", log=quiet)
    assert rep.passed and rep.samples == 60
    logits = rep.artifacts[0].heads[0]
    assert logits.head == "logits" and logits.agreement == 100.0 and logits.reference_error < 30  # chance: 90
    # --head names the outputs of a plain artifact; the reference keeps returning its heads by name
    plain = run_parity(reference_artifact=digits_exports["keep"], artifacts=[plain_onnx], data=tmp_path / "digits",
                       head_map={"logits": "output0"}, log=quiet)
    assert plain.passed and plain.artifacts[0].heads[0].reference_error == logits.reference_error
    (tmp_path / "digits" / "ten").mkdir()
    with pytest.raises(EdgehalError, match=r"has classes the reference has not: \['ten'\]"):
        run_parity(reference_artifact=digits_exports["keep"], artifacts=[], data=tmp_path / "digits", log=quiet)


def test_an_onnx_reference_refuses_what_it_cannot_use(colour_onnx, colour_images, tmp_path):
    ref, checkpoint = colour_onnx["fp32"], tmp_path / "model.pt"  # refused before the checkpoint is read
    without_data = f"reference {ref} | is an ONNX file given without data to run it on. Note: --data FOLDER"
    with pytest.raises(EdgehalError, match=re.escape(without_data)):
        run_parity(reference_artifact=ref, artifacts=[colour_onnx["fp16"]], head_map=COLOUR_HEADS, log=quiet)
    with pytest.raises(EdgehalError, match=r"has no output 'logits'. Note: one of its outputs \['scores', 'super'\]"):
        run_parity(reference_artifact=ref, artifacts=[], data=colour_images, head_map={"main": "logits"}, log=quiet)
    with pytest.raises(EdgehalError, match="has no edgehal metadata. Note: name its outputs with --head"):
        run_parity(reference_artifact=ref, artifacts=[], data=colour_images, log=quiet)
    # the first --head is the main head: its width must be the number of class folders
    with pytest.raises(EdgehalError, match=r"head 'superclass' \| has 2 outputs per sample. Note: one per class name"):
        run_parity(reference_artifact=ref, artifacts=[], data=colour_images, head_map={"superclass": "super"},
                   log=quiet)
    # a checkpoint reference runs on its own data set: --data would be a second source of samples
    with pytest.raises(EdgehalError, match=r"^data \| is for an ONNX file or engine as the reference, not a checkpo"):
        run_parity(checkpoint, [ref], data=colour_images, log=quiet)
    with pytest.raises(EdgehalError, match="needs one reference: got both a checkpoint and a reference artifact"):
        run_parity(checkpoint, [ref], reference_artifact=ref, data=colour_images, log=quiet)
    with pytest.raises(EdgehalError, match=r"split \| names no split of .*: a .npy is one set of samples"):
        run_parity(reference_artifact=ref, artifacts=[], data=tmp_path / "x.npy", split="test", log=quiet)
    with pytest.raises(EdgehalError, match=r"--input-size 16,16 \| differs from the .*'s input shape \(8,8\)"):
        run_parity(reference_artifact=ref, artifacts=[], data=colour_images, head_map=COLOUR_HEADS,
                   input_size=(16, 16), log=quiet)
    assert not (tmp_path / "saved").exists()


def test_a_saved_run_of_an_onnx_reference_gives_the_same_report(colour_onnx, colour_images, tmp_path):
    kwargs = dict(artifacts=[colour_onnx["fp16"], colour_onnx["broken"]], head_map=COLOUR_HEADS, precision="fp16",
                  log=quiet)
    direct = run_parity(reference_artifact=colour_onnx["fp32"], data=colour_images, save_run=tmp_path / "ref",
                        **kwargs)
    saved = RunResult.load(tmp_path / "ref")
    assert saved.info.kind == "onnx" and saved.info.manifest.main.class_names == ("blue", "dark", "green", "red")
    again = run_parity(reference=tmp_path / "ref", **kwargs)
    assert comparable(again) == comparable(direct) and not again.artifacts[1]
