"""The lazy ``import tensorrt``: every TensorRT module imports without it; a call needing it is one error.
And the one place that decides what differs between TensorRT 10 and 11, against the fake of each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgehal.errors import EdgehalError
from edgehal.export.tensorrt.library import (
    has_weak_typing,
    import_tensorrt,
    make_logger,
    network_flags,
    tensorrt_available,
    tensorrt_major,
    version_major,
)


def test_tensorrt_modules_import_without_tensorrt():
    code = ("import sys; sys.modules['tensorrt'] = None\n"
            "import edgehal.export.tensorrt, edgehal.runtime.tensorrt, edgehal.export.inspect, "
            "edgehal.export.triton, edgehal.export.graph, edgehal.export.tensorrt.plan, "
            "edgehal.export.tensorrt.ops, edgehal.export.tensorrt.profile, edgehal.export.tensorrt.provenance, "
            "edgehal.export.tensorrt.library, edgehal.export.tensorrt.build, edgehal.export.tensorrt.progress\n"
            "from edgehal.runtime.tensorrt import TensorRTRunner\n"
            "r = TensorRTRunner('missing.plan', device_index=0)\n"
            "print('ok', r.manifest)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok None"


def test_import_tensorrt_error_without_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EdgehalError, match=r"^TensorRT \| is not installed. Note: install edgehal\[tensorrt\] on a "
                                           "machine with an NVIDIA GPU"):
        import_tensorrt()


def test_availability_is_asked_without_importing(monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    assert tensorrt_available() == (__import__("importlib").util.find_spec("tensorrt") is not None)
    assert "tensorrt" not in sys.modules


# -- the supported majors: one place decides what differs ------------------------------

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fakes"))
import fake_tensorrt  # noqa: E402


@pytest.fixture(params=fake_tensorrt.MAJORS, ids=lambda m: f"trt{m}")
def trt(monkeypatch, request):
    fake_tensorrt.install(monkeypatch, request.param)
    return import_tensorrt()


def test_network_flags_are_strongly_typed_on_both_majors(trt):
    major = tensorrt_major(trt)
    builder = trt.Builder(make_logger(trt))
    if major == 10:
        assert has_weak_typing(trt)
        assert network_flags(trt) == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 2
        assert network_flags(trt, strongly_typed=False) == 0
    else:  # always strongly typed; the deprecated flag (bit 0 in 11, EXPLICIT_BATCH's in 10) is not passed
        assert not has_weak_typing(trt)
        assert network_flags(trt) == 0
        with pytest.raises(EdgehalError, match=r"has no weakly typed networks"):
            network_flags(trt, strongly_typed=False)
    network = builder.create_network(network_flags(trt))
    assert network is not None and network._strongly_typed


def test_an_unsupported_major_is_one_error(monkeypatch, trt):
    monkeypatch.setattr(fake_tensorrt, "__version__", "12.0.0.1")
    with pytest.raises(EdgehalError, match=r"^TensorRT \| version 12.0.0.1 is not supported. Note: TensorRT 10 or 11"):
        tensorrt_major(trt)
    assert version_major("10.16.1.11") == 10 and version_major("11.4") == 11 and version_major("dev") is None


def test_the_logger_echoes_warnings_and_errors_and_keeps_them(trt):
    shown: list[str] = []
    logger = make_logger(trt, echo=shown.append)
    logger.log(trt.Logger.INFO, "chatter")
    logger.log(trt.Logger.WARNING, "slow layer\n")
    logger.log(trt.Logger.ERROR, "no implementation")
    assert shown == ["TensorRT warning: slow layer", "TensorRT error: no implementation"]
    assert logger.last_error() == "no implementation" and logger.errors() == ["no implementation"]
    quiet = make_logger(trt)
    quiet.log(trt.Logger.WARNING, "kept")
    assert quiet.last_error() == "kept"
