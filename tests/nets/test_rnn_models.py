"""Recurrent layers and row-sequential classifiers: ONNX export with native operators, parity, training."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from edgehal.config import config_from_dict, load_config
from edgehal.errors import EdgehalError
from edgehal.nets.base import ExportWrapper
from edgehal.nets.registry import create_model
from edgehal.nets.rnn import CELLS, RecurrentLayer

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

NATIVE = {"rnn": "RNN", "lstm": "LSTM", "peephole_lstm": "LSTM", "gru": "GRU"}
CONFIGS = Path(__file__).resolve().parents[2] / "models" / "configs"


def _export(module: torch.nn.Module, example: torch.Tensor, outputs: list[str],
            dynamic: dict[str, dict[int, str]]) -> bytes:
    """The exporter's path: legacy TorchScript exporter, opset 17, input named "input"."""
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the TorchScript exporter's deprecation notice
        torch.onnx.export(module.eval(), (example,), f, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=outputs, dynamic_axes=dynamic)
    return f.getvalue()


def _check_graph(data: bytes, cell: str, layers: int) -> "onnx.ModelProto":
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count(NATIVE[cell]) == layers, ops
    assert not {"Loop", "Scan", "If"} & set(ops), ops
    assert len(ops) < 40, ops   # not an unrolled recurrence
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "GRU":
            assert attrs["linear_before_reset"] == 0
        if node.op_type == "LSTM":
            assert attrs.get("layout", 0) == 0 and attrs.get("input_forget", 0) == 0
            assert (len(node.input) == 8 and node.input[7] != "") == (cell == "peephole_lstm")
    return model


class _LayerOutputs(torch.nn.Module):
    def __init__(self, layer: RecurrentLayer) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x):
        y, state = self.layer(x)
        return (y,) + tuple(state)


@pytest.mark.parametrize("cell,activation,scale", [
    ("rnn", "tanh", 0.6), ("rnn", "relu", 0.15), ("lstm", "tanh", 0.6), ("peephole_lstm", "tanh", 0.6),
    ("gru", "tanh", 0.6)])
def test_layer_exports_native_op_with_dynamic_batch_and_length(cell, activation, scale):
    torch.manual_seed(0)
    layer = RecurrentLayer(cell=cell, input_size=6, hidden_size=10, num_layers=2, bidirectional=True,
                           activation=activation)
    for p in layer.parameters():   # larger than the init, so the gates saturate somewhere
        torch.nn.init.uniform_(p, -scale, scale)
    module = _LayerOutputs(layer).eval()
    names = ["output", "h_n"] + (["c_n"] if layer.num_states == 2 else [])
    dynamic = {"input": {0: "batch", 1: "time"}, "output": {0: "batch", 1: "time"},
               **{n: {1: "batch"} for n in names[1:]}}
    data = _export(module, torch.randn(2, 11, 6), names, dynamic)
    _check_graph(data, cell, layers=2)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch, steps in [(3, 50), (7, 13)]:
        x = torch.randn(batch, steps, 6) * 2
        with torch.no_grad():
            expected = module(x)
        got = sess.run(None, {"input": x.numpy()})
        assert float(expected[0].abs().max()) > 0.1   # a signal, not numbers too small to differ
        for e, g in zip(expected, got):
            assert g.shape == tuple(e.shape)
            worst = max(worst, float(np.abs(e.numpy() - g).max()))
    print(f"{cell}/{activation}: max abs diff torch vs onnxruntime (layer) {worst:.2e}")
    assert worst < 1e-4


class _LayerWithState(torch.nn.Module):
    def __init__(self, layer: RecurrentLayer) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x, h0, c0=None):
        y, state = self.layer(x, (h0, c0) if self.layer.num_states == 2 else (h0,))
        return (y,) + tuple(state)


@pytest.mark.parametrize("cell", ["peephole_lstm", "gru"])
def test_layer_export_with_initial_state(cell):
    """Initial states become the operator's initial_h / initial_c inputs (per layer slices)."""
    torch.manual_seed(3)
    layer = RecurrentLayer(cell=cell, input_size=4, hidden_size=6, num_layers=2, bidirectional=True)
    module = _LayerWithState(layer).eval()
    x, h0, c0 = torch.randn(2, 9, 4), torch.randn(4, 2, 6), torch.randn(4, 2, 6)
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x, h0, c0), f, dynamo=False, opset_version=17,
                          input_names=["input", "h0", "c0"],
                          dynamic_axes={"input": {0: "batch", 1: "time"}, "h0": {1: "batch"}, "c0": {1: "batch"}})
    model = onnx.load_from_string(f.getvalue())
    native = [n for n in model.graph.node if n.op_type == NATIVE[cell]]
    assert len(native) == 2 and all(n.input[5] != "" for n in native)
    sess = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    x, h0, c0 = torch.randn(5, 17, 4), torch.randn(4, 5, 6), torch.randn(4, 5, 6)
    feed = {"input": x.numpy(), "h0": h0.numpy()}
    if cell == "peephole_lstm":
        feed["c0"] = c0.numpy()
    got = sess.run(None, feed)
    with torch.no_grad():
        expected = module(x, h0, c0)
    assert max(float(np.abs(e.numpy() - g).max()) for e, g in zip(expected, got)) < 1e-4


@pytest.mark.parametrize("cell", list(CELLS))
def test_classifier_exports_with_heads_and_matches(cell):
    torch.manual_seed(1)
    model = create_model("rnn_classifier", cell=cell, hidden_size=16, bidirectional=cell in ("lstm", "gru"),
                         num_layers=2 if cell == "rnn" else 1, aux=[{"case": "case1"}],
                         mean=[0.13], std=[0.31]).eval()
    heads = list(model.manifest.head_names)
    assert heads == ["logits", "aux_case1"]
    assert model.manifest.input_name == "input" and model.manifest.input_shape == (1, 28, 28)
    dynamic = {"input": {0: "batch", 2: "rows"}, **{h: {0: "batch"} for h in heads}}
    data = _export(ExportWrapper(model, heads), torch.randint(0, 256, (2, 1, 28, 28)).float(), heads, dynamic)
    _check_graph(data, cell, layers=model.rnn.num_layers)
    from edgehal.export.graph import prune_outputs
    from edgehal.export.inspect import inspect_model

    proto = onnx.load_from_string(data)
    for graph in (proto, prune_outputs(proto, ["logits"])):        # `edgehal inspect --target tensorrt`
        report = inspect_model(graph, path=f"{cell}.onnx")
        assert report.ok, report.lines()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch, rows in [(5, 28), (9, 50)]:
        x = torch.randint(0, 256, (batch, 1, rows, 28)).float()    # raw pixels, normalised in-graph
        with torch.no_grad():
            expected = model(x)
        got = dict(zip(heads, sess.run(heads, {"input": x.numpy()})))
        for h in heads:
            assert got[h].shape == (batch, model.manifest.head(h).num_outputs)
            worst = max(worst, float(np.abs(expected[h].numpy() - got[h]).max()))
            assert (expected[h].argmax(1).numpy() == got[h].argmax(1)).all()
    print(f"{cell}: max abs diff torch vs onnxruntime (classifier) {worst:.2e}")
    assert worst < 1e-4


@pytest.mark.parametrize("cell", list(CELLS))
def test_training_steps_reduce_loss(cell):
    torch.manual_seed(2)
    model = create_model("rnn_classifier", dataset="digits", cell=cell, hidden_size=24,
                         aux=["case1"], mean=[0.3], std=[0.4])
    x = torch.randint(0, 256, (32, 1, 8, 8)).float()
    labels = {"label": torch.arange(32) % 10}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss, parts = model.loss(model(x), labels, aux_weight=1.0)
        assert set(parts) == {"logits", "aux_case1"}
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses


def _train_rows_smoke(tmp_path) -> Path:
    """The real trainer wires data shape, classes and statistics into the builder."""
    from edgehal.checkpoint import load_checkpoint
    from edgehal.train import train

    cfg = config_from_dict({
        "name": "rows_smoke", "output_dir": str(tmp_path / "run"),
        "model": {"name": "rnn_classifier", "cell": "peephole_lstm", "hidden_size": 16,
                  "aux": [{"case": "case1"}]},
        "data": {"dataset": "digits", "limit": 200},
        "train": {"epochs": 1, "batch_size": 50, "optimizer": "adamw", "lr": 0.005, "device": "cpu"},
    })
    path = train(cfg, log=lambda _: None, progress=False)
    payload = load_checkpoint(path).payload
    assert tuple(payload["manifest"]["input_shape"]) == (1, 8, 8)
    assert [h["name"] for h in payload["manifest"]["heads"]] == ["logits", "aux_case1"]
    assert "error_rate" in payload["metrics"]["test"]["logits"]
    return path


def test_train_loop_smoke_on_embedded_digits(tmp_path):
    _train_rows_smoke(tmp_path)


def test_export_has_a_dynamic_sequence_that_tensorrt_planning_profiles(tmp_path):
    """`edgehal export` of a trained recurrent checkpoint: dynamic batch *and* sequence length (rows),
    onnxruntime equal to PyTorch at other lengths, `inspect --target tensorrt` clean, and a build plan
    whose profile covers 1..trained rows by default or the --dim range; --fixed-sequence fixes it."""
    from edgehal.checkpoint import load_checkpoint
    from edgehal.export.inspect import inspect_tensorrt
    from edgehal.export.onnx import ExportOptions, export_onnx
    from edgehal.export.tensorrt.plan import EngineOptions, plan_build

    ckpt = _train_rows_smoke(tmp_path)
    out = tmp_path / "rows.prune.onnx"
    report = export_onnx(ckpt, out, options=ExportOptions(aux="prune"), log=lambda _: None)
    assert any("dynamic sequence dimension (input axis 2) checked at lengths 8 and 4" in n for n in report.notes)
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 1, "rows", 8]

    model = load_checkpoint(ckpt).build_model().eval()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch, rows in [(3, 8), (5, 3), (2, 13)]:
        x = torch.randint(0, 17, (batch, 1, rows, 8)).float()
        (got,) = sess.run(["logits"], {"input": x.numpy()})
        with torch.no_grad():
            want = model(x)["logits"].numpy()
        assert float(np.abs(got - want).max()) < 1e-4

    report = inspect_tensorrt(out)
    assert report.ok, report.lines()
    assert any("dimension 2 ('rows') is dynamic" in line and "1..8" in line for line in report.lines())
    plan = plan_build(out, EngineOptions(max_batch=16))
    assert (plan.profiles[0].min, plan.profiles[0].opt, plan.profiles[0].max) == (
        (1, 1, 1, 8), (16, 1, 8, 8), (16, 1, 8, 8))
    plan = plan_build(out, EngineOptions(max_batch=16, dims={"rows": (2, 8, 20)}))
    assert (plan.profiles[0].min[2], plan.profiles[0].opt[2], plan.profiles[0].max[2]) == (2, 8, 20)

    fixed = tmp_path / "rows.fixed.onnx"
    export_onnx(ckpt, fixed, options=ExportOptions(aux="prune", fixed_sequence=True), log=lambda _: None)
    dims = onnx.load(str(fixed)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 1, 8, 8]
    with pytest.raises(EdgehalError, match="names no dynamic dimension"):
        plan_build(fixed, EngineOptions(dims={"rows": (1, 8, 8)}))


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("hal", [False, True])
def test_mnist_rows_configs(cell, hal):
    name = f"mnist_rows_{cell}" + ("_hal_case1" if hal else "")
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.name == name and cfg.data.dataset == "mnist"
    kwargs = {k: v for k, v in cfg.model.items() if k != "name"}
    assert kwargs["cell"] == cell
    model = create_model(cfg.model["name"], **kwargs)
    assert model.manifest.head_names == (("logits", "aux_case1") if hal else ("logits",))
    if hal:
        assert model.manifest.head("aux_case1").feeds_main
    out = model(torch.randint(0, 256, (2, 1, 28, 28)).float())
    assert out["logits"].shape == (2, 10)
