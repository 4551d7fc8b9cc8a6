"""The parity suite on the shipped MNIST model and all 10,000 real test images."""

import subprocess
import sys

import numpy as np
import onnx
import pytest

from edgehal.errors import EdgehalError
from edgehal.parity import mcnemar_exact, run_parity, write_reports

quiet = lambda _: None  # noqa: E731


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
        assert result.passed and result.precision == "fp32"
        for h in result.heads:
            assert h.error_diff_pp == 0.0 and h.agreement == 100.0 and h.max_abs_diff < 1e-3


def test_int8_within_its_tolerance(report):
    int8 = report.artifacts[2]
    assert int8.precision == "int8" and int8.passed, int8.heads
    assert abs(int8.heads[0].error_diff_pp) <= 0.5 and int8.heads[0].agreement >= 99.0


def test_reports_are_written(report, tmp_path):
    md, js = write_reports(report, tmp_path)
    assert "| `keep.onnx` | fp32 | logits |" in md.read_text()
    import json
    assert json.loads(js.read_text())["passed"] is True


def test_damaged_model_fails_with_exit_code_1(mnist_checkpoint, mnist_exports, tmp_path):
    m = onnx.load(mnist_exports["prune"])
    # damage: scale the classifier's weights, as a bad conversion would
    gemm_w = [t for t in m.graph.initializer if len(t.dims) == 2][-1]
    w = onnx.numpy_helper.to_array(gemm_w).copy()
    w[:, : w.shape[1] // 2] *= -1.0
    gemm_w.CopyFrom(onnx.numpy_helper.from_array(w, gemm_w.name))
    damaged = tmp_path / "damaged.onnx"
    onnx.save(m, damaged)
    r = subprocess.run([sys.executable, "-m", "edgehal.cli", "parity", str(mnist_checkpoint), str(damaged),
                        "--report-dir", str(tmp_path / "rep")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL" in r.stdout and (tmp_path / "rep" / "parity.json").is_file()


def test_plain_onnx_with_named_outputs_and_unknown_heads(digits_checkpoint, tmp_path):
    import torch
    from edgehal.checkpoint import load_checkpoint
    model = load_checkpoint(digits_checkpoint).build_model()

    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x):
            return self.m(x)["logits"]

    plain = tmp_path / "plain.onnx"
    torch.onnx.export(Plain().eval(), (torch.rand(2, 1, 8, 8),), str(plain), input_names=["pixels"],
                      output_names=["output0"], dynamic_axes={"pixels": {0: "n"}, "output0": {0: "n"}},
                      opset_version=17, dynamo=False)
    with pytest.raises(EdgehalError, match="no edgehal metadata.*--head"):
        run_parity(digits_checkpoint, [plain], log=quiet)
    rep = run_parity(digits_checkpoint, [plain], head_map={"logits": "output0"}, log=quiet)
    assert rep.passed and rep.artifacts[0].heads[0].agreement == 100.0
    with pytest.raises(EdgehalError, match="head 'superclass'.*one of"):
        run_parity(digits_checkpoint, [plain], head_map={"superclass": "output0"}, log=quiet)
    with pytest.raises(EdgehalError, match="not a tolerance"):
        run_parity(digits_checkpoint, [plain], head_map={"logits": "output0"}, tolerances=["speed=1"], log=quiet)


def test_tolerance_override_per_head(digits_checkpoint, tmp_path):
    from edgehal.export.onnx import ExportOptions, export_onnx
    p = tmp_path / "k.onnx"
    export_onnx(digits_checkpoint, p, options=ExportOptions(), log=quiet)
    rep = run_parity(digits_checkpoint, [p], tolerances=["aux_case1:max_abs_diff=1e-12"], log=quiet)
    logits, aux = rep.artifacts[0].heads
    assert logits.passed and not aux.passed and "max abs diff" in aux.failures[0]


def test_mcnemar_exact_values():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    # two-sided binomial: b=0, c=6 -> 2 * 0.5**6
    assert mcnemar_exact(0, 6) == pytest.approx(2 * 0.5 ** 6)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 2 ** 10)
    assert 0.0 < mcnemar_exact(100, 10) < 1e-15


def test_hdcnn_parity_scores_branches_on_their_own_superclass_and_reports_consistency(tmp_path):
    from pathlib import Path

    from edgehal.config import load_config
    from edgehal.export.onnx import ExportOptions, export_onnx
    from edgehal.train import train

    repo = Path(__file__).resolve().parent.parent
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
