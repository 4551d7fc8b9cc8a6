"""The real server in a subprocess, driven by tritonclient and by plain HTTP."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from edgehal.hierarchy import get_case

from .conftest import http_call, json_infer, mnist_images, run_server, serve_in_process

MODEL = "hal_mnist"
INFER = f"/v2/models/{MODEL}/infer"


def images(n: int, seed: int = 0) -> np.ndarray:
    real = mnist_images(n)
    if real is not None:
        return real
    return np.random.default_rng(seed).standard_normal((n, 1, 28, 28)).astype(np.float32)


def binary_body(x: np.ndarray, outputs: list[str] | None = None) -> tuple[bytes, dict[str, str]]:
    raw = x.astype(np.float32).tobytes()
    doc = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                       "parameters": {"binary_data_size": len(raw)}}]}
    if outputs is not None:
        doc["outputs"] = [{"name": o, "parameters": {"binary_data": True}} for o in outputs]
    header = json.dumps(doc).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header)),
                          "Content-Type": "application/octet-stream"}


def triton_infer(client, x: np.ndarray, *, binary: bool, outputs: list[str] | None = None, class_count: int = 0):
    import tritonclient.http as httpclient

    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    requested = None if outputs is None else [
        httpclient.InferRequestedOutput(o, binary_data=binary, class_count=class_count) for o in outputs]
    return client.infer(MODEL, [inp], outputs=requested)


# ---------------------------------------------------------------------------
# Health and metadata


def test_health_and_server_metadata(server, triton):
    # The Open Inference Protocol's bodies (KServe's REST client parses them; Triton's reads the status).
    assert server.get("/v2/health/live") == (200, b'{"live":true}')
    assert server.get("/v2/health/ready") == (200, b'{"ready":true}')
    assert server.get(f"/v2/models/{MODEL}/ready") == (200, b'{"name":"hal_mnist","ready":true}')
    assert server.get(f"/v2/models/{MODEL}/versions/1/ready") == (200, b'{"name":"hal_mnist","ready":true}')
    assert triton.is_server_live() and triton.is_server_ready() and triton.is_model_ready(MODEL)
    assert server.get("/v2/") == server.get("/v2")
    meta = triton.get_server_metadata()
    assert meta["name"] == "edgehal"
    assert "binary_tensor_data" in meta["extensions"]
    assert "classification" in meta["extensions"]
    assert "statistics" in meta["extensions"]


def test_model_metadata_exposes_shapes_and_head_manifest(server, triton):
    meta = triton.get_model_metadata(MODEL)
    assert meta["name"] == MODEL and meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]},
                               {"name": "aux_case1", "datatype": "FP32", "shape": [-1, 2]}]
    manifest = json.loads(meta["parameters"]["edgehal.manifest"])
    heads = {h["name"]: h for h in manifest["heads"]}
    assert heads["logits"]["kind"] == "main"
    assert heads["logits"]["class_names"] == [str(i) for i in range(10)]
    assert heads["aux_case1"]["kind"] == "aux"
    assert heads["aux_case1"]["class_names"] == ["ge5", "lt5"]
    assert heads["aux_case1"]["parent_map"] == list(get_case("mnist", "case1").mapping)
    assert meta["parameters"]["edgehal.aux"] == "keep"
    assert triton.get_model_metadata(MODEL, model_version="1") == meta
    assert triton.is_model_ready(MODEL) and triton.is_model_ready(MODEL, "1")
    config = triton.get_model_config(MODEL)
    assert config["max_batch_size"] == 8
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [1, 28, 28]}]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 20000


def test_an_int8_model_from_edgehal_quantize_serves_its_calibration(model_path, tmp_path):
    """Served metadata is the artifact's own: the calibration quantize records travels too."""
    import tritonclient.http as httpclient
    from click.testing import CliRunner

    from edgehal.cli import main

    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).integers(0, 256, (16, 1, 28, 28)).astype(np.float32))
    int8 = tmp_path / "hal_int8.onnx"
    result = CliRunner().invoke(main, ["quantize", str(model_path), "-o", str(int8), "--calib-data", str(calib),
                                       "--calib-samples", "16"])
    assert result.exit_code == 0, result.output
    with run_server([int8], tmp_path / "logs") as srv:
        client = httpclient.InferenceServerClient(url=srv.url)
        params = client.get_model_metadata("hal_int8")["parameters"]
        client.close()
    assert params["edgehal.precision"] == "int8"
    calibration = json.loads(params["edgehal.calibration"])
    assert calibration["samples"] == 16 and calibration["per_channel"] is True
    assert calibration["method"] == "minmax"


def test_warm_up_comes_before_ready(server):
    log = server.log()
    assert log.index("warmed up") < log.index(" ready")


# ---------------------------------------------------------------------------
# Inference through tritonclient


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_matches_onnxruntime(triton, ort_session, binary):
    x = images(4)
    logits, aux = ort_session.run(["logits", "aux_case1"], {"input": x})
    result = triton_infer(triton, x, binary=binary)
    np.testing.assert_allclose(result.as_numpy("logits"), logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.as_numpy("aux_case1"), aux, rtol=1e-5, atol=1e-5)
    assert result.get_response()["model_name"] == MODEL
    assert result.get_response()["model_version"] == "1"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("outputs", [["aux_case1"], ["logits"], ["logits", "aux_case1"]])
def test_outputs_select_heads(triton, ort_session, outputs, binary):
    x = images(2)
    expected = dict(zip(["logits", "aux_case1"], ort_session.run(["logits", "aux_case1"], {"input": x})))
    result = triton_infer(triton, x, binary=binary, outputs=outputs)
    assert [o["name"] for o in result.get_response()["outputs"]] == outputs
    for name in outputs:
        np.testing.assert_allclose(result.as_numpy(name), expected[name], rtol=1e-5, atol=1e-5)
    for name in {"logits", "aux_case1"} - set(outputs):
        assert result.as_numpy(name) is None


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_classification_extension_labels_superclasses(triton, ort_session, binary):
    x = images(3)
    (aux,) = ort_session.run(["aux_case1"], {"input": x})
    result = triton_infer(triton, x, binary=binary, outputs=["aux_case1"], class_count=2)
    top = result.as_numpy("aux_case1")
    assert top.shape == (3, 2)
    labels = ["ge5", "lt5"]
    for row, scores in zip(top, aux):
        value, index, label = (row[0].decode() if isinstance(row[0], bytes) else row[0]).split(":")
        assert int(index) == int(np.argmax(scores)) and label == labels[int(index)]
        assert float(value) == pytest.approx(float(scores.max()), abs=1e-5)


def test_real_mnist_predictions_equal_onnxruntime(triton, ort_session):
    x = mnist_images(64)
    if x is None:
        pytest.skip("MNIST test images not found: set EDGEHAL_DATA to the shared data folder")
    logits, aux = ort_session.run(["logits", "aux_case1"], {"input": x})
    got_logits, got_aux = [], []
    for i in range(0, 64, 8):  # max_batch_size 8
        r = triton_infer(triton, x[i:i + 8], binary=True)
        got_logits.append(r.as_numpy("logits"))
        got_aux.append(r.as_numpy("aux_case1"))
    got_logits, got_aux = np.concatenate(got_logits), np.concatenate(got_aux)
    assert (got_logits.argmax(1) == logits.argmax(1)).all()
    assert (got_aux.argmax(1) == aux.argmax(1)).all()
    np.testing.assert_allclose(got_logits, logits, rtol=1e-5, atol=1e-5)


def test_plain_json_nested_data_and_request_id(server, ort_session):
    x = images(1)
    body = json_infer([{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": x.tolist()}],
                      [{"name": "aux_case1"}], id="req-7")
    status, raw = server.post(INFER, body, {"Content-Type": "application/json"})
    assert status == 200, raw
    doc = json.loads(raw)
    assert doc["id"] == "req-7"
    (out,) = doc["outputs"]
    assert out["name"] == "aux_case1" and out["datatype"] == "FP32" and out["shape"] == [1, 2]
    np.testing.assert_allclose(out["data"], ort_session.run(["aux_case1"], {"input": x})[0].ravel(), atol=1e-5)


def test_binary_data_output_parameter_makes_every_output_binary(server, ort_session):
    x = images(1)
    raw = x.tobytes()
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": {"binary_data_output": True}}).encode()
    req = urllib.request.Request(server.base + INFER, data=header + raw, method="POST",
                                 headers={"Inference-Header-Content-Length": str(len(header))})
    with urllib.request.urlopen(req, timeout=30) as resp:
        n = int(resp.headers["Inference-Header-Content-Length"])
        assert resp.headers["Content-Type"] == "application/octet-stream"
        body = resp.read()
    doc = json.loads(body[:n])
    sizes = [o["parameters"]["binary_data_size"] for o in doc["outputs"]]
    assert [o["name"] for o in doc["outputs"]] == ["logits", "aux_case1"] and sizes == [40, 8]
    assert len(body) == n + 48
    np.testing.assert_allclose(np.frombuffer(body[n:n + 40], np.float32),
                               ort_session.run(["logits"], {"input": x})[0].ravel(), atol=1e-5)


# ---------------------------------------------------------------------------
# Malformed requests: exact status and body, and the server keeps serving


def _input(**over) -> dict:
    t = {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}
    t.update(over)
    return t


def _binary(size: int, declared: int) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                     "parameters": {"binary_data_size": declared}}]}).encode()
    return header + b"\0" * size, {"Inference-Header-Content-Length": str(len(header))}


MALFORMED = [
    ("bad json", INFER, b'{"inputs": [', {}, 400, r"request body \| is not valid JSON \(.+\)\. Note: a JSON object"),
    ("json array", INFER, b"[1, 2]", {}, 400,
     re.escape("request body | is a JSON list. Note: a JSON object ($inference_request)")),
    ("no inputs", INFER, b"{}", {}, 400,
     re.escape("request 'inputs' | is missing or not a non-empty list. Note: one entry per model input: ['input']")),
    ("wrong datatype", INFER, json_infer([_input(datatype="FP64")]), {}, 400,
     re.escape("input 'input' | has datatype 'FP64'. Note: datatype 'FP32'")),
    ("wrong rank", INFER, json_infer([_input(shape=[1, 28, 28])]), {}, 400,
     re.escape("input 'input' | has shape [1, 28, 28]. Note: shape [-1, 1, 28, 28] (-1: any size)")),
    ("wrong dim", INFER, json_infer([_input(shape=[1, 1, 28, 27], data=[0.0] * 756)]), {}, 400,
     re.escape("input 'input' | has shape [1, 1, 28, 27]. Note: shape [-1, 1, 28, 28] (-1: any size)")),
    ("data shorter than shape", INFER, json_infer([_input(data=[0.0] * 783)]), {}, 400,
     re.escape("input 'input' 'data' | has 783 elements. Note: 784 elements for shape [1, 1, 28, 28]")),
    ("strings for FP32", INFER, json_infer([_input(data=["0"] * 784)]), {}, 400,
     re.escape("input 'input' 'data' | has non-numeric elements. Note: numbers for FP32")),
    ("batch over max", INFER, json_infer([_input(shape=[9, 1, 28, 28], data=[0.0] * 784 * 9)]), {}, 400,
     re.escape("input 'input' | batch size 9 is out of range. Note: 1 to 8 (the model's max_batch_size)")),
    ("unknown input", INFER, json_infer([_input(name="image")]), {}, 400,
     re.escape("input 'image' | is not an input of model 'hal_mnist'. Note: inputs ['input']")),
    ("unknown output", INFER, json_infer([_input()], [{"name": "aux_case9"}]), {}, 400,
     re.escape("output 'aux_case9' | is not an output of model 'hal_mnist'. Note: outputs ['logits', 'aux_case1']")),
    ("binary shorter than declared", INFER, *_binary(100, 3136), 400,
     re.escape("input 'input' binary_data_size | is 3136 but only 100 bytes of binary data are left in the body. "
               "Note: binary data for every binary input after the JSON header")),
    ("binary size not the shape's", INFER, *_binary(100, 100), 400,
     re.escape("input 'input' binary_data_size | is 100 bytes. Note: 3136 bytes: shape [1, 1, 28, 28] of FP32")),
    ("bad header length", INFER, b"{}", {"Inference-Header-Content-Length": "abc"}, 400,
     re.escape("Inference-Header-Content-Length | 'abc' is not an integer. "
               "Note: the length in bytes of the JSON header")),
    ("huge body", INFER, b"{" + b" " * (2 << 20) + b"}", {}, 413,
     re.escape(f"request body | is {(2 << 20) + 2} bytes. Note: at most {1 << 20} bytes (--max-request-bytes)")),
    ("unknown model", "/v2/models/nope/infer", json_infer([_input()]), {}, 404,
     re.escape("model 'nope' | is not served here. Note: one of ['hal_mnist']")),
    ("unknown version", f"/v2/models/{MODEL}/versions/7/infer", json_infer([_input()]), {}, 404,
     re.escape("model 'hal_mnist' version '7' | is not served here. Note: versions ['1']")),
]


@pytest.mark.parametrize("path,body,headers,status,message", [c[1:] for c in MALFORMED],
                         ids=[c[0] for c in MALFORMED])
def test_malformed_requests_get_exact_errors_and_server_keeps_serving(server, path, body, headers, status,
                                                                     message):
    got_status, raw = server.post(path, body, headers)
    assert got_status == status, raw
    doc = json.loads(raw)
    assert list(doc) == ["error"]
    assert re.fullmatch(message, doc["error"]), doc["error"]
    ok, _ = server.post(INFER, json_infer([_input()]))
    assert ok == 200


@pytest.mark.parametrize("method,path,status,message", [
    ("GET", "/v2/models/nope", 404, "model 'nope' | is not served here. Note: one of ['hal_mnist']"),
    ("GET", "/v2/models/nope/ready", 404, "model 'nope' | is not served here. Note: one of ['hal_mnist']"),
    ("GET", f"/v2/models/{MODEL}/versions/2", 404, "model 'hal_mnist' version '2' | is not served here. "
                                                   "Note: versions ['1']"),
    ("GET", "/v2/nothing/here", 404, "route /v2/nothing/here | does not exist. "
                                     "Note: the /v2 routes of the Open Inference Protocol"),
    ("GET", INFER, 405, f"method GET on {INFER} | is not allowed. Note: POST"),
    ("DELETE", "/v2", 405, "method DELETE on /v2 | is not allowed. Note: GET, HEAD"),
])
def test_unknown_routes_and_methods_answer_json_errors(server, method, path, status, message):
    assert http_call(method, server.base + path) == (status, json.dumps({"error": message},
                                                                          separators=(",", ":")).encode())


def test_compressed_requests_and_accept_encoding(triton, ort_session):
    import tritonclient.http as httpclient

    x = images(2)
    (logits,) = ort_session.run(["logits"], {"input": x})
    for algorithm in ("gzip", "deflate"):
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        result = triton.infer(MODEL, [inp], request_compression_algorithm=algorithm,
                              response_compression_algorithm=algorithm)
        np.testing.assert_allclose(result.as_numpy("logits"), logits, rtol=1e-5, atol=1e-5)


def test_a_compressed_bomb_is_refused(server):
    import gzip

    bomb = gzip.compress(b"{" + b" " * (4 << 20) + b"}")
    status, raw = server.post(INFER, bomb, {"Content-Encoding": "gzip"})
    assert status == 413 and json.loads(raw)["error"].startswith("request body | is ")
    status, raw = server.post(INFER, b"not gzip", {"Content-Encoding": "gzip"})
    assert status == 400
    assert re.fullmatch(r"request body \| cannot be read \(.+\)\. Note: Content-Encoding gzip, deflate or none",
                        json.loads(raw)["error"])
    assert server.post(INFER, json_infer([_input()]))[0] == 200


def test_oversized_body_refused_before_it_is_sent(server):
    """``Expect: 100-continue`` with a too-large Content-Length: 413 without the body."""
    import http.client

    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    conn.putrequest("POST", INFER)
    conn.putheader("Content-Length", str(50 << 20))
    conn.putheader("Expect", "100-continue")
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413
    assert json.loads(resp.read()) == {"error": f"request body | is {50 << 20} bytes. "
                                                f"Note: at most {1 << 20} bytes (--max-request-bytes)"}
    conn.close()


def test_tritonclient_sees_the_error_message(triton):
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as info:
        triton.get_model_metadata("nope")
    assert info.value.status() == "404"
    assert "model 'nope' | is not served here" in info.value.message()


# ---------------------------------------------------------------------------
# Batching, metrics, overload, shutdown


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_concurrent_requests_are_batched(server, ort_session):
    before = server.metrics()
    x = images(32, seed=3)
    expected = ort_session.run(["logits"], {"input": x})[0]
    barrier = threading.Barrier(16)

    def one(i: int) -> np.ndarray:
        body, headers = binary_body(x[i:i + 1], ["logits"])
        if i < 16:
            barrier.wait(timeout=30)
        status, raw = server.post(INFER, body, headers)
        assert status == 200, raw
        n = len(raw) - 40
        return np.frombuffer(raw[n:], np.float32)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(32)))
    np.testing.assert_allclose(np.stack(results), expected, rtol=1e-5, atol=1e-5)
    after = server.metrics()
    executions = _metric(after, "edgehal_executions_total") - _metric(before, "edgehal_executions_total")
    inferences = _metric(after, "edgehal_inferences_total") - _metric(before, "edgehal_inferences_total")
    singles = (_metric(after, "edgehal_batch_size_bucket", le="1") -
               _metric(before, "edgehal_batch_size_bucket", le="1"))
    assert inferences == 32
    assert executions < 32, "no batch larger than one was formed"
    assert singles < executions, "every run had batch size 1"
    for family in ("edgehal_request_duration_seconds_bucket", "edgehal_queue_depth",
                   "edgehal_inference_requests_total", "edgehal_http_responses_total"):
        assert family in after


def test_metrics_count_failures(server):
    before = server.metrics()
    status, _ = server.post(INFER, b"not json")
    assert status == 400
    after = server.metrics()
    assert _metric(after, "edgehal_inference_failures_total", model=MODEL) == \
        _metric(before, "edgehal_inference_failures_total", model=MODEL) + 1
    assert _metric(after, "edgehal_http_responses_total", code="400") >= 1


def test_overload_answers_503_at_once(slow_model_path, tmp_path):
    with run_server([slow_model_path], tmp_path, "--no-dynamic-batching", "--max-queue-size", "1") as srv:
        body = json_infer([{"name": "input", "shape": [1, 1024], "datatype": "FP32", "data": [0.0] * 1024}])
        barrier = threading.Barrier(12)
        before = _metric(srv.metrics(), "edgehal_http_responses_total", code="503")  # readiness polls count too

        def one(_: int) -> tuple[int, bytes]:
            barrier.wait(timeout=30)
            return srv.post("/v2/models/slow/infer", body)

        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(one, range(12)))
        statuses = sorted(s for s, _ in results)
        assert statuses.count(503) >= 1, statuses
        assert statuses.count(200) >= 1, statuses
        assert set(statuses) <= {200, 503}
        errors = [json.loads(b) for s, b in results if s == 503]
        assert errors[0] == {"error": "model 'slow' version 1 | is overloaded: its queue of 1 is full. "
                                      "Note: retry later (the queue size is --max-queue-size or the model's config)"}
        assert srv.post("/v2/models/slow/infer", body)[0] == 200  # and it recovers
        assert _metric(srv.metrics(), "edgehal_http_responses_total", code="503") - before == statuses.count(503)


def test_sigterm_finishes_queued_requests(slow_model_path, tmp_path):
    with run_server([slow_model_path], tmp_path, "--no-dynamic-batching") as srv:
        body = json_infer([{"name": "input", "shape": [1, 1024], "datatype": "FP32", "data": [0.0] * 1024}])
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(srv.post, "/v2/models/slow/infer", body) for _ in range(4)]
            # all four are in the server once waiting + done >= 3 (at most one is running)
            deadline = time.monotonic() + 30
            while True:
                m = srv.metrics()
                if _metric(m, "edgehal_queue_depth") + _metric(m, "edgehal_inferences_total") >= 3:
                    break
                assert time.monotonic() < deadline, "requests never reached the server"
                time.sleep(0.002)
            srv.proc.send_signal(signal.SIGTERM)
            assert [f.result(timeout=60)[0] for f in futures] == [200] * 4
        assert srv.proc.wait(timeout=30) == 0
        log = srv.log()
        queued = int(re.search(r"shutting down: finishing (\d+) queued requests", log).group(1))
        assert queued >= 1, "SIGTERM came after the queue had drained: the test proved nothing"
        assert "stopped" in log


def test_served_zoo_model_equals_the_parity_suites_onnxruntime_predictions(mnist_checkpoint, data_root, tmp_path):
    """The shipped MNIST HAL model, exported with its aux head kept, served with dynamic batching:
    on real MNIST test images every head's prediction equals the parity suite's onnxruntime run."""
    import tritonclient.http as httpclient

    from edgehal.checkpoint import load_checkpoint
    from edgehal.export.onnx import ExportOptions, export_onnx
    from edgehal.parity import run_batched
    from edgehal.runtime.onnxruntime import OnnxRuntimeRunner
    from edgehal.pipeline import data_for_checkpoint

    onnx_path = tmp_path / "mnist_hal_case1.onnx"
    export_onnx(mnist_checkpoint, onnx_path, options=ExportOptions(aux="keep"), data_root=data_root,
                log=lambda _: None)
    ckpt = load_checkpoint(mnist_checkpoint)
    x = data_for_checkpoint(ckpt, data_root=data_root).split("test").x[:192].float().numpy()
    heads = list(ckpt.manifest.head_names)
    with OnnxRuntimeRunner(onnx_path, threads=1) as runner:
        expected = run_batched(runner, x, input_name=ckpt.manifest.input_name, outputs=heads, batch_size=64)

    with run_server([onnx_path], tmp_path / "logs", "--max-batch-size", "32", "--max-queue-delay-ms", "5") as srv:
        def one(start: int) -> dict[str, np.ndarray]:
            client = httpclient.InferenceServerClient(url=srv.url, network_timeout=60)
            inp = httpclient.InferInput(ckpt.manifest.input_name, [8, *x.shape[1:]], "FP32")
            inp.set_data_from_numpy(x[start:start + 8], binary_data=True)
            result = client.infer(onnx_path.stem, [inp])
            client.close()
            return {h: result.as_numpy(h) for h in heads}

        with ThreadPoolExecutor(8) as pool:
            parts = list(pool.map(one, range(0, len(x), 8)))
        served = {h: np.concatenate([p[h] for p in parts]) for h in heads}
        assert _metric(srv.metrics(), "edgehal_executions_total") < len(parts) + 2  # + 2 warm-up runs
    assert heads == ["logits", "aux_case1"]
    for h in heads:
        assert (served[h].argmax(1) == expected[h].argmax(1)).all(), h
        np.testing.assert_allclose(served[h], expected[h], rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------
# Statistics extension


def _stage_ns(entry: dict) -> int:
    return sum(entry["inference_stats"][k]["ns"] for k in ("queue", "compute_input", "compute_infer",
                                                             "compute_output"))


def test_statistics_extension_counts_requests_batches_and_failures(model_path, tmp_path):
    """A fresh server, requests sent one at a time (so each runs alone and batch sizes are
    the requests' own): counts are exact, through tritonclient's own parser."""
    import shutil

    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    from edgehal.serve.repository import ModelOptions, discover, load

    # A second model literally named "stats": /v2/models/stats stays the statistics of every model.
    shutil.copy(model_path, tmp_path / "stats.onnx")
    models = load(discover([model_path, tmp_path / "stats.onnx"]), ModelOptions(threads=1, max_batch_size=8))
    with serve_in_process(models) as address:
        client = httpclient.InferenceServerClient(url=address, network_timeout=30)
        try:
            before = client.get_inference_statistics(model_name=MODEL)["model_stats"][0]
            assert before["inference_count"] == before["execution_count"] == before["last_inference"] == 0
            assert before["inference_stats"]["success"] == {"count": 0, "ns": 0}
            assert before["batch_stats"] == []
            for n in (1, 2, 1, 2, 1):
                triton_infer(client, images(n), binary=True)
            for _ in range(2):
                bad = httpclient.InferInput("input", [1, 1, 28, 28], "FP64")
                bad.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float64))
                with pytest.raises(InferenceServerException):
                    client.infer(MODEL, [bad])
            x = images(1)
            inp = httpclient.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            client.infer("stats", [inp])

            doc = client.get_inference_statistics(model_name=MODEL)
            assert client.get_inference_statistics(model_name=MODEL, model_version="1") == doc
            everything = client.get_inference_statistics()
            named_stats = client.get_inference_statistics(model_name="stats")
            stats_metadata = client.get_model_metadata("stats", model_version="1")
        finally:
            client.close()
        missing = http_call("GET", f"http://{address}/v2/models/nope/stats")
        missing_version = http_call("GET", f"http://{address}/v2/models/{MODEL}/versions/7/stats")
        missing_metadata = http_call("GET", f"http://{address}/v2/models/nope")

    [entry] = doc["model_stats"]
    assert entry["name"] == MODEL and entry["version"] == "1"
    assert entry["inference_count"] == 7      # samples: 1 + 2 + 1 + 2 + 1
    assert entry["execution_count"] == 5      # one run per request, sent one at a time
    assert entry["last_inference"] > 1_700_000_000_000  # milliseconds since the epoch
    inference = entry["inference_stats"]
    assert inference["success"]["count"] == 5 and inference["fail"]["count"] == 2
    assert inference["fail"]["ns"] > 0
    for stage in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert inference[stage]["count"] == 5
        assert inference[stage]["ns"] > 0, stage
    assert _stage_ns(entry) <= inference["success"]["ns"]
    batches = {b["batch_size"]: b for b in entry["batch_stats"]}
    assert sorted(batches) == [1, 2]
    assert batches[1]["compute_infer"]["count"] == 3 and batches[2]["compute_infer"]["count"] == 2
    for b in batches.values():
        for stage in ("compute_input", "compute_infer", "compute_output"):
            assert b[stage]["count"] == b["compute_infer"]["count"] and b[stage]["ns"] > 0
    assert sum(b["compute_infer"]["ns"] for b in batches.values()) == inference["compute_infer"]["ns"]

    by_name = {e["name"]: e for e in everything["model_stats"]}
    assert sorted(by_name) == [MODEL, "stats"]
    assert by_name[MODEL]["inference_count"] == 7
    assert [e["name"] for e in named_stats["model_stats"]] == ["stats"]
    assert by_name["stats"]["inference_count"] == by_name["stats"]["execution_count"] == 1
    assert named_stats["model_stats"][0]["inference_stats"]["success"]["count"] == 1
    assert stats_metadata["name"] == "stats"

    assert missing[0] == 404 and missing[1] == missing_metadata[1]
    assert json.loads(missing[1])["error"].startswith("model 'nope' | is not served here.")
    assert missing_version[0] == 404 and "version '7'" in json.loads(missing_version[1])["error"]
