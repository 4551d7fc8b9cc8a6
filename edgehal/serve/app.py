"""HTTP/REST routes of the Open Inference Protocol, on aiohttp.

Exactly one route table (:func:`routes`); every route is thin and hands off
to the :class:`~edgehal.serve.dataplane.DataPlane`. Exceptions become status
codes in exactly one table (:data:`ERROR_STATUS`), with the body
``{"error": message}``:

=========================================  ======
invalid input (``InvalidRequest``)          400
body over ``--max-request-bytes``           413
unknown model or version, or no such route  404
unknown shared memory region                404
a route's wrong method                      405
not ready, shutting down, overloaded        503
anything else (a bug)                       500
=========================================  ======

Overloaded is a model's full queue (``--max-queue-size``) or more request
bytes in flight than 16 x ``--max-request-bytes``: together they bound
memory however many clients connect. The gRPC service draws on the same
in-flight budget (:class:`InflightBytes`), so the bound holds across both.

``/metrics`` is on the HTTP port; ``--metrics-port`` serves it on a port of
its own as well (Triton's 8002), for a scraper that should not reach the
inference routes.

413 rather than Triton's 400 for an oversized body, because it is the status
HTTP defines for exactly that and clients (and proxies) know not to retry it
unchanged; it is refused from ``Content-Length`` before the body is read, and
from ``Expect: 100-continue`` before it is even sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

from aiohttp import web

from edgehal.errors import EdgehalError
from edgehal.serve.dataplane import DataPlane
from edgehal.serve.protocol import (InvalidRequest, ModelNotFound, PayloadTooLarge, Unavailable,
                                    dumps, loads)
from edgehal.serve.shared_memory import (DEFAULT_MAX_BYTES, DEFAULT_MAX_REGIONS, RegionNotFound,
                                         cuda_region_not_found, cuda_unsupported)

log = logging.getLogger("edgehal.serve")

SERVER_NAME = "edgehal"
EXTENSIONS = ("binary_tensor_data", "classification", "model_configuration", "statistics", "system_shared_memory")

# Most specific first; the first matching class wins.
ERROR_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (PayloadTooLarge, 413),
    (InvalidRequest, 400),
    (ModelNotFound, 404),
    (RegionNotFound, 404),
    (Unavailable, 503),
    (EdgehalError, 400),  # a runner's own input check: still the client's input
)


def status_of(exc: BaseException, method: str = "", path: str = "") -> tuple[int, str]:
    """The HTTP status and error message for an exception raised while serving."""
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return exc.status, (f"method {method} on {path} | is not allowed. "
                            f"Note: {', '.join(sorted(exc.allowed_methods))}")
    if isinstance(exc, web.HTTPNotFound):
        return exc.status, f"route {path} | does not exist. Note: the /v2 routes of the Open Inference Protocol"
    if isinstance(exc, web.HTTPException):  # aiohttp's own, for malformed HTTP
        return exc.status, exc.reason
    for cls, status in ERROR_STATUS:
        if isinstance(exc, cls):
            return status, str(exc)
    return 500, f"internal error ({exc.__class__.__name__}: {exc})"


@dataclass(frozen=True, kw_only=True)
class ServerOptions:
    """Where to listen and how much to accept. ``shutdown_timeout`` bounds the wait for
    in-flight requests on SIGTERM/SIGINT."""

    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int = 0  # GRPCInferenceService on the same host (edgehal.serve.grpc); 0: none
    metrics_port: int = 0  # /metrics on a port of its own as well, on the same host; 0: none
    max_request_bytes: int = 64 * 1024 * 1024
    shutdown_timeout: float = 30.0
    # system shared memory: regions registered at once, and the bytes they cover together (0 regions: off)
    max_shared_memory_regions: int = DEFAULT_MAX_REGIONS
    max_shared_memory_bytes: int = DEFAULT_MAX_BYTES

    @property
    def max_inflight_bytes(self) -> int:
        """Request bodies held at once (being read, queued, or running); beyond it, 503.
        With the queue bound this caps memory however many clients connect."""
        return 16 * self.max_request_bytes

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise EdgehalError("--port", f"is {self.port}", "0 to 65535 (0 picks a free port)")
        if not 0 <= self.grpc_port <= 65535:
            raise EdgehalError("--grpc-port", f"is {self.grpc_port}", "1 to 65535, or 0 for no gRPC")
        if not 0 <= self.metrics_port <= 65535:
            raise EdgehalError("--metrics-port", f"is {self.metrics_port}",
                               "1 to 65535, or 0 for /metrics on the HTTP port only")
        if self.max_request_bytes < 1024:
            raise EdgehalError("--max-request-bytes", f"is {self.max_request_bytes}", "at least 1024")
        if self.max_shared_memory_regions < 0 or self.max_shared_memory_bytes < 0:
            raise EdgehalError("shared memory limits", f"are {self.max_shared_memory_regions} regions, "
                               f"{self.max_shared_memory_bytes} bytes", "non-negative numbers")


class InflightBytes:
    """The request bytes held at once (being read, queued, or running), over HTTP and gRPC together,
    against ``ServerOptions.max_inflight_bytes``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def reserve(self, n: int) -> bool:
        """Hold ``n`` more bytes; False (and nothing held) when that would pass the limit."""
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    def release(self, n: int) -> None:
        self.held -= n


def _json(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json")


def error_response(status: int, message: str) -> web.Response:
    return _json(status, dumps({"error": message}))


# The Open Inference Protocol's REST health bodies. KServe's v2 client parses them; Triton's
# clients look only at the status, so a body serves both.
_LIVE = dumps({"live": True})
_READY = dumps({"ready": True})


class Handlers:
    """Thin route handlers: parse the HTTP bits, call the data plane, wrap the result."""

    def __init__(self, plane: DataPlane, options: ServerOptions, inflight: InflightBytes | None = None) -> None:
        self.plane = plane
        self.max_bytes = options.max_request_bytes
        self.inflight = inflight if inflight is not None else InflightBytes(options.max_inflight_bytes)

    # -- health and metadata -------------------------------------------
    async def live(self, request: web.Request) -> web.Response:
        return _json(200, _LIVE)

    async def ready(self, request: web.Request) -> web.Response:
        self.plane.check_server_ready()
        return _json(200, _READY)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return _json(200, self.plane.server_metadata_body)

    async def model_metadata(self, request: web.Request) -> web.Response:
        served = self.plane.get(request.match_info["name"], request.match_info.get("version"))
        return _json(200, served.metadata_body)

    async def model_ready(self, request: web.Request) -> web.Response:
        served = self.plane.get(request.match_info["name"], request.match_info.get("version"))
        self.plane.check_model_ready(served)
        return _json(200, dumps({"name": served.io.name, "ready": True}))

    async def model_config(self, request: web.Request) -> web.Response:
        served = self.plane.get(request.match_info["name"], request.match_info.get("version"))
        return _json(200, served.config_body)

    async def statistics(self, request: web.Request) -> web.Response:
        match = request.match_info
        return _json(200, self.plane.statistics_body(match.get("name"), match.get("version")))

    async def metrics(self, request: web.Request) -> web.Response:
        return metrics_response(self.plane)

    # -- system shared memory (Triton's extension; edgehal.serve.shared_memory) --
    async def shm_status(self, request: web.Request) -> web.Response:
        regions = self.plane.shared_memory.status(request.match_info.get("name"))
        return _json(200, dumps([r.status() for r in regions]))

    async def shm_register(self, request: web.Request) -> web.Response:
        doc = loads(await request.read())
        if not isinstance(doc, dict):
            raise InvalidRequest("register request", f"is a JSON {type(doc).__name__}",
                                 'a JSON object {"key", "offset", "byte_size"}')
        self.plane.shared_memory.register(request.match_info["name"], key=doc.get("key"),
                                          offset=doc.get("offset", 0), byte_size=doc.get("byte_size"))
        return _json(200, b"{}")

    async def shm_unregister(self, request: web.Request) -> web.Response:
        self.plane.shared_memory.unregister(request.match_info.get("name"))
        return _json(200, b"{}")

    # CUDA shared memory, as a Triton built without GPU support answers: no region can be
    # registered, so the status lists none and unregistering (one or all) has nothing to do.
    # Clients that clean up both kinds (perf_analyzer, tritonclient's helpers) then succeed.
    async def cuda_shm_status(self, request: web.Request) -> web.Response:
        name = request.match_info.get("name")
        if name:
            raise cuda_region_not_found(name)
        return _json(200, b"[]")

    async def cuda_shm_register(self, request: web.Request) -> web.Response:
        raise cuda_unsupported(request.match_info["name"])

    async def cuda_shm_unregister(self, request: web.Request) -> web.Response:
        return _json(200, b"{}")

    # -- inference -------------------------------------------------------
    def _too_large(self, length: int | None) -> PayloadTooLarge:
        return PayloadTooLarge("request body", "is too large" if length is None else f"is {length} bytes",
                               f"at most {self.max_bytes} bytes (--max-request-bytes)")

    async def expect(self, request: web.Request) -> web.Response | None:
        """``Expect: 100-continue``: refuse an oversized body before the client sends it."""
        length = request.content_length
        if length is not None and length > self.max_bytes:
            self.plane.metrics.count_response(413)
            return error_response(413, str(self._too_large(length)))
        expect = request.headers.get("Expect", "")
        if expect.lower() != "100-continue":
            self.plane.metrics.count_response(417)
            return error_response(417, f"unknown Expect header {expect[:60]!r}")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
        return None

    async def infer(self, request: web.Request) -> web.Response:
        match = request.match_info
        served = self.plane.get(match["name"], match.get("version"))
        length = request.content_length
        if length is not None and length > self.max_bytes:
            raise self._too_large(length)
        headers = request.headers
        # aiohttp inflates gzip/deflate bodies itself while reading, within client_max_size
        encoding = headers.get("Content-Encoding")
        reserved = self.max_bytes if length is None or encoding is not None else length
        if not self.inflight.reserve(reserved):
            raise Unavailable("server", f"is overloaded: {self.inflight.held} bytes of requests are in flight",
                              "retry later")
        try:
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:  # a chunked or compressed body over client_max_size
                raise self._too_large(None) from None
            except web.RequestPayloadError as exc:  # broken chunking or compression
                cause = exc.__cause__ or exc
                detail = " ".join(str(getattr(cause, "message", None) or cause).split()) or type(cause).__name__
                raise InvalidRequest("request body", f"cannot be read ({detail})",
                                     "Content-Encoding gzip, deflate or none") from None
            out, header_length = await self.plane.infer(served, body,
                                                        headers.get("Inference-Header-Content-Length"))
        finally:
            self.inflight.release(reserved)
        if header_length is None:
            return web.Response(body=out, content_type="application/json")
        return web.Response(body=out, content_type="application/octet-stream",
                            headers={"Inference-Header-Content-Length": str(header_length)})


def routes(h: Handlers) -> list[web.RouteDef]:
    """The one route table. Inference first: aiohttp tries candidates in order.

    ``/v2/models/stats`` comes before ``/v2/models/{name}``, so "stats" there is always the
    statistics of every model (as in Triton): a model named "stats" is still served, and its
    metadata is at ``/v2/models/stats/versions/{version}``.
    """
    return [
        web.post("/v2/models/{name}/infer", h.infer, expect_handler=h.expect),
        web.post("/v2/models/{name}/versions/{version}/infer", h.infer, expect_handler=h.expect),
        web.get("/v2/health/live", h.live),
        web.get("/v2/health/ready", h.ready),
        web.get("/v2", h.server_metadata),
        web.get("/v2/", h.server_metadata),
        web.get("/v2/models/stats", h.statistics),
        web.get("/v2/models/{name}/stats", h.statistics),
        web.get("/v2/models/{name}/versions/{version}/stats", h.statistics),
        web.get("/v2/models/{name}", h.model_metadata),
        web.get("/v2/models/{name}/versions/{version}", h.model_metadata),
        web.get("/v2/models/{name}/ready", h.model_ready),
        web.get("/v2/models/{name}/versions/{version}/ready", h.model_ready),
        web.get("/v2/models/{name}/config", h.model_config),
        web.get("/v2/models/{name}/versions/{version}/config", h.model_config),
        web.get("/metrics", h.metrics),
        web.get("/v2/systemsharedmemory/status", h.shm_status),
        web.get("/v2/systemsharedmemory/region/{name}/status", h.shm_status),
        web.post("/v2/systemsharedmemory/region/{name}/register", h.shm_register),
        web.post("/v2/systemsharedmemory/unregister", h.shm_unregister),
        web.post("/v2/systemsharedmemory/region/{name}/unregister", h.shm_unregister),
        web.get("/v2/cudasharedmemory/status", h.cuda_shm_status),
        web.get("/v2/cudasharedmemory/region/{name}/status", h.cuda_shm_status),
        web.post("/v2/cudasharedmemory/region/{name}/register", h.cuda_shm_register),
        web.post("/v2/cudasharedmemory/unregister", h.cuda_shm_unregister),
        web.post("/v2/cudasharedmemory/region/{name}/unregister", h.cuda_shm_unregister),
    ]


def _error_middleware(plane: DataPlane) -> Callable:
    debug = log.isEnabledFor(logging.DEBUG)

    @web.middleware
    async def errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        t0 = time.perf_counter() if debug else 0.0
        try:
            response = await handler(request)
        except Exception as exc:
            status, message = status_of(exc, request.method, request.path)
            if status >= 500 and not isinstance(exc, (Unavailable, web.HTTPException)):
                log.exception("bug while serving %s %s", request.method, request.path)
            response = error_response(status, message)
        plane.metrics.count_response(response.status)
        if debug:
            log.debug("%s %s %d %.3f ms", request.method, request.path, response.status,
                      (time.perf_counter() - t0) * 1e3)
        return response

    return errors


def build_app(plane: DataPlane, options: ServerOptions, inflight: InflightBytes | None = None) -> web.Application:
    app = web.Application(client_max_size=options.max_request_bytes,
                          middlewares=[_error_middleware(plane)])
    app.add_routes(routes(Handlers(plane, options, inflight)))
    return app


def metrics_response(plane: DataPlane) -> web.Response:
    """``/metrics``: Prometheus's text exposition format."""
    return web.Response(status=200, body=plane.metrics_text().encode(),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def build_metrics_app(plane: DataPlane) -> web.Application:
    """The app of ``--metrics-port``: ``GET /metrics`` only."""
    async def metrics(request: web.Request) -> web.Response:
        return metrics_response(plane)

    app = web.Application(client_max_size=1024)
    app.add_routes([web.get("/metrics", metrics)])
    return app


# ---------------------------------------------------------------------------
# Running


async def serve_until(plane: DataPlane, options: ServerOptions, stop: asyncio.Event, *,
                      on_listening: Callable[[str, int], None] | None = None,
                      on_ready: Callable[[], None] | None = None,
                      on_grpc_listening: Callable[[int], None] | None = None) -> None:
    """Listen, warm up, serve until ``stop`` is set, then shut down gracefully.

    ``on_listening(host, port)`` runs once the socket is bound (port 0 picks a
    free one), ``on_grpc_listening(port)`` once the gRPC port is (when
    ``options.grpc_port`` is not 0), ``on_ready()`` once every model is warmed
    up (a failed warm-up raises instead). With ``options.metrics_port``,
    ``/metrics`` is served on that port of the same host as well. Shutdown: readiness turns off (new
    inference gets 503, or UNAVAILABLE), the listening sockets close, requests
    already received are finished (up to ``shutdown_timeout``), the batchers
    drain their queues, sessions are freed.
    """
    loop = asyncio.get_running_loop()
    runner = None
    metrics_runner = None
    grpc_server = None
    plane.shared_memory.set_limits(max_regions=options.max_shared_memory_regions,
                                   max_bytes=options.max_shared_memory_bytes)
    inflight = InflightBytes(options.max_inflight_bytes)  # one budget for HTTP and gRPC
    try:
        runner, host, port = await start_site(plane, options, inflight)
        if on_listening is not None:
            on_listening(host, port)
        log.info("listening on http://%s:%d", host, port)
        if options.metrics_port:
            metrics_runner = await _start_runner(
                build_metrics_app(plane), options.host, options.metrics_port, options,
                "a free port for --metrics-port, or 0 for /metrics on the HTTP port only")
            log.info("metrics on http://%s:%d/metrics", host, options.metrics_port)
        if options.grpc_port:
            # grpcio and the protocol's generated modules are imported only when asked for
            from edgehal.serve.grpc import start_grpc

            grpc_server, grpc_port = await start_grpc(plane, host=options.host, port=options.grpc_port,
                                                      max_request_bytes=options.max_request_bytes,
                                                      inflight=inflight)
            if on_grpc_listening is not None:
                on_grpc_listening(grpc_port)
            log.info("listening on grpc://%s:%d", options.host, grpc_port)
        warm = loop.create_task(plane.start())
        stopper = loop.create_task(stop.wait())
        try:
            await asyncio.wait({warm, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if warm.done():
                warm.result()  # a failed warm-up is fatal
                if not stop.is_set():
                    log.info("ready")
                if on_ready is not None:
                    on_ready()
                await stopper
        finally:
            warm.cancel()
            stopper.cancel()
        plane.shutting_down = True
        log.info("shutting down: finishing %d queued requests", plane.queued)
    finally:
        cleanups = []
        if grpc_server is not None:
            cleanups.append(grpc_server.stop(grace=options.shutdown_timeout))
        if runner is not None:
            cleanups.append(runner.cleanup())
        if metrics_runner is not None:
            cleanups.append(metrics_runner.cleanup())
        await asyncio.gather(*cleanups)
        await plane.close()
    log.info("stopped")


async def start_site(plane: DataPlane, options: ServerOptions,
                     inflight: InflightBytes | None = None) -> tuple[web.AppRunner, str, int]:
    """Listen on ``options.host:options.port`` with the app of ``plane``; the bound host and port
    (port 0 picks a free one). The caller warms the models up and cleans the runner up."""
    runner = await _start_runner(build_app(plane, options, inflight), options.host, options.port, options,
                                 "a free port, or --port 0 to pick one")
    host, port = _bound_address(runner, options)
    return runner, host, port


async def _start_runner(app: web.Application, host: str, port: int, options: ServerOptions,
                        expected: str) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=options.shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, backlog=1024)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise EdgehalError(f"address {host}:{port}", f"cannot be bound ({exc.strerror})",
                           expected) from None
    return runner


def _bound_address(runner: web.AppRunner, options: ServerOptions) -> tuple[str, int]:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return str(addr[0]), int(addr[1])
    return options.host, options.port  # pragma: no cover


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (a faster event loop; optional), else asyncio's."""
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return None
    return uvloop.new_event_loop

