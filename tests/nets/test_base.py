"""The one model API: in-graph normalisation, named outputs, the classifier loss, the export wrapper."""

from __future__ import annotations

import torch
from torch import nn

from edgehal.manifest import Head, HeadManifest
from edgehal.nets.base import EdgehalModel, ExportWrapper, InputNormalization


def test_input_normalization_scales_then_standardises_per_channel():
    norm = InputNormalization(mean=(0.5, 0.25), std=(0.5, 0.125), scale=1 / 255)
    x = torch.full((1, 2, 2, 2), 255.0)
    out = norm(x)
    assert torch.allclose(out[0, 0], torch.full((2, 2), 1.0)) and torch.allclose(out[0, 1], torch.full((2, 2), 6.0))
    assert {n for n, _ in norm.named_buffers()} == {"mean", "inv_std"}  # exported as constants


class Tiny(EdgehalModel):
    def __init__(self) -> None:
        super().__init__()
        self.manifest = HeadManifest("tiny", "x", (2,), (
            Head("main", "main", 0, class_names=("a", "b", "c", "d")),
            Head("aux", "aux", 1, class_names=("ab", "cd"), parent_map=(0, 0, 1, 1))))
        self.main, self.aux = nn.Linear(2, 4), nn.Linear(2, 2)

    def forward_features(self, x):
        return x

    def forward_heads(self, f):
        return {"main": self.main(f), "aux": self.aux(f)}


def test_loss_is_main_plus_weighted_aux_against_the_lifted_targets():
    torch.manual_seed(0)
    m = Tiny()
    x, y = torch.randn(6, 2), torch.tensor([0, 1, 2, 3, 0, 3])
    out = m(x)
    total, parts = m.loss(out, {"label": y}, aux_weight=0.5)
    ce = nn.functional.cross_entropy
    main, aux = ce(out["main"], y).detach(), ce(out["aux"], torch.tensor([0, 0, 1, 1, 0, 1])).detach()
    assert torch.allclose(total, main + 0.5 * aux)
    assert parts == {"main": main.item(), "aux": aux.item()}


def test_export_wrapper_returns_the_named_outputs_in_the_order_asked():
    m = Tiny()
    x = torch.randn(3, 2)
    a, b = ExportWrapper(m, ["aux", "main"])(x)
    assert a.shape == (3, 2) and b.shape == (3, 4) and torch.equal(b, m(x)["main"])
