"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` (KServe v2, as Triton serves it).

Its calls arrive on grpc's worker threads and run in the HTTP server's event loop, on the same
:class:`~edgehal.serve.dataplane.DataPlane`: the same models, batchers, queue
limits and statistics. The protocol's messages are the generated modules
``tritonclient[grpc]`` ships (``tritonclient.grpc.service_pb2``,
``service_pb2_grpc``, ``model_config_pb2``), imported when the gRPC server
starts; none is written here.

``ModelStreamInfer`` runs each request of a stream as a ``ModelInfer`` and answers them on the
stream in the order they came, errors in-band (``error_message``), as Triton does for models that
answer each request once.

A ``ModelInferRequest`` becomes the same ``$inference_request`` document the HTTP
path parses, with every ``raw_input_contents`` entry as a binary input, and goes
through the same validation (:func:`~edgehal.serve.protocol.decode_infer_document`, which keeps a
parse plan per request header for all-raw requests, as HTTP does for binary ones);
the outputs come back as ``raw_output_contents`` (as Triton answers). Typed
``contents`` are accepted too. Exceptions become status codes in one table
(:func:`error_codes`), the classes of HTTP's table in the same order:

=========================================  ===================
request bytes in flight over the budget     RESOURCE_EXHAUSTED
invalid input (``InvalidRequest``)          INVALID_ARGUMENT
message over ``--max-request-bytes``        RESOURCE_EXHAUSTED (refused by grpc itself)
unknown model or version                    NOT_FOUND
unknown shared memory region                NOT_FOUND
shared memory region registered already     ALREADY_EXISTS
CUDA shared memory region offered           INVALID_ARGUMENT (no GPU memory: as Triton without GPUs)
not ready, shutting down, queue full        UNAVAILABLE
anything else (a bug)                       INTERNAL
=========================================  ===================

A ``ModelInfer`` message holds its size in the HTTP server's in-flight budget
(:class:`~edgehal.serve.app.InflightBytes`, 16 x ``--max-request-bytes`` for
both transports together) from decoding until its answer is built; over it,
RESOURCE_EXHAUSTED (HTTP answers 503 there). A request message that does not
parse answers INVALID_ARGUMENT (grpc's own deserializer would answer UNKNOWN
and log a traceback per message).

``ModelReady`` of an unknown model answers ``ready: false`` rather than NOT_FOUND,
as Triton does: clients ask it to learn a yes or no.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Sequence

from edgehal.errors import EdgehalError
from edgehal.serve.app import InflightBytes
from edgehal.serve.dataplane import DataPlane, ServedModel
from edgehal.serve.protocol import (
    InferRequest,
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    Unavailable,
    decode_infer_document,
    loads,
    raw_outputs,
)
from edgehal.serve.shared_memory import (
    RegionExists,
    RegionNotFound,
    cuda_region_not_found,
    cuda_unsupported,
)

log = logging.getLogger("edgehal.serve")

# gRPC calls served at once (each holds a worker thread while the loop serves it); more are
# refused by grpc with RESOURCE_EXHAUSTED. Below the batchers' default queue length (256), so past
# 128 concurrent gRPC calls a client sees RESOURCE_EXHAUSTED where HTTP would queue or answer 503.
GRPC_WORKERS = 128
# Requests of one ModelStreamInfer stream waiting for their answers at most; past it the stream
# is not read until an answer has gone out.
STREAM_WINDOW = 64

# The typed ``InferTensorContents`` field of each datatype; FP16 and BF16 have none (raw only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


class InflightExhausted(EdgehalError):
    """A request whose bytes would pass the in-flight budget shared with HTTP."""


@functools.cache
def error_codes() -> tuple[tuple[type[BaseException], Any], ...]:
    """The one table from exception class to gRPC status code (grpc is imported lazily)."""
    import grpc

    # Most specific first; the first matching class wins.
    return ((InflightExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
            (PayloadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
            (RegionExists, grpc.StatusCode.ALREADY_EXISTS),
            (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
            (ModelNotFound, grpc.StatusCode.NOT_FOUND),
            (RegionNotFound, grpc.StatusCode.NOT_FOUND),
            (Unavailable, grpc.StatusCode.UNAVAILABLE),
            (EdgehalError, grpc.StatusCode.INVALID_ARGUMENT))  # a runner's own input check



def code_of(exc: BaseException) -> tuple[Any, str]:
    """The gRPC status code and message for an exception raised while serving."""
    import grpc

    for cls, code in error_codes():
        if isinstance(exc, cls):
            return code, str(exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({exc.__class__.__name__}: {exc})"


def _param_value(p: Any) -> Any:
    choice = p.WhichOneof("parameter_choice")
    return None if choice is None else getattr(p, choice)


def _serialize_bytes(values: Any) -> bytes:
    return b"".join(len(v).to_bytes(4, "little") + v for v in values)


def request_document(request: Any, raw: Sequence[bytes]) -> tuple[dict[str, Any], bytes]:
    """A ``ModelInferRequest`` whose ``raw_input_contents`` are ``raw`` as the ``$inference_request``
    document the HTTP path parses, and the bytes of its binary inputs (``raw``, and typed BYTES) one
    after another. Inputs in shared memory have no ``raw_input_contents`` entry (as tritonclient
    sends them)."""
    in_body = [t for t in request.inputs if "shared_memory_region" not in t.parameters]
    if raw and len(raw) != len(in_body):
        raise InvalidRequest("raw_input_contents", f"has {len(raw)} entries for {len(in_body)} inputs "
                             "not in shared memory", "one entry per such input, or none (typed contents)")
    raw_of = {id(t): r for t, r in zip(in_body, raw)} if raw else {}
    inputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for t in request.inputs:
        what = f"input {t.name!r}"
        params = {k: _param_value(v) for k, v in t.parameters.items() if k != "binary_data_size"}
        entry: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        field = CONTENTS_FIELD.get(t.datatype)
        typed = t.HasField("contents") and any(len(getattr(t.contents, f)) for f in set(CONTENTS_FIELD.values()))
        if id(t) in raw_of:
            if typed:
                raise InvalidRequest(what, "has both contents and raw_input_contents", "one of them")
            params["binary_data_size"] = len(raw_of[id(t)])
            blobs.append(raw_of[id(t)])
        elif field == "bytes_contents":
            blob = _serialize_bytes(t.contents.bytes_contents)
            params["binary_data_size"] = len(blob)
            blobs.append(blob)
        elif field is not None and typed:
            entry["data"] = list(getattr(t.contents, field))
        if params:
            entry["parameters"] = params
        inputs.append(entry)
    outputs = []
    for o in request.outputs:
        entry = {"name": o.name}
        out_params = {k: _param_value(v) for k, v in o.parameters.items()
                      if k == "classification" or k.startswith("shared_memory_")}
        if out_params:
            entry["parameters"] = out_params
        outputs.append(entry)
    doc: dict[str, Any] = {"inputs": inputs}
    if request.id:
        doc["id"] = request.id
    if outputs:
        doc["outputs"] = outputs
    return doc, b"".join(blobs)


class InferenceServicer:
    """``GRPCInferenceService``'s health, metadata, inference and statistics RPCs on a data plane.

    ``ModelStreamInfer`` is served by :func:`_streamed` over ``ModelInfer``. The RPCs not
    served here (repository control, tracing, logging) answer UNIMPLEMENTED, from the
    generated base class. CUDA shared memory answers as a Triton built without GPU support:
    status lists no region, unregistering succeeds, registering is INVALID_ARGUMENT.
    """

    def __init__(self, plane: DataPlane, pb: Any, config_pb: Any, inflight: InflightBytes) -> None:
        from google.protobuf import json_format

        self.plane = plane
        self.inflight = inflight
        self.pb = pb
        self._parse = json_format.ParseDict
        self.server_metadata = self._parse(loads(plane.server_metadata_body), pb.ServerMetadataResponse(),
                                           ignore_unknown_fields=True)
        self._config_pb = config_pb
        self._metadata: dict[int, Any] = {}  # id(ServedModel) -> ModelMetadataResponse
        self._config: dict[int, Any] = {}

    def _get(self, name: str, version: str) -> ServedModel:
        return self.plane.get(name, version or None)

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return self.pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return self.pb.ServerReadyResponse(ready=self.plane.ready)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        try:
            served = self._get(request.name, request.version)
        except ModelNotFound:
            return self.pb.ModelReadyResponse(ready=False)
        return self.pb.ModelReadyResponse(ready=served.ready and not self.plane.shutting_down)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return self.server_metadata

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        served = self._get(request.name, request.version)
        doc = self._metadata.get(id(served))
        if doc is None:  # the metadata's edgehal parameters have no field in this message
            doc = self._metadata[id(served)] = self._parse(
                loads(served.metadata_body), self.pb.ModelMetadataResponse(), ignore_unknown_fields=True)
        return doc

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        served = self._get(request.name, request.version)
        doc = self._config.get(id(served))
        if doc is None:
            config = self._parse(loads(served.config_body), self._config_pb.ModelConfig())
            doc = self._config[id(served)] = self.pb.ModelConfigResponse(config=config)
        return doc

    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        doc = loads(self.plane.statistics_body(request.name or None, request.version or None))
        return self._parse(doc, self.pb.ModelStatisticsResponse(), ignore_unknown_fields=True)

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        served = self._get(request.model_name, request.model_version)
        io = served.io
        pb = self.pb

        shm = self.plane.shared_memory

        def decode() -> InferRequest:
            raw = list(request.raw_input_contents)
            if not raw:  # typed contents or shared memory: no parse plan
                doc, body = request_document(request, raw)
                return decode_infer_document(lambda: doc, body, io, shared_memory=shm)
            # The message without its tensor bytes, with each tensor's size: what the parse plan is
            # kept under, as HTTP keeps one under the JSON header's bytes.
            del request.raw_input_contents[:]
            key = (request.SerializeToString(deterministic=True), tuple(map(len, raw)))
            return decode_infer_document(lambda: request_document(request, raw)[0], b"".join(raw), io, key=key,
                                         shared_memory=shm)

        def encode(infer: InferRequest, results: Any) -> Any:
            response = pb.ModelInferResponse(model_name=io.name, model_version=io.version, id=infer.id or "")
            for name, datatype, shape, raw in raw_outputs(io, infer, results, shared_memory=shm):
                response.outputs.add(name=name, datatype=datatype, shape=shape)
                response.raw_output_contents.append(raw)
            return response

        size = request.ByteSize()
        if not self.inflight.reserve(size):
            raise InflightExhausted(
                "server", f"is overloaded: {self.inflight.held} bytes of requests are in flight and this one has "
                f"{size}", f"at most {self.inflight.limit} bytes in flight (16 x --max-request-bytes); retry later")
        try:
            return await self.plane.run(served, decode, encode)
        finally:
            self.inflight.release(size)


    # -- system shared memory (edgehal.serve.shared_memory) ------------------
    async def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        response = self.pb.SystemSharedMemoryStatusResponse()
        for r in self.plane.shared_memory.status(request.name):
            entry = response.regions[r.name]
            entry.name, entry.key, entry.offset, entry.byte_size = r.name, r.key, r.offset, r.byte_size
        return response

    async def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        self.plane.shared_memory.register(request.name, key=request.key, offset=request.offset,
                                          byte_size=request.byte_size)
        return self.pb.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        self.plane.shared_memory.unregister(request.name)
        return self.pb.SystemSharedMemoryUnregisterResponse()

    # CUDA shared memory as a Triton built without GPU support answers (see app.Handlers)
    async def CudaSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        if request.name:
            raise cuda_region_not_found(request.name)
        return self.pb.CudaSharedMemoryStatusResponse()

    async def CudaSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        raise cuda_unsupported(request.name)

    async def CudaSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        return self.pb.CudaSharedMemoryUnregisterResponse()


class Unparsable:
    """A request message that did not parse, handed to the RPC instead of raising in grpc."""

    def __init__(self, message_type: str, error: Exception) -> None:
        self.message_type = message_type
        self.error = error


def _parser(message_class: Any) -> Callable[[bytes], Any]:
    from google.protobuf.message import DecodeError

    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError as exc:
            return Unparsable(message_class.DESCRIPTOR.full_name, exc)

    return parse


def _guarded(method: Callable[[Any, Any], Awaitable[Any]], name: str,
             loop: asyncio.AbstractEventLoop) -> Callable[[Any, Any], Any]:
    """The RPC for one of grpc's worker threads: the coroutine runs on the serving loop (the
    data plane and its batchers live there), and the exceptions of serving become its status
    (:func:`code_of`)."""
    import grpc

    def rpc(request: Any, context: Any) -> Any:
        try:
            if isinstance(request, Unparsable):
                raise InvalidRequest("request message", f"is not a valid {request.message_type} ({request.error})",
                                     f"a serialized {request.message_type}")
            return asyncio.run_coroutine_threadsafe(method(request, context), loop).result()
        except Exception as exc:
            code, message = code_of(exc)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("bug while serving gRPC %s", name)
            context.abort(code, message)  # raises: grpc answers with the status

    return rpc


def _streamed(method: Callable[[Any, Any], Awaitable[Any]], pb: Any,
              loop: asyncio.AbstractEventLoop) -> Callable[[Any, Any], Any]:
    """``ModelStreamInfer``: each request of the stream is a ``ModelInfer`` on the serving loop, answered
    on the stream in the order the requests came; an error answers that request in-band
    (``error_message``, as Triton does) and the stream goes on.

    A reader thread hands the requests to the loop as they arrive, so the requests of one stream
    are batched together like concurrent calls; at most :data:`STREAM_WINDOW` of them wait for
    their answers at once, after which the reader stops reading (grpc's flow control then holds
    the client back)."""

    def in_band(exc: BaseException) -> Any:
        code, message = code_of(exc)
        if code.name == "INTERNAL":
            log.error("bug while serving gRPC ModelStreamInfer", exc_info=exc)
        return pb.ModelStreamInferResponse(error_message=message)

    def rpc(request_iterator: Any, context: Any) -> Any:
        pending: queue.SimpleQueue = queue.SimpleQueue()
        window = threading.BoundedSemaphore(STREAM_WINDOW)
        done = object()

        def read() -> None:
            try:
                for request in request_iterator:
                    window.acquire()
                    if isinstance(request, Unparsable):
                        pending.put(InvalidRequest("request message", f"is not a valid {request.message_type} "
                                                   f"({request.error})", f"a serialized {request.message_type}"))
                    else:
                        pending.put(asyncio.run_coroutine_threadsafe(method(request, context), loop))
            except Exception as exc:  # noqa: BLE001 - the client went away or cancelled: the stream ends
                log.debug("gRPC ModelStreamInfer: the request stream ended (%s)", exc)
            finally:
                pending.put(done)

        threading.Thread(target=read, name="edgehal-grpc-stream", daemon=True).start()
        while (item := pending.get()) is not done:
            try:
                if isinstance(item, BaseException):
                    raise item
                answer = pb.ModelStreamInferResponse(infer_response=item.result())
            except Exception as exc:  # noqa: BLE001 - every error is this request's answer
                answer = in_band(exc)
            finally:
                # before the yield: grpc drops this generator at a yield when the client cancels,
                # and the reader, given room, then finds the request stream ended and stops
                window.release()
            yield answer

    return rpc


_RPCS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelConfig",
         "ModelStatistics", "ModelInfer", "SystemSharedMemoryStatus", "SystemSharedMemoryRegister",
         "SystemSharedMemoryUnregister", "CudaSharedMemoryStatus", "CudaSharedMemoryRegister",
         "CudaSharedMemoryUnregister")


def _add_service(servicer: Any, server: Any, pb: Any) -> None:
    """Register every RPC of ``inference.GRPCInferenceService`` on ``server``, as the generated
    ``add_GRPCInferenceServiceServicer_to_server`` does, but with request parsers that hand a
    message that does not parse to the RPC (:class:`Unparsable`) rather than raise."""
    import grpc

    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    handlers = {}
    for m in service.methods:
        kind = "stream_stream" if m.client_streaming or m.server_streaming else "unary_unary"
        handlers[m.name] = getattr(grpc, f"{kind}_rpc_method_handler")(
            getattr(servicer, m.name), request_deserializer=_parser(getattr(pb, m.input_type.name)),
            response_serializer=getattr(pb, m.output_type.name).SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    if hasattr(server, "add_registered_method_handlers"):  # grpcio >= 1.62: looked up before generic ones
        server.add_registered_method_handlers(service.full_name, handlers)


def _grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start_grpc(plane: DataPlane, *, host: str, port: int, max_request_bytes: int,
                     inflight: InflightBytes | None = None) -> tuple[Any, int]:
    """Listen for ``GRPCInferenceService`` on ``host:port``, answering from the running event
    loop; the server (the caller awaits its ``stop(grace)``) and the bound port. Messages over
    ``max_request_bytes`` are refused by grpc with RESOURCE_EXHAUSTED; ``ModelInfer`` holds
    its message's bytes in ``inflight`` (the HTTP server's budget; by default one of its own,
    16 x ``max_request_bytes``)."""
    try:
        import grpc
        from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
    except ImportError as exc:
        raise EdgehalError("gRPC serving", f"needs grpcio and tritonclient[grpc] ({exc})",
                           "pip install 'edgehal[serve]', or --grpc-port 0 for HTTP only") from None
    if inflight is None:
        inflight = InflightBytes(16 * max_request_bytes)
    loop = asyncio.get_running_loop()
    servicer = InferenceServicer(plane, service_pb2, model_config_pb2, inflight)
    base = service_pb2_grpc.GRPCInferenceServiceServicer()
    # grpc looks the handlers up by name on the object it is given: ours, guarded, where we
    # serve the RPC; the generated base class's UNIMPLEMENTED answers elsewhere.
    for name in _RPCS:
        setattr(base, name, _guarded(getattr(servicer, name), name, loop))
    base.ModelStreamInfer = _streamed(servicer.ModelInfer, service_pb2, loop)
    # grpc's thread-pool server, not grpc.aio: the aio server asks for one new call at a time
    # (its main loop awaits each before requesting the next), so under load the batcher found
    # one request waiting and batched nothing (mean batch 1.03 at 16 clients against HTTP's
    # ~10; ~2x the server CPU per inference). Worker threads only wait on the loop; calls past
    # the workers are refused by grpc (RESOURCE_EXHAUSTED), so nothing queues without bound.
    workers = GRPC_WORKERS
    server = grpc.server(ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgehal-grpc"),
                         options=[("grpc.max_receive_message_length", max_request_bytes),
                                  ("grpc.max_send_message_length", -1),
                                  ("grpc.so_reuseport", 0)],
                         maximum_concurrent_rpcs=workers)
    _add_service(base, server, service_pb2)
    try:
        bound = server.add_insecure_port(_grpc_address(host, port))
    except RuntimeError as exc:
        raise EdgehalError(f"gRPC address {host}:{port}", f"cannot be bound ({exc})",
                           "a free port for --grpc-port, or 0 to serve HTTP only") from None
    if bound == 0:  # older grpc reports a failed bind this way
        raise EdgehalError(f"gRPC address {host}:{port}", "cannot be bound",
                           "a free port for --grpc-port, or 0 to serve HTTP only")
    server.start()
    return _ThreadedServer(server), bound


class _ThreadedServer:
    """grpc's thread-pool server with the ``stop`` the serving loop awaits, as grpc.aio's."""

    def __init__(self, server: Any) -> None:
        self.server = server

    async def stop(self, grace: float | None = None) -> None:
        stopped = self.server.stop(grace)
        await asyncio.get_running_loop().run_in_executor(None, stopped.wait)
