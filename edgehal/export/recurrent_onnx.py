"""Native ONNX ``RNN``, ``LSTM`` and ``GRU`` for the torch.export-based ONNX exporter.

:mod:`edgehal.nets.rnn` runs each recurrent layer, while ``torch.export``
traces it, as one ``torch.library`` custom operator (``edgehal::rnn``,
``edgehal::lstm``, ``edgehal::gru``) whose inputs are already the ONNX
operator's (X, W, R, B[, P], initial_h[, initial_c]; gate blocks in ONNX order,
B = [Wb, Rb]). The onnxscript functions below translate each into the one
native node; :func:`translation_table` is what
``torch.onnx.export(..., dynamo=True, custom_translation_table=...)`` takes
(https://docs.pytorch.org/docs/stable/onnx_dynamo.html, "custom_translation_table").
The GRU is ``linear_before_reset=0`` (the reset gate acts before U_a), as the
eager cell computes it.
"""

from __future__ import annotations

from typing import Callable

from onnxscript import opset18 as op

from edgehal.nets.rnn import ACTIVATIONS, native_gru, native_lstm, native_rnn


def _direction(W) -> str:
    return "bidirectional" if W.shape[0] == 2 else "forward"


def onnx_rnn(x, W, R, B, h0, activation: str):
    """``edgehal::rnn`` -> ONNX ``RNN``; an activation other than the default tanh is given per direction."""
    if activation == "tanh":
        return op.RNN(x, W, R, B, None, h0, hidden_size=R.shape[2], direction=_direction(W))
    return op.RNN(x, W, R, B, None, h0, hidden_size=R.shape[2], direction=_direction(W),
                  activations=[ACTIVATIONS[activation][1]] * W.shape[0])


def onnx_lstm(x, W, R, B, P, h0, c0):
    """``edgehal::lstm`` -> ONNX ``LSTM``; the peephole LSTM passes ``P`` (order i, o, f)."""
    return op.LSTM(x, W, R, B, None, h0, c0, P, hidden_size=R.shape[2], direction=_direction(W))


def onnx_gru(x, W, R, B, h0):
    """``edgehal::gru`` -> ONNX ``GRU`` with ``linear_before_reset=0``."""
    return op.GRU(x, W, R, B, None, h0, hidden_size=R.shape[2], direction=_direction(W),
                  linear_before_reset=0)


def translation_table() -> dict[Callable, Callable]:
    """The custom operators of :mod:`edgehal.nets.rnn` and their ONNX translations."""
    return {native_rnn._opoverload: onnx_rnn, native_lstm._opoverload: onnx_lstm,
            native_gru._opoverload: onnx_gru}
