"""Run results: running real artifacts, saving and loading them exactly, refusing damaged folders."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgehal.errors import EdgehalError
from edgehal.fileio import sha256_file
from edgehal.parity import RunResult, reference_inputs, run

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's legacy ONNX exporter

LABELS = {"label": np.array([0, 4, 5, 9, 9], np.int64), "building": np.array([1, 0, 2, 1, 0], np.int64)}


@pytest.fixture
def saved(make_run, tmp_path):
    outputs = {"logits": np.random.default_rng(0).normal(size=(5, 10)).astype(np.float32),
               "where": np.arange(10, dtype=np.float32).reshape(5, 2)}
    result = make_run(outputs, LABELS, kind="checkpoint", source_sha256=None)
    return result, result.save(tmp_path / "ref")


def test_save_then_load_gives_back_every_array_and_field_exactly(saved):
    result, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["inputs.npz", "labels.npz", "outputs.npz", "run.json"]
    loaded = RunResult.load(folder)
    assert loaded.info == result.info
    assert list(loaded.outputs) == ["logits", "where"]
    for name, array in result.outputs.items():
        assert loaded.outputs[name].dtype == array.dtype
        np.testing.assert_array_equal(loaded.outputs[name], array)
    np.testing.assert_array_equal(loaded.inputs.x, result.inputs.x)
    assert {k: v.tolist() for k, v in loaded.labels.items()} == {k: v.tolist() for k, v in LABELS.items()}
    assert (loaded.inputs.split, loaded.inputs.dataset) == ("test", "synthetic")


def _edit_run_json(folder, change) -> None:
    doc = json.loads((folder / "run.json").read_text())
    change(doc)
    (folder / "run.json").write_text(json.dumps(doc))


def test_load_refuses_a_folder_that_is_missing_or_was_not_finished(saved, tmp_path):
    _, folder = saved
    with pytest.raises(EdgehalError, match=r"saved run .*nowhere \| does not exist. Note: a folder written by"):
        RunResult.load(tmp_path / "nowhere")
    (folder / "run.json").unlink()  # what an interrupted save leaves: run.json is written last
    with pytest.raises(EdgehalError, match=r"has no run.json.*a save that did not finish leaves none"):
        RunResult.load(folder)


def test_load_refuses_damaged_files(saved):
    _, folder = saved
    text = (folder / "run.json").read_text()
    (folder / "run.json").write_text(text[: len(text) // 2])
    with pytest.raises(EdgehalError, match="has a damaged run.json"):
        RunResult.load(folder)
    (folder / "run.json").write_text(text)
    # an arrays file changed after the save (truncated by a copy, or from another run)
    data = (folder / "outputs.npz").read_bytes()
    (folder / "outputs.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(EdgehalError, match=r"outputs.npz does not match its run.json \(sha256 differs\)"):
        RunResult.load(folder)
    # damaged in a way its recorded checksum agrees with: numpy cannot read it
    _edit_run_json(folder, lambda doc: doc["files"].update({"outputs.npz": sha256_file(folder / "outputs.npz")}))
    with pytest.raises(EdgehalError, match=r"outputs.npz is damaged \(BadZipFile\)"):
        RunResult.load(folder)
    (folder / "outputs.npz").unlink()
    with pytest.raises(EdgehalError, match="has no outputs.npz"):
        RunResult.load(folder)


def test_load_refuses_a_newer_format_a_foreign_file_and_inconsistent_contents(saved, tmp_path):
    _, folder = saved
    for fmt, message in (("edgehal-run/2", "format edgehal-run/2, newer than this edgehal reads"),
                         ("something-else/1", "is not a saved edgehal run")):
        copy = shutil.copytree(folder, tmp_path / fmt.replace("/", "_"))
        _edit_run_json(copy, lambda doc, fmt=fmt: doc.update(format=fmt))
        with pytest.raises(EdgehalError, match=message):
            RunResult.load(copy)
    copy = shutil.copytree(folder, tmp_path / "heads")
    _edit_run_json(copy, lambda doc: doc["info"].update(heads=["logits"]))
    with pytest.raises(EdgehalError, match=r"outputs.npz holds \['logits', 'where'\].*names: \['logits'\]"):
        RunResult.load(copy)
    copy = shutil.copytree(folder, tmp_path / "samples")
    _edit_run_json(copy, lambda doc: doc["info"].update(samples=6))
    with pytest.raises(EdgehalError, match=r"outputs.npz:logits has shape \(5, 10\). Note: 6 rows"):
        RunResult.load(copy)
    copy = shutil.copytree(folder, tmp_path / "info")
    _edit_run_json(copy, lambda doc: doc["info"].pop("sha256"))
    with pytest.raises(EdgehalError, match="damaged run.json \\(no 'sha256'\\)"):
        RunResult.load(copy)


def test_saving_again_replaces_the_run(saved, make_run):
    _, folder = saved
    other = make_run({"logits": np.ones((5, 10), np.float32)}, LABELS)
    other.save(folder)
    loaded = RunResult.load(folder)
    assert list(loaded.outputs) == ["logits"] and loaded.outputs["logits"].sum() == 50.0


def test_run_records_what_ran_where_and_from_which_checkpoint(digits_checkpoint, digits_exports):
    from edgehal.artifact import read_artifact

    ckpt = read_artifact(digits_checkpoint)
    inputs = reference_inputs(ckpt.checkpoint, split="test", limit=50)
    assert inputs.x.dtype == np.uint8 and len(inputs) == 50  # pixels as stored; runners cast them
    ref = run(ckpt, inputs)
    got = run(digits_exports["prune"], inputs)
    assert ref.info.kind == "checkpoint" and ref.info.backend == "torch" and ref.info.device == "cpu"
    assert ref.info.sha256 == sha256_file(digits_checkpoint) and ref.info.source_sha256 is None
    assert ref.info.heads == ("logits", "aux_case1") and "torch" in ref.info.versions
    assert (got.info.kind, got.info.backend, got.info.runner, got.info.precision) == \
        ("onnx", "ort-cpu", "onnxruntime", "fp32")
    assert got.info.heads == ("logits",) and got.info.manifest.head_names == ("logits",)
    assert got.info.source_sha256 == ref.info.sha256  # the export records the checkpoint it came from
    assert got.info.samples == 50 and got.info.dataset == ref.info.dataset == "digits"
    np.testing.assert_allclose(got.outputs["logits"], ref.outputs["logits"], atol=1e-4)


def test_plain_onnx_runs_with_a_head_map_only(plain_onnx, digits_checkpoint):
    from edgehal.artifact import read_artifact

    inputs = reference_inputs(read_artifact(digits_checkpoint).checkpoint, limit=20)
    with pytest.raises(EdgehalError, match="has no edgehal metadata.*--head HEAD=OUTPUT"):
        run(plain_onnx, inputs)
    with pytest.raises(EdgehalError, match=r"has no output 'logits'. Note: outputs \['output0'\]"):
        run(plain_onnx, inputs, head_map={"logits": "logits"})
    got = run(plain_onnx, inputs, head_map={"logits": "output0"}, precision="fp16")
    assert got.info.heads == ("logits",) and got.info.manifest is None and got.info.precision == "fp16"
    assert got.info.head_map == {"logits": "output0"} and got.info.source_sha256 is None
