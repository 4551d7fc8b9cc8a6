import numpy as np
import onnx
import pytest

from edgehal.errors import EdgehalError
from edgehal.artifact import read_artifact
from edgehal.export.onnx import ExportOptions, export_onnx
from edgehal.export.quantize import QuantizeOptions, quantize_int8


def test_int8_has_explicit_symmetric_qdq_and_metadata(mnist_exports):
    m = onnx.load(mnist_exports["int8"])
    ops = [n.op_type for n in m.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert read_artifact(mnist_exports["int8"]).require_metadata().precision == "int8"
    props = {p.key: p.value for p in m.metadata_props}
    assert '"per_channel": true' in props["edgehal.calibration"]
    # TensorRT needs zero points of 0 (symmetric)
    inits = {t.name: t for t in m.graph.initializer}
    for node in m.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in inits:
            assert not onnx.numpy_helper.to_array(inits[node.input[2]]).any()


@pytest.fixture()
def digits_onnx(digits_checkpoint, tmp_path):
    p = tmp_path / "d.onnx"
    export_onnx(digits_checkpoint, p, options=ExportOptions(), log=lambda _: None)
    return p


def test_calibration_from_npy_and_bad_shapes(digits_onnx, tmp_path):
    good = tmp_path / "calib.npy"
    np.save(good, (np.random.default_rng(0).random((32, 1, 8, 8)) * 255).astype(np.float32))
    out = tmp_path / "q.onnx"
    s = quantize_int8(digits_onnx, out, calib_data=good, options=QuantizeOptions(method="entropy"),
                      log=lambda _: None)
    assert s["samples"] == 32 and s["qdq_nodes"] > 0 and out.is_file()
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((8, 1, 28, 28), np.float32))
    with pytest.raises(EdgehalError, match="has shape \\(8, 1, 28, 28\\).*\\(N, 1, 8, 8\\)"):
        quantize_int8(digits_onnx, tmp_path / "q2.onnx", calib_data=wrong, log=lambda _: None)
    with pytest.raises(EdgehalError, match="calib-method"):
        quantize_int8(digits_onnx, tmp_path / "q3.onnx", calib_data=good, options=QuantizeOptions(method="magic"))
    assert not (tmp_path / "q2.onnx").exists() and not (tmp_path / "q3.onnx").exists()
