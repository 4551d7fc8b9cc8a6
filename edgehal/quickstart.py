"""``edgehal quickstart``: the main job end to end in about a minute on 2 CPU cores.

Train a small HAL model (embedded 8x8 digits, or MNIST from a data directory),
or take a shipped one from ``models/zoo/`` without training (``--zoo``),
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
ZOO = CONFIGS.parent / "zoo"


def _config_path(name: str) -> Path:
    path = CONFIGS / f"{name}.yaml"
    if not path.is_file():
        raise EdgehalError(f"config {path}", "not found",
                           "run quickstart from a checkout installed with `pip install -e .`")
    return path


def zoo_checkpoint(name: str) -> Path:
    """``models/zoo/<name>/checkpoint.pt`` of the checkout, or a clear error naming the shipped models."""
    path = ZOO / name / "checkpoint.pt"
    if not path.is_file():
        shipped = sorted(p.parent.name for p in ZOO.glob("*/checkpoint.pt"))
        raise EdgehalError(f"--zoo {name!r}", "is not a shipped model",
                           f"one of {shipped}" if shipped else "a checkout with models/zoo/")
    return path


def run_quickstart(*, data_root: str | Path | None = None, output_dir: str | Path = "quickstart",
                   epochs: int | None = None, zoo: str | None = None, log: Callable[[str], None] = print) -> bool:
    """Train (or, with ``zoo``, take a shipped checkpoint), evaluate, export kept and pruned, check parity."""
    from edgehal.evaluate import evaluate_checkpoint
    from edgehal.export.onnx import ExportOptions, export_onnx
    from edgehal.parity import run_parity, write_reports
    from edgehal.train import train

    t0 = time.perf_counter()
    out = Path(output_dir)
    if zoo is not None:
        if epochs is not None:
            raise EdgehalError("--epochs", "cannot be combined with --zoo", "a zoo model is already trained")
        name = zoo
        ckpt = zoo_checkpoint(zoo)
        log(f"[1/4] no training: the shipped {ckpt} (card: {ckpt.parent / 'card.md'})")
    else:
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
