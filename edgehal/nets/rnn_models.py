"""Recurrent classifiers: an image read row by row (row-sequential MNIST), with HAL heads.

An (N, C, H, W) image of raw pixels is normalised in the graph and read as H
steps of C*W features; the last layer's final hidden state (both directions
when bidirectional) is the feature vector. The heads are ``hal_resnet``'s
(:mod:`edgehal.nets.hal_head`): an auxiliary superclass block on the features
whose scores, when it feeds the classifier (HAL), are concatenated with the
features as the classifier's input.
The image height is the sequence length, so the exported graph (one native
ONNX recurrent operator per layer) also takes other heights.
"""

from __future__ import annotations

from typing import Sequence

import torch

from edgehal.errors import EdgehalError
from edgehal.manifest import HeadManifest, SequenceAxis
from edgehal.nets.base import InputNormalization
from edgehal.nets.declared import input_shape_for
from edgehal.nets.hal_head import AuxSpec, HALClassifier, hal_heads
from edgehal.nets.registry import register_model
from edgehal.nets.rnn import CELLS, RecurrentLayer, last_hidden


class RowRecurrentClassifier(HALClassifier):
    """Rows as time steps -> recurrent layer -> [aux superclass heads] -> classifier."""

    def __init__(self, *, manifest: HeadManifest, in_channels: int, width: int, cell: str,
                 hidden_size: int, num_layers: int, bidirectional: bool, activation: str,
                 dropout: float, head_dropout: float, aux_hidden: Sequence[int],
                 mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.manifest = manifest
        self.normalize = InputNormalization(mean=mean, std=std, scale=1.0 / 255.0)
        self.rnn = RecurrentLayer(cell=cell, input_size=in_channels * width, hidden_size=hidden_size,
                                  num_layers=num_layers, bidirectional=bidirectional,
                                  activation=activation, dropout=dropout)
        self.init_heads(features=self.rnn.output_size, aux_hidden=aux_hidden, dropout=head_dropout)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        rows = x.permute(0, 2, 1, 3).flatten(2)           # (N, H, C*W): row t is step t
        _, state = self.rnn(rows)
        return last_hidden(self.rnn, state)


@register_model("rnn_classifier")
def rnn_classifier(*, dataset: str = "mnist", cell: str = "lstm", hidden_size: int = 128,
                   num_layers: int = 1, bidirectional: bool = False, activation: str = "tanh",
                   dropout: float = 0.0, head_dropout: float = 0.0,
                   aux: Sequence[AuxSpec] | None = None, aux_hidden: int = 64,
                   class_names: Sequence[str] | None = None, input_shape: Sequence[int] | None = None,
                   mean: Sequence[float] | None = None, std: Sequence[float] | None = None
                   ) -> RowRecurrentClassifier:
    """A row-sequential recurrent classifier; ``aux=[]`` is the baseline.

    ``cell``: ``rnn``, ``lstm``, ``peephole_lstm`` or ``gru`` (the equations of ``edgehal.nets.rnn``).
    ``activation`` (vanilla ``rnn`` only): ``tanh``, ``relu`` or ``sigmoid``.
    ``dropout`` acts between stacked layers, ``head_dropout`` before the classifier.
    ``aux`` as in ``hal_resnet``: a case name or ``{case, feeds_main (default true), hidden, name}``.
    ``input_shape`` and ``class_names`` default to what ``dataset`` declares (MNIST
    (1, 28, 28): 28 steps of 28 pixels); ``mean``/``std`` default to 0.5 per
    channel (the trainer passes the data set's).
    """
    if cell not in CELLS:
        raise EdgehalError(f"model.cell {cell!r}", "is not a recurrent cell", f"one of {list(CELLS)}")
    if hidden_size < 1 or num_layers < 1:
        raise EdgehalError("rnn_classifier", f"hidden_size {hidden_size}, num_layers {num_layers}",
                           "both at least 1")
    shape = input_shape_for(dataset=dataset, input_shape=input_shape)
    if len(shape) != 3:
        raise EdgehalError("rnn_classifier input_shape", f"is {list(shape)}", "(channels, height, width)")
    heads, hidden = hal_heads(dataset=dataset, class_names=class_names, aux=aux, aux_hidden=aux_hidden)
    manifest = HeadManifest(
        model="rnn_classifier", input_name="input", input_shape=shape, heads=tuple(heads),
        dataset=dataset, sequence=SequenceAxis(axis=2, name="rows"), notes={"cell": cell})
    c = shape[0]
    return RowRecurrentClassifier(
        manifest=manifest, in_channels=c, width=shape[2], cell=cell, hidden_size=hidden_size,
        num_layers=num_layers, bidirectional=bidirectional, activation=activation, dropout=dropout,
        head_dropout=head_dropout, aux_hidden=hidden, mean=tuple(mean or [0.5] * c),
        std=tuple(std or [0.5] * c))
