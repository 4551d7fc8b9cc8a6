"""``edgehal inspect --target tensorrt``: every exportable model passes; unsupported graphs fail by name."""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
import trt_test_models as tm  # noqa: E402

from edgehal.cli import main  # noqa: E402
from edgehal.export.inspect import inspect_model, inspect_tensorrt  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("inspect")
    kept = tm.export_cnn(d / "kept.onnx")
    return {
        "kept": kept,
        "pruned": tm.export_cnn(d / "pruned.onnx", aux="prune"),
        "static": tm.export_cnn(d / "static.onnx", batch=4),
        "int8": tm.quantize_qdq(kept, d / "kept_int8.onnx"),
        "int8_ort_defaults": tm.quantize_qdq(kept, d / "kept_ort.onnx", tensorrt_friendly=False),
        "det": tm.det_model(d / "det.onnx"),
    }


def run_cli(*args):
    return CliRunner().invoke(main, ["inspect", *map(str, args)])


@pytest.mark.parametrize("name", ["kept", "pruned", "static", "int8"])
def test_exportable_models_build(models, name):
    report = inspect_tensorrt(models[name])
    assert report.ok, report.lines()
    result = run_cli(models[name], "--target", "tensorrt")
    assert result.exit_code == 0, result.output
    assert "TensorRT can build this model" in result.output


def test_dynamic_batch_is_covered_by_the_profile(models):
    report = inspect_tensorrt(models["kept"])
    infos = [f for f in report.findings if f.kind == "dynamic"]
    assert [f.severity for f in infos] == ["info"]
    assert "--max-batch" in infos[0].message
    assert not [f for f in inspect_tensorrt(models["static"]).findings if f.kind == "dynamic"]


def test_operator_tensorrt_lacks_exits_1_and_names_it(models):
    result = run_cli(models["det"], "--target", "tensorrt")
    assert result.exit_code == 1
    assert "error: operator Det (node 'det0') is not supported by TensorRT's ONNX parser" in result.output
    assert "1 error, 0 warnings: TensorRT will not build this model" in result.output
    assert "Traceback" not in result.output


def test_onnxruntime_default_quantization_is_refused_with_the_fix(models):
    report = inspect_tensorrt(models["int8_ort_defaults"])
    assert not report.ok
    text = "\n".join(report.lines())
    assert "gets INT32 input" in text and "QuantizeBias=False" in text


# `edgehal quantize` keeps biases FP32 (QuantizeBias=False): TensorRT's parser refuses INT32
# inputs to DequantizeLinear (onnx/onnx-tensorrt#850).
def test_project_int8_export_builds(models, tmp_path):
    from edgehal.export.quantize import QuantizeOptions, quantize_int8

    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).random((16, *tm.SHAPE), dtype=np.float32))
    out = tmp_path / "int8.onnx"
    quantize_int8(models["kept"], out, calib_data=calib, options=QuantizeOptions(calib_samples=16),
                  log=lambda *_: None)
    report = inspect_tensorrt(out)
    assert report.ok, report.lines()


# Every registered architecture, exported the way `edgehal export` does it
# (ExportWrapper, dynamic batch, opset 17), kept and pruned. A new model with
# required options needs an entry here: the failure says so.
MODEL_KWARGS = {
    "hal_resnet": [dict(aux=["case1", {"case": "case4", "feeds_main": False}])],
    "hier_localization": [dict(building_floors=[[0, 1], [0, 1, 2]], coord_mean=[0.0, 0.0],
                               coord_scale=1.0, input_shape=[16])],
    "rnn_classifier": [dict(aux=["case2"], hidden_size=16, cell=c)
                       for c in ("rnn", "lstm", "peephole_lstm", "gru")],
    "recurrent_localization": [dict(building_floors=[[0, 1], [0, 1, 2]], coord_mean=[0.0, 0.0], coord_scale=1.0,
                                    input_shape=[16], cell=c) for c in ("rnn", "lstm", "peephole_lstm", "gru")],
}


def _registered():
    from edgehal.nets.registry import list_models

    return list_models()


def _export(model, manifest):
    from edgehal.nets.base import ExportWrapper

    x = torch.zeros((2, *manifest.input_shape), dtype=torch.float32)
    names = list(manifest.head_names)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(ExportWrapper(model, names).eval(), (x,), buf, input_names=[manifest.input_name],
                          output_names=names, opset_version=17, do_constant_folding=True, dynamo=False,
                          dynamic_axes={manifest.input_name: {0: "batch"}, **{n: {0: "batch"} for n in names}})
    return onnx.load_from_string(buf.getvalue())


@pytest.mark.parametrize("name", _registered())
def test_every_registered_model_builds_kept_and_pruned(name):
    from edgehal.export.graph import prune_outputs
    from edgehal.nets.registry import create_model, model_parameters

    required = [k for k, p in model_parameters(name).items() if p.default is p.empty]
    if required and name not in MODEL_KWARGS:
        pytest.fail(f"model {name!r} needs {required}: add small values to MODEL_KWARGS in {__file__}")
    for kwargs in MODEL_KWARGS.get(name, [{}]):
        model = create_model(name, **kwargs).eval()
        proto = _export(model, model.manifest)
        kept = inspect_model(proto, path=f"{name}.onnx")
        assert kept.ok, kept.lines()
        pruned = inspect_model(prune_outputs(proto, model.manifest.select("prune").head_names),
                               path=f"{name}_pruned.onnx")
        assert pruned.ok, pruned.lines()


# -- hand-built graphs: each kind of finding ---------------------------------


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _report(tmp_path, nodes, inputs, outputs, **kw):
    path = tm.graph_model(tmp_path / "g.onnx", nodes, inputs, outputs, **kw)
    return inspect_tensorrt(path), path


def test_custom_domain_operator_needs_a_plugin(tmp_path):
    report, path = _report(tmp_path, [helper.make_node("FusedGelu", ["x"], ["y"], domain="com.example", name="g")],
                           [_vi("x", TensorProto.FLOAT, [1, 4])], [_vi("y", TensorProto.FLOAT, [1, 4])],
                           domains={"com.example": 1})
    assert [f.kind for f in report.errors] == ["operator"]
    assert "com.example::FusedGelu" in report.errors[0].message and "plugin" in report.errors[0].message
    assert run_cli(path).exit_code == 1


def test_unknown_operator(tmp_path):
    report, _ = _report(tmp_path, [helper.make_node("Frobnicate", ["x"], ["y"], name="f")],
                        [_vi("x", TensorProto.FLOAT, [1])], [_vi("y", TensorProto.FLOAT, [1])])
    assert "Frobnicate (node 'f') is not in TensorRT's ONNX operator table" in report.errors[0].message


def test_unsupported_data_type_for_an_operator(tmp_path):
    report, _ = _report(tmp_path, [helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")],
                        [_vi("a", TensorProto.INT32, [2, 2]), _vi("b", TensorProto.INT32, [2, 2])],
                        [_vi("y", TensorProto.INT32, [2, 2])])
    assert [f.kind for f in report.errors] == ["dtype"]
    assert "MatMul (node 'mm') gets INT32 input 'a'; TensorRT supports FP32, FP16, BF16" in report.errors[0].message


def test_unsupported_tensor_type(tmp_path):
    report, _ = _report(tmp_path, [helper.make_node("Identity", ["x"], ["y"])],
                        [_vi("x", TensorProto.UINT16, [2])], [_vi("y", TensorProto.UINT16, [2])])
    assert any("data type UINT16, which TensorRT does not support" in f.message for f in report.errors)


def test_an_input_of_a_type_numpy_lacks_is_reported_not_a_crash(tmp_path):
    report, path = _report(tmp_path, [helper.make_node("Identity", ["x"], ["y"])],
                           [_vi("x", TensorProto.FLOAT8E5M2, ["N", 2])], [_vi("y", TensorProto.FLOAT8E5M2, ["N", 2])],
                           opset=21)
    assert any("tensor 'x' has data type FLOAT8E5M2, which TensorRT does not support" in f.message
               for f in report.errors)
    assert [f.message for f in report.findings if f.kind == "dynamic"] == [
        "input 'x': the batch dimension 0 ('N') is dynamic; `edgehal build-engine` gives it an optimisation "
        "profile (--min-batch/--opt-batch/--max-batch, defaults 1/32/32)"]
    result = run_cli(path, "--target", "tensorrt")
    assert result.exit_code == 1 and "FLOAT8E5M2" in result.output


def test_double_is_a_cast_warning_not_an_error(tmp_path):
    report, path = _report(tmp_path, [helper.make_node("Relu", ["x"], ["y"])],
                           [_vi("x", TensorProto.DOUBLE, [2])], [_vi("y", TensorProto.DOUBLE, [2])])
    assert report.ok
    assert any(f.kind == "double" and "casts it to FP32" in f.message for f in report.warnings)
    assert run_cli(path).exit_code == 0


def test_int64_shape_input_will_be_cast(tmp_path):
    axis = numpy_helper.from_array(np.array(1, dtype=np.int64), "axis")
    report, _ = _report(tmp_path, [helper.make_node("CumSum", ["x", "axis"], ["y"], name="cs")],
                        [_vi("x", TensorProto.FLOAT, [2, 3])], [_vi("y", TensorProto.FLOAT, [2, 3])],
                        initializers=[axis])
    assert report.ok
    assert [f.kind for f in report.warnings] == ["int64"]
    assert "INT64 input 'axis' of CumSum (node 'cs') will be cast to INT32" in report.warnings[0].message


def test_dynamic_dimension_without_sizes_needs_a_dim_range(tmp_path):
    report, path = _report(tmp_path, [helper.make_node("Relu", ["x"], ["y"])],
                           [_vi("x", TensorProto.FLOAT, ["N", 1, "H", 28])], [_vi("y", TensorProto.FLOAT, ["N", 1, "H", 28])])
    assert report.ok and [f.kind for f in report.warnings] == ["dynamic"]
    assert ("dimension 2 ('H') is dynamic and the file does not say which sizes to expect; `edgehal build-engine` "
            "needs --dim H=MIN,OPT,MAX") in report.warnings[0].message
    result = run_cli(path)
    assert result.exit_code == 0 and "--dim H=MIN,OPT,MAX" in result.output


def test_opset_outside_the_parser_range(tmp_path):
    report, _ = _report(tmp_path, [helper.make_node("Relu", ["x"], ["y"])],
                        [_vi("x", TensorProto.FLOAT, [1])], [_vi("y", TensorProto.FLOAT, [1])], opset=8)
    assert [f.kind for f in report.errors] == ["opset"]
    assert "opset 8 is outside TensorRT's range 9..24" in report.errors[0].message


@pytest.mark.parametrize("node,inputs,inits,needle", [
    (helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2], name="p"), [_vi("x", TensorProto.FLOAT, [1, 1, 8])],
     [], "1D pooling"),
    (helper.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2], name="p"),
     [_vi("x", TensorProto.FLOAT, [1, 1, 8, 8])], [], "Indices output"),
    (helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic", name="r"),
     [_vi("x", TensorProto.FLOAT, [1, 1, 4, 4])],
     [numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales")], "mode 'cubic'"),
    (helper.make_node("TopK", ["x", "k"], ["y", "i"], sorted=0, name="t"), [_vi("x", TensorProto.FLOAT, [1, 8])],
     [numpy_helper.from_array(np.array([2], dtype=np.int64), "k")], "`sorted` is 0"),
    (helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="rs"),
     [_vi("x", TensorProto.FLOAT, [1, 8]), _vi("axes", TensorProto.INT64, [1])], [], "`axes` is not an initializer"),
])
def test_restrictions_from_the_table(tmp_path, node, inputs, inits, needle):
    outputs = [_vi(o, TensorProto.FLOAT if o != "i" and o != "idx" else TensorProto.INT64, None)
               for o in node.output]
    report, _ = _report(tmp_path, [node], inputs, outputs, initializers=inits, opset=18)
    restrictions = [f for f in report.errors if f.kind == "restriction"]
    assert restrictions and needle in restrictions[0].message, report.lines()


def test_missing_or_corrupt_file_is_one_line(tmp_path):
    result = run_cli(tmp_path / "nope.onnx")
    assert result.exit_code == 1 and "file not found" in result.output
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file at all")
    result = run_cli(bad)
    assert result.exit_code == 1 and "is corrupt or not an ONNX file" in result.output
    assert "Traceback" not in result.output


def test_invalid_target_lists_the_choices(models):
    result = run_cli(models["kept"], "--target", "coreml")
    assert result.exit_code == 2 and "tensorrt" in result.output
