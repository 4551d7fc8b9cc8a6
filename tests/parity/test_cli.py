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
