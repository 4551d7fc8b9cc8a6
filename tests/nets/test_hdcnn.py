"""HD-CNN: manifest from the superclass cases, weighted/hard outputs, ONNX, staged training.

Its evaluator is tested in tests/scoring/test_hdcnn.py."""

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from edgehal.checkpoint import load_checkpoint
from edgehal.config import load_config
from edgehal.errors import EdgehalError
from edgehal.hierarchy import get_case
from edgehal.nets import create_model
from edgehal.nets.base import ExportWrapper
from edgehal.nets.hierarchical import HierarchicalHead

REPO = Path(__file__).resolve().parents[2]


def _images(n, seed=0, shape=(1, 28, 28)):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), generator=g).float()


@pytest.mark.parametrize("case", ["case1", "case2", "case3", "case4"])
def test_manifest_takes_the_coarse_classes_from_the_case(case):
    m = create_model("hdcnn", dataset="mnist", case=case)
    sc = get_case("mnist", case)
    man = m.manifest
    assert man.main.name == "fine" and man.main.kind == "main"
    coarse = man.head("coarse")
    assert coarse.kind == "aux" and coarse.parent_map == sc.mapping and coarse.feeds_main
    assert coarse.class_names == sc.superclass_names
    assert [h.name for h in man.aux_heads] == ["coarse"] + [f"fine_b{k}" for k in range(sc.num_superclasses)]
    assert man.evaluator == "hdcnn"
    assert man.coarse_to_fine.groups == sc.groups and man.coarse_to_fine.case == sc.name
    # a branch is scored on its own superclass's samples only: -1 elsewhere
    assert man.head("fine_b0").parent_map == tuple(c if c in sc.groups[0] else -1 for c in range(10))
    assert isinstance(m.head, HierarchicalHead)  # the module the localization network uses


def test_weighted_output_is_the_mixture_of_the_branch_outputs():
    torch.manual_seed(0)
    m = create_model("hdcnn", dataset="mnist", case="case4").eval()
    with torch.no_grad():
        out = m(_images(5))
    pk = torch.softmax(out["coarse"], 1)
    mix = sum(pk[:, k:k + 1] * torch.softmax(out[f"fine_b{k}"], 1) for k in range(3))
    torch.testing.assert_close(out["fine"].exp(), mix)


def test_hard_group_output_stays_in_the_predicted_superclass():
    torch.manual_seed(0)
    m = create_model("hdcnn", dataset="mnist", case="case4", combine="hard", branch_classes="group").eval()
    groups = get_case("mnist", "case4").groups
    with torch.no_grad():
        out = m(_images(16))
    assert [out[f"fine_b{k}"].shape[1] for k in range(3)] == [len(g) for g in groups]
    for n in range(16):
        k = int(out["coarse"][n].argmax())
        assert int(out["fine"][n].argmax()) == groups[k][int(out[f"fine_b{k}"][n].argmax())]


def test_bad_options_are_clear_errors():
    with pytest.raises(EdgehalError, match="branch_stages"):
        create_model("hdcnn", branch_stages=3)
    with pytest.raises(EdgehalError, match="combine"):
        create_model("hdcnn", combine="soft")
    with pytest.raises(EdgehalError, match="case"):
        create_model("hdcnn", case="case9")


@pytest.mark.parametrize("combine,branch_classes", [("weighted", "all"), ("hard", "group")])
def test_exports_to_onnx_and_matches_onnxruntime(combine, branch_classes):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    m = create_model("hdcnn", dataset="mnist", case="case4", combine=combine, branch_classes=branch_classes,
                     widths=[8, 16, 16]).eval()
    names = list(m.manifest.head_names)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(ExportWrapper(m, names).eval(), (_images(2),), buf, input_names=["input"],
                          output_names=names, opset_version=17, dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, **{n: {0: "batch"} for n in names}})
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for n in (1, 9):
        x = _images(n, seed=n)
        with torch.no_grad():
            want = {k: v.numpy() for k, v in m(x).items()}
        got = dict(zip(names, sess.run(None, {"input": x.numpy()})))
        for name in names:
            assert np.abs(got[name] - want[name]).max() < 1e-4, name
            assert np.array_equal(got[name].argmax(1), want[name].argmax(1))


class _StopAfter(Exception):
    pass


def _staged_config(tmp_path):
    return load_config(REPO / "models" / "configs" / "mnist_hdcnn_case1.yaml", [
        f"output_dir={tmp_path / 'run'}", "data.dataset=digits", "data.limit=192", "model.dataset=digits",
        "batch_size=64", "threads=1", "device=cpu", "epochs=3",
        "train.stages=[{epochs: 1, train: [trunk, head.branches]}, {epochs: 1, train: [head.coarse]},"
        " {epochs: 1, train: all, lr: 0.01}]"])


def _run_until(cfg, stop_at_epoch, resume=None):
    """Train, interrupting when epoch ``stop_at_epoch`` reports (before it is saved)."""
    from edgehal.train import train

    def log(line):
        if line.startswith(f"epoch {stop_at_epoch}/"):
            raise _StopAfter
    try:
        return train(cfg, resume=resume, log=log, progress=False)
    except _StopAfter:
        return cfg.run_dir / "checkpoint.pt"


def _params(path):
    payload = load_checkpoint(path).payload
    model = create_model(payload["model_name"], **payload["model_kwargs"])
    names = {n for n, _ in model.named_parameters()}
    return {k: v.clone() for k, v in payload["state_dict"].items() if k in names}


def _changed(a, b, prefix):
    keys = [k for k in a if k.startswith(prefix)]
    assert keys
    return [k for k in keys if not torch.equal(a[k], b[k])]


def test_staged_training_freezes_per_stage_and_resumes(tmp_path):
    cfg = _staged_config(tmp_path)
    ckpt = _run_until(cfg, 2)                       # stage 1 done (trunk + branches)
    s1 = _params(ckpt)
    assert load_checkpoint(ckpt).payload["training"]["epoch"] == 1
    ckpt = _run_until(cfg, 3, resume=ckpt)          # stage 2: coarse component only
    s2 = _params(ckpt)
    assert load_checkpoint(ckpt).payload["training"]["epoch"] == 2
    assert _changed(s1, s2, "trunk.") == [] and _changed(s1, s2, "head.branches.") == []
    assert _changed(s1, s2, "head.coarse.")
    ckpt = _run_until(cfg, 99, resume=ckpt)         # stage 3: everything
    s3 = _params(ckpt)
    assert _changed(s2, s3, "trunk.") and _changed(s2, s3, "head.branches.") and _changed(s2, s3, "head.coarse.")
    payload = load_checkpoint(ckpt).payload
    assert [h["epoch"] for h in payload["history"]] == [1, 2, 3]
    assert "coarse_fine_consistency" in payload["metrics"]["test"]


def test_stage_config_errors_before_any_work(tmp_path):
    from edgehal.train import train

    cfg = _staged_config(tmp_path)
    cfg.train.epochs = 4
    with pytest.raises(EdgehalError, match="add up to 3 epochs"):
        train(cfg, log=lambda _: None, progress=False)
    cfg = _staged_config(tmp_path)
    cfg.train.stages[1]["train"] = ["head.corse"]
    with pytest.raises(EdgehalError, match="names no parameter"):
        train(cfg, log=lambda _: None, progress=False)
