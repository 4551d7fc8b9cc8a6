"""The cost of the transports alone: servers that answer every inference request with fixed bytes.

``serve_load.py --floor`` runs these beside ``edgehal serve``, with the same
load generators, requests, core and concurrency, to show how much of a cell's
CPU is the transport's own (aiohttp on uvloop for HTTP; grpcio's thread-pool
server for gRPC, as ``edgehal serve`` uses them) and how much edgehal adds on
top. Each server does only what any server on that stack must: HTTP reads the
request body and answers a pre-built response; gRPC takes the request message
as bytes and returns a pre-built ``ModelInferResponse`` as bytes (no parsing,
no model). The answer has the same size and shape as ``edgehal serve``'s for
the benchmark's model, with zeros for values.

From a floor and onnxruntime's in-process cost, serve_load derives what a
server on that transport could reach at best on one shared core: per
inference, at least the floor server's CPU, the load generator's CPU and
onnxruntime's batch-16 time, so

    throughput <= 1 / (floor server + floor client + 1 / ORT batch-16 rate)

and, at concurrency 1, a median of at least the floor's median plus one
batch-1 run. Run by serve_load, one process per server::

    python benchmarks/transport_floor.py http --response-dir DIR
    python benchmarks/transport_floor.py grpc --response-dir DIR

Each prints ``listening on <scheme>://127.0.0.1:<port>`` once it accepts
requests, binds 127.0.0.1 only, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from edgehal.serve.app import ServerOptions
from edgehal.serve.grpc import GRPC_WORKERS

HOST = "127.0.0.1"
SERVICE = "inference.GRPCInferenceService"
MAX_REQUEST_BYTES = ServerOptions.max_request_bytes  # edgehal serve's default body limit


def write_responses(directory: Path, model: str, outputs: list[tuple[str, list[int]]]) -> None:
    """The fixed answers, FP32 zeros of each output's shape: ``http.bin`` (binary body after its JSON
    header, whose length is in ``http.json``) and ``grpc.bin`` (a serialized ``ModelInferResponse``)."""
    from tritonclient.grpc import service_pb2

    blobs = [np.zeros(shape, np.float32).tobytes() for _, shape in outputs]
    header = json.dumps({"model_name": model, "model_version": "1", "outputs": [
        {"name": name, "datatype": "FP32", "shape": shape, "parameters": {"binary_data_size": len(b)}}
        for (name, shape), b in zip(outputs, blobs)]}, separators=(",", ":")).encode()
    (directory / "http.bin").write_bytes(header + b"".join(blobs))
    (directory / "http.json").write_text(json.dumps({"header_length": len(header)}))
    response = service_pb2.ModelInferResponse(model_name=model, model_version="1")
    for (name, shape), b in zip(outputs, blobs):
        response.outputs.add(name=name, datatype="FP32", shape=shape)
        response.raw_output_contents.append(b)
    (directory / "grpc.bin").write_bytes(response.SerializeToString())


def serve_http(directory: Path) -> None:
    """aiohttp on uvloop, as edgehal serve runs it (no access log), one route: read the body, answer."""
    from aiohttp import web

    body = (directory / "http.bin").read_bytes()
    headers = {"Inference-Header-Content-Length": str(json.loads((directory / "http.json").read_text())
                                                     ["header_length"])}

    async def infer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/octet-stream", headers=headers)

    async def main() -> None:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.add_routes([web.post("/v2/models/{name}/infer", infer)])
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        port = runner.addresses[0][1]
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print(f"listening on http://{HOST}:{port}", flush=True)
        await stop.wait()
        await runner.cleanup()

    try:
        import uvloop
        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


def serve_grpc(directory: Path) -> None:
    """grpcio's thread-pool server with edgehal serve's settings; ModelInfer answers fixed bytes."""
    import grpc

    answer = (directory / "grpc.bin").read_bytes()

    def model_infer(request: bytes, context: object) -> bytes:
        return answer

    server = grpc.server(ThreadPoolExecutor(max_workers=GRPC_WORKERS),
                         options=[("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                                  ("grpc.max_send_message_length", -1), ("grpc.so_reuseport", 0)],
                         maximum_concurrent_rpcs=GRPC_WORKERS)
    # no (de)serializers: bytes in, bytes out
    handler = grpc.unary_unary_rpc_method_handler(model_infer)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"ModelInfer": handler}),))
    port = server.add_insecure_port(f"{HOST}:0")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    print(f"listening on grpc://{HOST}:{port}", flush=True)
    stop.wait()
    server.stop(1).wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("protocol", choices=("http", "grpc"))
    ap.add_argument("--response-dir", type=Path, required=True,
                    help="Folder with the fixed answers (written by serve_load.py --floor).")
    args = ap.parse_args(argv)
    (serve_http if args.protocol == "http" else serve_grpc)(args.response_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
