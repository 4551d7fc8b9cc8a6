"""``edgehal parity`` on the command line: a reference saved where PyTorch runs is compared on a
machine without PyTorch, with the same report; usage errors; exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from edgehal.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's legacy ONNX exporter

REPO = Path(__file__).resolve().parents[2]

# Runs the CLI in an interpreter where `import torch` fails, as on a target that has only onnxruntime.
WITHOUT_TORCH = ("import sys; sys.modules['torch'] = None; from edgehal.cli import main; "
                 "main(sys.argv[1:], prog_name='edgehal')")


def edgehal(*args: str, without_torch: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-c", WITHOUT_TORCH] if without_torch else [sys.executable, "-m", "edgehal.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=600, env=env)


def comparable(path: Path) -> dict:
    d = json.loads(path.read_text())
    d.pop("seconds")
    d["reference"].pop("saved_run")
    for a in d["artifacts"]:
        a.pop("seconds")
    return d


def test_save_run_then_reference_without_torch_gives_the_direct_report(digits_checkpoint, digits_exports, tmp_path):
    keep, prune = str(digits_exports["keep"]), str(digits_exports["prune"])
    direct = edgehal("parity", str(digits_checkpoint), keep, prune, "--report-dir", str(tmp_path / "direct"))
    assert direct.returncode == 0, direct.stdout + direct.stderr
    saved = edgehal("parity", str(digits_checkpoint), "--save-run", str(tmp_path / "ref"))
    assert saved.returncode == 0, saved.stdout + saved.stderr
    assert f"saved the reference run to {tmp_path / 'ref'}" in saved.stdout
    target = edgehal("parity", "--reference", str(tmp_path / "ref"), keep, prune, "--report-dir",
                     str(tmp_path / "target"), without_torch=True)
    assert target.returncode == 0, target.stdout + target.stderr
    assert "PASS: reports" in target.stdout
    assert comparable(tmp_path / "target" / "parity.json") == comparable(tmp_path / "direct" / "parity.json")
    # the wrapper really blocks torch: a checkpoint cannot be run there
    blocked = edgehal("parity", str(digits_checkpoint), keep, without_torch=True)
    assert blocked.returncode != 0 and "torch" in blocked.stderr


def test_save_run_alone_writes_only_the_run(digits_checkpoint, tmp_path):
    res = CliRunner().invoke(main, ["parity", str(digits_checkpoint), "--save-run", str(tmp_path / "ref"),
                                    "--split", "val", "--report-dir", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    assert f"edgehal parity --reference {tmp_path / 'ref'} ARTIFACT..." in res.output
    assert (tmp_path / "ref" / "run.json").is_file() and not (tmp_path / "rep").exists()


def test_strict_fails_an_export_of_another_checkpoint(digits_checkpoint, digits_exports, tmp_path):
    from edgehal.checkpoint import load_checkpoint, save_checkpoint

    other = tmp_path / "other.pt"
    save_checkpoint(other, {**load_checkpoint(digits_checkpoint).payload, "note": "re-saved"})
    args = ["parity", str(other), str(digits_exports["prune"]), "--report-dir", str(tmp_path / "rep")]
    warned = CliRunner().invoke(main, args)
    assert warned.exit_code == 0, warned.output
    assert "  warning: was exported from a checkpoint with sha256" in warned.output
    failed = CliRunner().invoke(main, [*args, "--strict"])
    assert failed.exit_code == 1, failed.output
    assert "  FAIL: was exported from a checkpoint with sha256" in failed.output
    assert json.loads((tmp_path / "rep" / "parity.json").read_text())["artifacts"][0]["source_check"] == "mismatch"


@pytest.mark.parametrize("args, message", [
    ([], "error: parity | was given no CHECKPOINT or REFERENCE. Note: CHECKPOINT ARTIFACT..., CHECKPOINT --save-run "
         "DIR, --reference DIR ARTIFACT..., or REFERENCE ARTIFACT... --data FOLDER"),
    (["ckpt.pt"], "error: parity | was given no ARTIFACT to compare"),
    (["--reference", "ref"], "error: parity --reference | was given no ARTIFACT"),
    (["--reference", "ref", "--save-run", "x", "a.onnx"], "error: --save-run | cannot be combined with --reference"),
    (["--reference", "ref", "--data-dir", "d", "a.onnx"], "error: --data-dir | cannot be combined with --reference"),
    (["--reference", "ref", "--data", "d", "a.onnx"], "error: --data | cannot be combined with --reference"),
    (["--reference", "nowhere", "a.onnx"], "error: saved run nowhere | does not exist"),
    (["a.onnx", "b.onnx"], "error: reference a.onnx | is an ONNX file given without data to run it on. Note: --data "
                           "FOLDER (an ImageFolder tree or split: class sub-folders of images) or --data inputs.npy"),
    (["a.plan", "b.onnx"], "error: reference a.plan | is a TensorRT engine given without data to run it on"),
    (["ckpt.pt", "b.onnx", "--data", "imgs"], "error: --data | is for an ONNX file or engine as the reference, not a "
                                              "checkpoint. Note: a CHECKPOINT runs on the data set it was trained on"),
    (["a.onnx", "b.onnx", "--data", "imgs", "--input-size", "28"], "error: --input-size '28' | is not two positive "
                                                                   "integers. Note: H,W"),
])
def test_usage_errors_exit_1_with_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["parity", *args])
    assert res.exit_code == 1, res.output
    assert message in res.output and "Traceback" not in res.output


def test_help_shows_the_three_ways_and_names_every_default():
    res = CliRunner().invoke(main, ["parity", "--help"], terminal_width=200)
    assert res.exit_code == 0
    for text in ("edgehal parity CHECKPOINT ARTIFACT...", "edgehal parity CHECKPOINT --save-run DIR",
                 "edgehal parity --reference DIR ARTIFACT...", "--strict"):
        assert text in res.output
    options = [line for line in res.output.splitlines() if line.strip().startswith("--")]
    assert options and all("Default" in line or "default" in line for line in options if "--help" not in line)


def test_damaged_model_fails_with_exit_code_1(mnist_checkpoint, mnist_exports, tmp_path):
    m = onnx.load(mnist_exports["prune"])
    # damage: scale the classifier's weights, as a bad conversion would
    gemm_w = [t for t in m.graph.initializer if len(t.dims) == 2][-1]
    w = onnx.numpy_helper.to_array(gemm_w).copy()
    w[:, : w.shape[1] // 2] *= -1.0
    gemm_w.CopyFrom(onnx.numpy_helper.from_array(w, gemm_w.name))
    damaged = tmp_path / "damaged.onnx"
    onnx.save(m, damaged)
    r = edgehal("parity", str(mnist_checkpoint), str(damaged), "--report-dir", str(tmp_path / "rep"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL" in r.stdout and (tmp_path / "rep" / "parity.json").is_file()


# ---- an ONNX file as the reference, on a user's images ----------------------------------------------------

COLOUR_HEADS = ["--head", "colour=scores", "--head", "superclass=super"]


def test_an_onnx_reference_on_an_image_folder_passes_fp16_and_fails_a_broken_copy(colour_onnx, colour_images,
                                                                                  tmp_path):
    args = ["parity", str(colour_onnx["fp32"]), str(colour_onnx["fp16"]), "--data", str(colour_images),
            *COLOUR_HEADS, "--precision", "fp16", "--report-dir", str(tmp_path / "rep")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert f"parity on test split: 48 samples; reference an ONNX file ({colour_onnx['fp32']})" in res.output
    assert "  colour: error " in res.output and "(reference " in res.output and "  superclass: max|diff| " in res.output
    assert "PASS: reports" in res.output
    doc = json.loads((tmp_path / "rep" / "parity.json").read_text())
    assert doc["passed"] and doc["reference"]["kind"] == "onnx" and doc["checkpoint"] == str(colour_onnx["fp32"])
    broken = CliRunner().invoke(main, [*args, str(colour_onnx["broken"])])
    assert broken.exit_code == 1 and f"FAIL {colour_onnx['broken']}" in broken.output


def test_save_run_of_an_onnx_reference_then_reference_gives_the_direct_report(colour_onnx, colour_images, tmp_path):
    fp16 = [str(colour_onnx["fp16"]), *COLOUR_HEADS, "--precision", "fp16"]
    direct = CliRunner().invoke(main, ["parity", str(colour_onnx["fp32"]), *fp16, "--data", str(colour_images),
                                       "--report-dir", str(tmp_path / "direct")])
    assert direct.exit_code == 0, direct.output
    saved = CliRunner().invoke(main, ["parity", str(colour_onnx["fp32"]), "--data", str(colour_images), *COLOUR_HEADS,
                                      "--save-run", str(tmp_path / "ref")])
    assert saved.exit_code == 0, saved.output
    assert f"edgehal parity --reference {tmp_path / 'ref'} ARTIFACT..." in saved.output
    target = CliRunner().invoke(main, ["parity", "--reference", str(tmp_path / "ref"), *fp16, "--report-dir",
                                       str(tmp_path / "target")])
    assert target.exit_code == 0, target.output
    assert comparable(tmp_path / "target" / "parity.json") == comparable(tmp_path / "direct" / "parity.json")


def test_a_npy_reference_run_needs_no_torch(colour_onnx, tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.integers(0, 256, (30, 3, 8, 8)).astype(np.uint8))
    np.save(tmp_path / "y.npy", rng.integers(0, 4, 30))
    r = edgehal("parity", str(colour_onnx["fp32"]), str(colour_onnx["fp16"]), "--data", str(tmp_path / "x.npy"),
                "--labels", str(tmp_path / "y.npy"), "--head", "colour=scores", "--precision", "fp16",
                "--report-dir", str(tmp_path / "rep"), without_torch=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "parity on x split: 30 samples" in r.stdout and "PASS: reports" in r.stdout
