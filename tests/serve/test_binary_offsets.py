"""Binary tensors of a model with two inputs and two outputs: every tensor read and written at its own offset,
on the first request of a header shape and on the requests that reuse its cached parse plan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgehal.serve.repository import ModelOptions, discover, load

from .conftest import serve_in_process

tritonclient_http = pytest.importorskip("tritonclient.http")


def _two_in_two_out(path: Path) -> Path:
    """diff = a - b (asymmetric: swapping the inputs flips its sign), total = a + 2b (different widths)."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 3])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, 3])
    two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    nodes = [helper.make_node("Sub", ["a", "b"], ["diff"]),
             helper.make_node("Mul", ["b", "two"], ["b2"]),
             helper.make_node("Add", ["a", "b2"], ["total"])]
    graph = helper.make_graph(nodes, "two_in_two_out", [a, b],
                              [helper.make_tensor_value_info("diff", TensorProto.FLOAT, [None, 3]),
                               helper.make_tensor_value_info("total", TensorProto.FLOAT, [None, 3])], [two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    path = _two_in_two_out(tmp_path_factory.mktemp("twoin") / "pair.onnx")
    models = load(discover([path]), ModelOptions(threads=1, max_batch_size=8))
    with serve_in_process(models) as address:
        yield address


def _infer(client, a: np.ndarray, b: np.ndarray, *, order: tuple[str, str] = ("a", "b"),
           outputs: tuple[str, ...] = ("diff", "total")) -> dict[str, np.ndarray]:
    arrays = {"a": a, "b": b}
    inputs = []
    for name in order:
        t = tritonclient_http.InferInput(name, list(arrays[name].shape), "FP32")
        t.set_data_from_numpy(arrays[name], binary_data=True)
        inputs.append(t)
    requested = [tritonclient_http.InferRequestedOutput(n, binary_data=True) for n in outputs]
    result = client.infer("pair", inputs, outputs=requested)
    return {n: result.as_numpy(n) for n in outputs}


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_each_input_is_read_at_its_own_offset_first_and_cached(url, order):
    client = tritonclient_http.InferenceServerClient(url)
    rng = np.random.default_rng(7)
    for _ in range(4):  # the first request builds the parse plan; the others reuse it
        a = rng.standard_normal((2, 3)).astype(np.float32)
        b = rng.standard_normal((2, 3)).astype(np.float32) + 10.0
        out = _infer(client, a, b, order=order)
        np.testing.assert_array_equal(out["diff"], a - b)
        np.testing.assert_allclose(out["total"], a + 2 * b, rtol=1e-6)


def test_each_output_is_written_at_its_own_offset_in_either_order(url):
    client = tritonclient_http.InferenceServerClient(url)
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.full((2, 3), 100.0, np.float32)
    for outputs in (("diff", "total"), ("total", "diff"), ("total",)):
        out = _infer(client, a, b, outputs=outputs)
        if "diff" in out:
            np.testing.assert_array_equal(out["diff"], a - b)
        np.testing.assert_array_equal(out["total"], a + 2 * b)


# ---------------------------------------------------------------------------
# gRPC: raw_input_contents, one entry per input, through the parse plan kept per request header


@pytest.fixture(scope="module")
def grpc_address(tmp_path_factory):
    import socket

    import edgehal

    path = _two_in_two_out(tmp_path_factory.mktemp("twoin_grpc") / "pair.onnx")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with edgehal.serve([path], grpc_port=port, threads=1, max_batch_size=8) as server:
        yield server.grpc_address


def _raw_request(a: np.ndarray, b: np.ndarray, order: tuple[str, str], sizes: tuple[int, int] | None = None):
    from tritonclient.grpc import service_pb2

    arrays = {"a": a, "b": b}
    request = service_pb2.ModelInferRequest(model_name="pair")
    blobs = b"".join(arrays[n].tobytes() for n in order)
    cut = sizes[0] if sizes else arrays[order[0]].nbytes
    for name in order:
        request.inputs.add(name=name, datatype="FP32", shape=list(arrays[name].shape))
    request.raw_input_contents.extend([blobs[:cut], blobs[cut:]])
    return request


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_grpc_each_raw_input_is_read_as_its_own_tensor_first_and_cached(grpc_address, order):
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    rng = np.random.default_rng(11)
    with grpc.insecure_channel(grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(4):  # the first request builds the parse plan; the others reuse it
            a = rng.standard_normal((2, 3)).astype(np.float32)
            b = rng.standard_normal((2, 3)).astype(np.float32) + 10.0
            response = stub.ModelInfer(_raw_request(a, b, order))
            out = {o.name: np.frombuffer(r, np.float32).reshape(list(o.shape))
                   for o, r in zip(response.outputs, response.raw_output_contents)}
            np.testing.assert_array_equal(out["diff"], a - b)
            np.testing.assert_allclose(out["total"], a + 2 * b, rtol=1e-6)
        # The same header with the same total of raw bytes split otherwise is refused, plan or not.
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(_raw_request(a, b, order, sizes=(20, 28)))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "is 20 bytes" in info.value.details() and "24 bytes" in info.value.details()
