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


# ---- a user's own plain ONNX classifier and image folder -------------------------------------------------
# Four colour classes (folder names, sorted as ImageFolder sorts them) and a hand-set linear model on the
# mean of each channel that tells them apart, so that a wrong label order or a wrong decode shows in the
# error rate. Its aux output scores two superclasses (cool: blue, dark, green; warm: red).
COLOURS = ("blue", "dark", "green", "red")
COLOUR_RGB = {"blue": (30, 40, 200), "dark": (25, 25, 25), "green": (40, 190, 50), "red": (210, 40, 30)}
COLOUR_SUPERCLASSES = ("cool", "warm")
COLOUR_PARENT = (0, 0, 0, 1)
IMAGE_SIZE = 8  # the model's fixed input height and width


def colour_model(*, perturb: bool = False):
    """An ``onnx.ModelProto``: raw pixels [N,3,8,8] -> ``scores`` [N,4] and ``super`` [N,2], no edgehal metadata."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    third = 1.0 / 3.0
    w_main = np.array([[-0.5, -third, -0.5, 1.0],   # r
                       [-0.5, -third, 1.0, -0.5],   # g
                       [1.0, -third, -0.5, -0.5]],  # b
                      dtype=np.float32)
    b_main = np.array([0.0, 0.3, 0.0, 0.0], dtype=np.float32)
    if perturb:  # a broken conversion: the green and red columns swapped
        w_main = w_main[:, [0, 1, 3, 2]].copy()
    w_aux = np.array([[-1.0, 1.0], [0.5, -0.5], [0.5, -0.5]], dtype=np.float32)
    b_aux = np.array([0.1, -0.1], dtype=np.float32)
    inits = [numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "scale"),
             numpy_helper.from_array(w_main, "w_main"), numpy_helper.from_array(b_main, "b_main"),
             numpy_helper.from_array(w_aux, "w_aux"), numpy_helper.from_array(b_aux, "b_aux")]
    nodes = [helper.make_node("Mul", ["pixels", "scale"], ["x01"]),
             helper.make_node("GlobalAveragePool", ["x01"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["features"]),
             helper.make_node("Gemm", ["features", "w_main", "b_main"], ["scores"]),
             helper.make_node("Gemm", ["features", "w_aux", "b_aux"], ["super"])]
    pixels = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", 3, IMAGE_SIZE, IMAGE_SIZE])
    graph = helper.make_graph(nodes, "colours", [pixels],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 4]),
                               helper.make_tensor_value_info("super", TensorProto.FLOAT, ["n", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="session")
def colour_onnx(tmp_path_factory) -> dict[str, Path]:
    """The colour classifier as a user exported it (fp32), its FP16 conversion, and a perturbed copy."""
    import onnx

    from edgehal.export.graph import to_fp16

    out = tmp_path_factory.mktemp("colour_onnx")
    paths = {"fp32": out / "model.onnx", "fp16": out / "model_fp16.onnx", "broken": out / "broken.onnx"}
    onnx.save(colour_model(), paths["fp32"])
    onnx.save(to_fp16(colour_model()), paths["fp16"])
    onnx.save(colour_model(perturb=True), paths["broken"])
    return paths


def write_colour_images(folder: Path, *, per_class: int, seed: int, size: int = IMAGE_SIZE,
                        mislabelled: int = 1) -> None:
    """``folder/<colour>/*.png``: noisy images of each colour; the first ``mislabelled`` of each class
    folder show the next colour (so the error rate is neither 0 nor chance)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, name in enumerate(COLOURS):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            shown = COLOURS[(k + 1) % len(COLOURS)] if i < mislabelled else name
            pixels = np.asarray(COLOUR_RGB[shown], dtype=np.float64) + rng.normal(0, 25, (size, size, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(folder / name / f"{i:03d}.png")


@pytest.fixture(scope="session")
def colour_images(tmp_path_factory) -> Path:
    """An ImageFolder tree with train/ and test/ splits of PNGs written with PIL."""
    root = tmp_path_factory.mktemp("colour_images")
    write_colour_images(root / "train", per_class=5, seed=1)
    write_colour_images(root / "test", per_class=12, seed=2)
    return root
