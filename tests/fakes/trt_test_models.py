"""Tiny ONNX models for the TensorRT, inspect and Triton tests (built in seconds on a CPU).

Not a test module: the TensorRT, inspect and Triton test files import it from tests/fakes by path.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from edgehal.artifact import ArtifactMetadata, read_artifact, write_onnx_metadata
from edgehal.hierarchy import DIGIT_CLASSES, aux_head_from_case, get_case
from edgehal.manifest import Head, HeadManifest, Preprocessing

INPUT = "input"
SHAPE = (1, 28, 28)


def manifest() -> HeadManifest:
    return HeadManifest(
        model="tiny_hal", input_name=INPUT, input_shape=SHAPE,
        heads=(Head("digit", "main", 0, class_names=DIGIT_CLASSES),
               aux_head_from_case(get_case("mnist", "case2"), name="parity")))


def metadata(*, aux: str = "keep", precision: str = "fp32") -> ArtifactMetadata:
    """What `edgehal export` records for the tiny model (and an engine's sidecar, at its precision)."""
    full = manifest()
    return ArtifactMetadata(manifest=full.select(aux), full_manifest=full,
                            preprocessing=Preprocessing(layout="NCHW", input_shape=SHAPE, mean=(0.1307,),
                                                        std=(0.3081,), scale=1 / 255),
                            aux=aux, precision=precision, source_sha256="0" * 64,
                            metrics={"test": {"digit": {"error_rate": 1.0}}}, versions={"edgehal": "test"})


class TinyHal(torch.nn.Module):
    """Conv -> ReLU -> MaxPool -> two heads; the aux head feeds the main one (HAL)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.aux = torch.nn.Linear(4 * 13 * 13, 2)
        self.main = torch.nn.Linear(4 * 13 * 13 + 2, 10)

    def forward(self, x):
        h = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1)
        aux = self.aux(h)
        return self.main(torch.cat([h, aux], dim=1)), aux


def export_cnn(path: Path, *, aux: str = "keep", batch: int | None = None, opset: int = 17) -> Path:
    """The tiny HAL CNN as ONNX with edgehal metadata; dynamic batch unless ``batch``."""
    full = manifest()
    selected = full.select(aux)
    names = list(selected.head_names)

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = TinyHal().eval()

        def forward(self, x):
            main, aux_out = self.net(x)
            return (main, aux_out) if aux == "keep" else main

    x = torch.zeros((batch or 2, *SHAPE))
    dynamic = None if batch else {INPUT: {0: "batch"}, **{n: {0: "batch"} for n in names}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrapper().eval(), (x,), str(path), input_names=[INPUT], output_names=names,
                          dynamic_axes=dynamic, opset_version=opset, dynamo=False)
    model = onnx.load(str(path))
    write_onnx_metadata(model, metadata(aux=aux))
    onnx.save(model, str(path))
    return path


def quantize_qdq(src: Path, dst: Path, *, tensorrt_friendly: bool = True) -> Path:
    """Q/DQ INT8 with onnxruntime's quantize_static.

    ``tensorrt_friendly``: signed INT8, symmetric, float biases (what TensorRT
    parses); otherwise onnxruntime's defaults (UINT8 asymmetric activations,
    INT32 biases), which TensorRT refuses.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    rng = np.random.default_rng(0)
    batches = [{INPUT: rng.random((2, *SHAPE), dtype=np.float32)} for _ in range(4)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self):
            return next(self.it, None)

    kwargs = {}
    if tensorrt_friendly:
        kwargs = dict(activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                      extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                     "QuantizeBias": False})
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, **kwargs)
    model = onnx.load(str(dst))
    write_onnx_metadata(model, read_artifact(src).require_metadata().with_precision("int8"))
    onnx.save(model, str(dst))
    return dst


def convert_fp16(src: Path, dst: Path) -> Path:
    """``src`` as FP16, as ``edgehal export --precision fp16`` writes it (the same converter)."""
    from edgehal.export.graph import to_fp16

    model = to_fp16(onnx.load(str(src)))
    write_onnx_metadata(model, read_artifact(src).require_metadata().with_precision("fp16"))
    onnx.save(model, str(dst))
    return dst


def graph_model(path: Path, nodes, inputs, outputs, *, opset: int = 17, initializers=(),
                domains: dict[str, int] | None = None) -> Path:
    """A hand-built graph (no edgehal metadata)."""
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in (domains or {}).items()]
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=imports)
    onnx.save(model, str(path))
    return path


def det_model(path: Path) -> Path:
    """A graph with ``Det``, an operator TensorRT's ONNX parser lacks."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    return graph_model(path, [helper.make_node("Relu", ["x"], ["r"], name="relu"),
                              helper.make_node("Det", ["r"], ["y"], name="det0")], [x], [y])
