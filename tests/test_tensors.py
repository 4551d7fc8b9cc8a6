"""The one dtype table and the tensor description every runtime, serve and Triton share."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest

from edgehal.errors import EdgehalError
from edgehal.tensors import (DTYPES, LOOKUPS, TensorSpec, dtype_from_datatype, dtype_from_numpy, dtype_from_onnx,
                             dtype_from_ort, dtype_from_tensorrt, dtype_from_triton)

SYSTEMS = [f.name for f in dataclasses.fields(DTYPES[0])]


def test_every_system_has_a_lookup():
    assert sorted(LOOKUPS) == sorted(SYSTEMS)


@pytest.mark.parametrize("entry", DTYPES, ids=lambda d: d.numpy)
def test_every_entry_maps_both_ways(entry):
    """Each name of an entry finds that entry again, in every system that has the type."""
    for system in SYSTEMS:
        name = getattr(entry, system)
        if name is not None:
            assert LOOKUPS[system](name) is entry, (system, name)


@pytest.mark.parametrize("system", SYSTEMS)
def test_names_are_unique_within_each_system(system):
    names = [getattr(d, system) for d in DTYPES if getattr(d, system) is not None]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("entry", DTYPES, ids=lambda d: d.numpy)
def test_names_agree_with_numpy_onnx_and_onnxruntime(entry):
    """The table is checked against the libraries, not against itself."""
    assert entry.numpy_dtype.name == entry.numpy
    onnx_name = onnx.TensorProto.DataType.Name(entry.onnx)
    assert entry.ort == f"tensor({onnx_name.lower()})"  # onnxruntime spells ONNX's names
    if entry.numpy == "object":
        assert onnx_name == "STRING"
    else:
        assert onnx.helper.tensor_dtype_to_np_dtype(entry.onnx) == entry.numpy_dtype


def test_triton_config_names_are_triton_s_own():
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                           reason="pip install 'tritonclient[grpc]' (the dev extra)")
    known = set(model_config_pb2.DataType.keys())
    assert {d.triton for d in DTYPES} <= known


def test_the_usual_translations():
    assert dtype_from_numpy("float32").datatype == "FP32"
    assert dtype_from_numpy(np.float16).triton == "TYPE_FP16"
    assert dtype_from_numpy(np.dtype("int64")).ort == "tensor(int64)"
    assert dtype_from_numpy(np.dtype("<U3")).datatype == "BYTES"  # str arrays travel as BYTES
    assert dtype_from_ort("tensor(string)").datatype == "BYTES"
    assert dtype_from_ort("tensor(uint16)").datatype == "UINT16"
    assert dtype_from_onnx(onnx.TensorProto.FLOAT).numpy == "float32"
    assert dtype_from_datatype("INT8").tensorrt == "INT8"
    assert dtype_from_triton("TYPE_STRING").numpy == "object"

    class Member:  # a tensorrt.DataType member is read by its name
        name = "HALF"

    assert dtype_from_tensorrt(Member()).numpy == "float16"
    assert dtype_from_tensorrt("FLOAT").datatype == "FP32"


@pytest.mark.parametrize("lookup,value,message", [
    (dtype_from_numpy, "complex64", r"^numpy dtype 'complex64' \| is not a tensor type edgehal knows. "
                                    r"Note: one of bool, uint8, "),
    (dtype_from_numpy, "not a dtype", r"^numpy dtype 'not a dtype' \| is not a tensor type edgehal knows"),
    (dtype_from_ort, "tensor(complex64)", r"^onnxruntime type 'tensor\(complex64\)' \| is not a tensor type"),
    (dtype_from_ort, "seq(tensor(float))", r"onnxruntime type 'seq\(tensor\(float\)\)'"),
    (dtype_from_onnx, 14, r"^ONNX element type 14 \| is not a tensor type"),
    (dtype_from_datatype, "FP8", r"^protocol datatype 'FP8' \| .*Note: one of BOOL, UINT8, "),
    (dtype_from_triton, "TYPE_INVALID", r"^Triton data_type 'TYPE_INVALID'"),
    (dtype_from_tensorrt, "FP8", r"^TensorRT DataType 'FP8' \| .*Note: one of BOOL, UINT8, INT8, INT32"),
    (dtype_from_tensorrt, "UINT16", r"^TensorRT DataType 'UINT16'"),  # a type TensorRT lacks
])
def test_an_unknown_type_is_a_clear_error(lookup, value, message):
    with pytest.raises(EdgehalError, match=message):
        lookup(value)


def test_spec_normalises_dtype_and_dynamic_dims():
    spec = TensorSpec("input", np.float32, (None, 1, -3, 28))
    assert spec == TensorSpec("input", "float32", (-1, 1, -1, 28))
    assert spec.dtype == "float32" and spec.numpy_dtype == np.dtype(np.float32)
    assert spec.datatype == "FP32" and spec.type.triton == "TYPE_FP32"
    assert spec.dynamic_axes == (0, 2)
    assert spec.without_batch() == TensorSpec("input", "float32", (1, -1, 28))
    assert TensorSpec("text", "object", (-1,)).datatype == "BYTES"


def test_spec_with_an_unknown_dtype_names_the_tensor():
    with pytest.raises(EdgehalError, match=r"^tensor 'z': numpy dtype 'complex64' \| is not a tensor type"):
        TensorSpec("z", "complex64", (2,))
