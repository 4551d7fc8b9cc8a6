"""Fixtures for the bench tests: tiny ONNX exports with edgehal metadata, and results built by hand.

Real runners only: onnxruntime on tiny ONNX exports (kept and pruned heads)
built here. Where exact numbers matter, results are built from scripted
latencies instead, so no assertion depends on how fast this machine is.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from edgehal.bench.options import BenchOptions
from edgehal.bench.results import ArtifactInfo, BenchReport, BenchResult
from edgehal.bench.timing import LatencyStats, Stability
from edgehal.runtime.onnxruntime import OnnxRuntimeRunner

MS = 1_000_000


class FakeClock:
    """A clock the test advances by hand, for the timing code's ``clock`` argument (ns)."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def _export(path: Path, aux: str, *, dynamic: bool = True, source: str = "feedbeef") -> Path:
    import onnx
    import torch

    from edgehal.artifact import ArtifactMetadata, write_onnx_metadata
    from edgehal.manifest import Head, HeadManifest, Preprocessing

    torch.manual_seed(0)

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.main, self.aux = torch.nn.Linear(16, 32), torch.nn.Linear(32, 10), torch.nn.Linear(32, 2)

        def forward(self, x):
            h = torch.relu(self.body(x))
            return (self.main(h), self.aux(h)) if aux == "keep" else self.main(h)

    names = ["main", "aux_case1"] if aux == "keep" else ["main"]
    buf = io.BytesIO()
    axes = {n: {0: "N"} for n in ["x", *names]} if dynamic else None
    torch.onnx.export(Tiny().eval(), torch.zeros(1, 16), buf, input_names=["x"], output_names=names,
                      dynamic_axes=axes, opset_version=17, dynamo=False)
    model = onnx.load_from_string(buf.getvalue())
    full = HeadManifest("tiny", "x", (16,), (
        Head("main", "main", 0, class_names=tuple(str(i) for i in range(10))),
        Head("aux_case1", "aux", 1, class_names=("ge5", "lt5"), parent_map=(1,) * 5 + (0,) * 5, feeds_main=False)))
    write_onnx_metadata(model, ArtifactMetadata(full.select(aux), full, Preprocessing(layout="NC", input_shape=(16,)),
                                                aux, "fp32", source))
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def onnx_pair(tmp_path_factory):
    """A tiny model exported with its auxiliary head kept, and pruned."""
    d = tmp_path_factory.mktemp("onnx")
    return _export(d / "tiny_keep.onnx", "keep"), _export(d / "tiny_prune.onnx", "prune")


@pytest.fixture(scope="module")
def static_onnx(tmp_path_factory):
    """The pruned export with its batch fixed to 1."""
    return _export(tmp_path_factory.mktemp("static") / "tiny_b1.onnx", "prune", dynamic=False)


@pytest.fixture(scope="session")
def ort_opener():
    """The onnxruntime CPU runner, as the loader builds it for ``ort-cpu``."""
    def opener(path, *, backend=None, threads=None, device=None):
        assert backend in (None, "ort-cpu")
        return OnnxRuntimeRunner(path, providers=["cpu"], threads=threads)

    return opener


@pytest.fixture(scope="session")
def make_result():
    """A :class:`BenchResult` of an ONNX export from scripted latencies (ms), exact to the digit."""
    def make(name, aux, batch, lat_ms, *, backend="ort-cpu", family="fam", precision="fp32", mode="e2e",
             stable=True, busy=False, power=None) -> BenchResult:
        lat = [int(v * MS) for v in lat_ms]
        stats = LatencyStats.from_ns(lat, wall_ns=sum(lat), batch_size=batch)
        spread = 0.02 if stable else 0.4
        st = Stability((stats.median_ms,) * 3, (stats.throughput_per_s,) * 3, spread, spread, 0.1,
                       stable and not busy, 3, stable, 150.0 if busy else 0.5, busy)
        art = ArtifactInfo(f"/x/{name}", name, "onnx", aux, precision, "mnist_hal", family)
        return BenchResult(art, backend, "cpu", batch, mode, stats, st, "perf_counter_ns",
                           {"requested": 1, "runner": 1}, power)

    return make


@pytest.fixture()
def report(make_result) -> BenchReport:
    """Kept and pruned exports of one checkpoint at batch 1 and 64, one unstable, one busy."""
    results = (
        make_result("m_keep.onnx", "keep", 1, [0.2, 0.21, 0.25, 0.3]),
        make_result("m_keep.onnx", "keep", 64, [2.0, 2.1, 2.2, 9.0]),
        make_result("m_prune.onnx", "prune", 1, [0.1, 0.1, 0.12, 0.2], stable=False),
        make_result("m_prune.onnx", "prune", 64, [1.0, 1.1, 1.1, 1.5], busy=True),
        # Another checkpoint's prune export: must not pair with m_keep.
        make_result("other_prune.onnx", "prune", 1, [0.05] * 4, family="other"),
    )
    machine = {"cpu_model": "Test CPU", "usable_cores": 2, "gpu_name": None, "load_average_1_5_15": [0.1, 0.1, 0.1]}
    return BenchReport(BenchOptions(batch_sizes=(1, 64), note="busy machine"), machine, results,
                       created="2025-01-01T00:00:00+00:00")
