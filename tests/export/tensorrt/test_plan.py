"""Engine planning without TensorRT: options, the profile a request gets, precision, DLA, the CLI."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fakes"))
import trt_test_models as tm  # noqa: E402

from edgehal.cli import main  # noqa: E402
from edgehal.errors import EdgehalError  # noqa: E402
from edgehal.export.tensorrt.plan import (  # noqa: E402
    EngineOptions,
    onnx_float_precision,
    parse_dim_range,
    plan_build,
    resolve_dims,
)
from edgehal.tensors import TensorSpec  # noqa: E402

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("plan")
    kept = tm.export_cnn(d / "kept.onnx")
    return {
        "kept": kept,
        "static": tm.export_cnn(d / "static.onnx", batch=4),
        "int8": tm.quantize_qdq(kept, d / "kept_int8.onnx"),
        "fp16": tm.convert_fp16(kept, d / "kept_fp16.onnx"),
        "det": tm.det_model(d / "det.onnx"),
    }


# -- options -------------------------------------------------------------------


def test_options_refuse_impossible_values_up_front():
    with pytest.raises(EdgehalError, match=r"--precision 'int4' \| is not a choice. Note: one of fp32, fp16, int8"):
        EngineOptions(precision="int4")
    with pytest.raises(EdgehalError, match="--max-batch 0 | must be a positive integer"):
        EngineOptions(max_batch=0)
    with pytest.raises(EdgehalError, match="--dla-core 0 | needs --precision fp16 or int8"):
        EngineOptions(dla_core=0)
    with pytest.raises(EdgehalError, match="cannot be combined with --hardware-compatible"):
        EngineOptions(precision="fp16", dla_core=1, hardware_compatible=True)
    assert EngineOptions(precision="fp16", dla_core=1).gpu_fallback


# -- profiles ------------------------------------------------------------------


def test_profile_defaults_for_a_dynamic_batch(models):
    plan = plan_build(models["kept"], EngineOptions())
    assert plan.batch == (1, 32, 32)
    (p,) = plan.profiles
    assert (p.input, p.min, p.opt, p.max) == ("input", (1, 1, 28, 28), (32, 1, 28, 28), (32, 1, 28, 28))
    assert plan.source.manifest.head_names == ("digit", "parity")
    assert plan.to_dict()["heads"] == ["digit", "parity"]


def test_profile_from_the_options(models):
    plan = plan_build(models["kept"], EngineOptions(min_batch=2, opt_batch=8, max_batch=64, workspace_mib=512))
    assert plan.batch == (2, 8, 64) and plan.workspace_bytes == 512 << 20
    assert plan_build(models["kept"], EngineOptions(min_batch=64)).batch == (64, 64, 64)


@pytest.mark.parametrize("kwargs,message", [
    (dict(min_batch=1, opt_batch=40, max_batch=32), r"--opt-batch 40 \| is outside --min-batch 1 .. --max-batch 32"),
    (dict(min_batch=8, max_batch=4), r"--min-batch 8 \| is larger than --max-batch 4"),
])
def test_opt_outside_min_max_is_refused(models, kwargs, message):
    with pytest.raises(EdgehalError, match=message):
        plan_build(models["kept"], EngineOptions(**kwargs))


def test_fixed_onnx_batch_fixes_the_profile(models):
    assert plan_build(models["static"], EngineOptions()).batch == (4, 4, 4)
    assert plan_build(models["static"], EngineOptions(max_batch=4)).batch == (4, 4, 4)
    with pytest.raises(EdgehalError, match=r"--max-batch 32 \| does not match input 'input', whose batch is "
                                           r"fixed at 4 in the ONNX file"):
        plan_build(models["static"], EngineOptions(max_batch=32))


def test_dynamic_non_batch_dimension_needs_a_range(tmp_path):
    from onnx import TensorProto, helper

    path = tm.graph_model(tmp_path / "hw.onnx", [helper.make_node("Relu", ["x"], ["y"])],
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", 28])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, "H", 28])])
    with pytest.raises(EdgehalError, match=r"input 'x' \| dimension 2 \('H'\) is dynamic and nothing gives its "
                                           r"range. Note: --dim H=MIN,OPT,MAX"):
        plan_build(path, EngineOptions())
    plan = plan_build(path, EngineOptions(max_batch=4, dims={"H": (14, 28, 56)}))
    assert plan.profiles[0].to_dict() == {"input": "x", "min": [1, 1, 14, 28], "opt": [4, 1, 28, 28],
                                          "max": [4, 1, 56, 28]}


# -- precision -----------------------------------------------------------------


def test_int8_without_qdq_is_refused_in_one_line(models):
    with pytest.raises(EdgehalError) as err:
        plan_build(models["kept"], EngineOptions(precision="int8"))
    message = str(err.value)
    assert message.startswith("--precision int8 | kept.onnx has no QuantizeLinear/DequantizeLinear nodes")
    assert "run `edgehal quantize` on it first" in message
    assert "\n" not in message


def test_onnx_float_precision_tells_fp16_from_fp32(models):
    import onnx

    assert onnx_float_precision(onnx.load(models["fp16"])) == "fp16"
    assert onnx_float_precision(onnx.load(models["kept"])) == "fp32"
    assert onnx_float_precision(onnx.load(models["int8"])) == "fp32"


def test_fp16_from_fp32_onnx_plans_a_conversion(models):
    plan = plan_build(models["kept"], EngineOptions(precision="fp16"))
    assert plan.float_precision == "fp32" and plan.converts_to_fp16
    assert plan.to_dict()["converts_to_fp16"] is True
    plan = plan_build(models["fp16"], EngineOptions(precision="fp16"))
    assert plan.float_precision == "fp16" and not plan.converts_to_fp16
    # DLA stays on TensorRT 10's weakly typed build, from the FP32 ONNX and the FP16 flag
    assert not plan_build(models["kept"], EngineOptions(precision="fp16", dla_core=0)).converts_to_fp16
    assert not plan_build(models["kept"], EngineOptions()).converts_to_fp16


def test_fp16_onnx_builds_only_as_fp16(models):
    with pytest.raises(EdgehalError, match=r"--precision fp32 \| kept_fp16.onnx is an FP16 model .*--precision fp16"):
        plan_build(models["fp16"], EngineOptions(precision="fp32"))
    with pytest.raises(EdgehalError, match="has no QuantizeLinear/DequantizeLinear nodes"):
        plan_build(models["fp16"], EngineOptions(precision="int8"))


def test_int8_with_qdq_plans(models):
    plan = plan_build(models["int8"], EngineOptions(precision="int8", max_batch=16))
    assert plan.source.has_qdq and plan.precision == "int8" and plan.batch == (1, 16, 16)


def test_qdq_model_builds_only_as_int8(models):
    with pytest.raises(EdgehalError, match=r"--precision fp16 \| kept_int8.onnx is quantized"):
        plan_build(models["int8"], EngineOptions(precision="fp16"))


def test_dla_plans_with_fp16(models):
    plan = plan_build(models["kept"], EngineOptions(precision="fp16", dla_core=0))
    assert plan.options.dla_core == 0 and plan.options.gpu_fallback


def test_unsupported_operator_is_refused_before_tensorrt(models):
    with pytest.raises(EdgehalError, match=r"TensorRT cannot build it: operator Det .*edgehal inspect"):
        plan_build(models["det"], EngineOptions())


def test_missing_onnx_is_one_line(tmp_path):
    with pytest.raises(EdgehalError, match="file not found"):
        plan_build(tmp_path / "nope.onnx", EngineOptions())


def test_outputs_are_planned_in_manifest_order(models, tmp_path):
    import onnx

    model = onnx.load(models["kept"])
    reordered = list(reversed(model.graph.output))
    del model.graph.output[:]
    model.graph.output.extend(reordered)
    onnx.save(model, tmp_path / "reversed.onnx")
    plan = plan_build(tmp_path / "reversed.onnx", EngineOptions())
    assert [t.name for t in plan.source.outputs] == ["parity", "digit"]
    assert [t.name for t in plan.outputs] == ["digit", "parity"]


def test_a_manifest_head_that_is_no_output_is_refused_before_tensorrt(models, tmp_path):
    import onnx

    from edgehal.export.graph import prune_outputs

    pruned = prune_outputs(onnx.load(models["kept"]), ["digit"])  # the metadata still lists both heads
    onnx.save(pruned, tmp_path / "lying.onnx")
    with pytest.raises(EdgehalError, match=r"ONNX model lying.onnx \| head 'parity' of its manifest is not an "
                                           r"output. Note: outputs named after the heads \['digit', 'parity'\]"):
        plan_build(tmp_path / "lying.onnx", EngineOptions())


# -- other dynamic dimensions -------------------------------------------------------


def test_dynamic_dimensions_without_metadata_need_a_dim_range():
    inputs = [TensorSpec("x", "float32", (-1, -1, 16), ("batch", "time", None))]
    with pytest.raises(EdgehalError, match=r"dimension 1 \('time'\) is dynamic and nothing gives its range.*"
                                           r"--dim time=MIN,OPT,MAX"):
        resolve_dims(inputs, EngineOptions(), None, what="m")
    assert resolve_dims(inputs, EngineOptions(dims={"time": (1, 10, 20)}), None, what="m") == {("x", 1): (1, 10, 20)}
    assert resolve_dims(inputs, EngineOptions(dims={"x:1": (2, 2, 3)}), None, what="m") == {("x", 1): (2, 2, 3)}
    with pytest.raises(EdgehalError, match=r"--dim width \| names no dynamic dimension of m. Note: one of \['time'\]"):
        resolve_dims(inputs, EngineOptions(dims={"time": (1, 2, 3), "width": (1, 2, 3)}), None, what="m")


def test_dim_ranges_are_parsed_and_checked():
    assert parse_dim_range("rows=1,28,64") == ("rows", (1, 28, 64))
    assert parse_dim_range("input:2=4,4,4") == ("input:2", (4, 4, 4))
    for bad in ("rows", "rows=1,2", "=1,2,3", "rows=a,b,c"):
        with pytest.raises(EdgehalError, match="is not NAME=MIN,OPT,MAX"):
            parse_dim_range(bad)
    for bad in ("rows=0,1,2", "rows=3,2,4", "rows=1,5,4"):
        with pytest.raises(EdgehalError, match="is not a valid range"):
            parse_dim_range(bad)
    with pytest.raises(EdgehalError, match="is not a valid range"):
        EngineOptions(dims={"rows": (4, 2, 8)})
    assert EngineOptions(dims={"rows": [1, 2, 3]}).to_dict()["dims"] == {"rows": [1, 2, 3]}


def test_build_engine_cli_takes_dim_ranges(models):
    runner = CliRunner()
    res = runner.invoke(main, ["build-engine", str(models["kept"]), "-o", "x.plan", "--dry-run",
                               "--dim", "rows=1,28,56"])
    assert res.exit_code == 1 and "--dim rows | names no dynamic dimension" in res.output
    res = runner.invoke(main, ["build-engine", str(models["kept"]), "-o", "x.plan", "--dry-run",
                               "--dim", "rows=1,2", "--dim", "rows=1,2,3"])
    assert res.exit_code == 1 and "is not NAME=MIN,OPT,MAX" in res.output


# -- imports and the CLI without TensorRT ---------------------------------------------


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here; this checks the message where it is not")
def test_build_engine_without_tensorrt_exits_1_with_one_line(models, tmp_path):
    out = subprocess.run([sys.executable, "-m", "edgehal.cli", "build-engine", str(models["kept"]),
                          "-o", str(tmp_path / "m.plan"), "--precision", "fp16"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 1
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines == ["error: TensorRT | is not installed. Note: install edgehal[tensorrt] on a machine with an "
                     "NVIDIA GPU (pip install 'edgehal[gpu,tensorrt]'); on a Jetson, TensorRT ships with JetPack"]
    assert not (tmp_path / "m.plan").exists()


def test_build_engine_refusals_come_before_tensorrt(models, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["build-engine", str(models["kept"]), "-o", str(tmp_path / "m.plan"),
                                  "--precision", "int8"])
    assert result.exit_code == 1
    assert "error: --precision int8 | kept.onnx has no QuantizeLinear/DequantizeLinear nodes" in result.output
    result = runner.invoke(main, ["build-engine", str(models["kept"]), "-o", str(tmp_path / "m.plan"),
                                  "--min-batch", "4", "--opt-batch", "2", "--max-batch", "8"])
    assert result.exit_code == 1 and "--opt-batch 2 | is outside --min-batch 4 .. --max-batch 8" in result.output
    result = runner.invoke(main, ["build-engine", str(models["kept"]), "-o", "x.plan", "--precision", "bf16"])
    assert result.exit_code == 2 and "fp32" in result.output and "int8" in result.output


def test_build_engine_dry_run_prints_the_plan(models, tmp_path):
    result = CliRunner().invoke(main, ["build-engine", str(models["int8"]), "-o", str(tmp_path / "m.plan"),
                                       "--precision", "int8", "--max-batch", "16", "--dry-run"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["batch"] == [1, 16, 16] and plan["options"]["precision"] == "int8"
    assert plan["heads"] == ["digit", "parity"]
    assert not (tmp_path / "m.plan").exists()


def test_every_option_help_names_its_default():
    for command in ("build-engine", "inspect", "export-triton"):
        cmd = main.commands[command]
        for param in cmd.params:
            if param.name == "help" or not getattr(param, "help", None):
                continue
            assert "Defaults to" in param.help or "Required" in param.help, (command, param.name)
