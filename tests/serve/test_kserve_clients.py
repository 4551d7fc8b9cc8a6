"""A real ``edgehal serve`` driven by KServe's own clients: ``kserve.InferenceRESTClient`` (REST, httpx) and
``kserve.InferenceGRPCClient`` (gRPC, KServe's generated ``inference`` protos).

KServe's protos and tritonclient's both register the package ``inference`` in protobuf's default
descriptor pool, so one interpreter cannot import both (kserve/kserve#3099: "duplicate symbol
'inference.ServerLiveRequest'"); the other server tests import tritonclient.grpc. So the KServe calls
run in a child interpreter (this file run as a script, :func:`drive`), which writes what each call
answered (tensors, or the error's HTTP status / gRPC code and message) as JSON; the tests here check
those answers against onnxruntime run in this process on the same ONNX file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

MODEL = "hal_mnist"
N_CONCURRENT = 12


# ---------------------------------------------------------------------------
# The child: KServe's clients, nothing of tritonclient


def _outputs(response: Any) -> dict[str, Any]:
    """A KServe ``InferResponse`` as JSON: its id, and each output's datatype, shape and values."""
    outs = {o.name: {"datatype": o.datatype, "shape": list(o.shape), "data": o.as_numpy().ravel().tolist()}
            for o in response.outputs}
    return {"id": response.id, "model_name": response.model_name, "outputs": outs,
            "names": [o.name for o in response.outputs]}


async def _rest(base: str, x: np.ndarray) -> dict[str, Any]:
    import httpx
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
    from kserve.protocol.infer_type import RequestedOutput
    from kserve.protocol.rest.v2_datamodels import (
        ModelMetadataResponse,
        ServerMetadataResponse,
    )

    def tensor(a: np.ndarray, binary: bool, dtype: str = "FP32") -> InferInput:
        t = InferInput("input", list(a.shape), dtype)
        t.set_data_from_numpy(a, binary_data=binary)
        return t

    async def infer(request: InferRequest) -> dict[str, Any]:
        headers: dict[str, str] = {}
        try:
            out = _outputs(await client.infer(base, request, model_name=request.model_name,
                                              response_headers=headers))
            # KServe drops an output's binary_data_size once read: the header says the body had binary data
            out["binary_body"] = "inference-header-content-length" in {k.lower() for k in headers}
            return out
        except httpx.HTTPStatusError as exc:
            return {"status": exc.response.status_code, "message": str(exc)}

    out: dict[str, Any] = {}
    async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=60)) as client:
        out["live"] = await client.is_server_live(base)
        out["ready"] = await client.is_server_ready(base)
        out["model_ready"] = await client.is_model_ready(base, MODEL)
        out["unknown_model_ready"] = await client.is_model_ready(base, "no_such_model")
        async with httpx.AsyncClient(timeout=60) as plain:  # KServe's client has no metadata call: its schema
            out["server_metadata"] = ServerMetadataResponse.model_validate_json(
                (await plain.get(f"{base}/v2")).content).model_dump()
            out["model_metadata"] = ModelMetadataResponse.model_validate_json(
                (await plain.get(f"{base}/v2/models/{MODEL}")).content).model_dump()
        out["json"] = await infer(InferRequest(MODEL, [tensor(x, False)], request_id="rest-json"))
        out["binary"] = await infer(InferRequest(MODEL, [tensor(x, True)], request_id="rest-binary",
                                                 parameters={"binary_data_output": True}))
        out["only_aux"] = await infer(InferRequest(MODEL, [tensor(x, False)],
                                                   request_outputs=[RequestedOutput("aux_case1")]))
        out["only_main_binary"] = await infer(InferRequest(
            MODEL, [tensor(x, True)], request_outputs=[RequestedOutput("logits", {"binary_data": True})]))
        out["unknown_model"] = await infer(InferRequest("no_such_model", [tensor(x, False)]))
        out["wrong_shape"] = await infer(InferRequest(MODEL, [tensor(x[:, :, :27], False)]))
        out["wrong_dtype"] = await infer(InferRequest(MODEL, [tensor(x.astype(np.float64), True, "FP64")]))
    return out


async def _grpc(address: str, x: np.ndarray) -> dict[str, Any]:
    import grpc
    from google.protobuf import json_format
    from kserve import InferenceGRPCClient, InferInput, InferRequest
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
    from kserve.protocol.infer_type import RequestedOutput

    def tensor(a: np.ndarray, raw: bool, dtype: str = "FP32") -> InferInput:
        t = InferInput("input", list(a.shape), dtype)
        t.set_data_from_numpy(a, binary_data=raw)  # binary: raw_input_contents; else typed contents
        return t

    async def infer(request: InferRequest) -> dict[str, Any]:
        try:
            return _outputs(await client.infer(request))
        except grpc.aio.AioRpcError as exc:
            return {"code": exc.code().name, "message": exc.details()}

    out: dict[str, Any] = {}
    async with InferenceGRPCClient(address, timeout=60) as client:
        out["live"] = await client.is_server_live()
        out["ready"] = await client.is_server_ready()
        out["model_ready"] = await client.is_model_ready(MODEL)
        out["unknown_model_ready"] = await client.is_model_ready("no_such_model")
        async with grpc.aio.insecure_channel(address) as channel:  # the client has no metadata call: its stub
            stub = GRPCInferenceServiceStub(channel)
            out["server_metadata"] = json_format.MessageToDict(
                await stub.ServerMetadata(pb.ServerMetadataRequest()), preserving_proto_field_name=True)
            out["model_metadata"] = json_format.MessageToDict(
                await stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL)), preserving_proto_field_name=True)
        out["raw"] = await infer(InferRequest(MODEL, [tensor(x, True)], request_id="grpc-raw"))
        out["typed"] = await infer(InferRequest(MODEL, [tensor(x, False)], request_id="grpc-typed"))
        out["only_aux"] = await infer(InferRequest(MODEL, [tensor(x, True)],
                                                   request_outputs=[RequestedOutput("aux_case1")]))
        out["only_main"] = await infer(InferRequest(MODEL, [tensor(x, True)],
                                                    request_outputs=[RequestedOutput("logits")]))
        out["unknown_model"] = await infer(InferRequest("no_such_model", [tensor(x, True)]))
        out["wrong_shape"] = await infer(InferRequest(MODEL, [tensor(x[:, :, :27], True)]))
        out["wrong_dtype"] = await infer(InferRequest(MODEL, [tensor(x.astype(np.float64), True, "FP64")]))
    return out


async def _overload(base: str, address: str) -> dict[str, Any]:
    """Many requests at once at a model whose queue holds one: what each answered, and one after."""
    import asyncio

    import grpc
    import httpx
    from kserve import (
        InferenceGRPCClient,
        InferenceRESTClient,
        InferInput,
        InferRequest,
        RESTConfig,
    )

    def request() -> InferRequest:
        t = InferInput("input", [1, 1024], "FP32")
        t.set_data_from_numpy(np.zeros((1, 1024), np.float32), binary_data=True)
        return InferRequest("slow", [t])

    async def rest_one() -> Any:
        try:
            await rest.infer(base, request(), model_name="slow")
            return "OK"
        except httpx.HTTPStatusError as exc:
            return exc.response.status_code

    async def grpc_one() -> str:
        try:
            await client.infer(request())
            return "OK"
        except grpc.aio.AioRpcError as exc:
            return exc.code().name

    async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=60)) as rest, \
            InferenceGRPCClient(address, timeout=60, retries=0) as client:  # no retry of UNAVAILABLE
        out = {"rest": list(await asyncio.gather(*(rest_one() for _ in range(N_CONCURRENT))))}
        out["rest_after"] = await rest_one()
        out["grpc"] = list(await asyncio.gather(*(grpc_one() for _ in range(N_CONCURRENT))))
        out["grpc_after"] = await grpc_one()
    return out


def drive(what: str, base: str, address: str, inputs: Path, result: Path) -> None:
    """The child's work: run ``what`` (``clients`` or ``overload``) and write its answers to ``result``."""
    import asyncio

    x = np.load(inputs)

    async def main() -> dict[str, Any]:
        if what == "overload":
            return await _overload(base, address)
        return {"rest": await _rest(base, x), "grpc": await _grpc(address, x)}

    result.write_text(json.dumps(asyncio.run(main())))


if __name__ == "__main__":
    drive(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]), Path(sys.argv[5]))


# ---------------------------------------------------------------------------
# The tests


def run_kserve(what: str, base: str, address: str, tmp: Path, x: np.ndarray | None = None) -> dict[str, Any]:
    """Run :func:`drive` in a child interpreter (KServe's protos there, tritonclient's here)."""
    inputs, result = tmp / "inputs.npy", tmp / "result.json"
    np.save(inputs, np.zeros(1, np.float32) if x is None else x)
    proc = subprocess.run([sys.executable, __file__, what, base, address, str(inputs), str(result)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(result.read_text())


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((3, 1, 28, 28)).astype(np.float32)


@pytest.fixture(scope="module")
def answers(model_path, inputs, tmp_path_factory) -> dict[str, Any]:
    """Every KServe call of :func:`_rest` and :func:`_grpc`, against one ``edgehal serve`` process."""
    from .conftest import free_port, run_server

    tmp = tmp_path_factory.mktemp("kserve")
    port = free_port()
    with run_server([model_path], tmp, "--grpc-port", str(port), "--max-batch-size", "8") as srv:
        out = run_kserve("clients", srv.base, f"127.0.0.1:{port}", tmp, inputs)
        assert srv.proc.poll() is None, srv.log()
    return out


@pytest.fixture(scope="module")
def expected(ort_session, inputs) -> dict[str, np.ndarray]:
    logits, aux = ort_session.run(["logits", "aux_case1"], {"input": inputs})
    return {"logits": logits, "aux_case1": aux}


def check_outputs(answer: dict[str, Any], expected: dict[str, np.ndarray], names: list[str]) -> None:
    assert "outputs" in answer, answer  # an error instead of a result
    assert answer["names"] == names
    for name in names:
        out = answer["outputs"][name]
        assert (out["datatype"], out["shape"]) == ("FP32", list(expected[name].shape)), name
        np.testing.assert_allclose(np.asarray(out["data"], np.float32).reshape(out["shape"]), expected[name],
                                   rtol=0, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_health_is_true_and_an_unknown_model_is_not_ready(answers, protocol):
    a = answers[protocol]
    assert (a["live"], a["ready"], a["model_ready"]) == (True, True, True)
    assert a["unknown_model_ready"] is False


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_metadata_in_kserves_schema(answers, protocol):
    a = answers[protocol]
    assert a["server_metadata"]["name"] == "edgehal" and "binary_tensor_data" in a["server_metadata"]["extensions"]
    meta = a["model_metadata"]
    assert (meta["name"], meta["platform"], meta["versions"]) == (MODEL, "onnxruntime_onnx", ["1"])
    shapes = [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"] + meta["outputs"]]
    assert shapes == [("input", "FP32", [-1, 1, 28, 28]), ("logits", "FP32", [-1, 10]),
                      ("aux_case1", "FP32", [-1, 2])]


def test_rest_json_inference_equals_onnxruntime(answers, expected):
    a = answers["rest"]["json"]
    check_outputs(a, expected, ["logits", "aux_case1"])
    assert (a["id"], a["model_name"]) == ("rest-json", MODEL)
    assert not a["binary_body"]


def test_rest_binary_inference_equals_onnxruntime(answers, expected):
    a = answers["rest"]["binary"]
    check_outputs(a, expected, ["logits", "aux_case1"])
    assert a["id"] == "rest-binary"
    assert a["binary_body"]  # binary_data_output: true was honoured


def test_rest_output_selection(answers, expected):
    check_outputs(answers["rest"]["only_aux"], expected, ["aux_case1"])
    only_main = answers["rest"]["only_main_binary"]
    check_outputs(only_main, expected, ["logits"])
    assert only_main["binary_body"]


def test_grpc_raw_and_typed_inference_equal_onnxruntime(answers, expected):
    for case in ("raw", "typed"):
        a = answers["grpc"][case]
        check_outputs(a, expected, ["logits", "aux_case1"])
        assert (a["id"], a["model_name"]) == (f"grpc-{case}", MODEL)


def test_grpc_output_selection(answers, expected):
    check_outputs(answers["grpc"]["only_aux"], expected, ["aux_case1"])
    check_outputs(answers["grpc"]["only_main"], expected, ["logits"])


def test_rest_errors_raise_with_their_status(answers):
    a = answers["rest"]
    assert a["unknown_model"]["status"] == 404 and "no_such_model" in a["unknown_model"]["message"]
    assert a["wrong_shape"]["status"] == 400 and "input 'input'" in a["wrong_shape"]["message"]
    assert a["wrong_dtype"]["status"] == 400 and "FP64" in a["wrong_dtype"]["message"]


def test_grpc_errors_raise_with_their_code(answers):
    a = answers["grpc"]
    assert a["unknown_model"]["code"] == "NOT_FOUND" and "no_such_model" in a["unknown_model"]["message"]
    assert a["wrong_shape"]["code"] == "INVALID_ARGUMENT" and "input 'input'" in a["wrong_shape"]["message"]
    assert a["wrong_dtype"]["code"] == "INVALID_ARGUMENT" and "FP64" in a["wrong_dtype"]["message"]


def test_overload_raises_503_and_unavailable_then_recovers(slow_model_path, tmp_path):
    from .conftest import free_port, run_server

    port = free_port()
    with run_server([slow_model_path], tmp_path, "--grpc-port", str(port), "--no-dynamic-batching",
                    "--max-queue-size", "1") as srv:
        a = run_kserve("overload", srv.base, f"127.0.0.1:{port}", tmp_path)
    assert a["rest"].count(503) >= 1 and a["rest"].count("OK") >= 1, a["rest"]
    assert set(a["rest"]) <= {"OK", 503}, a["rest"]
    assert a["grpc"].count("UNAVAILABLE") >= 1 and a["grpc"].count("OK") >= 1, a["grpc"]
    assert set(a["grpc"]) <= {"OK", "UNAVAILABLE"}, a["grpc"]
    assert (a["rest_after"], a["grpc_after"]) == ("OK", "OK")
