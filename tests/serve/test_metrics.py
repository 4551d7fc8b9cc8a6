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
    stats.observe_batch(4)
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
