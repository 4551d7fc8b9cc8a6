"""The one data plane every route hands off to: models, readiness, inference, metrics.

It knows nothing about HTTP: it takes names, bytes and headers' values and
returns documents and bodies, raising the protocol's errors, which the app
maps to status codes in one table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from time import perf_counter_ns
from typing import Any, Callable, Mapping, Sequence, TypeVar

import numpy as np

from edgehal.host import usable_cores
from edgehal.serve.batcher import DynamicBatcher, RequestTimes
from edgehal.serve.metrics import Metrics, ModelStats
from edgehal.serve.protocol import (InferRequest, ModelNotFound, Unavailable, decode_infer_request, dumps,
                                    encode_infer_response, model_metadata)
from edgehal.serve.repository import LoadedModel
from edgehal.serve.shared_memory import SharedMemoryRegistry

log = logging.getLogger("edgehal.serve")

T = TypeVar("T")


class ServedModel:
    """A loaded model version with its batcher, statistics and pre-rendered documents."""

    __slots__ = ("model", "io", "batcher", "stats", "ready", "metadata_body", "config_body")

    def __init__(self, model: LoadedModel, batcher: DynamicBatcher, stats: ModelStats) -> None:
        self.model = model
        self.io = model.io
        self.batcher = batcher
        self.stats = stats
        self.ready = False
        self.metadata_body = b""
        self.config_body = dumps(model.config_json())


class DataPlane:
    """Holds every served model version; ``start()`` warms them up and turns ready on."""

    def __init__(self, models: Sequence[LoadedModel], *, server_name: str, server_version: str,
                 extensions: Sequence[str], inline: bool | None = None) -> None:
        if inline is None:
            # With one core there is nothing to overlap: a thread hop per batch only costs
            # (about 15% of the server's CPU per request, measured). With more, the runner
            # runs in a thread while the event loop parses the next requests.
            inline = usable_cores() == 1
        self.metrics = Metrics()
        self.shared_memory = SharedMemoryRegistry()  # the same regions for HTTP and gRPC
        self.shutting_down = False
        self._versions: dict[str, dict[str, ServedModel]] = {}
        self._latest: dict[str, ServedModel] = {}
        for m in models:
            stats_box: list[ModelStats] = []
            batcher = DynamicBatcher(
                m.run, name=f"model {m.name!r} version {m.version}", max_batch_size=m.batching.max_batch_size,
                dynamic=m.batching.dynamic, max_queue_delay_s=m.batching.max_queue_delay_s,
                max_queue_size=m.batching.max_queue_size, shape_key=m.shape_key, inline=inline,
                on_batch=lambda t, box=stats_box: box[0].observe_batch(t.size, t.input_ns, t.infer_ns, t.output_ns))
            stats = self.metrics.add_model(m.name, m.version, lambda b=batcher: b.depth)
            stats_box.append(stats)
            self._versions.setdefault(m.name, {})[m.version] = ServedModel(m, batcher, stats)
        for name, versions in self._versions.items():
            ordered = sorted(versions, key=lambda v: (len(v), v))
            self._latest[name] = versions[ordered[-1]]
            for served in versions.values():
                served.metadata_body = dumps(model_metadata(
                    served.io, versions=ordered, platform=served.model.platform.name,
                    parameters=served.model.parameters))
        self.server_metadata_body = dumps({"name": server_name, "version": server_version,
                                           "extensions": list(extensions)})
        self._all = [s for versions in self._versions.values() for s in versions.values()]

    # -- lifecycle ---------------------------------------------------------
    @property
    def ready(self) -> bool:
        return not self.shutting_down and all(s.ready for s in self._all)

    async def start(self) -> None:
        """Start the batchers, then warm every model up; each turns ready after its warm-up."""
        loop = asyncio.get_running_loop()
        for s in self._all:
            s.batcher.start()
        for s in self._all:
            t0 = time.perf_counter()
            for feed in s.model.warmup_feeds():
                await loop.run_in_executor(None, s.model.run, feed)
            s.ready = True
            runner = s.model.runner
            log.info("model %r version %s warmed up in %.0f ms (%s, %s on %s)", s.io.name, s.io.version,
                     (time.perf_counter() - t0) * 1e3, runner.name, runner.precision, runner.device)

    @property
    def queued(self) -> int:
        return sum(s.batcher.depth for s in self._all)

    async def close(self) -> None:
        """Refuse new requests, finish the queued ones, free the sessions."""
        self.shutting_down = True
        for s in self._all:
            s.ready = False
        for s in self._all:
            await s.batcher.close()
            s.model.close()
        self.shared_memory.close()

    # -- lookups -----------------------------------------------------------
    def get(self, name: str, version: str | None) -> ServedModel:
        if version is None:
            served = self._latest.get(name)
            if served is None:
                raise ModelNotFound(f"model {name!r}", "is not served here", f"one of {sorted(self._versions)}")
            return served
        versions = self._versions.get(name)
        if versions is None:
            raise ModelNotFound(f"model {name!r}", "is not served here", f"one of {sorted(self._versions)}")
        served = versions.get(version)
        if served is None:
            raise ModelNotFound(f"model {name!r} version {version!r}", "is not served here",
                                f"versions {sorted(versions)}")
        return served

    def check_model_ready(self, served: ServedModel) -> None:
        if not served.ready:
            raise Unavailable(f"model {served.io.name!r} version {served.io.version}",
                              "is not ready (warming up or shutting down)")

    def check_server_ready(self) -> None:
        if not self.ready:
            raise Unavailable("server", "is shutting down" if self.shutting_down else
                              "is not ready: models are still warming up")

    # -- inference ---------------------------------------------------------
    async def infer(self, served: ServedModel, body: bytes, header_length: str | None) -> tuple[bytes, int | None]:
        """Validate, queue for the batcher, encode: the response body and its JSON header length."""
        io = served.io
        shm = self.shared_memory
        return await self.run(served, lambda: decode_infer_request(body, header_length, io, shared_memory=shm),
                              lambda request, outputs: encode_infer_response(io, request, outputs,
                                                                             shared_memory=shm))

    async def run(self, served: ServedModel, decode: Callable[[], InferRequest],
                  encode: Callable[[InferRequest, Mapping[str, np.ndarray]], T]) -> T:
        """One inference whatever the transport: ``decode()`` builds and validates the request,
        the batcher runs it, ``encode(request, outputs)`` builds the answer; statistics either way."""
        t0 = perf_counter_ns()
        stats = served.stats
        try:
            if not served.ready:
                self.check_model_ready(served)
            request = decode()
            times = RequestTimes()
            submitted = perf_counter_ns()
            outputs = await served.batcher.submit(request.inputs, request.batch, times)
            resumed = perf_counter_ns()
            result = encode(request, outputs)
        except BaseException:
            stats.failure += 1
            stats.failure_ns += perf_counter_ns() - t0
            raise
        end = perf_counter_ns()
        batch = times.batch
        assert batch is not None  # set by the batcher before it resolves the future
        stats.success += 1
        stats.inferences += request.batch
        stats.success_ns += end - t0
        stats.queue_ns += batch.start_ns - submitted
        stats.input_ns += submitted - t0 + batch.input_ns
        stats.infer_ns += batch.infer_ns
        stats.output_ns += batch.output_ns + end - resumed
        stats.last_ns = end
        stats.latency.observe((end - t0) * 1e-9)
        return result

    def statistics_body(self, name: str | None = None, version: str | None = None) -> bytes:
        """The statistics extension's document: every model version, every version of ``name``,
        or one version; an unknown name or version raises ``ModelNotFound``."""
        if name is None:
            chosen = self._all
        elif version is None:
            self.get(name, None)
            chosen = list(self._versions[name].values())
        else:
            chosen = [self.get(name, version)]
        return dumps({"model_stats": [s.stats.statistics() for s in chosen]})

    def metrics_text(self) -> str:
        return self.metrics.render()

    def describe(self) -> list[dict[str, Any]]:
        """One line per model version for the startup log."""
        return [{"name": s.io.name, "version": s.io.version, "max_batch_size": s.model.batching.max_batch_size,
                 "dynamic_batching": s.model.batching.dynamic,
                 "max_queue_delay_ms": s.model.batching.max_queue_delay_s * 1e3,
                 "max_queue_size": s.model.batching.max_queue_size} for s in self._all]
