"""TensorRT's ONNX operator table: consistent with itself and with the checks inspect runs on it."""

from __future__ import annotations

from edgehal.export.inspect import _Checker
from edgehal.export.tensorrt import ops


def test_the_opset_range_and_type_names_are_consistent():
    assert ops.MIN_OPSET <= 17 <= ops.MAX_OPSET  # edgehal exports opset 17 by default
    names = set(ops.ONNX_TYPE_NAMES.values())
    assert ops.SUPPORTED_TYPES <= names and ops.QUANTIZED_TYPES <= ops.SUPPORTED_TYPES
    for op, types in ops.OPERATORS.items():
        assert set(types) <= names, op


def test_every_restriction_belongs_to_an_operator_and_is_checked():
    for op in ops.RESTRICTIONS:
        assert ops.OPERATORS.get(op), f"{op} has a restriction but no supported types"
        check = getattr(_Checker, f"restrict_{op}", None) or (op.startswith("Reduce") and _Checker.restrict_reduce)
        assert check, f"inspect checks no restriction of {op}"


def test_the_operators_edgehal_exports_are_supported():
    for op in ("Conv", "Relu", "MaxPool", "Gemm", "MatMul", "Concat", "Flatten", "Reshape", "LSTM", "GRU",
               "RNN", "QuantizeLinear", "DequantizeLinear", "Softmax", "Sigmoid", "Tanh"):
        assert "FP32" in ops.OPERATORS[op] or op == "DequantizeLinear", op
    assert "INT8" in ops.OPERATORS["DequantizeLinear"]
    assert ops.OPERATORS["Det"] == ()  # a table row with N: no importer


def test_resize_modes_are_what_the_restriction_text_names():
    text = ops.RESTRICTIONS["Resize"]
    for mode in ops.RESIZE_MODES | ops.RESIZE_TRANSFORMS:
        assert f"`{mode}`" in text
