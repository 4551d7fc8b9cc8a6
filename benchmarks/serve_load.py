"""Closed-loop load on ``edgehal serve`` over HTTP and gRPC: throughput and latency, with the in-process ceiling.

For each of dynamic batching on and off, the script starts ``edgehal serve``
on 127.0.0.1 (free ports), and for each protocol and payload -- HTTP with
binary tensors, HTTP with JSON, gRPC (``inference.GRPCInferenceService``) with
``raw_input_contents`` -- at each concurrency (default 1, 4, 16, 64) runs a
closed loop: every client keeps one batch-1 request in flight, waits for the
answer, sends the next. A cell stops after ``--duration`` seconds or
``--max-requests`` requests, whichever comes first, after ``--warmup``
seconds that are not counted. It reports inferences/s, p50/p90/p99 latency,
the mean batch the server formed (from its /metrics), and CPU microseconds per
inference in the server and in this load generator, which is where the time
goes on a shared core. The ceiling is onnxruntime in this process on the same
model, at batch 1 and at batch 16, on the same core.

The load generators cost as little of the shared core as they can (a
tritonclient loop would measure the client): HTTP is a minimal asyncio
HTTP/1.1 client, one keep-alive connection per concurrent request, sending
pre-encoded requests; gRPC is ``grpc.aio`` with the ``ModelInfer`` request
serialized once (tritonclient's generated ``ModelInferRequest``) and sent as
bytes through ``unary_unary`` without (de)serializers, all concurrent calls
multiplexed on one channel by default (``--grpc-channels``). The first
answer of each cell is decoded and compared with onnxruntime in this process
(to 1e-5); a wrong answer stops the script. Only loopback is ever used.

With ``--perf-analyzer``, Triton's own load generator (``perf_analyzer.py``
fetches it) also loads the server at the same concurrencies, HTTP with binary
tensors and gRPC, pinned to the same core; its cells are marked with the
generator ``perf_analyzer``, and its CPU per request is measured as this
script's is (its CPU seconds over the requests the server counted).

Then, unless ``--no-floor``, each protocol's transport alone (``transport_floor.py``:
the same server stack answering fixed bytes) under the same load, and from it
the best share of the ceiling and the best concurrency-1 median any server on
that transport could reach on this core (saved as ``floors`` and
``transport_bounds``; the plot marks the bounds).

The targets (printed as PASS/FAIL and saved in the JSON), per protocol with
binary tensors: at concurrency 16, at least 0.6x (aim 0.7x) of onnxruntime's
in-process batch-16 throughput on the same core, and p99 under 15 ms; at
concurrency 1, a median under 1 ms.

The goal: server and load generator pinned to the same single core, run from
the repository root::

    python benchmarks/serve_load.py --pin-core 1

Quick check that it works (a few seconds)::

    python benchmarks/serve_load.py --pin-core 1 --duration 1 --warmup 0.2 --concurrency 1,16 --protocol http,grpc

``--model PATH`` serves an exported model (e.g. from ``edgehal export``); by
default an MNIST-sized CNN (two 3x3 conv layers, 32 and 64 channels, and two
dense layers: the classic PyTorch MNIST network, with a 2-way aux head
feeding the 10-way main head) is built into a temporary folder. Results go to
``benchmarks/results/serve_load/serve_load-<time>.json`` with a plot beside
it (``.png``): throughput and p99 against concurrency per protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import functools
import itertools
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "serve_load"

PROTOCOLS = ("http", "grpc")
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
# The targets: with binary tensors at concurrency 16, throughput against onnxruntime in-process at batch 16
# on the same core, and p99; at concurrency 1, the median.
TARGET_RATIO, AIM_RATIO, TARGET_P99_MS, TARGET_P50_MS = 0.6, 0.7, 15.0, 1.0
TARGET_CONCURRENCY, LATENCY_CONCURRENCY = 16, 1
# Within what the first answer of a cell must match onnxruntime in this process (absolute, and relative).
TOLERANCE = 1e-5
NUMPY_DTYPE = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32,
               "INT16": np.int16, "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_}


# ---------------------------------------------------------------------------
# The model


def build_mnist_cnn(path: Path) -> Path:
    """An MNIST-sized HAL CNN with edgehal metadata (input ``input``, outputs ``logits``, ``aux_case1``)."""
    import onnx
    import torch
    from torch import nn

    from edgehal.artifact import ArtifactMetadata, write_onnx_metadata
    from edgehal.hierarchy import DIGIT_CLASSES, aux_head_from_case, get_case
    from edgehal.manifest import Head, HeadManifest, Preprocessing

    torch.manual_seed(0)

    class MnistHal(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(9216, 128), nn.ReLU())
            self.aux = nn.Linear(128, 2)
            self.main = nn.Linear(128 + 2, 10)

        def forward(self, x):
            h = self.features(x)
            a = self.aux(h)
            return self.main(torch.cat([h, a], dim=1)), a

    raw = path.with_suffix(".raw.onnx")
    torch.onnx.export(MnistHal().eval(), torch.zeros(1, 1, 28, 28), str(raw), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits", "aux_case1"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}, "aux_case1": {0: "batch"}})
    manifest = HeadManifest(model="hal_mnist_bench", input_name="input", input_shape=(1, 28, 28),
                            heads=(Head(name="logits", kind="main", level=0, class_names=DIGIT_CLASSES),
                                   aux_head_from_case(get_case("mnist", "case1"))))
    meta = ArtifactMetadata(manifest=manifest, full_manifest=manifest,
                        preprocessing=Preprocessing(layout="NCHW", input_shape=(1, 28, 28), mean=(0.1307,), std=(0.3081,),
                                                scale=1 / 255),
                        aux="keep", precision="fp32")
    proto = onnx.load(str(raw))
    write_onnx_metadata(proto, meta)
    onnx.save(proto, str(path))
    raw.unlink()
    return path


def model_io(path: Path) -> tuple[str, tuple[int, ...], list[str]]:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = s.get_inputs()[0]
    if inp.type != "tensor(float)":
        raise SystemExit(f"{path}: the benchmark feeds FP32; input {inp.name} is {inp.type}")
    dims = tuple(int(d) for d in inp.shape[1:])
    return inp.name, dims, [o.name for o in s.get_outputs()]


def ceiling(path: Path, input_name: str, dims: tuple[int, ...], seconds: float) -> dict:
    """onnxruntime in this process, one thread: inferences/s at batch 1 and at batch 16."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    out = {}
    for batch in (1, 16):
        x = np.random.default_rng(0).standard_normal((batch, *dims)).astype(np.float32)
        for _ in range(5):
            s.run(None, {input_name: x})
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            s.run(None, {input_name: x})
            n += 1
        dt = time.perf_counter() - t0
        out[f"batch{batch}_inferences_per_s"] = n * batch / dt
        out[f"batch{batch}_ms_per_run"] = dt / n * 1e3
    return out


def reference_outputs(path: Path, input_name: str, inputs: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """onnxruntime in this process on each input: what the server must answer."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return [dict(zip(names, s.run(None, {input_name: x}))) for x in inputs]


# ---------------------------------------------------------------------------
# Requests


def make_inputs(dims: tuple[int, ...], n: int = 32) -> list[np.ndarray]:
    """``n`` distinct batch-1 FP32 inputs (the same for every protocol)."""
    rng = np.random.default_rng(1)
    return [rng.standard_normal((1, *dims)).astype(np.float32) for _ in range(n)]


def make_requests(model: str, input_name: str, outputs: list[str], payload: str, host: str, port: int,
                  inputs: list[np.ndarray]) -> list[bytes]:
    """Pre-encoded HTTP requests, one per input, asking for every output."""
    reqs = []
    for x in inputs:
        headers = [f"POST /v2/models/{model}/infer HTTP/1.1", f"Host: {host}:{port}"]
        if payload == "binary":
            raw = x.tobytes()
            header = json.dumps({
                "inputs": [{"name": input_name, "shape": list(x.shape), "datatype": "FP32",
                            "parameters": {"binary_data_size": len(raw)}}],
                "outputs": [{"name": o, "parameters": {"binary_data": True}} for o in outputs]}).encode()
            body = header + raw
            headers += ["Content-Type: application/octet-stream",
                        f"Inference-Header-Content-Length: {len(header)}"]
        else:  # what tritonclient sends for JSON: a flat list of Python floats
            body = json.dumps({
                "inputs": [{"name": input_name, "shape": list(x.shape), "datatype": "FP32",
                            "data": x.reshape(-1).tolist()}],
                "outputs": [{"name": o, "parameters": {"binary_data": False}} for o in outputs]}).encode()
            headers += ["Content-Type: application/json"]
        headers.append(f"Content-Length: {len(body)}")
        reqs.append(("\r\n".join(headers) + "\r\n\r\n").encode() + body)
    return reqs


def make_grpc_requests(model: str, input_name: str, outputs: list[str], inputs: list[np.ndarray]) -> list[bytes]:
    """Serialized ``ModelInferRequest`` messages, one per input, the tensor in ``raw_input_contents``,
    asking for every output: sent as they are, so no message is built per call."""
    from tritonclient.grpc import service_pb2

    pb = service_pb2.ModelInferRequest
    return [pb(model_name=model,
               inputs=[pb.InferInputTensor(name=input_name, datatype="FP32", shape=list(x.shape))],
               outputs=[pb.InferRequestedOutputTensor(name=o) for o in outputs],
               raw_input_contents=[x.tobytes()]).SerializeToString()
            for x in inputs]


# ---------------------------------------------------------------------------
# The closed loops


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request in flight."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None
        self.need = -1
        self.head_end = 0
        self.status = 0
        self.head = b""
        self.lost: Exception | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc) -> None:
        self.lost = exc or ConnectionError("server closed the connection")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(self.lost)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.need < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head = head = bytes(buf[:end]).lower()
            self.status = int(head[9:12])
            m = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
            self.head_end = end + 4
            self.need = self.head_end + (int(m.group(1)) if m else 0)
        if len(buf) >= self.need:
            body = bytes(buf[self.head_end:self.need])
            del buf[:self.need]
            self.need = -1
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result((self.status, self.head, body))

    def request(self, data: bytes) -> asyncio.Future:
        if self.lost is not None:
            raise self.lost
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter


class Cell:
    """What one closed loop shares between its clients: when to count, when to stop, what came back."""

    def __init__(self, max_requests: int) -> None:
        self.max_requests = max_requests
        self.latencies: list[float] = []
        self.errors: dict[int | str, int] = {}
        self.first: tuple[int, Any] | None = None  # (input index, the answer) of the first good answer
        self.measuring = False
        self.stop = False
        self.answered = 0  # good answers, warm-up included

    def ok(self, seconds: float) -> None:
        self.answered += 1
        if self.measuring:
            self.latencies.append(seconds)
            if len(self.latencies) >= self.max_requests:
                self.stop = True

    def error(self, key: int | str, detail: object) -> None:
        if not self.errors:
            print(f"  first error {key}: {detail!r:.200}", file=sys.stderr)
        self.errors[key] = self.errors.get(key, 0) + 1
        if self.errors[key] >= 1000:  # the server is refusing: stop rather than spin
            self.stop = True

    async def run(self, clients: list[Awaitable[None]], warmup: float, duration: float) -> dict:
        """Run the clients: ``warmup`` seconds uncounted, then ``duration`` seconds (or ``max_requests``)
        counted, with this process's CPU time (every thread: grpc's own included) over the counted part."""
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(c) for c in clients]
        await asyncio.sleep(warmup)
        cpu0, t0 = time.process_time(), time.perf_counter()
        self.measuring = True
        deadline = t0 + duration
        while not self.stop and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        self.stop = True
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        self.measuring = False
        done, stuck = await asyncio.wait(tasks, timeout=30)  # bounded even if the server stalls
        for t in done:
            if t.exception() is not None:
                self.error("connection", t.exception())
        for t in stuck:
            t.cancel()
            self.error("timeout", "no answer within 30 s of the end")
        return summarize_latencies(self.latencies, elapsed, cpu) | {"errors": self.errors, "answered": self.answered}


def summarize_latencies(latencies: list[float], elapsed: float, cpu: float) -> dict:
    """Throughput, latency percentiles (ms) and CPU per inference of one cell's counted answers."""
    lat = np.array(latencies) * 1e3
    n = len(latencies)
    return {
        "requests": n, "seconds": elapsed, "inferences_per_s": n / elapsed if elapsed else 0.0,
        "p50_ms": float(np.percentile(lat, 50)) if n else None,
        "p90_ms": float(np.percentile(lat, 90)) if n else None,
        "p99_ms": float(np.percentile(lat, 99)) if n else None,
        "client_cpu_us_per_inference": cpu / n * 1e6 if n else None,
    }


async def http_closed_loop(host: str, port: int, requests: list[bytes], concurrency: int, warmup: float,
                           duration: float, max_requests: int) -> tuple[dict, tuple[int, Any] | None]:
    """One keep-alive HTTP/1.1 connection per concurrent request; the cell's results and its first good
    answer as (input index, (head, body))."""
    loop = asyncio.get_running_loop()
    conns = [(await loop.create_connection(Connection, host, port))[1] for _ in range(concurrency)]
    cell = Cell(max_requests)

    async def client(conn: Connection, k: int) -> None:
        i = k
        perf = time.perf_counter
        n = len(requests)
        while not cell.stop:
            j = i % n
            i += concurrency
            t0 = perf()
            status, head, body = await conn.request(requests[j])
            dt = perf() - t0
            if status != 200:
                cell.error(status, body[:200])
                continue
            if cell.first is None:
                cell.first = (j, (head, body))
            cell.ok(dt)

    try:
        result = await cell.run([client(c, k) for k, c in enumerate(conns)], warmup, duration)
    finally:
        for c in conns:
            c.transport.close()
    return result, cell.first


async def grpc_closed_loop(host: str, port: int, requests: list[bytes], concurrency: int, channels: int,
                           warmup: float, duration: float, max_requests: int) -> tuple[dict, tuple[int, Any] | None]:
    """``concurrency`` calls in flight over ``channels`` grpc.aio channels, the messages sent as bytes;
    the cell's results and its first good answer as (input index, serialized ``ModelInferResponse``)."""
    import grpc

    # grpc shares one connection among channels with the same arguments unless each has its own pool
    options = [("grpc.use_local_subchannel_pool", 1)] if channels > 1 else []
    chans = [grpc.aio.insecure_channel(f"{host}:{port}", options=options) for _ in range(channels)]
    try:
        for ch in chans:
            await asyncio.wait_for(ch.channel_ready(), 30)
        # no (de)serializer: bytes in, bytes out; nothing is built or parsed per call
        calls = [ch.unary_unary(MODEL_INFER, request_serializer=None, response_deserializer=None) for ch in chans]
        cell = Cell(max_requests)

        async def client(k: int) -> None:
            call = calls[k % channels]
            i = k
            perf = time.perf_counter
            n = len(requests)
            while not cell.stop:
                j = i % n
                i += concurrency
                t0 = perf()
                try:
                    body = await call(requests[j])
                except grpc.aio.AioRpcError as exc:
                    cell.error(exc.code().name, exc.details())
                    continue
                dt = perf() - t0
                if cell.first is None:
                    cell.first = (j, body)
                cell.ok(dt)

        result = await cell.run([client(k) for k in range(concurrency)], warmup, duration)
    finally:
        for ch in chans:
            await ch.close()
    return result, cell.first


# ---------------------------------------------------------------------------
# Checking the answers


def decode_http_answer(head: bytes, body: bytes, payload: str) -> dict[str, np.ndarray]:
    """The outputs of an HTTP infer answer (binary or JSON), by name, in the answer's order."""
    if payload == "binary":
        m = re.search(rb"\r\ninference-header-content-length:\s*(\d+)", head)
        if not m:
            raise ValueError(f"binary answer without Inference-Header-Content-Length: {head!r:.300}")
        n = int(m.group(1))
        doc = json.loads(body[:n])
        out, at = {}, n
        for o in doc["outputs"]:
            size = o["parameters"]["binary_data_size"]
            out[o["name"]] = np.frombuffer(body[at:at + size], NUMPY_DTYPE[o["datatype"]]).reshape(o["shape"])
            at += size
        if at != len(body):
            raise ValueError(f"binary answer of {len(body)} bytes, header and outputs account for {at}")
        return out
    doc = json.loads(body)
    return {o["name"]: np.asarray(o["data"], NUMPY_DTYPE[o["datatype"]]).reshape(o["shape"]) for o in doc["outputs"]}


def decode_grpc_answer(body: bytes) -> dict[str, np.ndarray]:
    """The outputs of a serialized ``ModelInferResponse`` (``raw_output_contents``), by name, in its order."""
    from tritonclient.grpc import service_pb2

    response = service_pb2.ModelInferResponse.FromString(body)
    if len(response.raw_output_contents) != len(response.outputs):
        raise ValueError(f"{len(response.outputs)} outputs, {len(response.raw_output_contents)} raw_output_contents")
    return {o.name: np.frombuffer(raw, NUMPY_DTYPE[o.datatype]).reshape(list(o.shape))
            for o, raw in zip(response.outputs, response.raw_output_contents)}


def answer_problem(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], outputs: list[str]) -> str | None:
    """Why an answer is wrong (names, order, shapes, values beyond :data:`TOLERANCE`), or None when it is right."""
    if list(got) != outputs:
        return f"outputs {list(got)}, asked for {outputs}"
    for name in outputs:
        g, e = got[name], expected[name]
        if g.shape != e.shape:
            return f"output {name!r} has shape {list(g.shape)}, onnxruntime gives {list(e.shape)}"
        if not np.allclose(g, e, rtol=TOLERANCE, atol=TOLERANCE):
            diff = float(np.max(np.abs(g.astype(np.float64) - e.astype(np.float64))))
            return f"output {name!r} differs from onnxruntime in-process by up to {diff:.3g} (tolerance {TOLERANCE})"
    return None


# ---------------------------------------------------------------------------
# The server


def pin_cmd(cmd: list[str], core: int | None) -> tuple[list[str], object]:
    if core is None:
        return cmd, None
    if shutil.which("taskset"):
        return ["taskset", "-c", str(core), *cmd], None
    return cmd, lambda: os.sched_setaffinity(0, {core})


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now (``--grpc-port 0`` means no gRPC, so the server cannot pick one itself)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Process:
    """A server in its own process: its CPU seconds, and a graceful stop."""

    proc: subprocess.Popen

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class FloorProcess(Process):
    """One of ``transport_floor.py``'s servers, pinned like edgehal serve; its port."""

    def __init__(self, protocol: str, responses: Path, core: int | None, log_dir: Path) -> None:
        cmd, preexec = pin_cmd([sys.executable, str(HERE / "transport_floor.py"), protocol,
                                "--response-dir", str(responses)], core)
        self.log_path = log_dir / f"floor-{protocol}-{time.monotonic_ns()}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                         preexec_fn=preexec)  # noqa: PLW1509 - only sets affinity
        try:
            deadline = time.monotonic() + 60
            while True:
                m = re.search(rf"listening on {protocol}://[\d.]+:(\d+)", self.log_path.read_text(errors="replace"))
                if m:
                    self.port = int(m.group(1))
                    break
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{protocol} floor server did not start:\n{self.log_path.read_text()}")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise


class ServerProcess(Process):
    def __init__(self, model: Path, args: list[str], core: int | None, log_dir: Path, *, grpc: bool) -> None:
        self.grpc_port = free_port() if grpc else 0
        cmd = [sys.executable, "-m", "edgehal.cli", "serve", str(model), "--host", "127.0.0.1", "--port", "0",
               "--grpc-port", str(self.grpc_port), "--threads", "1", *args]
        cmd, preexec = pin_cmd(cmd, core)
        self.log_path = log_dir / f"server-{time.monotonic_ns()}.log"
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                         preexec_fn=preexec)  # noqa: PLW1509 - only sets affinity
        try:
            self.port = self._wait_port()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_port(self) -> int:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            m = re.search(r"listening on http://[\d.]+:(\d+)", text)
            if m and (not self.grpc_port or re.search(rf"listening on grpc://[\d.]+:{self.grpc_port}\b", text)):
                return int(m.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise SystemExit(f"server did not start:\n{self.log_path.read_text()}")

    def _wait_ready(self) -> None:
        import urllib.request

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/health/ready", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"server never became ready:\n{self.log_path.read_text()}")

    COUNTERS = ("edgehal_inferences_total", "edgehal_executions_total", "edgehal_inference_failures_total")

    def measure(self, run: Callable[[], T]) -> tuple[T, dict]:
        """``run()`` and what the server did meanwhile: inferences, failures, the mean batch it formed, and its
        CPU per inference (warm-up included, so slightly above the measured share)."""
        inf0, ex0, failed0 = self._metrics(*self.COUNTERS)
        cpu0 = self.cpu_seconds()
        result = run()
        cpu1 = self.cpu_seconds()
        inf1, ex1, failed1 = self._metrics(*self.COUNTERS)
        total = inf1 - inf0
        return result, {"inferences": total, "failures": failed1 - failed0,
                        "mean_batch": total / (ex1 - ex0) if ex1 > ex0 else None,
                        "server_cpu_us_per_inference": (cpu1 - cpu0) / total * 1e6 if total else None}

    def _metrics(self, *names: str) -> tuple[float, ...]:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            text = r.read().decode()

        def total(name: str) -> float:
            return sum(float(v) for v in re.findall(rf"^{name}{{[^}}]*}} (\S+)$", text, re.MULTILINE))
        return tuple(total(name) for name in names)


# ---------------------------------------------------------------------------


def split_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [p.strip() for p in text.split(",") if p.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="ONNX model to serve. Default: build the MNIST-sized CNN.")
    ap.add_argument("--concurrency", default="1,4,16,64", help="Comma-separated. Default: 1,4,16,64.")
    ap.add_argument("--protocol", default="http,grpc",
                    help="http and/or grpc (comma-separated). Default: http,grpc.")
    ap.add_argument("--payloads", default="binary,json",
                    help="HTTP payloads: binary and/or json (gRPC always sends raw_input_contents). "
                         "Default: binary,json.")
    ap.add_argument("--grpc-channels", type=int, default=1,
                    help="gRPC channels (connections) the concurrent calls are spread over. Default: 1, the "
                         "cheapest for the load generator.")
    ap.add_argument("--batching", default="on,off", help="Dynamic batching on and/or off. Default: on,off.")
    ap.add_argument("--duration", type=float, default=5.0, help="Seconds measured per cell. Default: 5.")
    ap.add_argument("--warmup", type=float, default=1.0, help="Seconds not measured per cell. Default: 1.")
    ap.add_argument("--max-requests", type=int, default=200_000, help="Requests per cell at most. Default: 200000.")
    ap.add_argument("--max-batch-size", type=int, default=64, help="Server --max-batch-size. Default: 64.")
    ap.add_argument("--max-queue-delay-ms", type=float, default=0.0,
                    help="Server --max-queue-delay-ms with batching on. Default: 0 (greedy).")
    ap.add_argument("--pin-core", type=int, default=None,
                    help="Pin the server (taskset) and this load generator to this one core. Default: no pinning.")
    ap.add_argument("--server-arg", action="append", default=[], help="Extra argument for edgehal serve (repeatable).")
    ap.add_argument("--ceiling-seconds", type=float, default=3.0, help="Seconds per ceiling measurement. Default: 3.")
    ap.add_argument("--perf-analyzer", action="store_true",
                    help="Also load the server with Triton's perf_analyzer (C++), at the same concurrencies, for "
                         "HTTP binary and gRPC, pinned like this script; get it first with "
                         "'python benchmarks/perf_analyzer.py fetch'. Its cells are marked generator "
                         "perf_analyzer.")
    ap.add_argument("--no-floor", dest="floor", action="store_false",
                    help="Skip the transport floors (benchmarks/transport_floor.py: each protocol's server "
                         "answering fixed bytes, at the same concurrencies) and the bounds derived from them.")
    ap.add_argument("--note", default="", help="Free text saved with the results, e.g. how busy the machine was.")
    ap.add_argument("--output", type=Path, default=None,
                    help="JSON results path; the plot goes beside it (.png). "
                         "Default: benchmarks/results/serve_load/serve_load-<time>.json.")
    args = ap.parse_args(argv)
    concurrencies = [int(c) for c in split_list(args.concurrency)]
    protocols = split_list(args.protocol)
    payloads = split_list(args.payloads)
    batchings = split_list(args.batching)
    for p in protocols:
        if p not in PROTOCOLS:
            ap.error(f"protocol {p!r}: choose http or grpc")
    for p in payloads:
        if p not in ("binary", "json"):
            ap.error(f"payload {p!r}: choose binary or json")
    for b in batchings:
        if b not in ("on", "off"):
            ap.error(f"batching {b!r}: choose on or off")
    if args.grpc_channels < 1:
        ap.error(f"--grpc-channels {args.grpc_channels}: at least 1")
    pa_exe = pa_version = None
    if args.perf_analyzer:
        import perf_analyzer
        pa_version = perf_analyzer.check()
        print(pa_version, flush=True)
        pa_exe = perf_analyzer.binary()
    if "grpc" in protocols:
        try:
            import grpc  # noqa: F401
            from tritonclient.grpc import service_pb2  # noqa: F401
        except ImportError as exc:
            ap.error(f"--protocol grpc needs grpcio and tritonclient[grpc] ({exc})")
    # Paths given are taken from where the script was started; then it works from the repository root,
    # so the paths it records are relative to it.
    model_arg = args.model.resolve() if args.model else None
    stamp = _dt.datetime.now()
    out = args.output.resolve() if args.output else RESULTS / f"serve_load-{stamp:%Y%m%d-%H%M%S}.json"
    os.chdir(REPO)
    command = shlex.join(["python", "benchmarks/serve_load.py", *(sys.argv[1:] if argv is None else argv)])

    if args.pin_core is not None:
        os.sched_setaffinity(0, {args.pin_core})
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    work = Path(tempfile.mkdtemp(prefix="edgehal-serve-load-"))
    try:
        model = model_arg or build_mnist_cnn(work / "hal_mnist_bench.onnx")
        model_name = model.stem
        input_name, dims, outputs = model_io(model)
        inputs = make_inputs(dims)
        expected = reference_outputs(model, input_name, inputs)
        load_before = os.getloadavg()
        print(f"model {repo_relative(model)} input {input_name} {dims} outputs {outputs}; "
              f"pinned to core {args.pin_core}; load average {load_before[0]:.2f}", flush=True)
        ceil = ceiling(model, input_name, dims, args.ceiling_seconds)
        print(f"ceiling (onnxruntime in-process, 1 thread): batch 1 {ceil['batch1_inferences_per_s']:.0f}/s "
              f"({ceil['batch1_ms_per_run']:.3f} ms/run), batch 16 {ceil['batch16_inferences_per_s']:.0f}/s",
              flush=True)
        rows = []
        for batching in batchings:
            server_args = ["--max-batch-size", str(args.max_batch_size)]
            if batching == "on":
                server_args += ["--max-queue-delay-ms", str(args.max_queue_delay_ms)]
            else:
                server_args += ["--no-dynamic-batching"]
            server = ServerProcess(model, server_args + args.server_arg, args.pin_core, work,
                                   grpc="grpc" in protocols)
            try:
                for protocol in protocols:
                    for payload in (payloads if protocol == "http" else ["raw"]):
                        if protocol == "http":
                            reqs = make_requests(model_name, input_name, outputs, payload, "127.0.0.1", server.port,
                                                 inputs)
                        else:
                            reqs = make_grpc_requests(model_name, input_name, outputs, inputs)
                        port = server.port if protocol == "http" else server.grpc_port
                        for c in concurrencies:
                            (r, first), seen = server.measure(functools.partial(run_cell, protocol, port, reqs, c, args))
                            check_first_answer(first, protocol, payload, c, expected, outputs)
                            row = {"batching": batching, "protocol": protocol, "payload": payload, "concurrency": c,
                                   "generator": "python", **r, "answer_checked": first is not None,
                                   "mean_batch": seen["mean_batch"],
                                   "server_cpu_us_per_inference": seen["server_cpu_us_per_inference"]}
                            rows.append(row)
                            print(format_row(row), flush=True)
                        if pa_exe is None or payload == "json":
                            continue
                        for c in concurrencies:
                            row = perf_analyzer_cell(pa_exe, server, protocol, payload, c, model_name,
                                                     f"{input_name}:{','.join(map(str, dims))}", args, work)
                            rows.append({"batching": batching, **row})
                            print(format_row(rows[-1]), flush=True)
            finally:
                server.stop()
        floors = measure_floors(protocols, concurrencies, args, model_name, input_name, outputs, inputs, expected,
                                work) if args.floor else []
        load_after = os.getloadavg()
        targets = evaluate_targets(rows, ceil)
        bounds = transport_bounds(floors, ceil, rows)
        print()
        print(table(rows))
        print()
        print(side_by_side(rows, ceil))
        print()
        print(targets_table(targets))
        if floors:
            print()
            print(floors_table(floors, rows, ceil))
            print()
            print(bounds_table(bounds))
        plot_path = out.with_suffix(".png")
        settings = {k: (repo_relative(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        settings["output"] = repo_relative(out)
        result = {
            "benchmark": "serve_load", "time": stamp.isoformat(timespec="seconds"), "command": command,
            "note": args.note,
            "model": repo_relative(model) if model_arg else f"{model.name} (built by the script)",
            "model_built_by_script": model_arg is None,
            "pin_core": args.pin_core, "host": platform.node(), "cpu": _cpu_name(), "cores": os.cpu_count(),
            "load_average_before": load_before, "load_average_after": load_after,
            "settings": settings,
            "load_generators": {
                "http": "asyncio HTTP/1.1, one keep-alive connection per concurrent request, pre-encoded requests",
                "grpc": (f"grpc.aio, {args.grpc_channels} channel(s) carrying the concurrent calls, "
                         "ModelInferRequest serialized once (raw_input_contents), sent and received as bytes"),
                **({"perf_analyzer": f"Triton's perf_analyzer ({pa_version}), random inputs, binary tensors, "
                                     "three measurement windows of --duration seconds"}
                   if pa_version is not None else {})},
            "versions": _versions(), "ceiling": ceil,
            "targets": {"throughput_ratio_to_ort_batch16_at_c16": f">= {TARGET_RATIO} (aim {AIM_RATIO})",
                        "p99_ms_at_c16": f"< {TARGET_P99_MS}", "p50_ms_at_c1": f"< {TARGET_P50_MS}",
                        "results": targets},
            "plot": repo_relative(plot_path), "rows": rows,
            "floors": floors, "transport_bounds": bounds,
        }
        from edgehal.fileio import atomic_write_text

        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
        plot(result, plot_path)
        print(f"\nsaved {repo_relative(out)} and {repo_relative(plot_path)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def run_cell(protocol: str, port: int, requests: list[bytes], concurrency: int,
             args: argparse.Namespace) -> tuple[dict, tuple[int, Any] | None]:
    """One closed-loop cell against the server on ``port``: its results and first good answer."""
    if protocol == "http":
        loop = http_closed_loop("127.0.0.1", port, requests, concurrency, args.warmup, args.duration,
                                args.max_requests)
    else:
        loop = grpc_closed_loop("127.0.0.1", port, requests, concurrency, args.grpc_channels, args.warmup,
                                args.duration, args.max_requests)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(loop)


def perf_analyzer_cell(exe: Path, server: ServerProcess, protocol: str, payload: str, concurrency: int,
                       model_name: str, shape: str, args: argparse.Namespace, work: Path) -> dict:
    """One cell loaded by perf_analyzer, pinned to the same core: its throughput and percentiles, and the
    server's and perf_analyzer's CPU per inference over perf_analyzer's whole run (warm-up included)."""
    import perf_analyzer

    port = server.port if protocol == "http" else server.grpc_port
    r, seen = server.measure(lambda: perf_analyzer.run_cell(
        exe, protocol=protocol, port=port, model=model_name, concurrency=concurrency, window_s=args.duration,
        shape=shape, pin=lambda cmd: pin_cmd(cmd, args.pin_core), log=work / "perf_analyzer.log"))
    total, failed = seen["inferences"], seen["failures"]
    return {"protocol": protocol, "payload": payload, "concurrency": concurrency, "generator": "perf_analyzer",
            "inferences_per_s": r["inferences_per_s"], "p50_ms": r["p50_ms"], "p90_ms": r["p90_ms"],
            "p99_ms": r["p99_ms"], "errors": {"failed on the server": failed} if failed else {},
            "answer_checked": False, "answered": total,
            "mean_batch": seen["mean_batch"], "server_cpu_us_per_inference": seen["server_cpu_us_per_inference"],
            "client_cpu_us_per_inference": r["client_cpu_s"] / total * 1e6 if total else None,
            "perf_analyzer_wall_s": r["wall_s"], "perf_analyzer_command": r["command"]}


def measure_floors(protocols: list[str], concurrencies: list[int], args: argparse.Namespace, model_name: str,
                   input_name: str, outputs: list[str], inputs: list[np.ndarray],
                   expected: list[dict[str, np.ndarray]], work: Path) -> list[dict]:
    """Each protocol's transport floor (``transport_floor.py``: the same server stack answering fixed bytes of
    the real answer's size) under the same load generator, requests, core and concurrencies."""
    from transport_floor import write_responses

    responses = work / "floor"
    responses.mkdir(exist_ok=True)
    write_responses(responses, model_name, [(name, list(expected[0][name].shape)) for name in outputs])
    rows = []
    for protocol in protocols:
        server = FloorProcess(protocol, responses, args.pin_core, work)
        try:
            if protocol == "http":
                payload, reqs = "binary", make_requests(model_name, input_name, outputs, "binary", "127.0.0.1",
                                                        server.port, inputs)
            else:
                payload, reqs = "raw", make_grpc_requests(model_name, input_name, outputs, inputs)
            for c in concurrencies:
                cpu0 = server.cpu_seconds()
                r, first = run_cell(protocol, server.port, reqs, c, args)
                cpu1 = server.cpu_seconds()
                if first is not None:  # the fixed answer must at least be a well-formed one of the same outputs
                    got = decode_grpc_answer(first[1]) if protocol == "grpc" else decode_http_answer(*first[1], payload)
                    if list(got) != outputs:
                        raise SystemExit(f"{protocol} floor answered outputs {list(got)}, expected {outputs}")
                answered = r["answered"]  # warm-up included, as the server's CPU seconds are
                row = {"protocol": protocol, "payload": payload, "concurrency": c, **r,
                       "server_cpu_us_per_request": (cpu1 - cpu0) / answered * 1e6 if answered else None}
                rows.append(row)
                print(f"floor {protocol:>4} c={c:<3} {r['inferences_per_s']:8.0f}/s p50 {r['p50_ms'] or 0:6.2f} ms "
                      f"cpu/request server {row['server_cpu_us_per_request'] or 0:4.0f}us "
                      f"client {r['client_cpu_us_per_inference'] or 0:4.0f}us  errors {sum(r['errors'].values())}",
                      flush=True)
        finally:
            server.stop()
    return rows


def transport_bounds(floors: list[dict], ceiling: dict, rows: list[dict] | None = None) -> list[dict]:
    """Per protocol, the best a server on that transport could do on this core: at concurrency 16, one core's
    time per inference is at least the floor server's CPU, the load generator's CPU and onnxruntime's batch-16
    time per inference; at concurrency 1, a median of at least the floor's plus one batch-1 run. With
    perf_analyzer's cells in ``rows``, also the bound with its CPU per request as the load generator's."""
    b16 = ceiling["batch16_inferences_per_s"]
    out = []
    for protocol in dict.fromkeys(f["protocol"] for f in floors):
        cells = {f["concurrency"]: f for f in floors if f["protocol"] == protocol}
        hi, lo = cells.get(TARGET_CONCURRENCY), cells.get(LATENCY_CONCURRENCY)
        entry: dict[str, Any] = {"protocol": protocol, "ratio_c16": None, "ratio_c16_free_client": None,
                                 "ratio_c16_perf_analyzer": None, "p50_ms_c1": None}
        if hi and hi["server_cpu_us_per_request"] and hi["client_cpu_us_per_inference"]:
            server_s, client_s = hi["server_cpu_us_per_request"] * 1e-6, hi["client_cpu_us_per_inference"] * 1e-6
            entry["ratio_c16"] = 1 / (1 / b16 + server_s + client_s) / b16
            entry["ratio_c16_free_client"] = 1 / (1 / b16 + server_s) / b16
            pa = _cells(rows or [], "on", protocol, hi["payload"], "perf_analyzer").get(TARGET_CONCURRENCY)
            if pa and pa["client_cpu_us_per_inference"]:
                pa_s = pa["client_cpu_us_per_inference"] * 1e-6
                entry["ratio_c16_perf_analyzer"] = 1 / (1 / b16 + server_s + pa_s) / b16
        if lo and lo["p50_ms"] is not None:
            entry["p50_ms_c1"] = lo["p50_ms"] + ceiling["batch1_ms_per_run"]
        out.append(entry)
    return out


def floors_table(floors: list[dict], rows: list[dict], ceiling: dict) -> str:
    """The floors beside edgehal serve's cells (binary tensors, batching on) at the same concurrency."""
    head = ("| protocol | concurrency | floor requests/s | floor p50 ms | floor server CPU us/req "
            "| floor client CPU us/req | edgehal /s | edgehal server CPU us/inf | of which onnxruntime (batch 16) |")
    lines = ["transport floors (fixed answers, no model) beside edgehal serve, batching on:", "", head,
             "|" + "---|" * 9]
    ort_us = 1e6 / ceiling["batch16_inferences_per_s"]
    for f in floors:
        real = _cells(rows, "on", f["protocol"], f["payload"]).get(f["concurrency"])

        def v(x, fmt):
            return format(x, fmt) if x is not None else "-"
        lines.append(f"| {f['protocol']} | {f['concurrency']} | {f['inferences_per_s']:.0f} | {v(f['p50_ms'], '.2f')} "
                     f"| {v(f['server_cpu_us_per_request'], '.0f')} | {v(f['client_cpu_us_per_inference'], '.0f')} "
                     f"| {v(real and real['inferences_per_s'], '.0f')} "
                     f"| {v(real and real['server_cpu_us_per_inference'], '.0f')} | >= {ort_us:.0f} |")
    return "\n".join(lines)


def bounds_table(bounds: list[dict]) -> str:
    head = (f"| protocol | best c={TARGET_CONCURRENCY} share of ORT batch 16 on this transport (target >= "
            f"{TARGET_RATIO}) | the same with perf_analyzer's CPU per request as the load generator's "
            f"| the same with a load generator that costs nothing "
            f"| best c={LATENCY_CONCURRENCY} p50 ms (target < {TARGET_P50_MS:g}) |")
    lines = [head, "|" + "---|" * 5]

    def v(x, fmt):
        return format(x, fmt) if x is not None else "-"
    for b in bounds:
        lines.append(f"| {b['protocol']} | {v(b['ratio_c16'], '.2f')} | {v(b.get('ratio_c16_perf_analyzer'), '.2f')} "
                     f"| {v(b['ratio_c16_free_client'], '.2f')} "
                     f"| {v(b['p50_ms_c1'], '.2f')} |")
    return "\n".join(lines)


def check_first_answer(first: tuple[int, Any] | None, protocol: str, payload: str, concurrency: int,
                       expected: list[dict[str, np.ndarray]], outputs: list[str]) -> None:
    """Stop the script when a cell's first good answer is not what onnxruntime in this process gives."""
    if first is None:
        return  # no good answer at all: the errors column says so
    index, answer = first
    where = f"{protocol} {payload} concurrency {concurrency}, input {index}"
    try:
        got = decode_grpc_answer(answer) if protocol == "grpc" else decode_http_answer(*answer, payload)
    except Exception as exc:  # noqa: BLE001 - any undecodable answer is the same failure
        raise SystemExit(f"{where}: the answer cannot be decoded: {exc}") from None
    problem = answer_problem(got, expected[index], outputs)
    if problem is not None:
        raise SystemExit(f"{where}: wrong answer: {problem}")


# ---------------------------------------------------------------------------
# Reporting


def repo_relative(path: Path) -> str:
    """``path`` relative to the repository when it is inside it, else as it is."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _cells(rows: list[dict], batching: str, protocol: str, payload: str, generator: str = "python") -> dict[int, dict]:
    return {r["concurrency"]: r for r in rows
            if (r["batching"], r["protocol"], r["payload"], r.get("generator", "python"))
            == (batching, protocol, payload, generator)}


def _generators(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r.get("generator", "python") for r in rows))


# The cells the targets are about: binary tensors on each protocol.
TARGET_SERIES = (("http", "binary"), ("grpc", "raw"))


def evaluate_targets(rows: list[dict], ceiling: dict) -> list[dict]:
    """PASS/FAIL of each protocol (binary tensors) against the targets, per batching mode.

    A check is None when its cell was not measured; a cell with errors fails its checks.
    ``pass`` is None unless every check was measured.
    """
    b16 = ceiling["batch16_inferences_per_s"]
    out = []
    for batching, generator, (protocol, payload) in itertools.product(
            dict.fromkeys(r["batching"] for r in rows), _generators(rows), TARGET_SERIES):
        cells = _cells(rows, batching, protocol, payload, generator)
        if not cells:
            continue
        hi, lo = cells.get(TARGET_CONCURRENCY), cells.get(LATENCY_CONCURRENCY)

        def check(cell: dict | None, value: float | None, ok: Callable[[float], bool]) -> dict:
            if cell is None or value is None:
                return {"value": None, "pass": None}
            return {"value": value, "pass": bool(ok(value)) and not sum(cell["errors"].values())}

        ratio = hi["inferences_per_s"] / b16 if hi else None
        checks = {
            "throughput_ratio_c16": check(hi, ratio, lambda v: v >= TARGET_RATIO)
            | {"aim_met": ratio is not None and ratio >= AIM_RATIO},
            "p99_ms_c16": check(hi, hi and hi["p99_ms"], lambda v: v < TARGET_P99_MS),
            "p50_ms_c1": check(lo, lo and lo["p50_ms"], lambda v: v < TARGET_P50_MS),
        }
        verdicts = [c["pass"] for c in checks.values()]
        out.append({"batching": batching, "generator": generator, "protocol": protocol, "payload": payload,
                    **checks,
                    "pass": None if None in verdicts else all(verdicts)})
    return out


def _verdict(v: bool | None) -> str:
    return "not measured" if v is None else "PASS" if v else "FAIL"


def targets_table(targets: list[dict]) -> str:
    """The targets, one line per batching mode and protocol."""
    head = (f"| batching | load generator | protocol | c={TARGET_CONCURRENCY} inferences/s / ORT batch 16 (>= {TARGET_RATIO}, "
            f"aim {AIM_RATIO}) | c={TARGET_CONCURRENCY} p99 (< {TARGET_P99_MS:g} ms) "
            f"| c={LATENCY_CONCURRENCY} p50 (< {TARGET_P50_MS:g} ms) | result |")
    lines = [head, "|" + "---|" * 7]

    def cell(c: dict, fmt: str) -> str:
        return "-" if c["value"] is None else f"{format(c['value'], fmt)} {_verdict(c['pass'])}"

    for t in targets:
        lines.append(f"| {t['batching']} | {t.get('generator', 'python')} | {t['protocol']} {t['payload']} "
                     f"| {cell(t['throughput_ratio_c16'], '.3f')} "
                     f"| {cell(t['p99_ms_c16'], '.2f')} | {cell(t['p50_ms_c1'], '.3f')} "
                     f"| {_verdict(t['pass'])} |")
    return "\n".join(lines)


def side_by_side(rows: list[dict], ceiling: dict) -> str:
    """Per batching mode and concurrency: HTTP (binary) and gRPC, each with its ratio to ORT at batch 16."""
    b16 = ceiling["batch16_inferences_per_s"]
    head = ("| batching | load generator | concurrency | HTTP binary /s | x | p50 ms | p99 ms | gRPC /s | x | p50 ms "
            "| p99 ms | gRPC / HTTP |")
    lines = [f"onnxruntime in-process, batch 16: {b16:.0f} inferences/s (x = share of it)", "", head,
             "|" + "---|" * 12]

    def f(v, fmt):
        return format(v, fmt) if v is not None else "-"

    for batching, generator in itertools.product(dict.fromkeys(r["batching"] for r in rows), _generators(rows)):
        http = _cells(rows, batching, "http", "binary", generator)
        grpc = _cells(rows, batching, "grpc", "raw", generator)
        for c in sorted(set(http) | set(grpc)):
            cols = []
            for r in (http.get(c), grpc.get(c)):
                cols += (["-"] * 4 if r is None else
                         [f(r["inferences_per_s"], ".0f"), f(r["inferences_per_s"] / b16, ".2f"),
                          f(r["p50_ms"], ".2f"), f(r["p99_ms"], ".2f")])
            h, g = http.get(c), grpc.get(c)
            ratio = g["inferences_per_s"] / h["inferences_per_s"] if h and g and h["inferences_per_s"] else None
            lines.append(f"| {batching} | {generator} | {c} | " + " | ".join(cols) + f" | {f(ratio, '.2f')} |")
    return "\n".join(lines)


def format_row(r: dict) -> str:
    def ms(v):
        return f"{v:7.2f}" if v is not None else "      -"

    def num(v, fmt):
        return format(v, fmt) if v is not None else "-"
    errs = sum(r["errors"].values())
    generator = "" if r.get("generator", "python") == "python" else " (perf_analyzer)"
    return (f"{r['batching']:>3} {r['protocol']:>4} {r['payload']:>6}{generator} c={r['concurrency']:<3} "
            f"{r['inferences_per_s']:8.0f}/s "
            f"p50 {ms(r['p50_ms'])} p90 {ms(r['p90_ms'])} p99 {ms(r['p99_ms'])} ms  "
            f"batch {num(r['mean_batch'], '5.1f')}  cpu/inf server {num(r['server_cpu_us_per_inference'], '4.0f')}us "
            f"client {num(r['client_cpu_us_per_inference'], '4.0f')}us  errors {errs}")


def table(rows: list[dict]) -> str:
    head = ("| batching | load generator | protocol | payload | concurrency | inferences/s | p50 ms | p90 ms | p99 ms "
            "| mean batch | server CPU us/inf | client CPU us/inf | errors |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        def f(v, fmt):
            return format(v, fmt) if v is not None else "-"
        lines.append(f"| {r['batching']} | {r.get('generator', 'python')} | {r['protocol']} | {r['payload']} "
                     f"| {r['concurrency']} "
                     f"| {r['inferences_per_s']:.0f} "
                     f"| {f(r['p50_ms'], '.2f')} | {f(r['p90_ms'], '.2f')} | {f(r['p99_ms'], '.2f')} "
                     f"| {f(r['mean_batch'], '.1f')} | {f(r['server_cpu_us_per_inference'], '.0f')} "
                     f"| {f(r['client_cpu_us_per_inference'], '.0f')} | {sum(r['errors'].values())} |")
    return "\n".join(lines)


SERIES_STYLE = {("http", "binary", "python"): ("C0", "HTTP binary"), ("http", "json", "python"): ("C2", "HTTP JSON"),
                ("grpc", "raw", "python"): ("C1", "gRPC raw"),
                ("http", "binary", "perf_analyzer"): ("C3", "HTTP binary, perf_analyzer"),
                ("grpc", "raw", "perf_analyzer"): ("C4", "gRPC raw, perf_analyzer")}


def plot(result: dict, path: Path) -> None:
    """Throughput against concurrency per protocol, with ORT's batch-16 ceiling and the 0.6x target; p99
    against concurrency with the 15 ms target. Batching on solid, off dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from edgehal.fileio import atomic_write_with

    rows, b16 = result["rows"], result["ceiling"]["batch16_inferences_per_s"]
    fig = Figure(figsize=(11, 5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    tput, p99 = fig.subplots(1, 2)
    concurrencies = sorted({r["concurrency"] for r in rows})
    for (protocol, payload, generator), (color, label) in SERIES_STYLE.items():
        for batching, style in (("on", "-"), ("off", "--")):
            cells = _cells(rows, batching, protocol, payload, generator)
            if not cells:
                continue
            cs = sorted(cells)
            name = f"{label}, batching {batching}"
            tput.plot(cs, [cells[c]["inferences_per_s"] for c in cs], style, color=color, marker="o", label=name)
            p99.plot(cs, [cells[c]["p99_ms"] if cells[c]["p99_ms"] is not None else np.nan for c in cs], style,
                     color=color, marker="o")
    for b in result.get("transport_bounds", []):
        if b["ratio_c16"] is not None:  # what a server on that transport could reach at best (transport_floor.py)
            color, label = SERIES_STYLE[("http", "binary", "python") if b["protocol"] == "http"
                                        else ("grpc", "raw", "python")]
            tput.plot([TARGET_CONCURRENCY], [b["ratio_c16"] * b16], "*", color=color, markersize=12,
                      label=f"{label.split()[0]}: best on its transport (floor + onnxruntime)")
    series = tput.get_legend_handles_labels()
    refs = [tput.axhline(b16, color="black", lw=1, label=f"onnxruntime in-process, batch 16 ({b16:.0f}/s)"),
            tput.axhline(TARGET_RATIO * b16, color="black", lw=1, ls=":", label=f"{TARGET_RATIO}x of it (target)")]
    tput.legend(handles=refs, fontsize=7, loc="lower right")
    tput.set(xlabel="concurrency (requests in flight)", ylabel="inferences/s", title="Throughput", ylim=(0, None))
    line = p99.axhline(TARGET_P99_MS, color="red", lw=1, ls=":",
                       label=f"{TARGET_P99_MS:g} ms (target at concurrency {TARGET_CONCURRENCY})")
    p99.legend(handles=[line], fontsize=7, loc="upper left")
    p99.set(xlabel="concurrency (requests in flight)", ylabel="p99 latency (ms)", title="p99 latency", yscale="log")
    for ax in (tput, p99):
        ax.set_xscale("log", base=2)
        ax.set_xticks(concurrencies, [str(c) for c in concurrencies])
        ax.tick_params(axis="x", which="minor", bottom=False)
        ax.grid(alpha=0.3)
    fig.legend(*series, loc="outside lower center", ncols=3, fontsize=8)
    pin = f"core {result['pin_core']}" if result["pin_core"] is not None else "no pinning"
    fig.suptitle(f"edgehal serve, closed loop, batch-1 requests ({result['cpu']}, {pin})", fontsize=10)
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))


def _loop_factory():
    """uvloop when installed: the load generator shares the core, so it should cost little."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _versions() -> dict:
    """Versions of what the numbers depend on (from the installed distributions; none is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("torch", "onnxruntime", "grpcio", "tritonclient", "protobuf", "numpy", "aiohttp", "uvloop",
                 "orjson", "edgehal"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


if __name__ == "__main__":
    sys.exit(main())
