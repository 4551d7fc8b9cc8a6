"""Prometheus text exposition (format 0.0.4), written by hand.

Metrics are plain integer and float fields updated on the request path (a few
additions and one ``bisect`` per request) and rendered to text only when
``/metrics`` is scraped, so the hot path allocates nothing for them.
Label sets are bounded: one set per loaded model version and one per status
code, never a name a client made up.

The same counters, with nanosecond totals per request stage and per executed
batch size, answer the statistics extension (:meth:`ModelStats.statistics`,
Triton's ``model_stats`` entry), and Triton's own ``nv_inference_*`` counter families
(:data:`TRITON_COUNTERS`), so dashboards built for Triton read this server unchanged. Both
are derived from one set of counters, so ``/metrics`` and the statistics extension never
disagree.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any, Callable, Iterable, Sequence

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

# Triton's per-model counter families: name, Triton's help text, and the value from a ModelStats.
# Durations are the statistics extension's nanosecond totals in whole microseconds. This server has
# no response cache, so Triton's notes on cached requests hold trivially.
TRITON_COUNTERS: tuple[tuple[str, str, Callable[["ModelStats"], int]], ...] = (
    ("nv_inference_request_success", "Number of successful inference requests, all batch sizes",
     lambda m: m.success),
    ("nv_inference_request_failure", "Number of failed inference requests, all batch sizes",
     lambda m: m.failure),
    ("nv_inference_count", "Number of inferences performed (does not include cached requests)",
     lambda m: m.inferences),
    ("nv_inference_exec_count", "Number of model executions performed (does not include cached requests)",
     lambda m: m.executions),
    ("nv_inference_request_duration_us",
     "Cumulative inference request duration in microseconds (includes cached requests)",
     lambda m: m.success_ns // 1000),
    ("nv_inference_queue_duration_us",
     "Cumulative inference queuing duration in microseconds (includes cached requests)",
     lambda m: m.queue_ns // 1000),
    ("nv_inference_compute_input_duration_us",
     "Cumulative compute input duration in microseconds (does not include cached requests)",
     lambda m: m.input_ns // 1000),
    ("nv_inference_compute_infer_duration_us",
     "Cumulative compute inference duration in microseconds (does not include cached requests)",
     lambda m: m.infer_ns // 1000),
    ("nv_inference_compute_output_duration_us",
     "Cumulative inference compute output duration in microseconds (does not include cached requests)",
     lambda m: m.output_ns // 1000),
)


class Histogram:
    """Cumulative buckets computed at render time from per-bucket counts."""

    __slots__ = ("bounds", "counts", "total", "count")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str, labels: str) -> Iterable[str]:
        sep = "," if labels else ""
        running = 0
        for bound, n in zip(self.bounds, self.counts):
            running += n
            yield f'{name}_bucket{{{labels}{sep}le="{_fmt(bound)}"}} {running}'
        yield f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}'
        yield f"{name}_sum{{{labels}}} {_fmt(self.total)}"
        yield f"{name}_count{{{labels}}} {self.count}"


class ModelStats:
    """Everything measured for one model version.

    Durations are integer nanoseconds (``perf_counter_ns`` differences). Per successful request:
    ``queue_ns`` from its submission to the batcher until its run starts; ``input_ns`` decoding
    plus its run's concatenation; ``infer_ns`` its run; ``output_ns`` its run's split plus
    encoding. A run's stage times count in full for every request it answered, as Triton counts
    them. ``batches`` maps an executed batch size to [runs, input ns, infer ns, output ns].
    """

    __slots__ = ("name", "version", "labels", "success", "failure", "inferences", "executions",
                 "latency", "batch_size", "queue_depth", "success_ns", "failure_ns", "queue_ns",
                 "input_ns", "infer_ns", "output_ns", "last_ns", "batches")

    def __init__(self, model: str, version: str, queue_depth: Callable[[], int]) -> None:
        self.name = model
        self.version = version
        self.labels = f'model="{_escape(model)}",version="{_escape(version)}"'
        self.success = 0
        self.failure = 0
        self.inferences = 0   # samples: a request with batch 4 counts 4
        self.executions = 0   # model runs
        self.latency = Histogram(LATENCY_BUCKETS_S)
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.queue_depth = queue_depth
        self.success_ns = 0
        self.failure_ns = 0
        self.queue_ns = 0
        self.input_ns = 0
        self.infer_ns = 0
        self.output_ns = 0
        self.last_ns = 0      # perf_counter_ns of the last successful request's end; 0 for none
        self.batches: dict[int, list[int]] = {}

    def observe_batch(self, size: int, input_ns: int = 0, infer_ns: int = 0, output_ns: int = 0) -> None:
        self.executions += 1
        self.batch_size.observe(size)
        row = self.batches.get(size)
        if row is None:
            self.batches[size] = [1, input_ns, infer_ns, output_ns]
        else:
            row[0] += 1
            row[1] += input_ns
            row[2] += infer_ns
            row[3] += output_ns

    def statistics(self) -> dict[str, Any]:
        """Triton's ``model_stats`` entry for this version (the statistics extension)."""
        last_ms = 0
        if self.last_ns:
            last_ms = (time.time_ns() - (time.perf_counter_ns() - self.last_ns)) // 1_000_000
        n = self.success

        def d(count: int, ns: int) -> dict[str, int]:
            return {"count": count, "ns": ns}

        return {
            "name": self.name, "version": self.version, "last_inference": last_ms,
            "inference_count": self.inferences, "execution_count": self.executions,
            "inference_stats": {
                "success": d(n, self.success_ns), "fail": d(self.failure, self.failure_ns),
                "queue": d(n, self.queue_ns), "compute_input": d(n, self.input_ns),
                "compute_infer": d(n, self.infer_ns), "compute_output": d(n, self.output_ns),
                "cache_hit": d(0, 0), "cache_miss": d(0, 0)},
            "batch_stats": [{"batch_size": size, "compute_input": d(runs, i), "compute_infer": d(runs, f),
                             "compute_output": d(runs, o)}
                            for size, (runs, i, f, o) in sorted(self.batches.items())],
        }


class Metrics:
    """The server's registry: per model version, plus HTTP responses by status code."""

    def __init__(self) -> None:
        self.models: list[ModelStats] = []
        self.responses: dict[int, int] = {}

    def add_model(self, model: str, version: str, queue_depth: Callable[[], int]) -> ModelStats:
        stats = ModelStats(model, version, queue_depth)
        self.models.append(stats)
        return stats

    def count_response(self, status: int) -> None:
        self.responses[status] = self.responses.get(status, 0) + 1

    def render(self) -> str:
        out: list[str] = []

        def family(name: str, kind: str, help_: str, rows: Iterable[str]) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(rows)

        ms = self.models
        family("edgehal_inference_requests_total", "counter",
               "Inference requests answered, successful or not.",
               [f"edgehal_inference_requests_total{{{m.labels}}} {m.success + m.failure}" for m in ms])
        family("edgehal_inference_failures_total", "counter",
               "Inference requests that failed (invalid input, overload, errors).",
               [f"edgehal_inference_failures_total{{{m.labels}}} {m.failure}" for m in ms])
        family("edgehal_inferences_total", "counter",
               "Samples inferred (a request of batch 4 counts 4).",
               [f"edgehal_inferences_total{{{m.labels}}} {m.inferences}" for m in ms])
        family("edgehal_executions_total", "counter", "Model runs (one per formed batch).",
               [f"edgehal_executions_total{{{m.labels}}} {m.executions}" for m in ms])
        family("edgehal_queue_depth", "gauge", "Requests waiting in the dynamic batcher's queue.",
               [f"edgehal_queue_depth{{{m.labels}}} {m.queue_depth()}" for m in ms])
        family("edgehal_request_duration_seconds", "histogram",
               "Inference request latency inside the server, from body received to response built.",
               [line for m in ms for line in m.latency.lines("edgehal_request_duration_seconds", m.labels)])
        family("edgehal_batch_size", "histogram", "Samples per model run formed by the batcher.",
               [line for m in ms for line in m.batch_size.lines("edgehal_batch_size", m.labels)])
        family("edgehal_http_responses_total", "counter", "HTTP responses by status code, all routes.",
               [f'edgehal_http_responses_total{{code="{c}"}} {n}' for c, n in sorted(self.responses.items())])
        for name, help_, value in TRITON_COUNTERS:
            family(name, "counter", help_, [f"{name}{{{m.labels}}} {value(m)}" for m in ms])
        return "\n".join(out) + "\n"


def _fmt(v: float) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
