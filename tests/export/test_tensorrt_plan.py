"""Engine planning without TensorRT: profiles, precision, DLA, sidecar, compatibility, the CLI."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
import trt_test_models as tm  # noqa: E402

from edgehal.cli import main  # noqa: E402
from edgehal.errors import EdgehalError  # noqa: E402
from edgehal.export.tensorrt_plan import (  # noqa: E402
    EngineOptions,
    ProfileShape,
    TensorInfo,
    check_profile,
    derive_profiles,
    parse_dim_range,
    plan_build,
    resolve_dims,
)
from edgehal.export.tensorrt_provenance import (  # noqa: E402
    EngineProvenance,
    HostInfo,
    check_compatibility,
    check_engine_file,
    parse_jetpack_version,
    parse_l4t_release,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("plan")
    kept = tm.export_cnn(d / "kept.onnx")
    return {
        "kept": kept,
        "static": tm.export_cnn(d / "static.onnx", batch=4),
        "int8": tm.quantize_qdq(kept, d / "kept_int8.onnx"),
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
    assert "\n" not in message


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


# -- batch at run time ------------------------------------------------------------


def test_batch_outside_the_profile_is_refused():
    profiles = (ProfileShape("input", (2, 1, 28, 28), (8, 1, 28, 28), (8, 1, 28, 28)),)
    check_profile(profiles, {"input": (2, 1, 28, 28)}, what="TensorRT engine m.plan")
    check_profile(profiles, {"input": (8, 1, 28, 28)}, what="TensorRT engine m.plan")
    with pytest.raises(EdgehalError, match=r"batch 9 is outside the engine's profile \(batch 2..8\).*"
                                           r"--max-batch 9"):
        check_profile(profiles, {"input": (9, 1, 28, 28)}, what="TensorRT engine m.plan")
    with pytest.raises(EdgehalError, match=r"batch 1 is outside the engine's profile \(batch 2..8\)"):
        check_profile(profiles, {"input": (1, 1, 28, 28)}, what="TensorRT engine m.plan")


def test_a_shape_outside_the_profile_on_another_dimension_is_refused():
    profiles = (ProfileShape("input", (1, 1, 1, 28), (8, 1, 28, 28), (8, 1, 28, 28)),)
    check_profile(profiles, {"input": (3, 1, 5, 28)}, what="TensorRT engine m.plan")
    with pytest.raises(EdgehalError, match=r"dimension 2 is 40, outside the engine's profile \(1..28\).*"
                                           r"--dim input:2=1,28,40"):
        check_profile(profiles, {"input": (3, 1, 40, 28)}, what="TensorRT engine m.plan")


# -- other dynamic dimensions -------------------------------------------------------


def test_dynamic_dimensions_without_metadata_need_a_dim_range():
    inputs = [TensorInfo("x", "float32", (-1, -1, 16), ("batch", "time", None))]
    with pytest.raises(EdgehalError, match=r"dimension 1 \('time'\) is dynamic and nothing gives its range.*"
                                           r"--dim time=MIN,OPT,MAX"):
        resolve_dims(inputs, EngineOptions(), None, what="m")
    assert resolve_dims(inputs, EngineOptions(dims={"time": (1, 10, 20)}), None, what="m") == {("x", 1): (1, 10, 20)}
    assert resolve_dims(inputs, EngineOptions(dims={"x:1": (2, 2, 3)}), None, what="m") == {("x", 1): (2, 2, 3)}
    with pytest.raises(EdgehalError, match=r"--dim width \| names no dynamic dimension of m. Note: one of \['time'\]"):
        resolve_dims(inputs, EngineOptions(dims={"time": (1, 2, 3), "width": (1, 2, 3)}), None, what="m")
    profiles = derive_profiles(inputs, (1, 4, 8), {("x", 1): (1, 10, 20)})
    assert profiles[0].to_dict() == {"input": "x", "min": [1, 1, 16], "opt": [4, 10, 16], "max": [8, 20, 16]}


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


# -- provenance -------------------------------------------------------------------


def _provenance(engine: Path, **changes) -> EngineProvenance:
    base = EngineProvenance(
        tensorrt_version="10.3.0.26", gpu_name="Orin", compute_capability="8.7", l4t_release="R36.4.0",
        jetpack="6.1", precision="fp16",
        profiles=(ProfileShape("input", (1, 1, 28, 28), (32, 1, 28, 28), (32, 1, 28, 28)),),
        inputs=(TensorInfo("input", "float32", (-1, 1, 28, 28)),),
        outputs=(TensorInfo("digit", "float32", (-1, 10)), TensorInfo("parity", "float32", (-1, 2))),
        source_onnx="mnist_kept.onnx", source_onnx_sha256="a" * 64, engine_sha256="b" * 64,
        manifest=tm.manifest(), onnx_props={"edgehal.aux": "keep"}, built_at="2025-01-01T00:00:00+00:00",
        edgehal_version="0.1.0")
    return dataclasses.replace(base, **changes)


def test_sidecar_round_trip(tmp_path):
    engine = tmp_path / "mnist.plan"
    prov = _provenance(engine)
    path = write_sidecar(engine, prov)
    assert path == sidecar_path(engine) == tmp_path / "mnist.plan.json"
    raw = json.loads(path.read_text())
    for key in ("tensorrt_version", "gpu_name", "compute_capability", "l4t_release", "jetpack", "precision",
                "profiles", "manifest", "source_onnx_sha256"):
        assert raw[key] not in (None, "", [])
    assert read_sidecar(engine) == prov
    assert read_sidecar(engine).batch_range == (1, 32)


def test_sidecar_missing_or_damaged(tmp_path):
    engine = tmp_path / "m.plan"
    with pytest.raises(EdgehalError, match=r"TensorRT engine m.plan \| has no provenance sidecar m.plan.json.*"
                                           "edgehal build-engine"):
        read_sidecar(engine)
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(EdgehalError, match="is not valid JSON"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({"format": "other"}))
    with pytest.raises(EdgehalError, match="has format 'other'"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({"format": "edgehal-trt/1"}))
    with pytest.raises(EdgehalError, match="is malformed"):
        read_sidecar(engine)


def test_same_machine_loads():
    prov = _provenance(Path("m.plan"))
    assert check_compatibility(prov, prov.built_on, engine="m.plan") == []


def test_mismatch_says_what_differs_and_how_to_rebuild():
    prov = _provenance(Path("mnist.plan"))
    host = HostInfo("10.7.0.23", "NVIDIA H100 80GB HBM3", "9.0")
    with pytest.raises(EdgehalError) as err:
        check_compatibility(prov, host, engine="mnist.plan")
    message = str(err.value)
    assert message.startswith(
        "TensorRT engine mnist.plan | built with TensorRT 10.3.0.26 on Orin (sm_87, L4T R36.4.0, JetPack 6.1); "
        "this machine has TensorRT 10.7.0.23 on NVIDIA H100 80GB HBM3 (sm_90): "
        "TensorRT 10.3.0.26 != 10.7.0.23; compute capability sm_87 != sm_90. "
        "Note: rebuild the engine on the target with `edgehal build-engine mnist_kept.onnx -o mnist.plan "
        "--precision fp16 --min-batch 1 --opt-batch 32 --max-batch 32`")
    assert "\n" not in message


def test_only_the_gpu_differs():
    prov = _provenance(Path("m.plan"), l4t_release=None, jetpack=None, gpu_name="NVIDIA A10",
                       compute_capability="8.6", tensorrt_version="10.7.0")
    with pytest.raises(EdgehalError, match=r"compute capability sm_86 != sm_89"):
        check_compatibility(prov, HostInfo("10.7.0", "NVIDIA L4", "8.9"), engine="m.plan")
    warnings = check_compatibility(prov, HostInfo("10.7.0", "NVIDIA A40", "8.6"), engine="m.plan")
    assert len(warnings) == 1 and "built on NVIDIA A10 and runs on NVIDIA A40" in warnings[0]


def test_version_and_hardware_compatible_engines():
    prov = _provenance(Path("m.plan"), version_compatible=True, hardware_compatible=True,
                       l4t_release=None, jetpack=None, gpu_name="NVIDIA A10", compute_capability="8.6")
    assert check_compatibility(prov, HostInfo("10.8.0", "NVIDIA A10", "8.6"), engine="m.plan") == []
    assert check_compatibility(prov, HostInfo("10.3.0.26", "NVIDIA H100", "9.0"), engine="m.plan")
    with pytest.raises(EdgehalError, match="same major version, same or newer needed"):
        check_compatibility(prov, HostInfo("10.2.0", "NVIDIA A10", "8.6"), engine="m.plan")
    with pytest.raises(EdgehalError, match="sm_75 is older than Ampere"):
        check_compatibility(prov, HostInfo("10.3.0", "Tesla T4", "7.5"), engine="m.plan")
    assert "--version-compatible --hardware-compatible" in prov.rebuild_command("m.plan")


def test_engine_must_match_its_sidecar(tmp_path):
    engine = tmp_path / "m.plan"
    engine.write_bytes(b"engine bytes")
    from edgehal.fileio import sha256_file

    check_engine_file(_provenance(engine, engine_sha256=sha256_file(engine)), engine)
    with pytest.raises(EdgehalError, match="does not match its sidecar"):
        check_engine_file(_provenance(engine), engine)


def test_jetson_release_parsing():
    text = "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 2024"
    assert parse_l4t_release(text) == "R36.4.0"
    assert parse_l4t_release("garbage") is None
    assert parse_jetpack_version("6.1+b123") == "6.1"
    assert parse_jetpack_version("") is None


# -- imports and the CLI without TensorRT ---------------------------------------------


def test_tensorrt_modules_import_without_tensorrt():
    code = ("import sys; sys.modules['tensorrt'] = None\n"
            "import edgehal.export.tensorrt, edgehal.runtime.tensorrt, edgehal.export.inspect, "
            "edgehal.export.triton, edgehal.export.tensorrt_plan, edgehal.export.tensorrt_ops, "
            "edgehal.export.tensorrt_provenance\n"
            "from edgehal.runtime.tensorrt import TensorRTRunner\n"
            "r = TensorRTRunner('missing.plan', device_index=0)\n"
            "print('ok', r.manifest)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok None"


def test_import_tensorrt_error_without_tensorrt(monkeypatch):
    from edgehal.export import tensorrt as trt_backend

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EdgehalError, match=r"^TensorRT \| is not installed. Note: install edgehal\[tensorrt\] on a "
                                           "machine with an NVIDIA GPU"):
        trt_backend.import_tensorrt()


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
