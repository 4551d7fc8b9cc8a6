import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgehal.artifact import read_artifact
from edgehal.errors import EdgehalError
from edgehal.export.onnx import ExportOptions, export_module, export_onnx


def _consumers_reach(model, name, outputs):
    """Output names reachable downstream from tensor ``name``."""
    frontier, seen, reached = [name], set(), set()
    while frontier:
        t = frontier.pop()
        if t in outputs:
            reached.add(t)
        for node in model.graph.node:
            if t in node.input:
                for o in node.output:
                    if o not in seen:
                        seen.add(o)
                        frontier.append(o)
    return reached


def test_pruned_hal_export_has_no_dead_nodes(mnist_exports):
    # HAL's auxiliary block feeds the classifier: pruning drops only the output, and leaves nothing unused.
    pruned = onnx.load(mnist_exports["prune"])
    assert [o.name for o in pruned.graph.output] == ["logits"]
    assert dead_nodes(pruned) == [] and unused_initializers(pruned) == []


def test_kept_and_pruned_mnist_exports(mnist_checkpoint, mnist_exports, data_root):
    kept = onnx.load(mnist_exports["keep"])
    pruned = onnx.load(mnist_exports["prune"])
    for m in (kept, pruned):
        onnx.checker.check_model(m, full_check=True)
    assert [o.name for o in kept.graph.output] == ["logits", "aux_case1"]
    assert [o.name for o in pruned.graph.output] == ["logits"]
    # no node of the pruned graph has a result that reaches only an auxiliary output
    outs = {o.name for o in pruned.graph.output}
    for node in pruned.graph.node:
        assert any(_consumers_reach(pruned, o, outs) for o in node.output), node.name
    # dynamic batch by default
    assert pruned.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_plain_onnxruntime_gives_the_checkpoint_error_rate(mnist_checkpoint, mnist_exports, data_root):
    from edgehal.checkpoint import load_checkpoint
    from edgehal.data import build_dataset

    test = build_dataset("mnist", root=data_root).test
    x, y = test.x.float().numpy(), test.labels["label"].numpy()
    recorded = load_checkpoint(mnist_checkpoint).metrics["test"]
    for aux in ("keep", "prune"):
        sess = ort.InferenceSession(str(mnist_exports[aux]), providers=["CPUExecutionProvider"])
        logits = np.concatenate([sess.run(["logits"], {"input": x[i:i + 1000]})[0] for i in range(0, len(x), 1000)])
        assert 100.0 * (logits.argmax(1) != y).mean() == pytest.approx(recorded["logits"]["error_rate"], abs=1e-9)
    sess = ort.InferenceSession(str(mnist_exports["keep"]), providers=["CPUExecutionProvider"])
    aux = np.concatenate([sess.run(["aux_case1"], {"input": x[i:i + 1000]})[0] for i in range(0, len(x), 1000)])
    superclass = np.where(y >= 5, 0, 1)
    assert 100.0 * (aux.argmax(1) != superclass).mean() == pytest.approx(recorded["aux_case1"]["error_rate"])


def test_metadata_carries_the_manifest_and_provenance(mnist_checkpoint, mnist_exports):
    from edgehal.fileio import sha256_file
    meta = read_artifact(mnist_exports["keep"]).require_metadata()
    assert meta.manifest.head_names == ("logits", "aux_case1")
    assert meta.manifest.head("aux_case1").parent_map == (1, 1, 1, 1, 1, 0, 0, 0, 0, 0)
    assert meta.preprocessing.layout == "NCHW" and len(meta.preprocessing.mean) == 1
    assert meta.source_sha256 == sha256_file(mnist_checkpoint)
    assert meta.metrics["test"]["logits"] is not None
    assert {"torch", "onnx", "onnxruntime", "edgehal"} <= set(meta.versions)
    pruned = read_artifact(mnist_exports["prune"]).require_metadata()
    assert pruned.aux == "prune" and pruned.manifest.head_names == ("logits",)
    assert pruned.full_manifest.head_names == ("logits", "aux_case1")


def dead_nodes(model) -> list[str]:
    """Nodes none of whose outputs reaches a graph output: what a half-done prune leaves behind."""
    nodes = list(model.graph.node)
    needed = {o.name for o in model.graph.output}
    live = set()
    for index in reversed(range(len(nodes))):
        if any(o in needed for o in nodes[index].output):
            live.add(index)
            needed.update(nodes[index].input)
    return [f"{n.op_type} {n.name}" for i, n in enumerate(nodes) if i not in live]


def unused_initializers(model) -> list[str]:
    used = {i for n in model.graph.node for i in n.input}
    return [t.name for t in model.graph.initializer if t.name not in used]


def test_pruning_a_training_only_branch_removes_its_nodes(digits_ds_checkpoint, tmp_path):
    k, p = tmp_path / "k.onnx", tmp_path / "p.onnx"
    rk = export_onnx(digits_ds_checkpoint, k, options=ExportOptions(aux="keep"), log=lambda _: None)
    rp = export_onnx(digits_ds_checkpoint, p, options=ExportOptions(aux="prune"), log=lambda _: None)
    assert rp.nodes < rk.nodes
    assert len(onnx.load(p).graph.initializer) < len(onnx.load(k).graph.initializer)
    # Nothing of the training-only branch stays behind: every node and weight serves the main output.
    assert dead_nodes(onnx.load(p)) == [] and unused_initializers(onnx.load(p)) == []
    assert dead_nodes(onnx.load(k)) == []
    x = (np.random.default_rng(0).random((7, 1, 8, 8)) * 255).astype(np.float32)
    a = ort.InferenceSession(str(k)).run(["logits"], {"input": x})[0]
    b = ort.InferenceSession(str(p)).run(["logits"], {"input": x})[0]
    assert np.array_equal(a, b)


def test_fixed_batch_fp16_and_opset(digits_checkpoint, tmp_path):
    out = tmp_path / "f16.onnx"
    export_onnx(digits_checkpoint, out, options=ExportOptions(precision="fp16", batch_size=4, opset=18),
                log=lambda _: None)
    m = onnx.load(out)
    assert m.opset_import[0].version == 18
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # FP32 I/O
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer)
    assert read_artifact(out).require_metadata().precision == "fp16"


def test_bad_requests_write_nothing(digits_checkpoint, tmp_path):
    out = tmp_path / "x.onnx"
    with pytest.raises(EdgehalError, match="keep or prune"):
        export_onnx(digits_checkpoint, out, options=ExportOptions(aux="drop"))
    with pytest.raises(EdgehalError, match="INT8 comes from"):
        export_onnx(digits_checkpoint, out, options=ExportOptions(precision="int8"))
    with pytest.raises(EdgehalError, match="differs from PyTorch"):
        export_onnx(digits_checkpoint, out, options=ExportOptions(precision="fp16", atol=1e-9),
                    log=lambda _: None)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_corrupt_onnx_and_non_edgehal_checkpoint(tmp_path, digits_checkpoint):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(EdgehalError, match="corrupt or not an ONNX file"):
        read_artifact(bad).require_metadata()
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    r = subprocess.run([sys.executable, "-m", "edgehal.cli", "export", str(foreign), "-o", str(tmp_path / "o.onnx")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "is a state dict of 1 tensor (weights), not an edgehal checkpoint" in r.stderr
    assert "holds weights but no architecture" in r.stderr


# -- export_module: any nn.Module, named by a head manifest ------------------------

def two_head_manifest(**changes):
    from edgehal.manifest import Head, HeadManifest

    heads = changes.pop("heads", (
        Head(name="logits", kind="main", level=0, class_names=("cat", "dog", "car", "bus")),
        Head(name="coarse", kind="aux", level=1, class_names=("animal", "vehicle"), parent_map=(0, 0, 1, 1))))
    return HeadManifest(**{"model": "user_net", "input_name": "image", "input_shape": (3, 8, 8),
                           "heads": heads, **changes})


class TwoHeads(torch.nn.Module):
    """A user's network: a shared trunk, a main head, and a training-only coarse head."""

    def __init__(self, returns: str = "tuple", aux_width: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.returns = returns
        self.trunk = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                         torch.nn.Flatten())
        self.main = torch.nn.Linear(6, 4)
        self.aux = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, aux_width))

    def forward(self, x):
        f = self.trunk(x)
        if self.returns == "dict":
            return {"coarse": self.aux(f), "logits": self.main(f)}  # not in manifest order: named
        return self.main(f), self.aux(f)


@pytest.mark.parametrize("returns", ["tuple", "dict"])
def test_export_module_keeps_and_prunes_a_user_network(returns, tmp_path):
    model, manifest = TwoHeads(returns).eval(), two_head_manifest()
    x = torch.rand(12, 3, 8, 8)
    paths = {aux: tmp_path / f"{aux}.onnx" for aux in ("keep", "prune")}
    for aux, path in paths.items():
        export_module(model, path, example_inputs=x, manifest=manifest, options=ExportOptions(aux=aux),
                      metrics={"test": {"logits": {"error_rate": 1.5}}}, source_sha256="ab" * 32, log=lambda _: None)
    kept, pruned = onnx.load(paths["keep"]), onnx.load(paths["prune"])
    assert [o.name for o in kept.graph.output] == ["logits", "coarse"]
    assert [o.name for o in pruned.graph.output] == ["logits"]
    assert dead_nodes(pruned) == [] and len(pruned.graph.node) < len(kept.graph.node)
    with torch.no_grad():
        want = model(x)
    want = want if returns == "dict" else dict(zip(["logits", "coarse"], want))
    fresh = torch.rand(5, 3, 8, 8)  # dynamic batch, inputs the export never saw
    with torch.no_grad():
        want_fresh = model(fresh)
    want_fresh = want_fresh if returns == "dict" else dict(zip(["logits", "coarse"], want_fresh))
    got = ort.InferenceSession(str(paths["keep"])).run(None, {"image": fresh.numpy()})
    assert np.allclose(got[0], want_fresh["logits"].numpy(), atol=1e-5)
    assert np.allclose(got[1], want_fresh["coarse"].numpy(), atol=1e-5)
    main_kept = ort.InferenceSession(str(paths["keep"])).run(["logits"], {"image": x.numpy()})[0]
    main_pruned = ort.InferenceSession(str(paths["prune"])).run(["logits"], {"image": x.numpy()})[0]
    assert np.array_equal(main_kept, main_pruned)
    meta = read_artifact(paths["prune"]).require_metadata()
    assert meta.manifest.head_names == ("logits",) and meta.full_manifest == manifest
    assert meta.full_manifest.head("coarse").parent_map == (0, 0, 1, 1)
    assert meta.source_sha256 == "ab" * 32 and meta.metrics["test"]["logits"]["error_rate"] == 1.5


def test_export_module_of_one_tensor_fp16_fixed_batch(tmp_path):
    from edgehal.manifest import Head

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4)).eval()
    manifest = two_head_manifest(heads=(Head(name="logits", kind="main", level=0, class_names=("a", "b", "c", "d")),))
    out = tmp_path / "one.onnx"
    export_module(net, out, example_inputs=np.random.default_rng(0).random((3, 3, 8, 8)), manifest=manifest,
                  options=ExportOptions(precision="fp16", batch_size=4), log=lambda _: None)
    m = onnx.load(out)
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4
    assert read_artifact(out).require_metadata().precision == "fp16"


def test_export_module_refuses_what_does_not_fit_the_manifest_and_writes_nothing(tmp_path):
    from edgehal.manifest import Head

    out = tmp_path / "x.onnx"
    x = torch.rand(4, 3, 8, 8)
    cases = [
        (TwoHeads(), torch.rand(4, 8, 8), two_head_manifest(),
         r"example inputs \| have the shape \[4, 8, 8\]. Note: \[N, 3, 8, 8\]"),
        (TwoHeads(), torch.rand(4, 3, 9, 8), two_head_manifest(), r"have the shape \[4, 3, 9, 8\]"),
        (TwoHeads("dict"), x, two_head_manifest(heads=(
            Head(name="logits", kind="main", level=0, class_names=("cat", "dog", "car", "bus")),
            Head(name="superclass", kind="aux", level=1, class_names=("animal", "vehicle")))),
         r"are named \['coarse', 'logits'\] but the manifest's heads are \['logits', 'superclass'\]"),
        (TwoHeads(), x, two_head_manifest(heads=two_head_manifest().heads[:1]),
         r"are 2 \(tuple\) but the manifest has 1 heads \['logits'\]"),
        (TwoHeads(aux_width=3), x, two_head_manifest(),
         r"head 'coarse' \| has 2 outputs in the manifest \(its class_names\) but the model's output is of "
         r"shape \[4, 3\]"),
        (torch.nn.Flatten(), x, two_head_manifest(), r"are one tensor but the manifest has 2 heads"),
    ]
    for model, inputs, manifest, message in cases:
        with pytest.raises(EdgehalError, match=message):
            export_module(model.eval(), out, example_inputs=inputs, manifest=manifest, log=lambda _: None)
    with pytest.raises(EdgehalError, match="has no head manifest"):
        export_module(TwoHeads(), out, example_inputs=x, log=lambda _: None)
    assert list(tmp_path.iterdir()) == []


# -- both exporters, every registered architecture ---------------------------------

EXPORTERS = ("dynamo", "legacy")
NATIVE = {"rnn": "RNN", "lstm": "LSTM", "peephole_lstm": "LSTM", "gru": "GRU"}
LOCALIZATION = dict(building_floors=[[0, 1], [0, 1, 2]], coord_mean=[0.0, 0.0], coord_scale=1.0, input_shape=[16])
# Small options per architecture (required ones included); every cell of the row-sequential classifier,
# one of them two layers deep and bidirectional.
ARCHITECTURES = {
    "hal_resnet": [dict(aux=["case1", {"case": "case4", "feeds_main": False}])],
    "hdcnn": [{}],
    "hier_localization": [LOCALIZATION],
    "recurrent_localization": [dict(LOCALIZATION, cell="gru")],
    "rnn_classifier": [dict(aux=["case2"], hidden_size=12, cell="rnn", activation="relu"),
                       dict(aux=["case1"], hidden_size=12, cell="lstm"),
                       dict(aux=["case1"], hidden_size=12, cell="peephole_lstm"),
                       dict(aux=["case2"], hidden_size=12, cell="gru", num_layers=2, bidirectional=True)],
    "tv_hal": [{}],
    "tv_hdcnn": [{}],
}


def _architecture_cases():
    from edgehal.nets.registry import list_models

    cases = []
    for name in list_models():
        for i, kwargs in enumerate(ARCHITECTURES.get(name, [None])):
            for exporter in EXPORTERS:
                cases.append(pytest.param(name, kwargs, exporter, id=f"{name}-{i}-{exporter}"))
    return cases


def _pixels(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)


@pytest.mark.parametrize("name,kwargs,exporter", _architecture_cases())
def test_every_architecture_exports_with_both_exporters(name, kwargs, exporter, tmp_path):
    """Each registered architecture exported with its heads kept, and that graph pruned as ``aux="prune"``
    prunes it: the pruned main output is bit-for-bit the kept one's; a recurrent model has one native operator
    per layer (both directions in it), no loop, and dynamic batch *and* rows that onnxruntime runs at 28 and 10
    rows, equal to PyTorch. (Exports with ``aux="prune"`` of both exporters: the parity tests.)"""
    from edgehal.export.graph import prune_outputs
    from edgehal.nets.registry import create_model

    assert kwargs is not None, f"add small options for the architecture {name!r} to ARCHITECTURES in {__file__}"
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    manifest = model.manifest
    paths = {aux: tmp_path / f"{aux}.onnx" for aux in ("keep", "prune")}
    export_module(model, paths["keep"], example_inputs=_pixels((4, *manifest.input_shape)),
                  options=ExportOptions(exporter=exporter, check_samples=4), log=lambda _: None)
    onnx.save(prune_outputs(onnx.load(paths["keep"]), manifest.select("prune").head_names), paths["prune"])
    kept = onnx.load(paths["keep"])
    assert read_artifact(paths["keep"]).require_metadata().versions["exporter"] == exporter
    assert kept.opset_import[0].version == 18
    ops = [n.op_type for n in kept.graph.node]
    assert not {"Loop", "Scan"} & set(ops), ops
    dims = [d.dim_param or d.dim_value for d in kept.graph.input[0].type.tensor_type.shape.dim]
    lengths = [None]
    if manifest.sequence is not None:
        cell, layers = kwargs["cell"], kwargs.get("num_layers", 1)
        assert ops.count(NATIVE[cell]) == layers and len(ops) < 40, ops
        assert dims == ["batch", 1, "rows", 28]
        lengths = [28, 10]
    else:
        assert dims == ["batch", *manifest.input_shape]
    sessions = {aux: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for aux, p in paths.items()}
    main = manifest.main.name
    for batch in (1, 3):
        for rows in lengths:
            shape = list(manifest.input_shape)
            if rows is not None:
                shape[manifest.sequence.axis - 1] = rows
            x = _pixels((batch, *shape), seed=batch)
            got = dict(zip(manifest.head_names, sessions["keep"].run(list(manifest.head_names), {manifest.input_name: x})))
            with torch.no_grad():
                want = model(torch.from_numpy(x))
            for head in manifest.head_names:
                assert np.allclose(got[head], want[head].numpy(), rtol=1e-5, atol=1e-5), (head, batch, rows)
            (pruned_main,) = sessions["prune"].run([main], {manifest.input_name: x})
            assert np.array_equal(pruned_main, got[main])


def test_dynamo_refuses_an_opset_below_18_and_names_the_legacy_exporter(digits_checkpoint, tmp_path):
    out = tmp_path / "x.onnx"
    with pytest.raises(EdgehalError, match=r"--opset \| 17 is below 18.*--exporter legacy"):
        export_onnx(digits_checkpoint, out, options=ExportOptions(opset=17), log=lambda _: None)
    with pytest.raises(EdgehalError, match=r"--exporter \| 'torchscript' is not an exporter"):
        export_onnx(digits_checkpoint, out, options=ExportOptions(exporter="torchscript"), log=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_cli_exporter_option(digits_checkpoint, tmp_path):
    from click.testing import CliRunner

    from edgehal.cli import main

    runner = CliRunner()
    help_text = runner.invoke(main, ["export", "--help"]).output
    assert "--exporter [dynamo|legacy]" in help_text and "deprecated" in help_text
    legacy = tmp_path / "legacy.onnx"
    result = runner.invoke(main, ["export", str(digits_checkpoint), "-o", str(legacy), "--exporter", "legacy",
                                  "--opset", "17", "--check-samples", "16"])
    assert result.exit_code == 0, result.output
    assert onnx.load(legacy).opset_import[0].version == 17
    assert read_artifact(legacy).require_metadata().versions["exporter"] == "legacy"
    result = runner.invoke(main, ["export", str(digits_checkpoint), "-o", str(tmp_path / "d.onnx"), "--opset", "17"])
    assert result.exit_code == 1 and "--exporter legacy" in result.output
    assert not (tmp_path / "d.onnx").exists()


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_parity_passes_on_the_full_test_split_for_each_exporter(exporter, digits_checkpoint, tmp_path):
    from edgehal.parity import run_parity

    paths = [tmp_path / f"{aux}.onnx" for aux in ("keep", "prune")]
    for aux, path in zip(("keep", "prune"), paths):
        export_onnx(digits_checkpoint, path, options=ExportOptions(aux=aux, exporter=exporter), log=lambda _: None)
    report = run_parity(digits_checkpoint, paths, log=lambda _: None)
    assert report.passed and report.split == "test"
    from edgehal.checkpoint import load_checkpoint
    from edgehal.pipeline import data_for_checkpoint

    assert report.samples == len(data_for_checkpoint(load_checkpoint(digits_checkpoint), data_root=None).split("test").x)
