"""Prometheus text exposition."""

from __future__ import annotations

import re

from edgehal.serve.metrics import Histogram, Metrics


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
