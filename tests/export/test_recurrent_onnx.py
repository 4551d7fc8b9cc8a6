"""Recurrent layers through the torch.export-based exporter: the custom operators of edgehal.nets.rnn
translated to native ONNX RNN / LSTM (with P) / GRU nodes, against PyTorch and against the graph the
TorchScript exporter writes; the warnings edgehal lets through; parity of a trained recurrent model."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgehal.export.onnx import ExportOptions, export_module, export_onnx
from edgehal.export.recurrent_onnx import translation_table
from edgehal.nets.rnn import RecurrentLayer

from ..nets.test_rnn_models import _LayerOutputs, _LayerWithState

NATIVE = {"rnn": "RNN", "lstm": "LSTM", "peephole_lstm": "LSTM", "gru": "GRU"}
CASES = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("peephole_lstm", "tanh"), ("gru", "tanh")]
quiet = lambda _: None  # noqa: E731


def _layer(cell: str, activation: str = "tanh", *, input_size: int = 6, hidden: int = 10) -> RecurrentLayer:
    torch.manual_seed(0)
    layer = RecurrentLayer(cell=cell, input_size=input_size, hidden_size=hidden, num_layers=2, bidirectional=True,
                           activation=activation)
    for p in layer.parameters():   # larger than the init, so the gates saturate somewhere
        torch.nn.init.uniform_(p, -0.15 if activation == "relu" else -0.6, 0.15 if activation == "relu" else 0.6)
    return layer.eval()


def _dynamo(module, args, input_names, dynamic_shapes) -> onnx.ModelProto:
    with torch.no_grad():
        program = torch.onnx.export(module, args, dynamo=True, verbose=False, opset_version=18,
                                    input_names=input_names, dynamic_shapes=dynamic_shapes,
                                    custom_translation_table=translation_table())
    return program.model_proto


def _legacy(module, args, input_names, dynamic_axes) -> onnx.ModelProto:
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", category=DeprecationWarning)   # the legacy exporter's notices
        torch.onnx.export(module, args, buf, dynamo=False, opset_version=18, input_names=input_names,
                          dynamic_axes=dynamic_axes)
    return onnx.load_from_string(buf.getvalue())


# The ONNX operators' attribute defaults, so that a default written out equals a default left out.
DEFAULTS = {"RNN": {"layout": 0, "activations": [b"Tanh"] * 2},
            "LSTM": {"layout": 0, "input_forget": 0, "activations": [b"Sigmoid", b"Tanh", b"Tanh"] * 2},
            "GRU": {"layout": 0, "linear_before_reset": 0, "activations": [b"Sigmoid", b"Tanh"] * 2}}


def _native(model: onnx.ModelProto) -> list[tuple[str, dict, list[bool]]]:
    """Each native recurrent node (bidirectional): its operator, attributes and which inputs it is given."""
    out = []
    for node in model.graph.node:
        if node.op_type in ("RNN", "LSTM", "GRU"):
            attrs = {**DEFAULTS[node.op_type],
                     **{a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}}
            out.append((node.op_type, attrs, [bool(i) for i in node.input] + [False] * (8 - len(node.input))))
    return out


@pytest.mark.parametrize("cell,activation", CASES)
def test_each_layer_is_one_native_node_as_the_legacy_exporter_writes_it(cell, activation):
    module = _LayerOutputs(_layer(cell, activation)).eval()
    batch, time = torch.export.Dim("batch"), torch.export.Dim("time")
    model = _dynamo(module, (torch.randn(2, 11, 6),), ["input"], ({0: batch, 1: time},))
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count(NATIVE[cell]) == 2 and not {"Loop", "Scan", "If"} & set(ops) and len(ops) < 40, ops
    native = _native(model)
    for op, attrs, given in native:
        assert attrs["hidden_size"] == 10 and attrs["direction"] == b"bidirectional"
        if op == "GRU":
            assert attrs["linear_before_reset"] == 0
        if op == "RNN":
            assert attrs["activations"] == [activation.capitalize().encode()] * 2
        if op == "LSTM":
            assert given[7] == (cell == "peephole_lstm")          # P
        assert given[4] is False and given[5] is False            # no sequence_lens; zero initial state
    legacy = _legacy(module, (torch.randn(2, 11, 6),), ["input"], {"input": {0: "batch", 1: "time"}})
    assert native == _native(legacy)
    assert [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim[:2]] == ["batch", "time"]

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    worst = 0.0
    for n, steps in [(1, 28), (3, 10)]:
        x = torch.randn(n, steps, 6) * 2
        with torch.no_grad():
            expected = module(x)
        got = sess.run(None, {"input": x.numpy()})
        assert float(expected[0].abs().max()) > 0.1
        for e, g in zip(expected, got):
            assert g.shape == tuple(e.shape)
            worst = max(worst, float(np.abs(e.numpy() - g).max()))
    print(f"{cell}/{activation}: max |onnxruntime - pytorch| {worst:.2e}")
    assert worst < 1e-5


# One Dim named "batch" on the input and on the states: torch.onnx says it keeps one of the names.
@pytest.mark.filterwarnings("ignore:# The axis name. batch will not be used:UserWarning")
@pytest.mark.parametrize("cell", ["rnn", "lstm", "peephole_lstm", "gru"])
def test_initial_states_become_the_operators_initial_h_and_c(cell):
    layer = _layer(cell, input_size=4, hidden=6)
    module = _LayerWithState(layer).eval()
    lstm = layer.num_states == 2
    batch, time = torch.export.Dim("batch"), torch.export.Dim("time")
    x, h0, c0 = torch.randn(2, 9, 4), torch.randn(4, 2, 6), torch.randn(4, 2, 6)
    args, names, dims = (x, h0, c0), ["input", "h0", "c0"], ({0: batch, 1: time}, {1: batch}, {1: batch})
    k = 3 if lstm else 2
    model = _dynamo(module, args[:k], names[:k], dims[:k])
    native = _native(model)
    assert len(native) == 2 and all(given[5] and given[6] == lstm for _, _, given in native)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for n, steps in [(1, 28), (3, 10)]:
        x, h0, c0 = torch.randn(n, steps, 4), torch.randn(4, n, 6), torch.randn(4, n, 6)
        got = sess.run(None, dict(zip(names, [x.numpy(), h0.numpy(), c0.numpy()][:k])))
        with torch.no_grad():
            expected = module(*(x, h0, c0)[:k])
        assert max(float(np.abs(e.numpy() - g).max()) for e, g in zip(expected, got)) < 1e-5


# -- warnings: only the expected ones are silenced ---------------------------------------


class _Warns(torch.nn.Module):
    """A user's recurrent model that warns in its forward."""

    def __init__(self) -> None:
        super().__init__()
        from edgehal.nets.registry import create_model

        torch.manual_seed(0)
        self.model = create_model("rnn_classifier", dataset="digits", cell="gru", hidden_size=8, aux=[])
        self.manifest = self.model.manifest

    def forward(self, x):
        warnings.warn("the user's own warning", UserWarning)
        return self.model(x)


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_export_lets_the_models_warnings_through_and_no_exporter_deprecation(exporter, tmp_path):
    model = _Warns().eval()
    x = np.random.default_rng(0).uniform(0, 16, (4, 1, 8, 8)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_module(model, tmp_path / "m.onnx", example_inputs=x,
                      options=ExportOptions(exporter=exporter, check_samples=4), log=quiet)
    messages = [(w.category, str(w.message)) for w in caught]
    assert (UserWarning, "the user's own warning") in messages          # not swallowed
    others = [m for m in messages if m != (UserWarning, "the user's own warning")]
    assert not [m for m in others if issubclass(m[0], DeprecationWarning)], others
    assert not [m for m in others if "edgehal" in m[1] or "onnx" in m[1].lower()], others


# -- parity of a trained recurrent model, each exporter ---------------------------------


@pytest.fixture(scope="module")
def rows_checkpoint(tmp_path_factory):
    """A peephole LSTM row-sequential classifier with a HAL head, one epoch on the embedded digits."""
    from edgehal.config import config_from_dict
    from edgehal.train import train

    out = tmp_path_factory.mktemp("rows")
    cfg = config_from_dict({
        "name": "rows", "output_dir": str(out / "run"),
        "model": {"name": "rnn_classifier", "cell": "peephole_lstm", "hidden_size": 16, "aux": [{"case": "case1"}]},
        "data": {"dataset": "digits"},
        "train": {"epochs": 1, "batch_size": 50, "optimizer": "adamw", "lr": 0.005, "device": "cpu"},
    })
    return train(cfg, log=quiet, progress=False)


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_recurrent_parity_passes_on_the_full_test_split(exporter, rows_checkpoint, tmp_path):
    from edgehal.checkpoint import load_checkpoint
    from edgehal.parity import run_parity
    from edgehal.pipeline import data_for_checkpoint

    paths = [tmp_path / f"{aux}.onnx" for aux in ("keep", "prune")]
    for aux, path in zip(("keep", "prune"), paths):
        report = export_onnx(rows_checkpoint, path, options=ExportOptions(aux=aux, exporter=exporter), log=quiet)
        assert any("checked at lengths 8 and 4" in n for n in report.notes)
        assert [n.op_type for n in onnx.load(path).graph.node].count("LSTM") == 1
    parity = run_parity(rows_checkpoint, paths, log=quiet)
    test = data_for_checkpoint(load_checkpoint(rows_checkpoint), data_root=None).split("test")
    assert parity.passed and parity.split == "test" and parity.samples == len(test.x)
