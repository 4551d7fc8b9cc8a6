"""Prometheus text exposition, on the HTTP port and on --metrics-port."""

from __future__ import annotations

import json
import re
import socket

import numpy as np
import pytest

import edgehal
from edgehal.errors import EdgehalError
from edgehal.serve.metrics import Histogram, Metrics

from .conftest import http_call, run_server

TRITON_DURATIONS = {"nv_inference_request_duration_us": "success", "nv_inference_queue_duration_us": "queue",
                    "nv_inference_compute_input_duration_us": "compute_input",
                    "nv_inference_compute_infer_duration_us": "compute_infer",
                    "nv_inference_compute_output_duration_us": "compute_output"}
TRITON_COUNTS = ("nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
                 "nv_inference_exec_count")


def test_histogram_buckets_are_cumulative():
    h = Histogram((1, 2, 4))
    for v in (1, 1, 3, 9):
        h.observe(v)
    lines = list(h.lines("x", 'model="m"'))
    assert lines == ['x_bucket{model="m",le="1"} 2', 'x_bucket{model="m",le="2"} 2',
                     'x_bucket{model="m",le="4"} 3', 'x_bucket{model="m",le="+Inf"} 4',
                     'x_sum{model="m"} 14.0', 'x_count{model="m"} 4']


def test_render_is_valid_exposition_text():
    m = Metrics()
    depth = [3]
    stats = m.add_model('we"ird\\name', "1", lambda: depth[0])
    stats.success += 2
    stats.failure += 1
    stats.inferences += 5
    stats.observe_batch(4, 10, 20, 30)
    stats.latency.observe(0.0012)
    m.count_response(200)
    m.count_response(503)
    text = m.render()
    assert text.endswith("\n")
    sample = re.compile(r'^[a-z_]+(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? [0-9.e+-]+$')
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line), line
    assert 'edgehal_queue_depth{model="we\\"ird\\\\name",version="1"} 3' in text
    assert 'edgehal_inference_requests_total{model="we\\"ird\\\\name",version="1"} 3' in text
    assert 'edgehal_inference_failures_total{model="we\\"ird\\\\name",version="1"} 1' in text
    assert 'edgehal_batch_size_bucket{model="we\\"ird\\\\name",version="1",le="4"} 1' in text
    assert 'edgehal_http_responses_total{code="503"} 1' in text
    assert "# TYPE edgehal_request_duration_seconds histogram" in text


def test_statistics_is_tritons_model_stats_entry():
    stats = Metrics().add_model("m", "2", lambda: 0)
    assert stats.statistics()["last_inference"] == 0
    stats.success, stats.failure, stats.inferences = 3, 1, 5
    stats.success_ns, stats.failure_ns, stats.queue_ns = 900, 40, 100
    stats.input_ns, stats.infer_ns, stats.output_ns = 200, 300, 150
    stats.last_ns = 1
    stats.observe_batch(2, 10, 20, 30)
    stats.observe_batch(2, 1, 2, 3)
    stats.observe_batch(1, 5, 6, 7)
    doc = stats.statistics()
    assert doc["name"] == "m" and doc["version"] == "2" and doc["last_inference"] > 0
    assert doc["inference_count"] == 5 and doc["execution_count"] == 3
    assert doc["inference_stats"]["success"] == {"count": 3, "ns": 900}
    assert doc["inference_stats"]["fail"] == {"count": 1, "ns": 40}
    assert doc["inference_stats"]["queue"] == {"count": 3, "ns": 100}
    assert doc["inference_stats"]["compute_output"] == {"count": 3, "ns": 150}
    assert doc["batch_stats"] == [
        {"batch_size": 1, "compute_input": {"count": 1, "ns": 5}, "compute_infer": {"count": 1, "ns": 6},
         "compute_output": {"count": 1, "ns": 7}},
        {"batch_size": 2, "compute_input": {"count": 2, "ns": 11}, "compute_infer": {"count": 2, "ns": 22},
         "compute_output": {"count": 2, "ns": 33}}]


def test_triton_families_are_the_statistics_counters_in_microseconds():
    metrics = Metrics()
    stats = metrics.add_model("m", "1", lambda: 0)
    stats.success, stats.failure, stats.inferences = 3, 1, 5
    stats.success_ns, stats.queue_ns, stats.input_ns, stats.infer_ns, stats.output_ns = 9999, 1000, 999, 2500, 7
    stats.observe_batch(2)
    text = metrics.render()
    for name in (*TRITON_COUNTS, *TRITON_DURATIONS):
        assert f"# TYPE {name} counter" in text and f"# HELP {name} " in text
    expected = {"nv_inference_request_success": 3, "nv_inference_request_failure": 1, "nv_inference_count": 5,
                "nv_inference_exec_count": 1, "nv_inference_request_duration_us": 9,
                "nv_inference_queue_duration_us": 1, "nv_inference_compute_input_duration_us": 0,
                "nv_inference_compute_infer_duration_us": 2, "nv_inference_compute_output_duration_us": 0}
    for name, value in expected.items():
        assert f'{name}{{model="m",version="1"}} {value}' in text.splitlines(), name


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape, parsed by Prometheus's own parser (which fails on invalid text).

    A counter's samples are keyed by their family's name: the parser names a counter family
    without its ``_total`` suffix and its samples with one, whether the text had it or not."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name = family.name if family.type == "counter" else s.name
            out[name, tuple(sorted(s.labels.items()))] = s.value
    return out


def test_triton_metrics_of_a_real_server_match_its_statistics(model_path, tmp_path):
    model = model_path.stem
    sizes = (1, 3, 2, 1, 4)
    with run_server([model_path], tmp_path / "logs", "--max-batch-size", "8", "--max-queue-delay-ms", "1") as srv:
        for i, n in enumerate(sizes):
            x = np.random.default_rng(i).standard_normal((n, 1, 28, 28)).astype(np.float32)
            body = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                           "data": x.ravel().tolist()}]}).encode()
            status, raw = srv.post(f"/v2/models/{model}/infer", body)
            assert status == 200, raw
        samples = _samples(srv.metrics())
        status, raw = http_call("GET", f"{srv.base}/v2/models/{model}/stats")
        assert status == 200, raw
        [entry] = json.loads(raw)["model_stats"]

        wrong = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 27, 28], "datatype": "FP32",
                                        "data": [0.0] * 27 * 28}]}).encode()
        status, _ = srv.post(f"/v2/models/{model}/infer", wrong)
        assert status == 400
        after = _samples(srv.metrics())

    labels = (("model", model), ("version", "1"))
    assert samples["nv_inference_request_success", labels] == len(sizes)
    assert samples["nv_inference_request_failure", labels] == 0
    assert samples["nv_inference_count", labels] == sum(sizes)
    assert 1 <= samples["nv_inference_exec_count", labels] <= len(sizes)
    assert samples["nv_inference_exec_count", labels] == entry["execution_count"]
    assert samples["edgehal_inferences", labels] == sum(sizes)  # the edgehal families stay as they were
    for name, stage in TRITON_DURATIONS.items():
        us = samples[name, labels]
        ns = entry["inference_stats"][stage]["ns"]
        assert us > 0, name
        assert 0 <= ns / 1000 - us < 1, (name, us, ns)
    assert after["nv_inference_request_failure", labels] == 1
    assert after["nv_inference_request_success", labels] == len(sizes)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_port_serves_the_same_metrics_and_nothing_else(model_path, tmp_path):
    model = model_path.stem
    port = _free_port()
    with run_server([model_path], tmp_path / "logs", "--metrics-port", str(port)) as srv:
        assert f"metrics on http://127.0.0.1:{port}/metrics" in srv.log()
        x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
        body = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                       "data": x.ravel().tolist()}]}).encode()
        status, raw = srv.post(f"/v2/models/{model}/infer", body)
        assert status == 200, raw
        status, text = http_call("GET", f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        separate = _samples(text.decode())
        main = _samples(srv.metrics())  # still on the HTTP port
        # metrics only there: no inference, health or metadata routes
        for path in ("/v2/health/ready", f"/v2/models/{model}", f"/v2/models/{model}/stats"):
            assert http_call("GET", f"http://127.0.0.1:{port}{path}")[0] == 404, path
        assert http_call("POST", f"http://127.0.0.1:{port}/v2/models/{model}/infer", body)[0] == 404
    labels = (("model", model), ("version", "1"))
    assert separate["nv_inference_count", labels] == 3 and separate["nv_inference_request_success", labels] == 1
    for name in ("nv_inference_count", "nv_inference_request_success", "nv_inference_exec_count",
                 "edgehal_inferences"):
        assert separate[name, labels] == main[name, labels], name


def test_metrics_port_in_the_api_and_a_taken_one_is_refused(model_path):
    port = _free_port()
    with edgehal.serve([model_path], threads=1, metrics_port=port) as server:
        assert server.metrics_port == port
        status, text = http_call("GET", f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "# TYPE nv_inference_count counter" in text.decode()
    with edgehal.serve([model_path], threads=1) as plain:
        assert plain.metrics_port == 0 and http_call("GET", f"{plain.url}/metrics")[0] == 200
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(EdgehalError, match="--metrics-port"):
            edgehal.serve([model_path], threads=1, metrics_port=taken.getsockname()[1])
