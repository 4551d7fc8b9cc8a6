"""Engine provenance: the sidecar, the machine, and the compatibility check before loading."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fakes"))
import trt_test_models as tm  # noqa: E402

from edgehal.artifact import (  # noqa: E402
    engine_sidecar_path,
    read_engine_sidecar,
    write_engine_sidecar,
)
from edgehal.errors import EdgehalError  # noqa: E402
from edgehal.export.tensorrt import provenance  # noqa: E402
from edgehal.export.tensorrt.profile import ProfileShape  # noqa: E402
from edgehal.export.tensorrt.provenance import (  # noqa: E402
    EngineProvenance,
    HostInfo,
    check_compatibility,
    check_engine_file,
    parse_jetpack_version,
)
from edgehal.tensors import TensorSpec  # noqa: E402


def _provenance(engine: Path, **changes) -> EngineProvenance:
    base = EngineProvenance(
        tensorrt_version="10.3.0.26", gpu_name="Orin", compute_capability="8.7", l4t_release="36.4.0",
        jetpack="6.1", precision="fp16",
        profiles=(ProfileShape("input", (1, 1, 28, 28), (32, 1, 28, 28), (32, 1, 28, 28)),),
        inputs=(TensorSpec("input", "float32", (-1, 1, 28, 28)),),
        outputs=(TensorSpec("digit", "float32", (-1, 10)), TensorSpec("parity", "float32", (-1, 2))),
        source_onnx="mnist_kept.onnx", source_onnx_sha256="a" * 64, engine_sha256="b" * 64,
        metadata=tm.metadata(precision="fp16"), built_at="2025-01-01T00:00:00+00:00",
        edgehal_version="0.1.0")
    return dataclasses.replace(base, **changes)


def test_sidecar_round_trip(tmp_path):
    engine = tmp_path / "mnist.plan"
    prov = _provenance(engine)
    path = write_engine_sidecar(engine, prov)
    assert path == engine_sidecar_path(engine) == tmp_path / "mnist.plan.json"
    raw = json.loads(path.read_text())
    for key in ("tensorrt_version", "gpu_name", "compute_capability", "l4t_release", "jetpack", "precision",
                "profiles", "metadata", "source_onnx_sha256"):
        assert raw[key] not in (None, "", [])
    assert read_engine_sidecar(engine) == prov
    assert read_engine_sidecar(engine).batch_range == (1, 32)


def test_sidecar_missing_or_damaged(tmp_path):
    engine = tmp_path / "m.plan"
    with pytest.raises(EdgehalError, match=r"TensorRT engine m.plan \| has no provenance sidecar m.plan.json.*"
                                           "edgehal build-engine"):
        read_engine_sidecar(engine)
    engine_sidecar_path(engine).write_text("{not json")
    with pytest.raises(EdgehalError, match="is not valid JSON"):
        read_engine_sidecar(engine)
    engine_sidecar_path(engine).write_text(json.dumps({"format": "other"}))
    with pytest.raises(EdgehalError, match="has format 'other'"):
        read_engine_sidecar(engine)
    engine_sidecar_path(engine).write_text(json.dumps({"format": "edgehal-trt/1"}))
    with pytest.raises(EdgehalError, match="is malformed"):
        read_engine_sidecar(engine)


def test_sidecar_records_the_major_and_derives_it_for_old_sidecars(tmp_path):
    engine = tmp_path / "m.plan"
    prov = _provenance(engine, fp16_onnx="m.fp16.onnx", fp16_onnx_sha256="c" * 64)
    write_engine_sidecar(engine, prov)
    raw = json.loads(engine_sidecar_path(engine).read_text())
    assert raw["tensorrt_major"] == 10 and raw["strongly_typed"] is True
    assert (raw["fp16_onnx"], raw["fp16_onnx_sha256"]) == ("m.fp16.onnx", "c" * 64)
    for key in ("tensorrt_major", "strongly_typed", "fp16_onnx", "fp16_onnx_sha256"):
        del raw[key]  # a sidecar from before TensorRT 11 support
    engine_sidecar_path(engine).write_text(json.dumps(raw))
    old = read_engine_sidecar(engine)
    assert old.tensorrt_major == 10 and not old.strongly_typed and old.fp16_onnx is None
    raw["tensorrt_major"] = 11
    engine_sidecar_path(engine).write_text(json.dumps(raw))
    with pytest.raises(EdgehalError, match=r"says TensorRT major 11 but version '10.3.0.26'"):
        read_engine_sidecar(engine)


def test_another_major_is_refused_even_when_version_compatible():
    prov = _provenance(Path("m.plan"), version_compatible=True)
    host = HostInfo("11.4.0.106", "Orin", "8.7", "36.4.0", "6.1")
    with pytest.raises(EdgehalError) as err:
        check_compatibility(prov, host, engine="m.plan")
    assert str(err.value) == (
        "TensorRT engine m.plan | was built with TensorRT 10.3.0.26 (major 10); this machine has TensorRT "
        "11.4.0.106 (major 11), and engines never load across TensorRT majors. Note: rebuild the engine here "
        "with `edgehal build-engine mnist_kept.onnx -o m.plan --precision fp16 --min-batch 1 --opt-batch 32 "
        "--max-batch 32 --version-compatible`")


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
        "TensorRT engine mnist.plan | built with TensorRT 10.3.0.26 on Orin (sm_87, L4T 36.4.0, JetPack 6.1); "
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


def test_jetson_release_comes_from_the_one_l4t_parser(tmp_path, monkeypatch):
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, "
                       "DATE: Fri Sep 13 2024\n")
    monkeypatch.setattr(provenance, "NV_TEGRA_RELEASE", str(release))
    monkeypatch.setenv("PATH", str(tmp_path))  # no dpkg-query: the JetPack version stays unknown
    assert provenance._jetson_info() == ("36.4.0", None)
    monkeypatch.setattr(provenance, "NV_TEGRA_RELEASE", str(tmp_path / "missing"))
    assert provenance._jetson_info() == (None, None)
    assert parse_jetpack_version("6.1+b123") == "6.1"
    assert parse_jetpack_version("") is None


def test_l4t_releases_compare_in_the_bare_form():
    """Sidecars written before the bare form say ``R36.4.0``: the same release, no warning."""
    old = _provenance(Path("m.plan"), l4t_release="R36.4.0")
    host = dataclasses.replace(old.built_on, l4t_release="36.4.0")
    assert check_compatibility(old, host, engine="m.plan") == []
    newer = dataclasses.replace(host, l4t_release="36.4.3")
    (warning,) = check_compatibility(old, newer, engine="m.plan")
    assert "was built on L4T R36.4.0; this Jetson runs L4T 36.4.3" in warning


def test_host_info_asks_tensorrt_and_the_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EdgehalError, match=r"^TensorRT \| is not installed"):
        provenance.host_info()
