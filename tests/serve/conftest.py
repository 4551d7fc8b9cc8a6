"""Fixtures for the server tests: a tiny HAL-shaped ONNX model and a real server process.

The server runs as a subprocess (``python -m edgehal.cli serve``) on
127.0.0.1 with ``--port 0``; the port is read from its log line, so there is
no race for a free port. Everything the tests talk to is the real thing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import warnings
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def build_tiny_hal_onnx(path: Path, *, seed: int = 0) -> Path:
    """A small CNN on 1x28x28 with a main head ``logits`` (10 digits) fed by an aux
    head ``aux_case1`` (>=5 / <5), exported with a dynamic batch axis and edgehal metadata."""
    import onnx
    import torch
    from torch import nn

    from edgehal.artifact import ArtifactMetadata, write_onnx_metadata
    from edgehal.hierarchy import DIGIT_CLASSES, aux_head_from_case, get_case
    from edgehal.manifest import Head, HeadManifest
    from edgehal.manifest import Preprocessing

    torch.manual_seed(seed)

    class TinyHal(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 8, 3, stride=2), nn.ReLU(),
                nn.AdaptiveAvgPool2d(2), nn.Flatten())
            self.aux = nn.Linear(32, 2)
            self.main = nn.Linear(32 + 2, 10)

        def forward(self, x):
            h = self.features(x)
            a = self.aux(h)
            return self.main(torch.cat([h, a], dim=1)), a

    model = TinyHal().eval()
    tmp = path.with_suffix(".raw.onnx")
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated; dynamo=False is on purpose
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, torch.zeros(1, 1, 28, 28), str(tmp), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits", "aux_case1"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}, "aux_case1": {0: "batch"}})
    manifest = HeadManifest(
        model="tiny_hal_mnist", input_name="input", input_shape=(1, 28, 28),
        heads=(Head(name="logits", kind="main", level=0, class_names=DIGIT_CLASSES),
               aux_head_from_case(get_case("mnist", "case1"))))
    meta = ArtifactMetadata(manifest=manifest, full_manifest=manifest,
                        preprocessing=Preprocessing(layout="NCHW", input_shape=(1, 28, 28), mean=(MNIST_MEAN,),
                                                    std=(MNIST_STD,), scale=1 / 255),
                        aux="keep", precision="fp32")
    proto = onnx.load(str(tmp))
    write_onnx_metadata(proto, meta)
    onnx.save(proto, str(path))
    tmp.unlink()
    return path


def build_slow_onnx(path: Path, *, layers: int = 120, width: int = 1024) -> Path:
    """A deliberately slow model (a chain of dense layers sharing one weight) so a request
    stays in the server long enough to fill a queue or to be in flight at SIGTERM."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(
        (np.random.default_rng(0).standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), "w")
    nodes, prev = [], "input"
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [prev, "w"], [f"m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"t{i}"]))
        prev = f"t{i}"
    nodes.append(helper.make_node("Identity", [prev], ["output"]))
    graph = helper.make_graph(nodes, "slow", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", width])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def free_port() -> int:
    """A loopback port free now (gRPC needs one chosen before the server starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def slow_model_path(tmp_path_factory) -> Path:
    return build_slow_onnx(tmp_path_factory.mktemp("slow_model") / "slow.onnx")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("serve_models")
    build_tiny_hal_onnx(d / "hal_mnist.onnx")
    return d


@pytest.fixture(scope="session")
def model_path(model_dir) -> Path:
    return model_dir / "hal_mnist.onnx"


@pytest.fixture(scope="session")
def ort_session(model_path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])


def mnist_images(n: int) -> np.ndarray | None:
    """The first ``n`` MNIST test images, normalised, NCHW float32; None without the data."""
    root = Path(os.environ.get("EDGEHAL_DATA", REPO.parent / "shared" / "data"))
    f = root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    if not f.is_file():
        return None
    with open(f, "rb") as fh:
        header = fh.read(16)
        assert int.from_bytes(header[:4], "big") == 2051, f"{f} is not an IDX image file"
        raw = np.frombuffer(fh.read(n * 784), dtype=np.uint8)
    x = raw.reshape(n, 1, 28, 28).astype(np.float32) / 255.0
    return ((x - MNIST_MEAN) / MNIST_STD).astype(np.float32)


# ---------------------------------------------------------------------------
# The server process


@dataclass
class Server:
    proc: subprocess.Popen
    host: str
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, bytes]:
        return http_call("GET", self.base + path)

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        return http_call("POST", self.base + path, body, headers)

    def metrics(self) -> str:
        status, body = self.get("/metrics")
        assert status == 200
        return body.decode()


def http_call(method: str, url: str, body: bytes | None = None,
              headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextlib.contextmanager
def run_server(models: list[Path], log_dir: Path, *args: str, ready_timeout: float = 60) -> Iterator[Server]:
    """Start ``edgehal serve`` on a free port, wait until ready, stop it with SIGTERM."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"server-{time.monotonic_ns()}.log"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "edgehal.cli", "serve", *map(str, models), "--host", "127.0.0.1",
           "--port", "0", "--grpc-port", "0", "--threads", "1", *args]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    server = None
    try:
        deadline = time.monotonic() + ready_timeout
        while server is None:
            m = re.search(r"listening on http://([\d.]+):(\d+)", log_path.read_text(errors="replace"))
            if m:
                server = Server(proc, m.group(1), int(m.group(2)), log_path)
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start (exit {proc.poll()}):\n{log_path.read_text()}")
            time.sleep(0.05)
        while True:
            try:
                status, _ = server.get("/v2/health/ready")
            except OSError:
                status = 0
            if status == 200:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server never became ready (exit {proc.poll()}):\n{server.log()}")
            time.sleep(0.05)
        yield server
    finally:
        stop_process(proc, timeout=20)


def stop_process(proc: subprocess.Popen, *, timeout: float) -> None:
    """SIGTERM a server still running (it drains and exits), then SIGKILL it after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def serve_in_process(models: list, *, warm: bool = True) -> Iterator[str]:
    """The app ``edgehal serve`` runs, over already loaded models, listening on 127.0.0.1 (a free
    port) from an event loop in a thread of this process; yields ``host:port``.

    For models whose backend is faked in this process (TensorRT), which a server subprocess would
    not see. ``warm`` warms every model up first, as the server does before it turns ready. The
    models are closed on the way out, as the server closes them.
    """
    import asyncio
    import threading

    from edgehal.serve.app import EXTENSIONS, SERVER_NAME, ServerOptions, start_site
    from edgehal.serve.dataplane import DataPlane

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="edgehal-test-server", daemon=True)
    thread.start()
    plane = DataPlane(models, server_name=SERVER_NAME, server_version="test", extensions=EXTENSIONS)

    def call(coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    site = None
    try:
        site, host, port = call(start_site(plane, ServerOptions(host="127.0.0.1", port=0)))
        if warm:
            call(plane.start())
        yield f"{host}:{port}"
    finally:
        if site is not None:
            call(site.cleanup())
        call(plane.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


@pytest.fixture(scope="session")
def server(model_path, tmp_path_factory) -> Iterator[Server]:
    """The shared server: the tiny HAL model, a small body limit, a short batching delay."""
    with run_server([model_path], tmp_path_factory.mktemp("server_logs"),
                    "--max-batch-size", "8", "--max-queue-delay-ms", "20",
                    "--max-request-bytes", str(1 << 20)) as s:
        yield s
        assert s.proc.poll() is None, f"server died during the tests:\n{s.log()}"


@pytest.fixture
def triton(server):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=server.url, network_timeout=30)
    yield client
    client.close()


def json_infer(inputs: list[dict], outputs: list[dict] | None = None, **extra) -> bytes:
    doc = {"inputs": inputs, **extra}
    if outputs is not None:
        doc["outputs"] = outputs
    return json.dumps(doc).encode()
