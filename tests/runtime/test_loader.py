"""open_runner: the backend from the file type, onnxruntime providers for ONNX files only."""

from __future__ import annotations

import pytest

from edgehal.errors import EdgehalError
from edgehal.runtime.loader import open_runner
from edgehal.runtime.onnxruntime import OnnxRuntimeRunner


def test_providers_replace_the_backend_s_own(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"opened on activation only")
    assert open_runner(model).requested_providers == ["cpu"]
    assert open_runner(model, backend="ort-cuda").requested_providers == ["cuda"]
    every_available = open_runner(model, providers=())
    assert isinstance(every_available, OnnxRuntimeRunner) and every_available.requested_providers == []
    assert open_runner(model, providers=("cpu",), threads=2).threads == 2


def test_providers_are_refused_for_an_engine_or_a_checkpoint(tmp_path):
    for name in ("m.plan", "m.pt"):
        (tmp_path / name).write_bytes(b"\0")
        with pytest.raises(EdgehalError, match=rf"^execution providers \['cuda'\] \| apply to ONNX files, "
                                               rf"not to {name}"):
            open_runner(tmp_path / name, providers=["cuda"])
