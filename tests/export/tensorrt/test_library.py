"""The lazy ``import tensorrt``: every TensorRT module imports without it; a call needing it is one error."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edgehal.errors import EdgehalError
from edgehal.export.tensorrt.library import import_tensorrt, tensorrt_available


def test_tensorrt_modules_import_without_tensorrt():
    code = ("import sys; sys.modules['tensorrt'] = None\n"
            "import edgehal.export.tensorrt, edgehal.runtime.tensorrt, edgehal.export.inspect, "
            "edgehal.export.triton, edgehal.export.graph, edgehal.export.tensorrt.plan, "
            "edgehal.export.tensorrt.ops, edgehal.export.tensorrt.profile, edgehal.export.tensorrt.provenance, "
            "edgehal.export.tensorrt.library, edgehal.export.tensorrt.build\n"
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
