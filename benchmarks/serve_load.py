"""Closed-loop load on ``edgehal serve``: throughput and latency, with the in-process ceiling.

For each of dynamic batching on and off, the script starts ``edgehal serve``
on 127.0.0.1 (a free port), and for binary and JSON payloads at each
concurrency (default 1, 4, 16, 64) runs a closed loop: every client
connection sends a batch-1 request, waits for the answer, sends the next. A
cell stops after ``--duration`` seconds or ``--max-requests`` requests,
whichever comes first, after ``--warmup`` seconds that are not counted.
It reports inferences/s, p50/p90/p99 latency, the mean batch the server
formed (from its /metrics), and CPU microseconds per inference in the server
and in this load generator, which is where the time goes on a shared core.
The ceiling is onnxruntime in this process on the same model, at batch 1
and at batch 16, on the same core.

The load generator is a minimal asyncio HTTP/1.1 client with pre-encoded
requests so that it costs as little of the shared core as it can (a
tritonclient loop would measure the client). Only loopback is ever used.

The goal: server and load generator pinned to the same single core::

    python benchmarks/serve_load.py --pin-core 1

Quick check that it works (a few seconds)::

    python benchmarks/serve_load.py --pin-core 1 --duration 1 --warmup 0.2 --concurrency 1,16

``--model PATH`` serves an exported model (e.g. from ``edgehal export``); by
default an MNIST-sized CNN (two 3x3 conv layers, 32 and 64 channels, and two
dense layers: the classic PyTorch MNIST network, with a 2-way aux head
feeding the 10-way main head) is built into a temporary folder. Results go to
``benchmarks/results/serve_load-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


# ---------------------------------------------------------------------------
# The model


def build_mnist_cnn(path: Path) -> Path:
    """An MNIST-sized HAL CNN with edgehal metadata (input ``input``, outputs ``logits``, ``aux_case1``)."""
    import onnx
    import torch
    from torch import nn

    from edgehal.artifact import ArtifactMetadata, write_onnx_metadata
    from edgehal.hierarchy import DIGIT_CLASSES, aux_head_from_case, get_case
    from edgehal.manifest import Head, HeadManifest
    from edgehal.manifest import Preprocessing

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


# ---------------------------------------------------------------------------
# Requests


def make_requests(model: str, input_name: str, dims: tuple[int, ...], outputs: list[str], payload: str,
                  host: str, port: int, n: int = 32) -> list[bytes]:
    """``n`` distinct pre-encoded HTTP requests, batch 1, asking for every output."""
    rng = np.random.default_rng(1)
    reqs = []
    for _ in range(n):
        x = rng.standard_normal((1, *dims)).astype(np.float32)
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


async def closed_loop(host: str, port: int, requests: list[bytes], concurrency: int, warmup: float,
                      duration: float, max_requests: int) -> dict:
    loop = asyncio.get_running_loop()
    conns = [(await loop.create_connection(Connection, host, port))[1] for _ in range(concurrency)]
    latencies: list[float] = []
    errors: dict[int | str, int] = {}
    first_body: list[bytes] = []
    state = {"measuring": False, "stop": False, "count": 0}

    async def worker(conn: Connection, k: int) -> None:
        i = k
        perf = time.perf_counter
        while not state["stop"]:
            data = requests[i % len(requests)]
            i += concurrency
            t0 = perf()
            status, head, body = await conn.request(data)
            dt = perf() - t0
            if status != 200:
                errors[status] = errors.get(status, 0) + 1
                if len(errors) == 1 and sum(errors.values()) == 1:
                    print(f"  first error {status}: {body[:200]!r}", file=sys.stderr)
            elif not first_body:
                first_body.append((head, body))
            if state["measuring"]:
                latencies.append(dt)
                state["count"] += 1
                if state["count"] >= max_requests:
                    state["stop"] = True

    tasks = [loop.create_task(worker(c, k)) for k, c in enumerate(conns)]
    await asyncio.sleep(warmup)
    cpu0, t0 = time.process_time(), time.perf_counter()
    state["measuring"] = True
    deadline = t0 + duration
    while not state["stop"] and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    state["stop"] = True
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    done, stuck = await asyncio.wait(tasks, timeout=30)  # bounded even if the server stalls
    for t in done:
        if t.exception() is not None:
            errors["connection"] = errors.get("connection", 0) + 1
    for t in stuck:
        t.cancel()
        errors["timeout"] = errors.get("timeout", 0) + 1
    for c in conns:
        c.transport.close()
    lat = np.array(latencies) * 1e3
    n = len(latencies)
    return {
        "requests": n, "seconds": elapsed, "inferences_per_s": n / elapsed if elapsed else 0.0,
        "p50_ms": float(np.percentile(lat, 50)) if n else None,
        "p90_ms": float(np.percentile(lat, 90)) if n else None,
        "p99_ms": float(np.percentile(lat, 99)) if n else None,
        "errors": errors, "client_cpu_us_per_inference": cpu / n * 1e6 if n else None,
        "first_body": first_body[0] if first_body else None,
    }


def check_body(head: bytes, body: bytes, payload: str, outputs: list[str]) -> None:
    """The first good answer of a cell must decode to every output at batch 1."""
    if payload == "binary":
        m = re.search(rb"\r\ninference-header-content-length:\s*(\d+)", head)
        assert m, head
        n = int(m.group(1))
        doc = json.loads(body[:n])
        sizes = [o["parameters"]["binary_data_size"] for o in doc["outputs"]]
        assert len(body) == n + sum(sizes), (len(body), n, sizes)
    else:
        doc = json.loads(body)
    names = [o["name"] for o in doc["outputs"]]
    assert names == outputs, names
    assert all(o["shape"][0] == 1 for o in doc["outputs"]), doc


# ---------------------------------------------------------------------------
# The server


def pin_cmd(cmd: list[str], core: int | None) -> tuple[list[str], object]:
    if core is None:
        return cmd, None
    if shutil.which("taskset"):
        return ["taskset", "-c", str(core), *cmd], None
    return cmd, lambda: os.sched_setaffinity(0, {core})


class ServerProcess:
    def __init__(self, model: Path, args: list[str], core: int | None, log_dir: Path) -> None:
        cmd = [sys.executable, "-m", "edgehal.cli", "serve", str(model), "--host", "127.0.0.1", "--port", "0",
               "--threads", "1", *args]
        cmd, preexec = pin_cmd(cmd, core)
        self.log_path = log_dir / f"server-{time.monotonic_ns()}.log"
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                         preexec_fn=preexec)  # noqa: PLW1509 - only sets affinity
        self.port = self._wait_port()
        self._wait_ready()

    def _wait_port(self) -> int:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            m = re.search(r"listening on http://[\d.]+:(\d+)", self.log_path.read_text(errors="replace"))
            if m:
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

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def counters(self) -> tuple[float, float]:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            text = r.read().decode()

        def total(name: str) -> float:
            return sum(float(v) for v in re.findall(rf"^{name}{{[^}}]*}} (\S+)$", text, re.M))
        return total("edgehal_inferences_total"), total("edgehal_executions_total")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="ONNX model to serve. Default: build the MNIST-sized CNN.")
    ap.add_argument("--concurrency", default="1,4,16,64", help="Comma-separated. Default: 1,4,16,64.")
    ap.add_argument("--payloads", default="binary,json", help="binary and/or json. Default: binary,json.")
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
    ap.add_argument("--note", default="", help="Free text saved with the results, e.g. how busy the machine was.")
    ap.add_argument("--output", type=Path, default=None,
                    help="JSON results path. Default: benchmarks/results/serve_load-<time>.json.")
    args = ap.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    payloads = [p.strip() for p in args.payloads.split(",") if p.strip()]
    batchings = [b.strip() for b in args.batching.split(",") if b.strip()]
    for p in payloads:
        if p not in ("binary", "json"):
            ap.error(f"payload {p!r}: choose binary or json")
    for b in batchings:
        if b not in ("on", "off"):
            ap.error(f"batching {b!r}: choose on or off")

    if args.pin_core is not None:
        os.sched_setaffinity(0, {args.pin_core})
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    work = Path(tempfile.mkdtemp(prefix="edgehal-serve-load-"))
    try:
        model = args.model or build_mnist_cnn(work / "hal_mnist_bench.onnx")
        model_name = model.stem
        input_name, dims, outputs = model_io(model)
        load_before = os.getloadavg()
        print(f"model {model} input {input_name} {dims} outputs {outputs}; "
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
            server = ServerProcess(model, server_args + args.server_arg, args.pin_core, work)
            try:
                for payload in payloads:
                    reqs = make_requests(model_name, input_name, dims, outputs, payload, "127.0.0.1", server.port)
                    for c in concurrencies:
                        inf0, ex0 = server.counters()
                        cpu0 = server.cpu_seconds()
                        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                            r = runner.run(closed_loop("127.0.0.1", server.port, reqs, c, args.warmup,
                                                       args.duration, args.max_requests))
                        cpu1 = server.cpu_seconds()
                        inf1, ex1 = server.counters()
                        first = r.pop("first_body")
                        if first:
                            check_body(*first, payload, outputs)
                        total_inf = inf1 - inf0
                        row = {"batching": batching, "payload": payload, "concurrency": c, **r,
                               "mean_batch": total_inf / (ex1 - ex0) if ex1 > ex0 else None,
                               # includes the warm-up seconds, so slightly above the measured share
                               "server_cpu_us_per_inference": (cpu1 - cpu0) / total_inf * 1e6 if total_inf else None}
                        rows.append(row)
                        print(format_row(row), flush=True)
            finally:
                server.stop()
        load_after = os.getloadavg()
        print()
        print(table(rows))
        result = {
            "benchmark": "serve_load", "time": _dt.datetime.now().isoformat(timespec="seconds"), "note": args.note,
            "model": str(model), "model_built_by_script": args.model is None,
            "pin_core": args.pin_core, "host": platform.node(), "cpu": _cpu_name(), "cores": os.cpu_count(),
            "load_average_before": load_before, "load_average_after": load_after,
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "versions": _versions(), "ceiling": ceil, "rows": rows,
        }
        out = args.output or HERE / "results" / f"serve_load-{_dt.datetime.now():%Y%m%d-%H%M%S}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nsaved {out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def format_row(r: dict) -> str:
    def ms(v):
        return f"{v:7.2f}" if v is not None else "      -"

    def num(v, fmt):
        return format(v, fmt) if v is not None else "-"
    errs = sum(r["errors"].values())
    return (f"{r['batching']:>3} {r['payload']:>6} c={r['concurrency']:<3} {r['inferences_per_s']:8.0f}/s "
            f"p50 {ms(r['p50_ms'])} p90 {ms(r['p90_ms'])} p99 {ms(r['p99_ms'])} ms  "
            f"batch {num(r['mean_batch'], '5.1f')}  cpu/inf server {num(r['server_cpu_us_per_inference'], '4.0f')}us "
            f"client {num(r['client_cpu_us_per_inference'], '4.0f')}us  errors {errs}")


def table(rows: list[dict]) -> str:
    head = ("| batching | payload | concurrency | inferences/s | p50 ms | p90 ms | p99 ms | mean batch "
            "| server CPU us/inf | client CPU us/inf | errors |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        def f(v, fmt):
            return format(v, fmt) if v is not None else "-"
        lines.append(f"| {r['batching']} | {r['payload']} | {r['concurrency']} | {r['inferences_per_s']:.0f} "
                     f"| {f(r['p50_ms'], '.2f')} | {f(r['p90_ms'], '.2f')} | {f(r['p99_ms'], '.2f')} "
                     f"| {f(r['mean_batch'], '.1f')} | {f(r['server_cpu_us_per_inference'], '.0f')} "
                     f"| {f(r['client_cpu_us_per_inference'], '.0f')} | {sum(r['errors'].values())} |")
    return "\n".join(lines)


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
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("onnxruntime", "aiohttp", "uvloop", "orjson", "edgehal"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            pass
    return out


if __name__ == "__main__":
    sys.exit(main())
