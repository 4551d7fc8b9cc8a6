"""OnnxRuntimeRunner: device, precision and threads as bench reads them; device timing on a GPU."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest

from edgehal.errors import EdgehalError
from edgehal.runtime.onnxruntime import OnnxRuntimeRunner

# torch's TorchScript exporter (dynamo=False) warns that it is legacy.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _linear_onnx(path: Path) -> Path:
    """A plain ONNX model (no edgehal metadata): ``y = Linear(8, 4)(x)`` with a dynamic batch."""
    import torch

    buf = io.BytesIO()
    torch.onnx.export(torch.nn.Linear(8, 4).eval(), torch.zeros(1, 8), buf, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, opset_version=17, dynamo=False)
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture(scope="module")
def plain_onnx(tmp_path_factory) -> Path:
    return _linear_onnx(tmp_path_factory.mktemp("ort") / "linear.onnx")


def test_a_tensor_numpy_cannot_hold_is_refused_by_name(tmp_path):
    """onnxruntime runs FLOAT8E4M3FN; the runner feeds and returns numpy arrays, which cannot hold it."""
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT8E4M3FN, ["N", 4]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "fp8", io[:1], io[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    with OnnxRuntimeRunner(model.SerializeToString(), providers=["cpu"]) as runner:
        with pytest.raises(EdgehalError, match=r"input 'x': dtype FLOAT8E4M3FN \| has no numpy type that edgehal "
                                               r"runs or serves"):
            runner.input_specs()
        with pytest.raises(EdgehalError, match=r"output 'y': dtype FLOAT8E4M3FN"):
            runner.output_specs()


def test_cpu_runner_reports_device_threads_and_no_device_timer(plain_onnx):
    with OnnxRuntimeRunner(plain_onnx, providers=["cpu"], threads=2) as r:
        assert r.device == "cpu" and r.threads == 2 and r.providers[0] == "CPUExecutionProvider"
        assert r.device_timer({"x": np.ones((4, 8), np.float32)}) is None
    assert OnnxRuntimeRunner(plain_onnx).threads is None


def test_precision_comes_from_the_edgehal_metadata(plain_onnx, mnist_exports):
    with OnnxRuntimeRunner(plain_onnx, providers=["cpu"]) as r:
        assert r.precision == "fp32"  # no metadata: what ONNX computes in unless told otherwise
    with OnnxRuntimeRunner(mnist_exports["keep"], providers=["cpu"]) as r:
        assert r.precision == "fp32"
    with OnnxRuntimeRunner(mnist_exports["int8"], providers=["cpu"]) as r:
        assert r.precision == "int8"


def test_device_and_precision_need_an_active_runner(plain_onnx):
    r = OnnxRuntimeRunner(plain_onnx, providers=["cpu"])
    for name in ("device", "precision"):
        with pytest.raises(EdgehalError, match="is not active"):
            getattr(r, name)


def test_unchecked_infer_gives_the_checked_result(plain_onnx):
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    with OnnxRuntimeRunner(plain_onnx, providers=["cpu"], threads=1) as r:
        np.testing.assert_array_equal(r.infer({"x": x})["y"], r.infer({"x": x}, check=False)["y"])
        with pytest.raises(EdgehalError, match="has dtype float64"):
            r.infer({"x": x.astype(np.float64)})


def _ort_cuda_available() -> bool:
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers() and _torch_cuda()


def _torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _ort_cuda_available(), reason="needs onnxruntime-gpu with CUDAExecutionProvider and a GPU")
def test_device_timer_runs_with_iobinding_on_a_gpu(plain_onnx):  # pragma: no cover - GPU only
    from edgehal.bench.options import BenchOptions
    from edgehal.bench.timing import measure

    with OnnxRuntimeRunner(plain_onnx, providers=["cuda"]) as r:
        assert r.device == "cuda:0"
        timer = r.device_timer({"x": np.ones((4, 8), np.float32)}, outputs=["y"])
        assert timer is not None and timer() > 0
        options = BenchOptions(warmup_runs=2, warmup_seconds=0.0, min_runs=6, min_seconds=0.0,
                               max_preemptions_per_s=None)
        m = measure(timed_call=timer, options=options, batch_size=4)
        assert m.stats.runs >= 6 and m.stats.median_ms > 0
        with pytest.raises(EdgehalError, match="has dtype float64"):
            r.device_timer({"x": np.ones((4, 8), np.float64)})
