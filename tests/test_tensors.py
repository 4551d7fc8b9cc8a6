"""The one dtype table and the tensor description every runtime, serve and Triton share."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest

from edgehal.errors import EdgehalError
from edgehal.tensors import (DTYPES, LOOKUPS, TensorSpec, dtype_from_datatype, dtype_from_numpy, dtype_from_onnx,
                             dtype_from_ort, dtype_from_tensorrt, dtype_from_triton)

SYSTEMS = [f.name for f in dataclasses.fields(DTYPES[0])]


def test_every_system_has_a_lookup():
    assert sorted(LOOKUPS) == sorted(SYSTEMS)


@pytest.mark.parametrize("entry", DTYPES, ids=lambda d: d.name)
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


@pytest.mark.parametrize("entry", DTYPES, ids=lambda d: d.name)
def test_names_agree_with_numpy_onnx_and_onnxruntime(entry):
    """The table is checked against the libraries, not against itself."""
    onnx_name = onnx.TensorProto.DataType.Name(entry.onnx)
    assert entry.onnx_name == onnx_name
    assert entry.ort == f"tensor({onnx_name.lower()})"  # onnxruntime spells ONNX's names
    if entry.numpy is None:
        return
    assert entry.numpy_dtype.name == entry.numpy
    if entry.numpy == "object":
        assert onnx_name == "STRING"
    else:
        assert onnx.helper.tensor_dtype_to_np_dtype(entry.onnx) == entry.numpy_dtype


def test_every_onnx_element_type_has_an_entry():
    """So every tensor of a graph has a description, whatever its type."""
    known = {d.onnx for d in DTYPES}
    assert {v for n, v in onnx.TensorProto.DataType.items() if n != "UNDEFINED"} <= known


def test_a_type_numpy_lacks_is_named_by_onnx_and_has_no_protocol_or_triton_name():
    fp8 = dtype_from_onnx(onnx.TensorProto.FLOAT8E4M3FN)
    assert (fp8.numpy, fp8.name, fp8.tensorrt) == (None, "FLOAT8E4M3FN", "FP8")
    assert dtype_from_ort("tensor(float8e4m3fn)") is fp8 and dtype_from_tensorrt("FP8") is fp8
    for entry in DTYPES:  # the protocol and Triton carry numpy arrays, and only those
        assert (entry.numpy is None) == (entry.datatype is None) == (entry.triton is None), entry
    with pytest.raises(EdgehalError, match=r"^input 'q': dtype FLOAT8E4M3FN \| has no numpy type that edgehal "
                                           r"runs or serves. Note: a model whose inputs and outputs are one of "
                                           r"bool, uint8, "):
        fp8.require_numpy(what="input 'q'")
    # complex64 is a numpy type, but no runtime or protocol edgehal uses carries it
    assert dtype_from_onnx(onnx.TensorProto.COMPLEX64).name == "COMPLEX64"
    with pytest.raises(EdgehalError, match=r"^numpy dtype 'complex64' \| is not a tensor type edgehal knows"):
        dtype_from_numpy(np.complex64)


def test_triton_config_names_are_triton_s_own():
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                           reason="pip install 'tritonclient[grpc]' (the dev extra)")
    known = set(model_config_pb2.DataType.keys())
    assert {d.triton for d in DTYPES if d.triton is not None} <= known


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
    (dtype_from_numpy, None, r"^numpy dtype None \| is not a tensor type edgehal knows"),  # not float64
    (dtype_from_ort, "tensor(float7)", r"^onnxruntime type 'tensor\(float7\)' \| is not a tensor type"),
    (dtype_from_ort, "seq(tensor(float))", r"onnxruntime type 'seq\(tensor\(float\)\)'"),
    (dtype_from_onnx, 0, r"^ONNX element type 0 \| is not a tensor type"),  # UNDEFINED: no tensor
    (dtype_from_onnx, 99, r"^ONNX element type 99 \| is not a tensor type"),
    (dtype_from_datatype, "FP8", r"^protocol datatype 'FP8' \| .*Note: one of BOOL, UINT8, "),
    (dtype_from_triton, "TYPE_INVALID", r"^Triton data_type 'TYPE_INVALID'"),
    (dtype_from_tensorrt, "FP16", r"^TensorRT DataType 'FP16' \| .*Note: one of BOOL, UINT8, INT8, INT32"),
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


def test_spec_keeps_dimension_names_which_take_part_in_equality():
    spec = TensorSpec("x", "float32", (-1, -1, 16), ("batch", "time", None))
    assert spec.dim_names == ("batch", "time", None) and spec.dynamic_axes == (0, 1)
    assert spec.dim_label(1) == "1 ('time')" and spec.dim_label(2) == "2"
    assert TensorSpec("x", "float32", (4, 16)).dim_label(0) == "0"  # a spec without names
    assert spec != TensorSpec("x", "float32", (-1, -1, 16))  # as the graph's tensor description always compared
    assert spec.without_batch() == TensorSpec("x", "float32", (-1, 16), ("time", None))
    with pytest.raises(ValueError, match="2 dimension names for shape"):
        TensorSpec("x", "float32", (-1, 1, 16), ("batch", "time"))


def test_spec_dict_round_trip_is_the_sidecar_form():
    spec = TensorSpec("input", np.float32, (None, 1, 28, 28), ("batch", None, None, None))
    d = spec.to_dict()
    assert d == {"name": "input", "dtype": "float32", "shape": [-1, 1, 28, 28]}  # dimension names stay behind
    assert json.loads(json.dumps(d)) == d
    assert TensorSpec.from_dict(d) == TensorSpec("input", "float32", (-1, 1, 28, 28))
    fp8 = TensorSpec("q", dtype_from_onnx(onnx.TensorProto.FLOAT8E4M3FN), (4,))
    assert fp8.to_dict()["dtype"] == "FLOAT8E4M3FN" and TensorSpec.from_dict(fp8.to_dict()) == fp8


def test_an_engine_sidecar_written_before_loads():
    """The ``inputs``/``outputs`` entries of a sidecar ``edgehal build-engine`` wrote earlier."""
    written = json.loads('{"name": "digit", "dtype": "float16", "shape": [-1, 10]}')
    spec = TensorSpec.from_dict(written)
    assert (spec.name, spec.dtype, spec.shape, spec.dim_names) == ("digit", "float16", (-1, 10), ())
    assert spec.numpy_dtype == np.float16 and spec.datatype == "FP16"
    with pytest.raises(EdgehalError, match=r"^tensor 'x': numpy dtype 'float8_e4m3fn' \| is not a tensor type"):
        TensorSpec.from_dict({"name": "x", "dtype": "float8_e4m3fn", "shape": [2]})


def test_spec_of_a_type_numpy_lacks_is_described_and_refused_where_arrays_are_needed():
    spec = TensorSpec("q", dtype_from_onnx(onnx.TensorProto.FLOAT8E4M3FN), (-1, 4))
    assert spec.dtype == "FLOAT8E4M3FN" and spec.type.tensorrt == "FP8"
    assert spec.datatype is None and spec.type.triton is None
    assert spec == TensorSpec("q", "FLOAT8E4M3FN", (-1, 4))
    assert spec.without_batch().dtype == "FLOAT8E4M3FN"
    with pytest.raises(EdgehalError, match=r"^tensor 'q': dtype FLOAT8E4M3FN \| has no numpy type"):
        spec.numpy_dtype
