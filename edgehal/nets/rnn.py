"""Recurrent cells exactly as the equations below write them, a layer that stacks them, native ONNX export.

The four cells (x input, h hidden state, C cell state, sigma the logistic function):

- ``rnn``:            h_t = f(W x_t + U h_{t-1} + b), f = tanh unless told otherwise.
- ``lstm``:           i, f, o = sigma(W x_t + U h_{t-1} + b); a = tanh(W_a x_t + U_a h_{t-1} + b_a);
                      C_t = a * i + f * C_{t-1}; h_t = tanh(C_t) * o.
- ``peephole_lstm``:  the LSTM with P_i * C_{t-1} and P_f * C_{t-1} added to the input and
                      forget gates and P_o * C_t (the *new* cell state) to the output gate.
- ``gru``:            z, r = sigma(W x_t + U h_{t-1} + b); a = tanh(W_a x_t + U_a (r * h_{t-1}) + b_a);
                      h_t = (1 - z) * a + z * h_{t-1}. The reset gate acts *before* U_a: ONNX
                      ``GRU`` with ``linear_before_reset=0``, not ``torch.nn.GRU``.

These are, term for term, the ONNX ``RNN``, ``LSTM`` (with peephole input ``P``)
and ``GRU`` (``linear_before_reset=0``) operators. So the gate blocks of every
weight are stored in ONNX's order from the start (LSTM ``i, o, f, a``, GRU
``z, r, a``, peepholes ``i, o, f``) and each gate has one bias (ONNX's
recurrence bias ``Rb`` is exported as zeros). Training runs the Python
recurrence below. Under ``torch.export`` (the default ONNX exporter,
``torch.onnx.export(dynamo=True)``) each layer is one ``torch.library`` custom
operator (``edgehal::rnn``, ``edgehal::lstm``, ``edgehal::gru``) that
:mod:`edgehal.export.recurrent_onnx` translates to the native operator; inside
the deprecated TorchScript exporter it becomes one through
``_NativeRecurrence.symbolic``. Either way the graph has dynamic batch *and*
sequence length and no unrolled loop.

The cells also run one step at a time (``cell(x_t, state)``), for models whose
next input depends on the previous output (hierarchical recurrence).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from edgehal.errors import EdgehalError

State = tuple[torch.Tensor, ...]

# name -> (torch function, ONNX activation name)
ACTIVATIONS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], str]] = {
    "tanh": (torch.tanh, "Tanh"),
    "relu": (torch.relu, "Relu"),
    "sigmoid": (torch.sigmoid, "Sigmoid"),
}


# --------------------------------------------------------------------------
# The recurrences, on weights already in ONNX gate order. One code path serves
# training (through the cell modules) and the exporter's reference forward.


def _rnn_step(xw: torch.Tensor, state: State, R: torch.Tensor, P: torch.Tensor | None,
              act: Callable) -> State:
    (h,) = state
    return (act(xw + F.linear(h, R)),)


def _lstm_step(xw: torch.Tensor, state: State, R: torch.Tensor, P: torch.Tensor | None,
               act: Callable) -> State:
    h, c = state
    xi, xo, xf, xa = (xw + F.linear(h, R)).chunk(4, dim=-1)
    if P is not None:
        p_i, p_o, p_f = P.chunk(3)
        xi = xi + p_i * c
        xf = xf + p_f * c
    i = torch.sigmoid(xi)
    f = torch.sigmoid(xf)
    a = torch.tanh(xa)
    c_new = a * i + f * c
    if P is not None:
        xo = xo + p_o * c_new          # the output gate looks at the new cell state
    o = torch.sigmoid(xo)
    return torch.tanh(c_new) * o, c_new


def _gru_step(xw: torch.Tensor, state: State, R: torch.Tensor, P: torch.Tensor | None,
              act: Callable) -> State:
    (h,) = state
    hidden = h.shape[-1]
    zr = torch.sigmoid(xw[..., :2 * hidden] + F.linear(h, R[:2 * hidden]))
    z, r = zr.chunk(2, dim=-1)
    a = torch.tanh(xw[..., 2 * hidden:] + F.linear(r * h, R[2 * hidden:]))   # reset before U_a
    return ((1 - z) * a + z * h,)


_STEPS = {"rnn": _rnn_step, "lstm": _lstm_step, "peephole_lstm": _lstm_step, "gru": _gru_step}


def _scan(kind: str, xw: torch.Tensor, state: State, R: torch.Tensor, P: torch.Tensor | None,
          act: Callable, *, reverse: bool = False) -> tuple[torch.Tensor, State]:
    """Run one direction over ``xw = W x + b`` of shape (T, N, G*H); return (T, N, H) and the last state."""
    step = _STEPS[kind]
    steps = range(xw.shape[0] - 1, -1, -1) if reverse else range(xw.shape[0])
    outputs: list[torch.Tensor] = [xw.new_empty(0)] * xw.shape[0]
    for t in steps:
        state = step(xw[t], state, R, P, act)
        outputs[t] = state[0]
    return torch.stack(outputs), state


# --------------------------------------------------------------------------
# Cells


class RecurrentCell(nn.Module):
    """One direction of one layer: ``weight_x`` (W), ``weight_h`` (U), ``bias`` (b), gate blocks
    stacked in ONNX order (``GATES``); ``peephole`` (P, order ``i, o, f``) for the peephole LSTM."""

    kind: str = ""
    GATES: tuple[str, ...] = ()
    PEEPHOLES: tuple[str, ...] = ()
    num_states: int = 1

    def __init__(self, input_size: int, hidden_size: int, *, activation: str = "tanh") -> None:
        super().__init__()
        if input_size < 1 or hidden_size < 1:
            raise EdgehalError(f"{self.kind} cell", f"input_size {input_size}, hidden_size {hidden_size}",
                               "positive sizes")
        if activation not in ACTIVATIONS:
            raise EdgehalError(f"{self.kind} cell activation {activation!r}", "is unknown",
                               f"one of {sorted(ACTIVATIONS)}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.activation = activation
        g = len(self.GATES)
        self.weight_x = nn.Parameter(torch.empty(g * hidden_size, input_size))
        self.weight_h = nn.Parameter(torch.empty(g * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(g * hidden_size))
        self.peephole = (nn.Parameter(torch.empty(len(self.PEEPHOLES) * hidden_size))
                         if self.PEEPHOLES else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """W and b uniform in +-1/sqrt(H) (torch's rule), U orthogonal per gate, LSTM forget bias 1."""
        k = 1.0 / math.sqrt(self.hidden_size)
        nn.init.uniform_(self.weight_x, -k, k)
        nn.init.uniform_(self.bias, -k, k)
        with torch.no_grad():
            for block in self.weight_h.split(self.hidden_size):
                nn.init.orthogonal_(block)
            if "f" in self.GATES:
                self.bias[self.gate("f")] = 1.0
        if self.peephole is not None:
            nn.init.uniform_(self.peephole, -k, k)

    def gate(self, name: str) -> slice:
        """Rows of ``weight_x``/``weight_h``/``bias`` that belong to gate ``name``."""
        j = self.GATES.index(name)
        return slice(j * self.hidden_size, (j + 1) * self.hidden_size)

    def init_state(self, batch: int, *, like: torch.Tensor) -> State:
        return tuple(like.new_zeros(batch, self.hidden_size) for _ in range(self.num_states))

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """One step: ``x`` (N, F) -> (h_t (N, H), state)."""
        if state is None:
            state = self.init_state(x.shape[0], like=x)
        state = _STEPS[self.kind](F.linear(x, self.weight_x, self.bias), tuple(state), self.weight_h,
                                  self.peephole, ACTIVATIONS[self.activation][0])
        return state[0], state

    def forward_sequence(self, x: torch.Tensor, state: State | None = None, *,
                         reverse: bool = False) -> tuple[torch.Tensor, State]:
        """A whole sequence, time first: ``x`` (T, N, F) -> (outputs (T, N, H), last state)."""
        if state is None:
            state = self.init_state(x.shape[1], like=x)
        # The input projection of every step at once; only U h stays inside the loop.
        xw = F.linear(x, self.weight_x, self.bias)
        return _scan(self.kind, xw, tuple(state), self.weight_h, self.peephole,
                     ACTIVATIONS[self.activation][0], reverse=reverse)

    def extra_repr(self) -> str:
        act = f", activation={self.activation}" if self.kind == "rnn" else ""
        return f"{self.input_size}, {self.hidden_size}{act}"


class RNNCell(RecurrentCell):
    kind = "rnn"
    GATES = ("s",)


class LSTMCell(RecurrentCell):
    kind = "lstm"
    GATES = ("i", "o", "f", "a")
    num_states = 2


class PeepholeLSTMCell(LSTMCell):
    kind = "peephole_lstm"
    PEEPHOLES = ("i", "o", "f")

    def peephole_gate(self, name: str) -> slice:
        j = self.PEEPHOLES.index(name)
        return slice(j * self.hidden_size, (j + 1) * self.hidden_size)


class GRUCell(RecurrentCell):
    kind = "gru"
    GATES = ("z", "r", "a")


CELLS: dict[str, type[RecurrentCell]] = {
    "rnn": RNNCell, "lstm": LSTMCell, "peephole_lstm": PeepholeLSTMCell, "gru": GRUCell}


def make_cell(name: str, input_size: int, hidden_size: int, *, activation: str = "tanh") -> RecurrentCell:
    """A cell by name: ``rnn``, ``lstm``, ``peephole_lstm`` or ``gru``."""
    if name not in CELLS:
        raise EdgehalError(f"cell {name!r}", "is not a recurrent cell", f"one of {list(CELLS)}")
    if name != "rnn" and activation != "tanh":
        raise EdgehalError(f"cell {name!r}", f"activation {activation!r} is set",
                           "activation applies to the vanilla rnn cell only")
    return CELLS[name](input_size, hidden_size, activation=activation)


# --------------------------------------------------------------------------
# Export: one native ONNX operator per layer


def _onnx_op(kind: str) -> str:
    return {"rnn": "RNN", "lstm": "LSTM", "peephole_lstm": "LSTM", "gru": "GRU"}[kind]


class _NativeRecurrence(torch.autograd.Function):
    """One layer in ONNX's own terms, used only while ``torch.onnx.export`` traces.

    Inputs are the ONNX operator's: X (T, N, F); W (D, G*H, F); R (D, G*H, H);
    B (D, 2*G*H) = [Wb, Rb]; P (D, 3*H) or None; initial_h / initial_c (D, N, H)
    or None. Outputs Y (T, D, N, H), Y_h (D, N, H) and, for LSTMs, Y_c.
    ``forward`` runs the same recurrence as training (so tracing sees true
    values); ``symbolic`` emits the operator.
    """

    @staticmethod
    def forward(ctx, x, W, R, B, P, h0, c0, kind: str, activation: str, hidden_size: int,
                directions: int):
        return _reference(kind, x, W, R, B, P, h0, c0, activation, directions=directions,
                          hidden_size=hidden_size)

    @staticmethod
    def symbolic(g, x, W, R, B, P, h0, c0, kind: str, activation: str, hidden_size: int,
                 directions: int):
        lstm = kind in ("lstm", "peephole_lstm")
        # ONNX input order: X, W, R, B, sequence_lens, initial_h[, initial_c, P]; never sequence_lens.
        inputs = [x, W, R, B, None, h0] + ([c0, P] if lstm else [])
        while inputs[-1] is None:
            inputs.pop()
        attrs: dict = {"hidden_size_i": hidden_size,
                       "direction_s": "bidirectional" if directions == 2 else "forward"}
        if kind == "rnn" and activation != "tanh":
            attrs["activations_s"] = [ACTIVATIONS[activation][1]] * directions
        if kind == "gru":
            attrs["linear_before_reset_i"] = 0
        return g.op(_onnx_op(kind), *(_absent(g) if v is None else v for v in inputs),
                    outputs=3 if lstm else 2, **attrs)


def _absent(g):
    """An omitted optional input of an ONNX operator (written as the empty name "")."""
    n = g.op("prim::Constant")
    n.setType(torch._C.OptionalType.ofTensor())
    return n


def _reference(kind: str, x: torch.Tensor, W: torch.Tensor, R: torch.Tensor, B: torch.Tensor,
               P: torch.Tensor | None, h0: torch.Tensor | None, c0: torch.Tensor | None,
               activation: str, *, directions: int, hidden_size: int) -> tuple[torch.Tensor, ...]:
    """The ONNX operator's outputs Y (T, D, N, H), Y_h (D, N, H)[, Y_c] by the Python recurrence.
    The sizes come as Python ints: under the TorchScript tracer a shape read is a traced value."""
    ys, finals = [], []
    for d in range(directions):
        wb, rb = B[d].chunk(2)
        xw = F.linear(x, W[d], wb + rb)
        state: list[torch.Tensor] = [x.new_zeros(x.shape[1], hidden_size) if h0 is None else h0[d]]
        if kind in ("lstm", "peephole_lstm"):
            state.append(x.new_zeros(x.shape[1], hidden_size) if c0 is None else c0[d])
        y, last = _scan(kind, xw, tuple(state), R[d], None if P is None else P[d],
                        ACTIVATIONS[activation][0], reverse=d == 1)
        ys.append(y)
        finals.append(last)
    return (torch.stack(ys, dim=1),) + tuple(torch.stack([f[k] for f in finals]) for k in range(len(finals[0])))


def _eager(kind: str, x, W, R, B, P, h0, c0, activation: str) -> tuple[torch.Tensor, ...]:
    return _reference(kind, x, W, R, B, P, h0, c0, activation, directions=W.shape[0], hidden_size=R.shape[2])


# torch.export (the ONNX exporter's default): one torch.library custom operator per
# operator kind, taking exactly the ONNX operator's inputs. Its eager body is the
# recurrence of ``_reference``; its fake (meta) body gives the symbolic output shapes, so the
# batch and sequence dimensions stay dynamic and the program never unrolls the
# loop. ``edgehal.export.recurrent_onnx`` translates each into the native ONNX
# operator. Registered once, when this module is imported.


def _fake_outputs(x: torch.Tensor, W: torch.Tensor, R: torch.Tensor, states: int) -> tuple[torch.Tensor, ...]:
    d, hidden = W.shape[0], R.shape[2]
    y = x.new_empty((x.shape[0], d, x.shape[1], hidden))
    return (y,) + tuple(x.new_empty((d, x.shape[1], hidden)) for _ in range(states))


@torch.library.custom_op("edgehal::rnn", mutates_args=())
def native_rnn(x: torch.Tensor, W: torch.Tensor, R: torch.Tensor, B: torch.Tensor,
               h0: torch.Tensor | None, activation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """ONNX ``RNN`` (forward, or bidirectional when ``W`` has two directions): (Y, Y_h)."""
    return _eager("rnn", x, W, R, B, None, h0, None, activation)


@torch.library.custom_op("edgehal::lstm", mutates_args=())
def native_lstm(x: torch.Tensor, W: torch.Tensor, R: torch.Tensor, B: torch.Tensor, P: torch.Tensor | None,
                h0: torch.Tensor | None, c0: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ONNX ``LSTM``, with peepholes when ``P`` is given: (Y, Y_h, Y_c)."""
    return _eager("peephole_lstm" if P is not None else "lstm", x, W, R, B, P, h0, c0, "tanh")


@torch.library.custom_op("edgehal::gru", mutates_args=())
def native_gru(x: torch.Tensor, W: torch.Tensor, R: torch.Tensor, B: torch.Tensor,
               h0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """ONNX ``GRU`` with ``linear_before_reset=0``: (Y, Y_h)."""
    return _eager("gru", x, W, R, B, None, h0, None, "tanh")


@native_rnn.register_fake
def _(x, W, R, B, h0, activation):
    return _fake_outputs(x, W, R, 1)


@native_lstm.register_fake
def _(x, W, R, B, P, h0, c0):
    return _fake_outputs(x, W, R, 2)


@native_gru.register_fake
def _(x, W, R, B, h0):
    return _fake_outputs(x, W, R, 1)


def _custom_op_layer(kind: str, activation: str, x, W, R, B, P, h0, c0) -> tuple[torch.Tensor, ...]:
    if kind == "rnn":
        return native_rnn(x, W, R, B, h0, activation)
    if kind == "gru":
        return native_gru(x, W, R, B, h0)
    return native_lstm(x, W, R, B, P, h0, c0)


# --------------------------------------------------------------------------
# The layer


class RecurrentLayer(nn.Module):
    """Several layers of one cell type over a sequence, optionally bidirectional.

    ``forward(x, state)``: ``x`` is (N, T, F) (``batch_first``, the default) or
    (T, N, F). Returns the last layer's outputs, (N, T, D*H) with the forward
    direction first, and the final state as ``torch.nn.LSTM`` lays it out: a
    tuple ``(h_n,)`` or, for LSTMs, ``(h_n, c_n)``, each (layers*D, N, H).
    ``state`` is an initial state of that same layout; zeros by default.
    """

    def __init__(self, *, cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, activation: str = "tanh", dropout: float = 0.0,
                 batch_first: bool = True) -> None:
        super().__init__()
        if num_layers < 1:
            raise EdgehalError("recurrent layer", f"num_layers is {num_layers}", "at least 1")
        if not 0.0 <= dropout < 1.0:
            raise EdgehalError("recurrent layer", f"dropout is {dropout}", "a value in [0, 1)")
        self.cell = cell
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_directions = 2 if bidirectional else 1
        self.activation = activation
        self.batch_first = batch_first
        self.layers = nn.ModuleList(
            nn.ModuleList(make_cell(cell, input_size if layer == 0 else hidden_size * self.num_directions,
                                    hidden_size, activation=activation)
                          for _ in range(self.num_directions))
            for layer in range(num_layers))
        self.dropout = nn.Dropout(dropout) if dropout else None

    @property
    def num_states(self) -> int:
        return CELLS[self.cell].num_states

    @property
    def output_size(self) -> int:
        return self.hidden_size * self.num_directions

    def forward(self, x: torch.Tensor, state: Sequence[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, State]:
        if x.dim() != 3:
            raise EdgehalError("recurrent layer input", f"has shape {tuple(x.shape)}",
                               "(batch, time, features)" if self.batch_first else "(time, batch, features)")
        if self.batch_first:
            x = x.transpose(0, 1)
        if state is not None and len(state) != self.num_states:
            raise EdgehalError("recurrent layer state", f"has {len(state)} tensors",
                               f"{self.num_states} for {self.cell}")
        native = torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()
        d = self.num_directions
        finals: list[State] = []
        for index, directions in enumerate(self.layers):
            if index and self.dropout is not None:
                x = self.dropout(x)
            if state is None or self.num_layers == 1:
                init = None if state is None else tuple(state)
            else:
                init = tuple(s[index * d:(index + 1) * d] for s in state)
            x, last = (self._native_layer if native else self._python_layer)(directions, x, init)
            finals.append(last)
        out = x.transpose(0, 1) if self.batch_first else x
        if len(finals) == 1:
            return out, finals[0]
        return out, tuple(torch.cat([f[k] for f in finals]) for k in range(self.num_states))

    @staticmethod
    def _python_layer(directions: nn.ModuleList, x: torch.Tensor, init: State | None
                      ) -> tuple[torch.Tensor, State]:
        ys, finals = [], []
        for k, cell in enumerate(directions):
            y, last = cell.forward_sequence(x, None if init is None else tuple(s[k] for s in init),
                                            reverse=k == 1)
            ys.append(y)
            finals.append(last)
        y = ys[0] if len(ys) == 1 else torch.cat(ys, dim=-1)
        return y, tuple(torch.stack([f[k] for f in finals]) for k in range(len(finals[0])))

    def _native_layer(self, directions: nn.ModuleList, x: torch.Tensor, init: State | None
                      ) -> tuple[torch.Tensor, State]:
        # Parameter re-packing is traced on initializers only, so constant folding
        # turns it into the operator's W, R, B, P initializers.
        W = torch.stack([c.weight_x for c in directions])
        R = torch.stack([c.weight_h for c in directions])
        b = torch.stack([c.bias for c in directions])
        B = torch.cat([b, torch.zeros_like(b)], dim=1)
        P = torch.stack([c.peephole for c in directions]) if self.cell == "peephole_lstm" else None
        h0 = init[0] if init is not None else None
        c0 = init[1] if init is not None and len(init) > 1 else None
        if torch.compiler.is_exporting():   # torch.export, under torch.onnx.export(dynamo=True)
            outs = _custom_op_layer(self.cell, self.activation, x, W, R, B, P, h0, c0)
        else:                                # the TorchScript exporter
            outs = _NativeRecurrence.apply(x, W, R, B, P, h0, c0, self.cell, self.activation,
                                           self.hidden_size, self.num_directions)
        y = outs[0]                                      # (T, D, N, H)
        if self.num_directions == 1:
            y = y.squeeze(1)
        else:
            y = y.permute(0, 2, 1, 3).flatten(2)
        return y, tuple(outs[1:])

    def extra_repr(self) -> str:
        return (f"cell={self.cell}, input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"num_layers={self.num_layers}, bidirectional={self.num_directions == 2}")


def last_hidden(layer: RecurrentLayer, state: State) -> torch.Tensor:
    """The last layer's final hidden state, directions concatenated: (N, D*H)."""
    h = state[0][-layer.num_directions:]              # (D, N, H)
    return h[0] if layer.num_directions == 1 else h.transpose(0, 1).flatten(1)
