import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from edgehal.checkpoint import load_checkpoint, save_checkpoint
from edgehal.errors import EdgehalError


def test_round_trip_rebuilds_the_same_model(digits_checkpoint):
    ckpt = load_checkpoint(digits_checkpoint)
    model = ckpt.build_model()
    assert ckpt.manifest.head_names == ("logits", "aux_case1")
    assert ckpt.payload["class_names"] == [str(i) for i in range(10)]
    assert ckpt.preprocessing.dataset == "digits"
    assert "test" in ckpt.metrics and "logits" in ckpt.metrics["test"]
    assert {"edgehal", "torch", "onnx"} <= set(ckpt.payload["versions"])
    x = torch.rand(3, 1, 8, 8) * 255
    out = model(x)
    assert out["logits"].shape == (3, 10) and out["aux_case1"].shape == (3, 2)


def test_loads_with_weights_only(digits_checkpoint):
    payload = torch.load(digits_checkpoint, weights_only=True)  # must not raise
    assert payload["format"] == "edgehal-checkpoint/1"


def test_truncated_and_foreign_files_are_refused(digits_checkpoint, tmp_path):
    data = digits_checkpoint.read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(EdgehalError, match="corrupt or truncated"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(EdgehalError, match="not an edgehal checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(EdgehalError, match="file not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_failed_save_leaves_previous_file_intact(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model_name": "x", "model_kwargs": {}, "manifest": {}, "state_dict": {}})
    before = path.read_bytes()

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"bad": Boom()})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edgehal.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_cli_truncated_checkpoint_and_unknown_config_key(digits_checkpoint, tmp_path):
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(digits_checkpoint.read_bytes()[:1000])
    r = _cli("eval", str(bad))
    assert r.returncode == 1
    assert r.stderr.strip().startswith("error: checkpoint") and "corrupt or truncated" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\nmodel: {name: hal_resnet}\ntrain: {epochs: 1, lr_max: 3}\n")
    r = _cli("train", str(cfg))
    assert r.returncode == 1
    assert "train.lr_max | is not a known key" in r.stderr and "Traceback" not in r.stderr
    r = _cli("train", str(cfg).replace("c.yaml", "missing.yaml"))
    assert r.returncode == 1 and "file not found" in r.stderr


# -- the rebuilt model's manifest must be the stored one ---------------------------

ZOO = Path(__file__).resolve().parent.parent / "models" / "zoo"


def _edited(digits_checkpoint, tmp_path, edit) -> Path:
    payload = torch.load(digits_checkpoint, weights_only=True)
    edit(payload["manifest"])
    path = tmp_path / "edited.pt"
    save_checkpoint(path, payload)
    return path


def _aux_head(manifest: dict) -> dict:
    return next(h for h in manifest["heads"] if h["name"] == "aux_case1")


def test_a_stored_manifest_that_differs_from_the_rebuilt_one_is_refused(digits_checkpoint, tmp_path):
    def relabel(manifest):
        head = _aux_head(manifest)
        head["class_names"] = list(reversed(head["class_names"]))
        head["parent_map"] = [1 - v for v in head["parent_map"]]

    ckpt = load_checkpoint(_edited(digits_checkpoint, tmp_path, relabel))
    with pytest.raises(EdgehalError, match=r"stored manifest differs from the one its model 'hal_resnet' "
                                           r"rebuilds in heads\[aux_case1\]\.class_names, "
                                           r"heads\[aux_case1\]\.parent_map"):
        ckpt.build_model()


def test_a_changed_input_shape_or_head_list_is_refused(digits_checkpoint, tmp_path):
    def reshape(manifest):
        manifest["input_shape"] = [1, 9, 9]

    with pytest.raises(EdgehalError, match=r"rebuilds in input_shape\. Note"):
        load_checkpoint(_edited(digits_checkpoint, tmp_path, reshape)).build_model()

    def drop_aux(manifest):
        manifest["heads"] = [h for h in manifest["heads"] if h["kind"] == "main"]

    with pytest.raises(EdgehalError, match=r"rebuilds in heads \(names: \['logits'\] vs \['logits', 'aux_case1'\]\)"):
        load_checkpoint(_edited(digits_checkpoint, tmp_path, drop_aux)).build_model()


def test_zoo_checkpoints_with_version_1_manifests_still_build():
    paths = sorted(ZOO.glob("*/checkpoint.pt"))
    assert paths, f"no model zoo checkpoints in {ZOO}"
    for path in paths:
        ckpt = load_checkpoint(path)
        assert ckpt.payload["manifest"].get("version", 1) == 1  # upgraded on read
        model = ckpt.build_model()
        assert model.manifest == ckpt.manifest


def test_foreign_files_are_named_with_what_to_do_never_corrupt(tmp_path):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
    x = torch.rand(2, 3, 2, 2)
    files = {"state dict": tmp_path / "weights.pt", "pickled": tmp_path / "whole.pt",
             "torchscript": tmp_path / "scripted.pt", "program": tmp_path / "program.pt2"}
    torch.save(net.state_dict(), files["state dict"])
    torch.save(net, files["pickled"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(net, x).save(str(files["torchscript"]))
    torch.export.save(torch.export.export(net, (x,)), files["program"])
    expected = {
        "state dict": r"is a state dict of 2 tensors \(1\.weight, 1\.bias\), not an edgehal checkpoint\. "
                      r"Note: it holds weights but no architecture",
        "pickled": r"is a whole pickled nn\.Module of class torch\.nn\.modules\.container\.Sequential .*not an "
                   r"edgehal checkpoint\. Note: unpickling runs whatever code the file names.*--trust-pickle",
        "torchscript": r"is a TorchScript archive \(torch\.jit\.save\), not an edgehal checkpoint\. Note: export it "
                       r"with `edgehal export scripted\.pt -o model\.onnx --manifest heads\.yaml --input-shape",
        "program": r"is a torch\.export program \(torch\.export\.save\), not an edgehal checkpoint\. Note: export it",
    }
    for kind, path in files.items():
        with pytest.raises(EdgehalError, match=expected[kind]) as caught:
            load_checkpoint(path)
        assert "corrupt" not in str(caught.value), kind
