"""``edgehal doctor``: what this machine can run, said correctly.

The first tests check the report against independent probes of this machine
(so they hold on a GPU box too); the one named ``..._on_this_cpu_machine``
pins down the CPU-only answer and is skipped where a GPU or TensorRT exists.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import stat

import pytest
from click.testing import CliRunner

from edgehal.doctor import (GpuInfo, diagnose, machine_info, ort_conflict_warning, parse_nvidia_smi)


def _torch_cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


@pytest.fixture(scope="module")
def report():
    return diagnose()


def test_onnxruntime_providers_are_the_installed_ones(report):
    import onnxruntime

    assert report.onnxruntime.version == onnxruntime.__version__
    assert report.onnxruntime.providers == tuple(onnxruntime.get_available_providers())
    assert "CPUExecutionProvider" in report.onnxruntime.providers
    assert report.backends["ort-cpu"] == "yes"
    assert "onnxruntime" in report.onnxruntime.distributions or "onnxruntime-gpu" in report.onnxruntime.distributions


def test_tensorrt_is_reported_as_it_is(report):
    installed = importlib.util.find_spec("tensorrt") is not None
    assert (report.tensorrt is not None) == installed
    if not installed:
        assert report.backends["tensorrt"] == "TensorRT is not installed"
        assert "pip install 'edgehal[tensorrt]'" in report.tensorrt_note


def test_gpu_is_reported_as_it_is(report):
    has_gpu = _torch_cuda() or bool(shutil.which("nvidia-smi") and report.gpus)
    assert report.has_gpu == has_gpu
    assert report.torch.cuda_available == _torch_cuda()


def test_on_this_cpu_machine(report):
    if _torch_cuda() or shutil.which("nvidia-smi") or importlib.util.find_spec("tensorrt"):
        pytest.skip("this machine has a GPU or TensorRT; the CPU-only answer does not apply")
    text = "\n".join(report.lines())
    assert not report.has_gpu and report.gpus == ()
    assert report.tensorrt is None
    assert "GPU            none found" in text
    assert "TensorRT       not installed" in text
    assert "ORT providers  " in text and "CPUExecutionProvider" in text
    assert "CUDA not available" in text
    for backend in ("ort-cuda", "ort-tensorrt", "tensorrt"):
        assert report.backends[backend] != "yes" and f"{backend}" in text
    assert "ort-cpu        yes" in text and "Jetson         no" in text


def test_nvidia_smi_csv_is_parsed():
    # Format of `nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version
    # --format=csv,noheader,nounits` (values illustrative); Jetsons print [N/A] for some fields.
    gpus = parse_nvidia_smi("NVIDIA H100 80GB HBM3, 9.0, 81559, 550.54.15\nOrin (nvgpu), 8.7, [N/A], 540.4.0\n")
    assert gpus == [GpuInfo("NVIDIA H100 80GB HBM3", "9.0", 81559, "550.54.15"),
                    GpuInfo("Orin (nvgpu)", "8.7", None, "540.4.0")]
    assert parse_nvidia_smi("") == []


def test_several_onnxruntime_distributions_warn():
    assert ort_conflict_warning(("onnxruntime",)) is None
    w = ort_conflict_warning(("onnxruntime", "onnxruntime-gpu"))
    assert "onnxruntime, onnxruntime-gpu" in w and "exactly one" in w


def _script(tmp_path, name, body):
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return str(p)


def test_jetson_fields_from_fixtures(tmp_path):
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
                       "DATE: Tue Aug  1 19:57:35 UTC 2023\n")
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    nvp = _script(tmp_path, "nvpmodel", "printf 'NV Power Mode: MAXN\\n0\\n'\n")
    jc = _script(tmp_path, "jetson_clocks", "echo 'Please run as root'\nexit 1\n")
    r = diagnose(release_file=release, model_file=model, nvpmodel=(nvp, "-q"), jetson_clocks=(jc, "--show"),
                 nvidia_smi=("edgehal-no-such-nvidia-smi",))
    line = next(x for x in r.lines() if x.startswith("Jetson"))
    assert "NVIDIA Jetson AGX Orin Developer Kit, L4T 35.4.1, power mode MAXN (id 0), clocks unknown" in line
    assert any("could not tell whether clocks are locked" in x for x in r.lines())
    assert r.to_dict()["jetson"]["l4t_release"] == "35.4.1"


def test_machine_info_is_json_ready():
    m = machine_info()
    json.dumps(m)
    assert m["logical_cores"] >= 1 and m["cpu_model"] and "numpy" in m["libraries"]


def test_cli_doctor(report):
    from edgehal.cli import main

    res = CliRunner().invoke(main, ["doctor"])
    assert res.exit_code == 0, res.output
    assert "ORT providers" in res.output and "CPUExecutionProvider" in res.output
    assert "Backends for `edgehal bench`:" in res.output
    res = CliRunner().invoke(main, ["doctor", "--json"])
    data = json.loads(res.output)
    assert data["has_gpu"] == report.has_gpu and data["onnxruntime"]["providers"] == list(report.onnxruntime.providers)
