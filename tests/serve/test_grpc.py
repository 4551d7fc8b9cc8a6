"""The gRPC service (edgehal.serve.grpc) driven by the real ``tritonclient.grpc`` client (and, for what
that client cannot send, the generated stub it ships) against a real server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

import edgehal
from edgehal.errors import EdgehalError

from .conftest import free_port, run_server

MAX_REQUEST_BYTES = 1 << 20
MODEL = "hal_mnist"


@pytest.fixture(scope="module")
def grpc_server(model_path) -> Iterator[edgehal.Server]:
    with edgehal.serve([model_path], grpc_port=free_port(), threads=1, max_batch_size=8,
                       max_request_bytes=MAX_REQUEST_BYTES) as server:
        yield server


@pytest.fixture
def client(grpc_server) -> Iterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(url=grpc_server.grpc_address)
    yield c
    c.close()


@pytest.fixture
def stub(grpc_server) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(grpc_server.grpc_address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 28, 28)).astype(np.float32)


def infer_input(x: np.ndarray) -> grpcclient.InferInput:
    i = grpcclient.InferInput("input", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    return i


def stats(client: grpcclient.InferenceServerClient) -> service_pb2.ModelStatistics:
    (entry,) = client.get_inference_statistics(MODEL).model_stats
    return entry


def code_of(call) -> grpc.StatusCode:
    """The status code of the error tritonclient raises (it reports it as ``str(StatusCode.X)``)."""
    with pytest.raises(InferenceServerException) as info:
        call()
    return next(c for c in grpc.StatusCode if str(c) == info.value.status())


def test_grpc_listens_on_its_own_port_and_is_off_by_default_in_the_api(grpc_server, model_path):
    assert grpc_server.grpc_port not in (0, grpc_server.port)
    assert grpc_server.grpc_address == f"127.0.0.1:{grpc_server.grpc_port}"
    with edgehal.serve([model_path], threads=1) as plain:
        assert plain.grpc_port == 0 and plain.grpc_address is None


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready("no_such_model")
    meta = client.get_server_metadata()
    assert meta.name == "edgehal" and "statistics" in meta.extensions
    model = client.get_model_metadata(MODEL)
    assert (model.name, list(model.versions), model.platform) == (MODEL, ["1"], "onnxruntime_onnx")
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [("input", "FP32", [-1, 1, 28, 28])]
    assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [
        ("logits", "FP32", [-1, 10]), ("aux_case1", "FP32", [-1, 2])]


def test_model_config_from_the_models_metadata(client):
    config = client.get_model_config(MODEL).config
    assert (config.name, config.platform, config.max_batch_size) == (MODEL, "onnxruntime_onnx", 8)
    fp32 = model_config_pb2.TYPE_FP32
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("input", fp32, [1, 28, 28])]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
        ("logits", fp32, [10]), ("aux_case1", fp32, [2])]


def test_infer_raw_inputs_equals_onnxruntime(client, ort_session):
    x = images(3)
    logits, aux = ort_session.run(["logits", "aux_case1"], {"input": x})
    result = client.infer(MODEL, [infer_input(x)], request_id="r-1")
    np.testing.assert_allclose(result.as_numpy("logits"), logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.as_numpy("aux_case1"), aux, rtol=1e-5, atol=1e-6)
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (MODEL, "1", "r-1")


def test_infer_a_requested_subset_of_outputs(client, ort_session):
    x = images(2, seed=1)
    result = client.infer(MODEL, [infer_input(x)], outputs=[grpcclient.InferRequestedOutput("aux_case1")])
    assert [o.name for o in result.get_response().outputs] == ["aux_case1"]
    assert result.as_numpy("logits") is None
    np.testing.assert_allclose(result.as_numpy("aux_case1"), ort_session.run(["aux_case1"], {"input": x})[0],
                               rtol=1e-5, atol=1e-6)


def test_infer_classification_of_an_output(client, ort_session):
    x = images(2, seed=2)
    result = client.infer(MODEL, [infer_input(x)],
                          outputs=[grpcclient.InferRequestedOutput("logits", class_count=3)])
    top = result.as_numpy("logits")
    assert top.shape == (2, 3)
    logits = ort_session.run(["logits"], {"input": x})[0]
    for row, scores in zip(top, logits):
        assert [int(v.split(b":")[1]) for v in row] == list(np.argsort(-scores, kind="stable")[:3])


def test_infer_typed_contents(stub, ort_session):
    x = images(1, seed=3)
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    t = request.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    t.contents.fp32_contents.extend(x.reshape(-1).tolist())
    response = stub.ModelInfer(request)
    assert [o.name for o in response.outputs] == ["logits", "aux_case1"]
    logits = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(1, 10)
    np.testing.assert_allclose(logits, ort_session.run(["logits"], {"input": x})[0], rtol=1e-5, atol=1e-6)


def test_statistics_count_the_requests_over_grpc_and_http(client, grpc_server):
    before = stats(client)
    for n in (1, 2, 3):
        client.infer(MODEL, [infer_input(images(n))])
    bad = images(1)[:, :, :5]
    with pytest.raises(InferenceServerException):
        client.infer(MODEL, [infer_input(bad)])
    after = stats(client)
    assert after.inference_stats.success.count - before.inference_stats.success.count == 3
    assert after.inference_count - before.inference_count == 6
    assert after.inference_stats.fail.count - before.inference_stats.fail.count == 1
    # one data plane: the HTTP statistics are the same numbers
    with urllib.request.urlopen(f"{grpc_server.url}/v2/models/{MODEL}/stats", timeout=30) as r:
        (http_stats,) = json.load(r)["model_stats"]
    assert http_stats["inference_count"] == after.inference_count
    assert http_stats["inference_stats"]["success"]["count"] == after.inference_stats.success.count
    assert [s.name for s in client.get_inference_statistics().model_stats] == [MODEL]


def test_errors_map_to_status_codes_and_the_server_stays_ready(client, stub):
    x = images(1)
    assert code_of(lambda: client.infer("no_such_model", [infer_input(x)])) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: client.get_model_metadata("no_such_model")) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: client.get_model_metadata(MODEL, "7")) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: client.get_inference_statistics("no_such_model")) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: client.infer(MODEL, [infer_input(x[:, :, :27])])) == grpc.StatusCode.INVALID_ARGUMENT
    wrong_type = grpcclient.InferInput("input", [1, 1, 28, 28], "FP64")
    wrong_type.set_data_from_numpy(x.astype(np.float64))
    assert code_of(lambda: client.infer(MODEL, [wrong_type])) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: client.infer(MODEL, [infer_input(images(9))])) == grpc.StatusCode.INVALID_ARGUMENT

    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="input", datatype="FP32", shape=[1, 1, 28, 28])
    request.raw_input_contents.append(x.tobytes()[:-4])  # a wrong byte length
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "binary_data_size" in info.value.details() and "3136 bytes" in info.value.details()

    too_big = np.zeros((400, 1, 28, 28), np.float32)  # 1.25 MiB
    assert too_big.nbytes > MAX_REQUEST_BYTES
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="input", datatype="FP32", shape=list(too_big.shape))
    request.raw_input_contents.append(too_big.tobytes())
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    assert client.is_server_ready() and client.is_model_ready(MODEL)
    assert client.infer(MODEL, [infer_input(x)]).as_numpy("logits").shape == (1, 10)


def test_a_taken_grpc_port_is_refused_before_serving(model_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(EdgehalError, match="gRPC address"):
            edgehal.serve([model_path], grpc_port=port, threads=1)


def test_a_full_queue_answers_unavailable_and_recovers(slow_model_path):
    with edgehal.serve([slow_model_path], grpc_port=free_port(), threads=1, dynamic_batching=False,
                       max_queue_size=1) as server:
        client = grpcclient.InferenceServerClient(url=server.grpc_address)
        x = np.zeros((1, 1024), np.float32)
        i = grpcclient.InferInput("input", [1, 1024], "FP32")
        i.set_data_from_numpy(x)
        barrier = threading.Barrier(12)

        def one(_: int) -> str:
            barrier.wait(timeout=30)
            try:
                client.infer("slow", [i])
            except InferenceServerException as exc:
                return exc.status()
            return "OK"

        with ThreadPoolExecutor(12) as pool:
            codes = sorted(pool.map(one, range(12)))
        assert codes.count(str(grpc.StatusCode.UNAVAILABLE)) >= 1, codes
        assert codes.count("OK") >= 1, codes
        assert set(codes) <= {"OK", str(grpc.StatusCode.UNAVAILABLE)}
        assert client.infer("slow", [i]).as_numpy("output").shape == (1, 1024)  # and it recovers
        client.close()


def test_the_cli_serves_grpc_on_grpc_port(model_path, tmp_path):
    port = free_port()
    with run_server([model_path], tmp_path, "--grpc-port", str(port)) as srv:  # the last --grpc-port wins
        client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{port}")
        assert client.is_server_ready() and client.is_model_ready(MODEL)
        assert client.infer(MODEL, [infer_input(images(1))]).as_numpy("logits").shape == (1, 10)
        client.close()
        assert f"listening on grpc://127.0.0.1:{port}" in srv.log()


def test_the_cli_default_grpc_port_follows_the_serve_extra(monkeypatch, capsys):
    import importlib.util

    from edgehal.cli import _default_grpc_port

    assert _default_grpc_port() == 8001  # the test environment has tritonclient[grpc]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("tritonclient") else real(name, *a))
    assert _default_grpc_port() == 0
    assert "pip install 'edgehal[serve]'" in capsys.readouterr().err


def test_a_too_large_request_from_tritonclient_is_refused_and_the_server_stays_ready(client):
    too_big = images(400)  # 1.25 MiB
    assert too_big.nbytes > MAX_REQUEST_BYTES
    with pytest.raises(InferenceServerException) as info:
        client.infer(MODEL, [infer_input(too_big)])
    assert info.value.status() == str(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert str(MAX_REQUEST_BYTES) in info.value.message()  # grpc's own: larger than max (N vs. limit)
    assert client.is_server_ready() and client.is_model_ready(MODEL)
    assert client.infer(MODEL, [infer_input(images(2))]).as_numpy("logits").shape == (2, 10)


def test_a_message_that_does_not_parse_is_invalid_argument_and_the_server_stays_ready(grpc_server, client):
    with grpc.insecure_channel(grpc_server.grpc_address) as channel:
        for rpc in ("ModelInfer", "ModelReady"):
            call = channel.unary_unary(f"/inference.GRPCInferenceService/{rpc}")  # bytes in, bytes out
            with pytest.raises(grpc.RpcError) as info:
                call(b"\xff\xff\xff\xff not a protobuf message", timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, rpc
            assert f"is not a valid inference.{rpc}Request" in info.value.details()
    # the RPCs not served still answer UNIMPLEMENTED
    assert code_of(lambda: client.get_model_repository_index()) == grpc.StatusCode.UNIMPLEMENTED
    assert client.is_server_ready() and client.is_model_ready(MODEL)
    assert client.infer(MODEL, [infer_input(images(1))]).as_numpy("logits").shape == (1, 10)


def test_grpc_and_http_share_the_in_flight_byte_budget(model_path, ort_session):
    """Requests wait in the batcher (a long queue delay) holding their bytes; past 16 x
    --max-request-bytes a gRPC request gets RESOURCE_EXHAUSTED and an HTTP one 503."""
    max_request = 3300
    x = images(1, seed=5)
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.tobytes())
    size, limit = request.ByteSize(), 16 * max_request
    held = limit // size  # the requests that fit; the rest are refused at once
    header = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    assert len(header) + x.nbytes <= max_request and len(header) + x.nbytes > limit - held * size
    with edgehal.serve([model_path], grpc_port=free_port(), threads=1, max_batch_size=64, max_queue_delay_ms=3000,
                       max_request_bytes=max_request) as server, \
            grpc.insecure_channel(server.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        futures = [stub.ModelInfer.future(request, timeout=60) for _ in range(held + 4)]
        # Four are answered at once (which four depends on arrival order), while the others
        # still wait for their batch.
        deadline = time.monotonic() + 20
        while sum(f.done() for f in futures) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        refused = [f for f in futures if f.done()]
        assert len(refused) == 4, "the requests past the budget were not refused at once"
        for f in refused:
            assert f.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "bytes of requests are in flight" in f.details() and str(limit) in f.details()
        waiting = [f for f in futures if f not in refused]
        body = urllib.request.Request(f"{server.url}/v2/models/{MODEL}/infer", data=header + x.tobytes(),
                                      headers={"Inference-Header-Content-Length": str(len(header))})
        with pytest.raises(urllib.error.HTTPError) as info:  # the waiting gRPC requests hold the budget
            urllib.request.urlopen(body, timeout=30)
        assert info.value.code == 503 and b"bytes of requests are in flight" in info.value.read()
        logits = ort_session.run(["logits"], {"input": x})[0]
        assert len(waiting) == held
        for f in waiting:
            out = np.frombuffer(f.result().raw_output_contents[0], np.float32).reshape(1, 10)
            np.testing.assert_allclose(out, logits, rtol=1e-5, atol=1e-6)
        # the budget is free again
        assert stub.ModelInfer(request, timeout=60).outputs[0].name == "logits"
        assert stub.ServerReady(service_pb2.ServerReadyRequest()).ready


# ---------------------------------------------------------------------------
# ModelStreamInfer


def test_stream_infer_answers_every_request_in_order_with_errors_in_band(client, ort_session):
    import queue

    answers: queue.SimpleQueue = queue.SimpleQueue()
    xs = [images(1 + k % 3, seed=100 + k) for k in range(12)]
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for k, x in enumerate(xs):
            client.async_stream_infer(MODEL, [infer_input(x)], request_id=str(k))
            if k == 4:  # an unknown model and a wrong shape amid the good requests
                client.async_stream_infer("no_such_model", [infer_input(x)], request_id="bad-model")
                client.async_stream_infer(MODEL, [infer_input(x.reshape(-1, 1, 784, 1))], request_id="bad-shape")
    finally:
        client.stop_stream()  # closes the request stream and waits for every answer
    got = [answers.get(timeout=30) for _ in range(len(xs) + 2)]
    assert answers.empty()
    good = [r for r, e in got if e is None]
    errors = [str(e) for r, e in got if e is not None]
    # in the order sent: the first five, the two errors, the rest
    assert [r.get_response().id for r in good] == [str(k) for k in range(len(xs))]
    assert [r is None for r, _ in got] == [False] * 5 + [True] * 2 + [False] * 7
    assert "model 'no_such_model'" in errors[0] and "is not served here" in errors[0]
    assert "input 'input'" in errors[1] and f"has shape [{len(xs[4])}, 1, 784, 1]" in errors[1]
    for r, x in zip(good, xs):
        logits, aux = ort_session.run(["logits", "aux_case1"], {"input": x})
        np.testing.assert_allclose(r.as_numpy("logits"), logits, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r.as_numpy("aux_case1"), aux, rtol=1e-5, atol=1e-6)
    assert client.is_server_ready()


def _infer_request_bytes(x: np.ndarray, request_id: str) -> bytes:
    return service_pb2.ModelInferRequest(
        model_name=MODEL, id=request_id, raw_input_contents=[x.tobytes()],
        inputs=[service_pb2.ModelInferRequest.InferInputTensor(name="input", datatype="FP32",
                                                               shape=list(x.shape))]).SerializeToString()


def test_stream_a_message_that_does_not_parse_is_answered_in_band_and_the_stream_goes_on(grpc_server, ort_session):
    x = images(2, seed=7)
    with grpc.insecure_channel(grpc_server.grpc_address) as channel:
        call = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                     response_deserializer=service_pb2.ModelStreamInferResponse.FromString)
        first, second = list(call(iter([b"\xff\xff\xff\xff not a protobuf message", _infer_request_bytes(x, "ok")]),
                                  timeout=30))
    assert "is not a valid inference.ModelInferRequest" in first.error_message
    assert not first.HasField("infer_response")
    assert second.error_message == "" and second.infer_response.id == "ok"
    logits = np.frombuffer(second.infer_response.raw_output_contents[0], np.float32).reshape(2, 10)
    np.testing.assert_allclose(logits, ort_session.run(["logits"], {"input": x})[0], rtol=1e-5, atol=1e-6)


def test_a_cancelled_stream_leaves_the_server_serving(slow_model_path):
    """The client cancels while the stream's window is full (the slow model keeps 64 requests waiting):
    the stream's reader thread must not wait for room for ever."""
    def request(k: int) -> bytes:
        return service_pb2.ModelInferRequest(
            model_name="slow", id=str(k), raw_input_contents=[np.full((1, 1024), k, np.float32).tobytes()],
            inputs=[service_pb2.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[1, 1024])]
        ).SerializeToString()

    def requests():  # more requests than the window; the client goes away before the last
        for k in range(200):
            yield request(k)
        time.sleep(60)

    def readers() -> int:  # the server's per-stream reader threads (this process runs the server)
        return sum(t.name == "edgehal-grpc-stream" for t in threading.enumerate())

    with edgehal.serve([slow_model_path], grpc_port=free_port(), threads=1) as server:
        with grpc.insecure_channel(server.grpc_address) as channel:
            call = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                         response_deserializer=service_pb2.ModelStreamInferResponse.FromString)
            responses = call(requests(), timeout=60)
            assert next(responses).infer_response.id == "0"
            time.sleep(0.3)  # the reader fills the window meanwhile: a batch of the slow model takes seconds
            assert readers() == 1
            responses.cancel()
        client = grpcclient.InferenceServerClient(url=server.grpc_address)
        assert client.is_server_ready()
        deadline = time.monotonic() + 30  # the stream's reader thread ends too
        while readers() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert readers() == 0
        client.close()
