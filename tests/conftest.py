"""Shared fixtures: tiny models and data built once per session, and the real data sets.

Real data comes from ``$EDGEHAL_DATA`` (CI sets it to ``../shared/data``); when
it is unset the sibling ``../shared/data`` of the checkout is used if present.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgehal.export.onnx import ExportOptions, export_onnx

REPO = Path(__file__).resolve().parent.parent
ZOO = REPO / "models" / "zoo"


def _data_root() -> Path | None:
    value = os.environ.get("EDGEHAL_DATA")
    if value:
        return Path(value)
    sibling = REPO.parent / "shared" / "data"
    return sibling if sibling.is_dir() else None


DATA_ROOT = _data_root()
if DATA_ROOT is not None:
    os.environ.setdefault("EDGEHAL_DATA", str(DATA_ROOT))


@pytest.fixture(scope="session")
def data_root() -> Path:
    if DATA_ROOT is None or not (DATA_ROOT / "MNIST" / "raw").is_dir():
        pytest.skip("real data not found: set EDGEHAL_DATA to the shared data folder (CI always does)")
    return DATA_ROOT


@pytest.fixture(scope="session")
def mnist_checkpoint(data_root) -> Path:
    """The shipped MNIST HAL Case1 checkpoint of the model zoo."""
    path = ZOO / "mnist_hal_case1" / "checkpoint.pt"
    assert path.is_file(), f"model zoo checkpoint missing: {path}"
    return path


def _train_digits(tmp: Path, name: str, overrides: list[str]) -> Path:
    from edgehal.config import load_config
    from edgehal.train import train

    cfg = load_config(REPO / "models" / "configs" / "digits_hal_case1.yaml",
                      [f"output_dir={tmp / name}", "threads=2", *overrides])
    return train(cfg, log=lambda _: None, progress=False)


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory) -> Path:
    """A HAL Case1 model trained for a few epochs on the embedded digits (seconds)."""
    return _train_digits(tmp_path_factory.mktemp("digits"), "hal", ["epochs=6"])


@pytest.fixture(scope="session")
def digits_ds_checkpoint(tmp_path_factory) -> Path:
    """Training-only (deep supervision) Case1 branch: it does not feed the classifier."""
    return _train_digits(tmp_path_factory.mktemp("digits_ds"), "ds",
                         ["epochs=3", "model.aux=[{case: case1, feeds_main: false}]"])


@pytest.fixture(scope="session")
def mnist_exports(mnist_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """The zoo checkpoint exported kept and pruned (FP32) and quantized (INT8)."""
    from edgehal.export.quantize import QuantizeOptions, quantize_int8

    out = tmp_path_factory.mktemp("mnist_onnx")
    paths = {"keep": out / "keep.onnx", "prune": out / "prune.onnx", "int8": out / "int8.onnx"}
    export_onnx(mnist_checkpoint, paths["keep"], options=ExportOptions(aux="keep"), log=quiet)
    export_onnx(mnist_checkpoint, paths["prune"], options=ExportOptions(aux="prune"), log=quiet)
    quantize_int8(paths["keep"], paths["int8"], calib_data=DATA_ROOT,
                  options=QuantizeOptions(calib_samples=256), log=quiet)
    return paths


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="session")
def loc_checkpoint(data_root, tmp_path_factory):
    from edgehal.config import load_config
    from edgehal.train import train

    if not (data_root / "UJIIndoorLoc" / "trainingData.csv").is_file():
        pytest.skip("UJIIndoorLoc not found in the shared data folder")
    out = tmp_path_factory.mktemp("loc")
    cfg = load_config(REPO / "models" / "configs" / "ujiindoorloc_hier.yaml",
                      [f"output_dir={out / 'run'}", "epochs=2", "data.limit=4000", "model.hidden=[128]", "threads=2"])
    return train(cfg, log=quiet, progress=False)


@pytest.fixture(scope="session")
def loc_exports(loc_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("loc_onnx")
    paths = {aux: out / f"loc.{aux}.onnx" for aux in ("keep", "prune")}
    for aux, p in paths.items():
        export_onnx(loc_checkpoint, p, options=ExportOptions(aux=aux), log=quiet)
    return paths


