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
    with pytest.raises(EdgehalError, match="coarse_stages"):
        create_model("hdcnn", branch_stages=1, coarse_stages=2)


def test_coarse_stages_give_the_coarse_component_a_branch_s_residual_stage():
    m = create_model("hdcnn", dataset="mnist", case="case1", coarse_stages=1, coarse_hidden=0)
    size = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert size(m.head.coarse.stages) == size(m.head.branches[0].stages) > 0
    assert size(create_model("hdcnn", dataset="mnist", case="case1").head.coarse.stages) == 0


@pytest.mark.parametrize("combine,branch_classes,coarse_stages",
                         [("weighted", "all", 0), ("hard", "group", 0), ("weighted", "all", 1)])
def test_exports_to_onnx_and_matches_onnxruntime(combine, branch_classes, coarse_stages):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    m = create_model("hdcnn", dataset="mnist", case="case4", combine=combine, branch_classes=branch_classes,
                     widths=[8, 16, 16], coarse_stages=coarse_stages).eval()
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
        "train.stages=[{epochs: 1, train: [trunk, head.branches], loss: [branches_all]},"
        " {epochs: 1, train: [head.coarse], loss: [coarse]}, {epochs: 1, train: all, lr: 0.01}]"])


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
    """Parameters and batch-norm statistics (not the batch counters, which count any forward pass)."""
    payload = load_checkpoint(path).payload
    return {k: v.clone() for k, v in payload["state_dict"].items() if not k.endswith("num_batches_tracked")}


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
    # frozen whole: weights and batch-norm running statistics of the trunk and branches
    assert _changed(s1, s2, "trunk.") == [] and _changed(s1, s2, "head.branches.") == []
    assert _changed(s1, s2, "head.coarse.")
    assert any(k.endswith("running_mean") for k in _changed(s1, s2, "head.coarse."))
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
    cfg = _staged_config(tmp_path)
    cfg.train.stages[1]["loss"] = ["corse"]
    with pytest.raises(EdgehalError, match=r"names \['corse'\].*some of \['fine', 'coarse', 'branches', 'branches_all'\]"):
        train(cfg, log=lambda _: None, progress=False)
    cfg = _staged_config(tmp_path)
    cfg.train.stages[1]["loss"] = "coarse"
    with pytest.raises(EdgehalError, match="a list of the model's loss terms"):
        train(cfg, log=lambda _: None, progress=False)
    assert not cfg.run_dir.exists()


def _stage_step(model, stage, x, y, optimizer=None):
    """One training step of ``stage`` as ``edgehal.train`` takes it; returns the gradients."""
    from edgehal.train import apply_stage, hold_frozen_batch_norms

    apply_stage(model, [stage], 0, cfg=None)
    model.train()
    hold_frozen_batch_norms(model)
    model.zero_grad(set_to_none=True)
    loss, _ = model.loss(model(x), {"label": y}, aux_weight=1.0, terms=stage.loss)
    loss.backward()
    if optimizer is not None:
        optimizer.step()
    return {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


def test_pretraining_is_not_pushed_through_the_random_coarse_component():
    from edgehal.train import Stage

    torch.manual_seed(0)
    model = create_model("hdcnn", dataset="mnist", case="case1", coarse_stages=1, coarse_hidden=0,
                         widths=[8, 16, 16])
    x, y = _images(16), torch.arange(16) % 10
    for terms, independent in ((("branches_all",), True), (("branches",), True),
                               (("fine", "coarse", "branches"), False)):
        stage = Stage(0, 1, ("trunk", "head.branches"), 0.1, terms)
        before = _stage_step(model, stage, x, y)
        assert all(before[n] is None for n in before if n.startswith("head.coarse."))
        with torch.no_grad():  # another random coarse component
            for p in model.head.coarse.parameters():
                p.add_(torch.randn_like(p))
        after = _stage_step(model, stage, x, y)
        trunk = [n for n in before if n.startswith("trunk.")]
        same = all(torch.equal(before[n], after[n]) for n in trunk)
        # on branch losses alone the trunk learns the same whatever the coarse component is;
        # on the whole loss (the old pretraining) it does not
        assert same is independent, terms


def test_branches_all_trains_every_branch_on_every_sample():
    from edgehal.train import Stage, check_stages

    torch.manual_seed(0)
    model = create_model("hdcnn", dataset="mnist", case="case4", widths=[8, 16, 16])
    x, y = _images(12), torch.arange(12) % 10
    out = model(x)
    total, parts = model.loss(out, {"label": y}, aux_weight=1.0, terms=("branches_all",))
    want = sum(torch.nn.functional.cross_entropy(out[f"fine_b{k}"], y) for k in range(3)) / 3
    torch.testing.assert_close(total, want)
    assert parts["branches_all"] == pytest.approx(float(want.detach()))
    assert "branches_all" not in model.loss(out, {"label": y}, aux_weight=1.0)[1]  # not in the whole loss
    # a branch scoring only its superclass's classes cannot take every sample: refused before training
    group = create_model("hdcnn", dataset="mnist", case="case4", branch_classes="group", widths=[8, 16, 16])
    with pytest.raises(EdgehalError, match=r"branches_all.*some of \['fine', 'coarse', 'branches'\]"):
        check_stages(group, [Stage(0, 1, ("trunk",), 0.1, ("branches_all",))])


def test_coarse_stage_changes_nothing_but_the_coarse_component():
    from edgehal.train import Stage

    torch.manual_seed(0)
    model = create_model("hdcnn", dataset="mnist", case="case1", coarse_stages=1, coarse_hidden=0,
                         widths=[8, 16, 16])
    x, y = _images(16), torch.arange(16) % 10
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = _stage_step(model, Stage(0, 1, ("head.coarse",), 0.1, ("coarse",)), x, y, optimizer)
    assert [n for n, g in grads.items() if g is not None and not n.startswith("head.coarse.")] == []
    assert all(grads[n] is not None for n in grads if n.startswith("head.coarse."))
    changed = [k for k, v in model.state_dict().items() if not torch.equal(before[k], v)]
    assert changed and all(k.startswith("head.coarse.") for k in changed), changed
