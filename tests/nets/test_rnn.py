"""The four recurrent cells against independent implementations, with identical weights.

Vanilla RNN and LSTM against ``torch.nn.RNN`` / ``torch.nn.LSTM``; the peephole
LSTM against the ONNX ``LSTM`` operator with its peephole input ``P``, and the
GRU against the ONNX ``GRU`` operator with ``linear_before_reset=0``, both
built here with ``onnx.helper`` and run by onnxruntime. float32, 60 steps,
absolute tolerance 1e-4 on every output and final state.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgehal.errors import EdgehalError
from edgehal.nets.rnn import CELLS, RecurrentLayer, make_cell

T, N, F_IN, H = 60, 3, 5, 8
ATOL = 1e-4


def _np(a) -> np.ndarray:
    return a.detach().cpu().double().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, np.float64)


def _max_diff(a, b) -> float:
    return float(np.abs(_np(a) - _np(b)).max())


# --------------------------------------------------------------------------
# Against torch.nn.RNN / torch.nn.LSTM

# torch stacks the LSTM gates as i, f, g, o (g is the candidate a of edgehal.nets.rnn).
TORCH_GATES = {"rnn": ("s",), "lstm": ("i", "f", "a", "o")}


def _copy_torch_weights(layer: RecurrentLayer, ref: torch.nn.RNNBase, gates: tuple[str, ...]) -> None:
    with torch.no_grad():
        for index, directions in enumerate(layer.layers):
            for d, cell in enumerate(directions):
                suffix = f"_l{index}" + ("_reverse" if d else "")
                w_ih, w_hh = getattr(ref, "weight_ih" + suffix), getattr(ref, "weight_hh" + suffix)
                bias = getattr(ref, "bias_ih" + suffix) + getattr(ref, "bias_hh" + suffix)
                for j, gate in enumerate(gates):
                    rows = slice(j * H, (j + 1) * H)
                    cell.weight_x[cell.gate(gate)] = w_ih[rows]
                    cell.weight_h[cell.gate(gate)] = w_hh[rows]
                    cell.bias[cell.gate(gate)] = bias[rows]


@pytest.mark.parametrize("cell,layers,bidirectional,nonlinearity,scale", [
    ("rnn", 1, False, "tanh", 0.5),
    ("rnn", 2, True, "tanh", 0.5),
    ("rnn", 1, True, "relu", 0.12),
    ("lstm", 1, False, None, 0.5),
    ("lstm", 2, True, None, 0.5),
])
@pytest.mark.parametrize("with_state", [False, True])
def test_matches_torch(cell, layers, bidirectional, nonlinearity, scale, with_state):
    torch.manual_seed(1)
    if cell == "rnn":
        ref = torch.nn.RNN(F_IN, H, num_layers=layers, bidirectional=bidirectional,
                           nonlinearity=nonlinearity, batch_first=True)
    else:
        ref = torch.nn.LSTM(F_IN, H, num_layers=layers, bidirectional=bidirectional, batch_first=True)
    for p in ref.parameters():
        torch.nn.init.uniform_(p, -scale, scale)
    ours = RecurrentLayer(cell=cell, input_size=F_IN, hidden_size=H, num_layers=layers,
                          bidirectional=bidirectional, activation=nonlinearity or "tanh")
    _copy_torch_weights(ours, ref, TORCH_GATES[cell])
    x = torch.randn(N, T, F_IN) * 2
    d = 2 if bidirectional else 1
    states = tuple(torch.randn(layers * d, N, H) for _ in range(1 if cell == "rnn" else 2))
    with torch.no_grad():
        if cell == "rnn":
            y_ref, h_ref = ref(x, states[0] if with_state else None)
            refs = (h_ref,)
        else:
            y_ref, refs = ref(x, states if with_state else None)
        y, finals = ours(x, states if with_state else None)
    assert y.shape == y_ref.shape == (N, T, d * H)
    diffs = [_max_diff(y, y_ref)] + [_max_diff(a, b) for a, b in zip(finals, refs)]
    print(f"max abs diff vs torch.nn.{type(ref).__name__}: {max(diffs):.2e}")
    assert max(diffs) < ATOL, diffs
    assert float(y.abs().max()) > 0.1  # not a trivially tiny signal


# --------------------------------------------------------------------------
# Against the ONNX operators, run by onnxruntime


def _run_onnx_operator(op: str, attrs: dict, feeds: dict[str, np.ndarray], *, inputs: list[str],
                       num_outputs: int, directions: int) -> list[np.ndarray]:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    outputs = ["Y", "Y_h", "Y_c"][:num_outputs]
    node = helper.make_node(op, inputs, outputs, **attrs)
    graph = helper.make_graph(
        [node], f"reference_{op}",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in feeds.items()],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, shape)
         for k, shape in zip(outputs, [[T, directions, N, H], [directions, N, H], [directions, N, H]])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _gate_weights(rng: np.random.Generator, gates: str, fan_in: int, scale: float = 0.5) -> dict:
    u = lambda *shape: rng.uniform(-scale, scale, shape).astype(np.float32)  # noqa: E731
    return {g: {"W": u(H, fan_in), "R": u(H, H), "Wb": u(H), "Rb": u(H)} for g in gates}


def _assign(cell, weights: dict, ours_name: dict[str, str]) -> None:
    """Put per-gate weights into our cell; ONNX's separate biases Wb + Rb become our one bias."""
    with torch.no_grad():
        for onnx_gate, w in weights.items():
            rows = cell.gate(ours_name[onnx_gate])
            cell.weight_x[rows] = torch.from_numpy(w["W"])
            cell.weight_h[rows] = torch.from_numpy(w["R"])
            cell.bias[rows] = torch.from_numpy(w["Wb"] + w["Rb"])


def _onnx_stack(per_direction: list[dict], order: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W, R, B exactly as the ONNX spec lays them out: gates in ``order``, B = [Wb, Rb]."""
    W = np.stack([np.concatenate([w[g]["W"] for g in order]) for w in per_direction])
    R = np.stack([np.concatenate([w[g]["R"] for g in order]) for w in per_direction])
    B = np.stack([np.concatenate([w[g]["Wb"] for g in order] + [w[g]["Rb"] for g in order])
                  for w in per_direction])
    return W, R, B


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_peephole_lstm_matches_onnx_lstm_with_p(bidirectional, with_state):
    rng = np.random.default_rng(2)
    d = 2 if bidirectional else 1
    layer = RecurrentLayer(cell="peephole_lstm", input_size=F_IN, hidden_size=H, bidirectional=bidirectional)
    per_dir, peeps = [], []
    for cell in layer.layers[0]:
        w = _gate_weights(rng, "iofc", F_IN)
        p = {g: rng.uniform(-0.8, 0.8, H).astype(np.float32) for g in "iof"}
        _assign(cell, w, {"i": "i", "o": "o", "f": "f", "c": "a"})
        with torch.no_grad():
            for g in "iof":
                cell.peephole[cell.peephole_gate(g)] = torch.from_numpy(p[g])
        per_dir.append(w)
        peeps.append(np.concatenate([p[g] for g in "iof"]))       # ONNX P order: i, o, f
    W, R, B = _onnx_stack(per_dir, "iofc")
    x = rng.normal(0, 2, (T, N, F_IN)).astype(np.float32)
    h0 = rng.normal(0, 1, (d, N, H)).astype(np.float32)
    c0 = rng.normal(0, 1, (d, N, H)).astype(np.float32)
    feeds = {"X": x, "W": W, "R": R, "B": B, "P": np.stack(peeps)}
    if with_state:
        feeds.update(initial_h=h0, initial_c=c0)
    inputs = ["X", "W", "R", "B", "", "initial_h" if with_state else "", "initial_c" if with_state else "", "P"]
    Y, Y_h, Y_c = _run_onnx_operator(
        "LSTM", {"hidden_size": H, "direction": "bidirectional" if bidirectional else "forward"},
        feeds, inputs=inputs, num_outputs=3, directions=d)
    with torch.no_grad():
        y, (h_n, c_n) = layer(torch.from_numpy(x).transpose(0, 1),
                              (torch.from_numpy(h0), torch.from_numpy(c0)) if with_state else None)
    y_onnx = Y.transpose(2, 0, 1, 3).reshape(N, T, d * H)          # (T, D, N, H) -> (N, T, D*H)
    diffs = [_max_diff(y, y_onnx), _max_diff(h_n, Y_h), _max_diff(c_n, Y_c)]
    print(f"max abs diff vs onnxruntime LSTM with P: {max(diffs):.2e}")
    assert max(diffs) < ATOL, diffs
    # The peepholes matter: the same weights without P disagree with the operator.
    with torch.no_grad():
        for cell in layer.layers[0]:
            cell.peephole.zero_()
        y0, _ = layer(torch.from_numpy(x).transpose(0, 1),
                      (torch.from_numpy(h0), torch.from_numpy(c0)) if with_state else None)
    assert _max_diff(y0, y_onnx) > 1e-2


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_gru_matches_onnx_gru_linear_before_reset_0(bidirectional, with_state):
    rng = np.random.default_rng(3)
    d = 2 if bidirectional else 1
    layer = RecurrentLayer(cell="gru", input_size=F_IN, hidden_size=H, bidirectional=bidirectional)
    per_dir = []
    for cell in layer.layers[0]:
        w = _gate_weights(rng, "zrh", F_IN)
        _assign(cell, w, {"z": "z", "r": "r", "h": "a"})
        per_dir.append(w)
    W, R, B = _onnx_stack(per_dir, "zrh")
    x = rng.normal(0, 2, (T, N, F_IN)).astype(np.float32)
    h0 = rng.normal(0, 1, (d, N, H)).astype(np.float32)
    feeds = {"X": x, "W": W, "R": R, "B": B}
    if with_state:
        feeds["initial_h"] = h0
    inputs = ["X", "W", "R", "B", "", "initial_h"] if with_state else ["X", "W", "R", "B"]
    Y, Y_h = _run_onnx_operator(
        "GRU", {"hidden_size": H, "linear_before_reset": 0,
                "direction": "bidirectional" if bidirectional else "forward"},
        feeds, inputs=inputs, num_outputs=2, directions=d)
    with torch.no_grad():
        y, (h_n,) = layer(torch.from_numpy(x).transpose(0, 1), (torch.from_numpy(h0),) if with_state else None)
    diffs = [_max_diff(y, Y.transpose(2, 0, 1, 3).reshape(N, T, d * H)), _max_diff(h_n, Y_h)]
    print(f"max abs diff vs onnxruntime GRU linear_before_reset=0: {max(diffs):.2e}")
    assert max(diffs) < ATOL, diffs


def test_gru_is_not_torch_gru():
    """Same weights, different reset placement: torch.nn.GRU applies r after U_a (plus its bias)."""
    torch.manual_seed(4)
    ref = torch.nn.GRU(F_IN, H, batch_first=True)
    for p in ref.parameters():
        torch.nn.init.uniform_(p, -0.5, 0.5)
    with torch.no_grad():
        ref.bias_hh_l0.zero_()     # with b_hn = 0 the only difference left is r * (U h) vs U (r * h)
    layer = RecurrentLayer(cell="gru", input_size=F_IN, hidden_size=H)
    cell = layer.layers[0][0]
    with torch.no_grad():
        for j, gate in enumerate(("r", "z", "a")):   # torch stacks r, z, n
            rows = slice(j * H, (j + 1) * H)
            cell.weight_x[cell.gate(gate)] = ref.weight_ih_l0[rows]
            cell.weight_h[cell.gate(gate)] = ref.weight_hh_l0[rows]
            cell.bias[cell.gate(gate)] = ref.bias_ih_l0[rows]
        x = torch.randn(N, T, F_IN) * 2
        assert _max_diff(layer(x)[0], ref(x)[0]) > 1e-3


# --------------------------------------------------------------------------
# The layer and the cells


@pytest.mark.parametrize("cell", list(CELLS))
def test_step_by_step_equals_sequence(cell):
    torch.manual_seed(5)
    c = make_cell(cell, F_IN, H)
    x = torch.randn(12, N, F_IN)
    with torch.no_grad():
        y_seq, last_seq = c.forward_sequence(x)
        state = None
        ys = []
        for t in range(x.shape[0]):
            h, state = c(x[t], state)
            ys.append(h)
    # equal up to summation order (one projection of the whole sequence vs one per step)
    assert _max_diff(torch.stack(ys), y_seq) < 1e-6
    assert all(_max_diff(a, b) < 1e-6 for a, b in zip(state, last_seq))
    assert len(state) == (2 if "lstm" in cell else 1)


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (3, False), (2, True), (3, True)])
def test_shapes_multi_layer_bidirectional(cell, layers, bidirectional):
    d = 2 if bidirectional else 1
    layer = RecurrentLayer(cell=cell, input_size=F_IN, hidden_size=H, num_layers=layers,
                           bidirectional=bidirectional, dropout=0.1)
    y, state = layer(torch.randn(N, 7, F_IN))
    assert y.shape == (N, 7, d * H)
    assert len(state) == layer.num_states == (2 if "lstm" in cell else 1)
    assert all(s.shape == (layers * d, N, H) for s in state)
    # time-first input gives the same thing, time-first
    layer.eval()
    tf = RecurrentLayer(cell=cell, input_size=F_IN, hidden_size=H, num_layers=layers,
                        bidirectional=bidirectional, batch_first=False).eval()
    tf.load_state_dict(layer.state_dict())
    x = torch.randn(N, 9, F_IN)
    with torch.no_grad():
        assert _max_diff(tf(x.transpose(0, 1))[0].transpose(0, 1), layer(x)[0]) == 0.0
    # the last layer's final forward state is the output's last step
    assert _max_diff(layer(x)[1][0][-d], layer(x)[0][:, -1, :H]) == 0.0
    # every parameter, peepholes included, gets a gradient
    layer.train()
    y, state = layer(x)
    (y.sum() + state[0].sum()).backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in layer.parameters())


def test_peephole_parameters_and_gate_layout():
    c = make_cell("peephole_lstm", F_IN, H)
    assert c.peephole is not None and c.peephole.shape == (3 * H,)
    assert make_cell("lstm", F_IN, H).peephole is None
    assert c.weight_x.shape == (4 * H, F_IN) and c.weight_h.shape == (4 * H, H)
    assert c.gate("f") == slice(2 * H, 3 * H)                 # ONNX order i, o, f, c
    assert float(c.bias.detach()[c.gate("f")].min()) == 1.0            # forget bias starts at 1
    assert make_cell("gru", F_IN, H).gate("a") == slice(2 * H, 3 * H)


def test_bad_options_are_user_errors():
    with pytest.raises(EdgehalError, match="one of .*peephole_lstm"):
        RecurrentLayer(cell="qrnn", input_size=F_IN, hidden_size=H)
    with pytest.raises(EdgehalError, match="vanilla rnn cell only"):
        make_cell("lstm", F_IN, H, activation="relu")
    with pytest.raises(EdgehalError, match="one of"):
        make_cell("rnn", F_IN, H, activation="gelu")
    layer = RecurrentLayer(cell="lstm", input_size=F_IN, hidden_size=H)
    with pytest.raises(EdgehalError, match="2 for lstm"):
        layer(torch.randn(N, 4, F_IN), (torch.zeros(1, N, H),))
    with pytest.raises(EdgehalError, match="batch, time, features"):
        layer(torch.randn(N, F_IN))


# --------------------------------------------------------------------------
# The custom operators torch.export records (edgehal::rnn, edgehal::lstm, edgehal::gru)


def _operator_inputs(layer: RecurrentLayer, x: torch.Tensor, with_state: bool):
    """The ONNX operator's inputs for the first layer of ``layer``, as _native_layer packs them."""
    cells = layer.layers[0]
    W = torch.stack([c.weight_x for c in cells]).detach()
    R = torch.stack([c.weight_h for c in cells]).detach()
    b = torch.stack([c.bias for c in cells]).detach()
    B = torch.cat([b, torch.zeros_like(b)], dim=1)
    P = torch.stack([c.peephole for c in cells]).detach() if layer.cell == "peephole_lstm" else None
    d = layer.num_directions
    h0 = torch.randn(d, x.shape[1], layer.hidden_size) if with_state else None
    c0 = torch.randn(d, x.shape[1], layer.hidden_size) if with_state else None
    return W, R, B, P, h0, c0


def _call(cell: str, x, W, R, B, P, h0, c0, activation="tanh"):
    if cell == "rnn":
        return torch.ops.edgehal.rnn(x, W, R, B, h0, activation)
    if cell == "gru":
        return torch.ops.edgehal.gru(x, W, R, B, h0)
    return torch.ops.edgehal.lstm(x, W, R, B, P, h0, c0)


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("with_state", [False, True])
def test_custom_operator_is_the_layers_recurrence(cell, with_state):
    """Eager, the operator gives the layer's outputs in ONNX layout (Y (T, D, N, H), Y_h[, Y_c]);
    torch.library.opcheck checks its schema and fake (meta) implementation against the real one."""
    torch.manual_seed(6)
    layer = RecurrentLayer(cell=cell, input_size=F_IN, hidden_size=H, bidirectional=True, batch_first=False)
    x = torch.randn(7, N, F_IN)
    W, R, B, P, h0, c0 = _operator_inputs(layer, x, with_state)
    outs = _call(cell, x, W, R, B, P, h0, c0)
    with torch.no_grad():
        y, state = layer(x, None if not with_state else ((h0, c0) if layer.num_states == 2 else (h0,)))
    assert len(outs) == 1 + layer.num_states and outs[0].shape == (7, 2, N, H)
    assert _max_diff(outs[0].permute(0, 2, 1, 3).flatten(2), y) == 0.0
    assert all(_max_diff(a, b) == 0.0 for a, b in zip(outs[1:], state))
    op = {"rnn": torch.ops.edgehal.rnn, "gru": torch.ops.edgehal.gru}.get(cell, torch.ops.edgehal.lstm).default
    args = {"rnn": (x, W, R, B, h0, "tanh"), "gru": (x, W, R, B, h0)}.get(cell, (x, W, R, B, P, h0, c0))
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("cell", list(CELLS))
def test_torch_export_records_one_operator_per_layer_with_dynamic_batch_and_time(cell):
    class Outputs(torch.nn.Module):
        def __init__(self, layer):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            y, state = self.layer(x)
            return (y,) + tuple(state)

    torch.manual_seed(7)
    module = Outputs(RecurrentLayer(cell=cell, input_size=F_IN, hidden_size=H, num_layers=2,
                                    bidirectional=True)).eval()
    batch, time = torch.export.Dim("batch"), torch.export.Dim("time")
    program = torch.export.export(module, (torch.randn(2, 11, F_IN),), dynamic_shapes=({0: batch, 1: time},))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    op = {"rnn": "edgehal.rnn", "gru": "edgehal.gru"}.get(cell, "edgehal.lstm")
    assert sum(t.startswith(op) for t in targets) == 2, targets
    # the program runs the operator's eager body at other sizes, and equals the layer
    x = torch.randn(3, 28, F_IN)
    with torch.no_grad():
        want = module(x)
    got = program.module()(x)
    assert all(_max_diff(a, b) < 1e-6 for a, b in zip(got, want))
