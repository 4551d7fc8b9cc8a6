"""The thin CLI: one line and exit 1 for a user error, help on every command."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from edgehal.artifact import read_artifact
from edgehal.cli import main
from edgehal.fileio import sha256_file

COMMANDS = {"quickstart", "train", "eval", "export", "quantize", "parity", "serve", "bench", "doctor", "inspect",
            "build-engine", "export-triton"}


def test_every_command_is_there_and_has_help():
    assert COMMANDS <= set(main.commands)
    runner = CliRunner()
    for name in sorted(COMMANDS):
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage:" in result.output


def test_a_user_error_is_one_line_and_exit_1(tmp_path):
    missing = tmp_path / "nothing.onnx"
    result = CliRunner().invoke(main, ["inspect", str(missing), "--target", "tensorrt"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nothing.onnx" in lines[0]
    assert "Traceback" not in result.output


def test_an_invalid_choice_lists_the_valid_ones(tmp_path):
    result = CliRunner().invoke(main, ["export", str(tmp_path / "c.pt"), "-o", str(tmp_path / "m.onnx"),
                                       "--aux", "drop"])
    assert result.exit_code == 2 and "'keep'" in result.output and "'prune'" in result.output


# ---- export of model files edgehal did not write -------------------------------------


class _TwoHeads(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                         torch.nn.Flatten())
        self.main = torch.nn.Linear(4, 3)
        self.aux = torch.nn.Linear(4, 2)

    def forward(self, x):
        f = self.trunk(x)
        return self.main(f), self.aux(f)


HEADS_YAML = """\
input_shape: [3, 12, 12]
heads:
  - {name: logits, kind: main, level: 0, class_names: [a, b, c]}
  - {name: coarse, kind: aux, level: 1, class_names: [ab, c], parent_map: [0, 0, 1]}
"""


@pytest.fixture()
def foreign(tmp_path):
    """A two-head network saved as TorchScript, a torch.export program, a pickle and a state dict."""
    net = _TwoHeads().eval()
    x = torch.rand(2, 3, 12, 12)
    files = {kind: tmp_path / name for kind, name in (("torchscript", "net.pt"), ("program", "net.pt2"),
                                                       ("pickle", "pickled.pt"), ("state_dict", "weights.pt"))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(net).save(str(files["torchscript"]))
    batch = torch.export.Dim("batch", min=1)
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes=({0: batch},)), files["program"])
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 12 * 12, 3)).eval(), files["pickle"])
    torch.save(net.state_dict(), files["state_dict"])
    (tmp_path / "heads.yaml").write_text(HEADS_YAML)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((16, 3, 12, 12)).astype(np.float32))
    return net, files, tmp_path


def _export(*args):
    return CliRunner().invoke(main, ["export", *map(str, args)])


def test_export_of_torchscript_and_exported_program_with_a_manifest(foreign):
    net, files, folder = foreign
    fresh = torch.rand(5, 3, 12, 12)
    with torch.no_grad():
        want = [t.numpy() for t in net(fresh)]
    for kind in ("torchscript", "program"):
        out = folder / f"{kind}.onnx"
        result = _export(files[kind], "-o", out, "--manifest", folder / "heads.yaml",
                         "--example-inputs", folder / "x.npy")
        assert result.exit_code == 0, result.output
        assert "logits: max |onnxruntime - pytorch|" in result.output and "random" not in result.output
        got = ort.InferenceSession(str(out)).run(["logits", "coarse"], {"input": fresh.numpy()})
        assert np.allclose(got[0], want[0], atol=1e-5) and np.allclose(got[1], want[1], atol=1e-5), kind
        meta = read_artifact(out).require_metadata()
        assert meta.manifest.head("coarse").parent_map == (0, 0, 1) and meta.manifest.model == "net"
        assert meta.source_sha256 == sha256_file(files[kind])


def test_export_refuses_foreign_files_it_cannot_export_as_they_are(foreign):
    _, files, folder = foreign
    out = folder / "out.onnx"
    result = _export(files["torchscript"], "-o", out)
    assert result.exit_code == 1
    assert "is a TorchScript archive (torch.jit.save), not an edgehal checkpoint" in result.output
    assert "--manifest heads.yaml" in result.output and "corrupt" not in result.output
    for extra in ([], ["--manifest", folder / "heads.yaml", "--input-shape", "3,12,12"]):
        result = _export(files["state_dict"], "-o", out, *extra)
        assert result.exit_code == 1, result.output
        assert "is a state dict of 6 tensors" in result.output
        assert "holds weights but no architecture" in result.output
        assert "model.load_state_dict" in result.output and "edgehal.export(model=model" in result.output
    result = _export(files["torchscript"], "-o", out, "--example-inputs", folder / "x.npy")
    assert result.exit_code == 1 and "--example-inputs | needs --manifest" in result.output
    result = _export(files["torchscript"], "-o", out, "--manifest", folder / "heads.yaml")
    assert result.exit_code == 1 and "needs example inputs" in result.output
    assert not out.exists()


def test_a_pickled_module_needs_trust_pickle(foreign):
    _, files, folder = foreign
    out = folder / "pickled.onnx"
    manifest = folder / "one_head.yaml"
    manifest.write_text("heads: [{name: logits, kind: main, level: 0, class_names: [a, b, c]}]\n")
    args = [files["pickle"], "-o", out, "--manifest", manifest, "--input-shape", "3,12,12"]
    result = _export(*args)
    assert result.exit_code == 1 and not out.exists()
    assert "a whole pickled nn.Module of class torch.nn.modules.container.Sequential" in result.output
    assert "unpickling runs whatever code the file names" in result.output and "--trust-pickle" in result.output
    result = _export(*args, "--trust-pickle")
    assert result.exit_code == 0, result.output
    assert "the check runs on 256 random inputs of shape [3, 12, 12] in [0, 1)" in result.output
    x = np.random.default_rng(1).random((3, 3, 12, 12)).astype(np.float32)
    got = ort.InferenceSession(str(out)).run(["logits"], {"input": x})[0]
    with torch.no_grad():
        want = torch.load(files["pickle"], weights_only=False)(torch.from_numpy(x)).numpy()
    assert np.allclose(got, want, atol=1e-5)
