"""Parity fixtures: exports of the tiny digits model, and runs built from arrays for the comparison rules."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from edgehal.export.onnx import ExportOptions, export_onnx
from edgehal.manifest import Head, HeadManifest
from edgehal.parity import RunInfo, RunInputs, RunResult

CLASSES = tuple(str(i) for i in range(10))
# A main head over ten digits, an aux head over two superclasses that does not apply to the digit 9
# (-1, as a floor head of another building does not), and a regression head.
MANIFEST = HeadManifest(model="synthetic", input_name="x", input_shape=(4,), heads=(
    Head("logits", "main", 0, class_names=CLASSES),
    Head("half", "aux", 1, class_names=("low", "high"), parent_map=(0, 0, 0, 0, 0, 1, 1, 1, 1, -1)),
    Head("where", "aux", 1, task="regression", units="m"),
))


@pytest.fixture(scope="session")
def digits_exports(digits_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """The digits model exported with its aux head kept and pruned (FP32)."""
    out = tmp_path_factory.mktemp("digits_onnx")
    paths = {aux: out / f"{aux}.onnx" for aux in ("keep", "prune")}
    for aux, path in paths.items():
        export_onnx(digits_checkpoint, path, options=ExportOptions(aux=aux), log=lambda _: None)
    return paths


@pytest.fixture
def manifest() -> HeadManifest:
    return MANIFEST


@pytest.fixture
def make_run() -> Callable[..., RunResult]:
    """A run result of the synthetic model from its outputs and labels (no model involved)."""

    def make(outputs: dict[str, np.ndarray], labels: dict[str, np.ndarray], *, precision: str = "fp32",
             kind: str = "onnx", sha256: str = "a" * 64, source_sha256: str | None = None,
             artifact: str = "synthetic.onnx") -> RunResult:
        n = len(labels["label"])
        inputs = RunInputs(x=np.arange(n * 4, dtype=np.float32).reshape(n, 4), labels=labels, split="test",
                           dataset="synthetic")
        info = RunInfo(artifact=artifact, kind=kind, sha256=sha256, backend="ort-cpu", runner="onnxruntime",
                       precision=precision, device="cpu", manifest=MANIFEST,
                       heads=tuple(outputs), split="test", dataset="synthetic", samples=n,
                       source_sha256=source_sha256, versions={"numpy": np.__version__})
        return RunResult(info=info, outputs=outputs, inputs=inputs)

    return make


@pytest.fixture(scope="session")
def plain_onnx(digits_checkpoint, tmp_path_factory) -> Path:
    """The digits model's main head exported by torch alone: an ONNX file without edgehal metadata."""
    import torch

    from edgehal.checkpoint import load_checkpoint

    model = load_checkpoint(digits_checkpoint).build_model()

    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x):
            return self.m(x)["logits"]

    path = tmp_path_factory.mktemp("plain") / "plain.onnx"
    torch.onnx.export(Plain().eval(), (torch.rand(2, 1, 8, 8),), str(path), input_names=["pixels"],
                      output_names=["output0"], dynamic_axes={"pixels": {0: "n"}, "output0": {0: "n"}},
                      opset_version=17, dynamo=False)
    return path
