"""The Docker image's extras serve what ``edgehal export-triton`` writes.

The Dockerfile pip-installs ``/opt/edgehal[<extras>]`` and serves ``/models``, a
model repository written by ``edgehal export-triton``. Reading its config.pbtxt
and running the gRPC service need the serve extra's packages (tritonclient's
ModelConfig protos, google.protobuf, grpcio), so a missing declaration shows up
only in an environment holding nothing but those extras. The slow test builds
one: a FRESH virtual environment, this checkout copied as the Dockerfile's COPY
lines copy it and installed non-editable with pip as the Dockerfile installs it,
with the Dockerfile's extras except:

* ``gpu`` becomes ``cpu``: onnxruntime-gpu and onnxruntime install the same
  ``onnxruntime`` module and declare the same serving dependencies; this machine
  has no GPU.
* ``tensorrt`` is left out: its PyPI packages (tensorrt -> tensorrt-cu13 ->
  tensorrt-cu13-libs) are source shells that fetch the real multi-GB wheels from
  pypi.nvidia.com at install time, which does not answer from here. It brings no
  serving dependency, so leaving it out only makes the check stricter.

The venv is created without ``--system-site-packages`` (the image's venv has
it only to see JetPack's TensorRT; this interpreter's site-packages would hide a
missing declaration).

Cost: on the shared 2-core development machine ``python -m venv`` plus
``pip install '.[cpu,serve]'`` took 4 min 21 s alone, and this test built that
way took 9 min 15 s under load (pip 5 min 49 s; torch, torchvision and their
CUDA wheels, ~6 GB, then deleting them). So the venv BORROWS exactly torch,
torchvision and the triton / nvidia-* / cuda-* distributions torch requires from
the running environment: a ``.pth`` file in the venv names a folder of symlinks to
those distributions' top-level packages and ``.dist-info`` folders (so pip counts
them as installed and still resolves their requirements). Everything else,
torch's small requirements (sympy, networkx, jinja2, ...) and every package the
extras bring, is installed by pip. Before installing, the test asserts that the
packages the extras must bring (tritonclient, grpc, google.protobuf,
onnxruntime, aiohttp, onnx, numpy, ...) are NOT importable in the venv, so none
of them is borrowed. The venv is deleted at the end.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tomllib

sys.path.insert(0, str(Path(__file__).resolve().parent / "fakes"))
import trt_test_models as tm  # noqa: E402

from .serve.conftest import stop_process  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
# Docker extra -> what this test installs instead (None: left out; see the module docstring).
SUBSTITUTES: dict[str, str | None] = {"gpu": "cpu", "tensorrt": None}
# Distributions the venv borrows from the running environment (torch's multi-GB stack, see above).
BORROWED_NAMES = ("torch", "torchvision", "triton")
BORROWED_PREFIXES = ("nvidia-", "cuda-")
# What the extras must bring: none may be visible in the fresh venv before pip installs them.
MUST_BE_INSTALLED = ("edgehal", "tritonclient", "grpc", "google.protobuf", "onnxruntime", "aiohttp", "onnx",
                     "numpy", "click", "sympy")
VENV_BUILD_TIMEOUT_S = 900


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), line continuations joined, comments dropped."""
    out = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_extras(text: str) -> list[str]:
    """The extras the image installs by default: every ``extras="a,b"`` the install step assigns
    (the CUDA image's list and JetPack's), in order, without repeats."""
    runs = " ".join(rest for word, rest in _instructions(text) if word == "RUN")
    if '"/opt/edgehal[${extras}]"' not in runs:
        raise AssertionError('Dockerfile: no `pip install "/opt/edgehal[${extras}]"` step found; '
                             "update tests/test_docker_extras.py to the Dockerfile's install step")
    lists = re.findall(r'\bextras="([A-Za-z0-9_,-]+)"', runs)
    if not lists:
        raise AssertionError('Dockerfile: no `extras="..."` assignment found in the install step; '
                             "update tests/test_docker_extras.py to the Dockerfile's install step")
    return list(dict.fromkeys(e.strip() for lst in lists for e in lst.split(",") if e.strip()))


def dockerfile_copies(text: str) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY instruction (the build context the install step sees)."""
    copies = []
    for word, rest in _instructions(text):
        if word == "COPY":
            args = [a for a in rest.split() if not a.startswith("--")]
            copies.append((args[:-1], args[-1]))
    return copies


def test_extras_are_read_from_the_dockerfile_and_exist():
    extras = dockerfile_extras(DOCKERFILE.read_text())
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "serve" in extras, extras  # /models is served over gRPC as well as HTTP
    # pip only warns about an unknown extra; here it fails.
    assert set(extras) <= set(declared), f"Dockerfile extras {extras} not all in pyproject: {sorted(declared)}"
    for extra, substitute in SUBSTITUTES.items():
        assert substitute is None or substitute in declared, (extra, substitute)
    with pytest.raises(AssertionError, match="no `extras="):
        dockerfile_extras('RUN pip install "/opt/edgehal[${extras}]"')
    with pytest.raises(AssertionError, match="install step"):
        dockerfile_extras('RUN extras="gpu,serve"; pip install edgehal')


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _borrowed_distributions() -> list[importlib.metadata.Distribution]:
    found = {}
    for dist in importlib.metadata.distributions():
        name = _normalise(dist.metadata["Name"])
        if name in BORROWED_NAMES or name.startswith(BORROWED_PREFIXES):
            found[name] = dist
    assert {"torch", "torchvision"} <= set(found), "the running environment lacks torch/torchvision"
    return [found[n] for n in sorted(found)]


def link_borrowed(shim: Path) -> list[str]:
    """Symlink the borrowed distributions' top-level packages and .dist-info folders into ``shim``;
    the names linked."""
    shim.mkdir()
    linked: set[str] = set()
    for dist in _borrowed_distributions():
        for f in dist.files or []:
            top = f.parts[0]
            if top in ("..", "__pycache__") or top.endswith(".pth") or top in linked:
                continue  # console scripts (../../../bin) and path hooks stay out
            src = Path(dist.locate_file(top))
            if src.exists():
                (shim / top).symlink_to(src, target_is_directory=src.is_dir())
                linked.add(top)
    return sorted(linked)


def _venv_python(venv: Path, code: str, env: dict[str, str]) -> str:
    """Run ``code`` in the venv, from a folder outside the checkout (``-c`` puts the working folder on sys.path)."""
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, env=env,
                         cwd=venv, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _clean_env(venv: Path) -> dict[str, str]:
    """The environment of a process in the venv: nothing of the outer one's Python path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV",
                                                           "PYTHONSTARTUP", "PYTHONUSERBASE")}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
               PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", OMP_NUM_THREADS="1")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@pytest.mark.slow
def test_docker_extras_in_a_fresh_venv_serve_an_exported_repository(tmp_path):
    text = DOCKERFILE.read_text()
    docker_extras = dockerfile_extras(text)
    extras = [s for s in (SUBSTITUTES.get(e, e) for e in docker_extras) if s is not None]
    assert "serve" in extras

    # The build context as the Dockerfile's COPY lines lay it out (no tests, no build leftovers).
    src = tmp_path / "context"
    src.mkdir()
    for sources, dest in dockerfile_copies(text):
        for s in sources:
            target = src / Path(s).name if dest.endswith("/") or len(sources) > 1 else src / dest
            if (ROOT / s).is_dir():
                shutil.copytree(ROOT / s, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(ROOT / s, target)
    assert (src / "pyproject.toml").is_file() and (src / "edgehal" / "__init__.py").is_file(), \
        "the Dockerfile's COPY lines no longer copy pyproject.toml and edgehal/"

    venv = tmp_path / "venv"
    env = _clean_env(venv)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, env=env)
        site = Path(_venv_python(venv, "import sysconfig; print(sysconfig.get_paths()['purelib'])", env).strip())
        linked = link_borrowed(tmp_path / "borrowed")
        (site / "_edgehal_test_borrowed.pth").write_text(f"{tmp_path / 'borrowed'}\n")
        assert not {m.split(".")[0] for m in MUST_BE_INSTALLED} & set(linked), linked
        visible = json.loads(_venv_python(venv, (
            "import importlib.util, json\n"
            "def found(m):\n"
            "    try:\n"
            "        return importlib.util.find_spec(m) is not None\n"
            "    except ImportError:\n"
            "        return False\n"
            f"print(json.dumps({{m: found(m) for m in {list(MUST_BE_INSTALLED) + ['torch', 'torchvision']}}}))"),
            env))
        assert visible.pop("torch") and visible.pop("torchvision"), "the borrowed torch is not visible"
        assert not any(visible.values()), f"visible in the fresh venv before pip installs them: {visible}"

        # As the Dockerfile installs it: pip, non-editable, the project folder with its extras.
        started = time.monotonic()
        install = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-cache-dir", f"{src}[{','.join(extras)}]"],
                                 capture_output=True, text=True, env=env, timeout=VENV_BUILD_TIMEOUT_S)
        assert install.returncode == 0, install.stdout[-4000:] + install.stderr[-4000:]
        print(f"pip install [{','.join(extras)}] in the fresh venv: {time.monotonic() - started:.0f} s")
        check = subprocess.run([str(venv / "bin" / "pip"), "check"], capture_output=True, text=True, env=env,
                               timeout=300)
        assert check.returncode == 0, check.stdout + check.stderr
        where = _venv_python(venv, "import edgehal; print(edgehal.__file__)", env).strip()
        assert Path(where).is_relative_to(site), f"edgehal imported from {where}, not the venv's install"

        model = tm.export_cnn(tmp_path / "hal.onnx")
        repo = tmp_path / "repo"
        exported = subprocess.run([str(venv / "bin" / "edgehal"), "export-triton", str(model), "--repository",
                                   str(repo), "--kind", "KIND_CPU"],
                                  capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert exported.returncode == 0, exported.stdout + exported.stderr
        assert (repo / "hal" / "config.pbtxt").is_file() and (repo / "hal" / "1" / "model.onnx").is_file()

        port, grpc_port = _free_port(), _free_port()
        log_path = tmp_path / "serve.log"
        with open(log_path, "wb") as log:
            server = subprocess.Popen([str(venv / "bin" / "edgehal"), "serve", str(repo), "--host", "127.0.0.1",
                                       "--port", str(port), "--grpc-port", str(grpc_port), "--threads", "1"],
                                      stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 180
            while _get(f"http://127.0.0.1:{port}/v2/health/ready") != 200:
                assert server.poll() is None, f"edgehal serve exited {server.returncode}:\n{log_path.read_text()}"
                assert time.monotonic() < deadline, f"edgehal serve never became ready:\n{log_path.read_text()}"
                time.sleep(0.2)
            x = np.random.default_rng(0).standard_normal((2, *tm.SHAPE)).astype(np.float32)
            body = json.dumps({"inputs": [{"name": tm.INPUT, "datatype": "FP32", "shape": list(x.shape),
                                           "data": x.ravel().tolist()}]}).encode()
            request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/hal/infer", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as r:
                reply = json.loads(r.read())
            served = {o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"]) for o in reply["outputs"]}
            assert "listening on grpc://" in log_path.read_text(), log_path.read_text()
        finally:
            stop_process(server, timeout=30)
    finally:
        shutil.rmtree(venv, ignore_errors=True)

    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    expected = dict(zip([o.name for o in session.get_outputs()], session.run(None, {tm.INPUT: x})))
    assert sorted(served) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(served[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
