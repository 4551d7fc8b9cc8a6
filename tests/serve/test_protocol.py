"""Codecs and validation of the Open Inference Protocol, without a server."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgehal.serve import protocol
from edgehal.serve.protocol import (InvalidRequest, ModelIO, classify, decode_infer_request,
                                    encode_infer_response, model_metadata)
from edgehal.tensors import TensorSpec, dtype_from_datatype


def spec(name: str, datatype: str, shape: tuple[int, ...]) -> TensorSpec:
    """A tensor as the protocol names its type (``FP32``)."""
    return TensorSpec(name, dtype_from_datatype(datatype).numpy, shape)


@pytest.fixture(autouse=True, params=["orjson", "stdlib"])
def json_backend(request, monkeypatch):
    """Every codec test runs with orjson (when installed) and with the standard library."""
    if request.param == "orjson" and protocol._orjson is None:
        pytest.skip("orjson is not installed")
    if request.param == "stdlib":
        monkeypatch.setattr(protocol, "_orjson", None)
    return request.param


IO = ModelIO("m", "1", (spec("input", "FP32", (1, 4)),),
             (spec("logits", "FP32", (3,)), spec("aux", "FP32", (2,))), 8,
             {"logits": ("a", "b", "c"), "aux": ("lo", "hi")})


def body(inputs, outputs=None, **extra) -> bytes:
    doc = {"inputs": inputs, **extra}
    if outputs is not None:
        doc["outputs"] = outputs
    return json.dumps(doc).encode()


def inp(**over):
    t = {"name": "input", "shape": [2, 1, 4], "datatype": "FP32", "data": list(range(8))}
    t.update(over)
    return t


def binary(arrays: list[np.ndarray], outputs=None, **extra) -> tuple[bytes, str]:
    header = body([{"name": "input", "shape": list(a.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": a.nbytes}} for a in arrays], outputs, **extra)
    return header + b"".join(a.tobytes() for a in arrays), str(len(header))


def test_flat_and_nested_json_give_the_same_tensor():
    x = np.arange(8, dtype=np.float32).reshape(2, 1, 4)
    flat = decode_infer_request(body([inp(data=x.ravel().tolist())]), None, IO)
    nested = decode_infer_request(body([inp(data=x.tolist())]), None, IO)
    for r in (flat, nested):
        assert r.batch == 2
        assert r.inputs["input"].dtype == np.float32
        np.testing.assert_array_equal(r.inputs["input"], x)


def test_binary_input_is_read_without_json_data():
    x = np.random.default_rng(0).standard_normal((3, 1, 4)).astype(np.float32)
    data, hl = binary([x])
    r = decode_infer_request(data, hl, IO)
    np.testing.assert_array_equal(r.inputs["input"], x)
    assert r.inputs["input"].flags.aligned


def test_outputs_default_to_all_and_follow_binary_data_output():
    r = decode_infer_request(body([inp()]), None, IO)
    assert [(o.name, o.binary) for o in r.outputs] == [("logits", False), ("aux", False)]
    r = decode_infer_request(body([inp()], parameters={"binary_data_output": True}), None, IO)
    assert [(o.name, o.binary) for o in r.outputs] == [("logits", True), ("aux", True)]
    r = decode_infer_request(body([inp()], [{"name": "aux", "parameters": {"binary_data": True}}]), None, IO)
    assert [(o.name, o.binary) for o in r.outputs] == [("aux", True)]


@pytest.mark.parametrize("tensor,message", [
    (inp(datatype="INT32"), "has datatype 'INT32'"),
    (inp(shape=[2, 4]), "has shape [2, 4]"),
    (inp(shape=[2, 1, 5], data=list(range(10))), "has shape [2, 1, 5]"),
    (inp(shape=[0, 1, 4], data=[]), "batch size 0 is out of range"),
    (inp(shape=[9, 1, 4], data=list(range(36))), "batch size 9 is out of range"),
    (inp(shape=[2, 1, -4]), "is not a list of non-negative integers"),
    (inp(shape=[2, 1, True]), "is not a list of non-negative integers"),
    (inp(data=list(range(7))), "has 7 elements"),
    (inp(data=list(range(9))), "has 9 elements"),
    (inp(data=[True] * 8), "has non-numeric elements"),
    (inp(data=[0.5] * 7 + ["1"]), "has non-numeric elements"),
    (inp(data=[0.5] * 7 + [None]), "has non-numeric elements"),
    (inp(data=[1e39] * 8), "out of range for FP32"),
    (inp(data={"a": 1}), "is a dict"),
    (inp(data=None), "has neither 'data' nor binary_data_size"),
    (inp(parameters={"shared_memory_region": "r"}), "shared memory"),
    (inp(parameters={"binary_data_size": 32}), "has both 'data' and binary_data_size"),
    (inp(name="x"), "is not an input of model 'm'"),
])
def test_invalid_inputs_are_rejected(tensor, message):
    with pytest.raises(InvalidRequest) as info:
        decode_infer_request(body([tensor]), None, IO)
    assert message in str(info.value)


@pytest.mark.parametrize("raw,message", [
    (b"", "is not valid JSON"),
    (b"\xff\xfe", "is not valid JSON"),
    (b'{"inputs": [], "x": NaN}', "is not valid JSON"),
    (b"[" * 100_000, "is not valid JSON"),
    (b'"text"', "is a JSON str"),
    (b'{"inputs": []}', "is missing or not a non-empty list"),
    (b'{"id": 5, "inputs": [1]}', "request 'id' | is a int"),
    (b'{"parameters": [], "inputs": [1]}', "request 'parameters' | is a list"),
    (b'{"parameters": {"binary_data_output": 1}, "inputs": [1]}', "binary_data_output"),
])
def test_invalid_documents_are_rejected(raw, message):
    with pytest.raises(InvalidRequest) as info:
        decode_infer_request(raw, None, IO)
    assert message in str(info.value)


def test_twice_given_or_missing_inputs_are_rejected():
    two = ModelIO("m2", "1", (spec("a", "FP32", (2,)), spec("b", "INT64", (1,))),
                  (spec("y", "FP32", (1,)),), 4)
    a = {"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}
    with pytest.raises(InvalidRequest, match="input 'b' is missing"):
        decode_infer_request(body([a]), None, two)
    with pytest.raises(InvalidRequest, match="is given twice"):
        decode_infer_request(body([a, a]), None, two)
    b = {"name": "b", "shape": [2, 1], "datatype": "INT64", "data": [1, 2]}
    with pytest.raises(InvalidRequest, match="differs from the other inputs"):
        decode_infer_request(body([a, b]), None, two)


def test_integer_inputs_reject_floats_and_out_of_range():
    io = ModelIO("i", "1", (spec("t", "INT8", (2,)),), (spec("y", "FP32", (1,)),), 0)
    ok = decode_infer_request(body([{"name": "t", "shape": [2], "datatype": "INT8", "data": [-128, 127]}]),
                              None, io)
    assert ok.inputs["t"].dtype == np.int8 and ok.inputs["t"].tolist() == [-128, 127]
    with pytest.raises(InvalidRequest, match="out of range for INT8"):
        decode_infer_request(body([{"name": "t", "shape": [2], "datatype": "INT8", "data": [1, 128]}]), None, io)
    with pytest.raises(InvalidRequest, match="non-integer"):
        decode_infer_request(body([{"name": "t", "shape": [2], "datatype": "INT8", "data": [1, 1.5]}]), None, io)


def test_bool_and_bytes_inputs():
    io = ModelIO("b", "1", (spec("flag", "BOOL", (2,)), spec("text", "BYTES", (-1,))),
                 (spec("y", "FP32", (1,)),), 0)
    flags = np.array([1, 0], np.uint8).tobytes()
    texts = b"".join(len(s).to_bytes(4, "little") + s for s in (b"hi", b"\xe2\x82\xac"))
    header = body([{"name": "flag", "shape": [2], "datatype": "BOOL", "parameters": {"binary_data_size": 2}},
                   {"name": "text", "shape": [2], "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(texts)}}])
    r = decode_infer_request(header + flags + texts, str(len(header)), io)
    assert r.inputs["flag"].tolist() == [True, False]
    assert r.inputs["text"].tolist() == [b"hi", "€".encode()]
    huge = body([{"name": "flag", "shape": [2], "datatype": "BOOL", "data": [True, False]},
                 {"name": "text", "shape": [10 ** 12], "datatype": "BYTES", "parameters": {"binary_data_size": 8}}])
    with pytest.raises(InvalidRequest, match="cannot hold 1000000000000 elements"):
        decode_infer_request(huge + b"\0" * 8, str(len(huge)), io)
    bad = header + b"\x02\x00" + texts
    with pytest.raises(InvalidRequest, match="BOOL bytes other than 0 and 1"):
        decode_infer_request(bad, str(len(header)), io)
    with pytest.raises(InvalidRequest, match="has non-boolean elements"):
        decode_infer_request(body([{"name": "flag", "shape": [2], "datatype": "BOOL", "data": [1, 0]},
                                   {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]),
                             None, io)


@pytest.mark.parametrize("declared,extra,message", [
    (32, b"", "only 16 bytes of binary data are left"),
    (12, b"", "is 12 bytes"),
    (16, b"!", "has 1 bytes after the tensors' binary data"),
])
def test_binary_sizes_must_add_up(declared, extra, message):
    header = body([{"name": "input", "shape": [1, 1, 4], "datatype": "FP32",
                    "parameters": {"binary_data_size": declared}}])
    with pytest.raises(InvalidRequest, match=message):
        decode_infer_request(header + b"\0" * 16 + extra, str(len(header)), IO)


@pytest.mark.parametrize("value", ["x", "0", "-1", "100000"])
def test_header_length_must_fit_the_body(value):
    with pytest.raises(InvalidRequest, match="Inference-Header-Content-Length"):
        decode_infer_request(b'{"inputs": []}', value, IO)


@pytest.mark.parametrize("outputs,message", [
    ([{"name": "nope"}], "is not an output of model 'm'"),
    ([{"name": "aux"}, {"name": "aux"}], "is requested twice"),
    ([{"name": "aux", "parameters": {"binary_data": "yes"}}], "binary_data"),
    ([{"name": "aux", "parameters": {"classification": -1}}], "classification"),
    ("aux", "is a str"),
])
def test_invalid_outputs_are_rejected(outputs, message):
    with pytest.raises(InvalidRequest, match=message):
        decode_infer_request(body([inp()], outputs), None, IO)


def test_response_json_and_binary_encoding():
    logits = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], np.float32)
    aux = np.array([[1.0, 2.0], [3.0, -1.0]], np.float32)
    req = decode_infer_request(body([inp()], [{"name": "logits"},
                                             {"name": "aux", "parameters": {"binary_data": True}}], id="r1"),
                               None, IO)
    out, hl = encode_infer_response(IO, req, {"logits": logits, "aux": aux})
    doc = json.loads(out[:hl])
    assert doc["id"] == "r1" and doc["model_name"] == "m" and doc["model_version"] == "1"
    first, second = doc["outputs"]
    assert first == {"name": "logits", "datatype": "FP32", "shape": [2, 3],
                     "data": logits.ravel().tolist()}
    assert second == {"name": "aux", "datatype": "FP32", "shape": [2, 2], "parameters": {"binary_data_size": 16}}
    np.testing.assert_array_equal(np.frombuffer(out[hl:], np.float32).reshape(2, 2), aux)
    json_only, none = encode_infer_response(IO, decode_infer_request(body([inp()]), None, IO),
                                            {"logits": logits, "aux": aux})
    assert none is None and "id" not in json.loads(json_only)


def test_json_refuses_nan_outputs_but_binary_carries_them():
    logits = np.array([[np.nan, 0, 0], [0, 0, 0]], np.float32)
    aux = np.zeros((2, 2), np.float32)
    req = decode_infer_request(body([inp()], [{"name": "logits"}]), None, IO)
    with pytest.raises(InvalidRequest, match="NaN or infinite"):
        encode_infer_response(IO, req, {"logits": logits, "aux": aux})
    req = decode_infer_request(body([inp()], [{"name": "logits", "parameters": {"binary_data": True}}]), None, IO)
    out, hl = encode_infer_response(IO, req, {"logits": logits, "aux": aux})
    assert np.isnan(np.frombuffer(out[hl:], np.float32)[0])


def test_classification_strings():
    scores = np.array([[0.1, 0.7, 0.2]], np.float32)
    assert classify(scores, 2, ("a", "b", "c")).tolist() == [[b"0.700000:1:b", b"0.200000:2:c"]]
    assert classify(scores, 5, ()).tolist() == [[b"0.700000:1", b"0.200000:2", b"0.100000:0"]]
    req = decode_infer_request(body([inp()], [{"name": "aux", "parameters": {"classification": 1}}]), None, IO)
    out, hl = encode_infer_response(IO, req, {"logits": np.zeros((2, 3), np.float32),
                                              "aux": np.array([[0.2, 0.9], [0.8, 0.1]], np.float32)})
    assert hl is None
    (o,) = json.loads(out)["outputs"]
    assert o == {"name": "aux", "datatype": "BYTES", "shape": [2, 1], "data": ["0.900000:1:hi", "0.800000:0:lo"]}


def test_model_metadata_document():
    doc = model_metadata(IO, versions=["1"], platform="onnxruntime_onnx", parameters={"edgehal.aux": "keep"})
    assert doc == {"name": "m", "versions": ["1"], "platform": "onnxruntime_onnx",
                   "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 4]}],
                   "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 3]},
                               {"name": "aux", "datatype": "FP32", "shape": [-1, 2]}],
                   "parameters": {"edgehal.aux": "keep"}}


def test_a_repeated_binary_header_decodes_from_the_cache_with_fresh_data():
    x, y = (np.full((2, 1, 4), v, np.float32) for v in (1.0, 2.0))
    first_body, hl = binary([x], [{"name": "aux", "parameters": {"binary_data": True}}])
    first = decode_infer_request(first_body, hl, IO)
    second = decode_infer_request(first_body[:int(hl)] + y.tobytes(), hl, IO)
    assert second.plan is first.plan is not None
    np.testing.assert_array_equal(first.inputs["input"], x)
    np.testing.assert_array_equal(second.inputs["input"], y)
    assert [(o.name, o.binary) for o in second.outputs] == [("aux", True)]
    # the same header with the wrong amount of data is checked in full, not trusted
    with pytest.raises(InvalidRequest, match="has 4 bytes after the tensors' binary data"):
        decode_infer_request(first_body + b"\0" * 4, hl, IO)
    # the cached answer header is byte for byte the one the full encoder writes
    results = {"logits": np.zeros((2, 3), np.float32), "aux": np.arange(4, dtype=np.float32).reshape(2, 2)}
    full = encode_infer_response(IO, first, results)
    cached = encode_infer_response(IO, second, results)
    assert first.plan.response_header is not None
    assert cached == full


def test_the_header_cache_is_bounded_and_skips_json_data():
    io = ModelIO("c", "1", IO.inputs, IO.outputs, 8)
    x = np.zeros((1, 1, 4), np.float32)
    for i in range(protocol.PLAN_CACHE_SIZE + 5):
        data, hl = binary([x], id=f"request-{i}")
        assert decode_infer_request(data, hl, io).id == f"request-{i}"
    assert 0 < len(io.plans) <= protocol.PLAN_CACHE_SIZE
    io.plans.clear()
    decode_infer_request(body([inp()]), None, io)
    assert io.plans == {}
