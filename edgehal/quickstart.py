"""``edgehal quickstart``: the main job end to end in about a minute on 2 CPU cores.

Train a small HAL model (embedded 8x8 digits, or MNIST from a data directory),
evaluate every head, export it with the auxiliary head kept and pruned, and
run the parity suite on both exports.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from edgehal.config import load_config
from edgehal.errors import EdgehalError

# The configs live in the repository's models/configs (README installs the checkout in editable mode).
CONFIGS = Path(__file__).resolve().parent.parent / "models" / "configs"


def _config_path(name: str) -> Path:
    path = CONFIGS / f"{name}.yaml"
    if not path.is_file():
        raise EdgehalError(f"config {path}", "not found",
                           "run quickstart from a checkout installed with `pip install -e .`")
    return path


def run_quickstart(*, data_root: str | Path | None = None, output_dir: str | Path = "quickstart",
                   epochs: int | None = None, log: Callable[[str], None] = print) -> bool:
    from edgehal.evaluate import evaluate_checkpoint
    from edgehal.export.onnx import ExportOptions, export_onnx
    from edgehal.parity import run_parity, write_reports
    from edgehal.train import train

    t0 = time.perf_counter()
    out = Path(output_dir)
    name = "mnist_hal_case1" if data_root else "digits_hal_case1"
    overrides = [f"output_dir={out / name}"]
    if data_root:
        overrides.append(f"data.root={data_root}")
    overrides.append(f"epochs={epochs if epochs else (1 if data_root else 30)}")
    cfg = load_config(_config_path(name), overrides)
    log(f"[1/4] training {name} ({cfg.train.epochs} epochs on {cfg.data.dataset})")
    ckpt = train(cfg, log=log)
    log("[2/4] evaluating every head on the test split")
    evaluate_checkpoint(ckpt, data_root=data_root, json_out=out / "eval.json", confusion=out / "confusion.png",
                        log=log)
    log("[3/4] exporting to ONNX with the auxiliary head kept and pruned")
    kept, pruned = out / f"{name}.keep.onnx", out / f"{name}.prune.onnx"
    export_onnx(ckpt, kept, options=ExportOptions(aux="keep"), data_root=data_root, log=log)
    export_onnx(ckpt, pruned, options=ExportOptions(aux="prune"), data_root=data_root, log=log)
    log("[4/4] parity: PyTorch against both exports on the full test split")
    report = run_parity(ckpt, [kept, pruned], data_root=data_root, log=log)
    md, _ = write_reports(report, out / "parity")
    log(f"quickstart {'PASSED' if report else 'FAILED'} in {time.perf_counter() - t0:.0f}s; "
        f"everything is in {out}/ (parity report: {md})")
    return bool(report)
