"""Model cards for the zoo: what a shipped checkpoint is and what it measurably does.

A card is written next to the checkpoint (``card.yaml`` and ``card.md``) and
states, from the file itself: the architecture (builder, its arguments,
parameter count, heads), the data, the ``edgehal train`` command that
reproduces the stored config, the seed, the test error of every head
*recomputed* from the checkpoint on the full test split, and the parity status
of its ONNX exports (kept and pruned, exported to a temporary folder and run
through :func:`edgehal.parity.run_parity` on the full test split). Nothing is
copied from training logs, so ``metrics.test_error_percent`` is exactly what
``edgehal eval`` prints today, rounded to 2 decimals. The checkpoint is only
read; its sha256 is checked before and after.
"""

from __future__ import annotations

import json
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from edgehal.errors import EdgehalError

CARD_FORMAT = "edgehal-card/1"
CONFIGS_DIR = Path(__file__).resolve().parent.parent / "models" / "configs"
# Machine-specific: where the data lives (``$EDGEHAL_DATA`` says it at run time).
_IGNORED = {("data", "root")}


def _override(key: str, value: Any) -> str:
    # JSON is YAML, which is how --set parses its values.
    return f"{key}={json.dumps(value)}"


def config_overrides(base: dict[str, Any], stored: dict[str, Any]) -> list[str]:
    """``--set`` items that turn the config ``base`` into ``stored`` (both ``Config.to_dict()``).

    ``output_dir`` (its own CLI option) and ``data.root`` are left out. Raises
    :class:`EdgehalError` when ``stored`` lacks a model option ``base`` sets
    (``--set`` cannot remove a key).
    """
    items = []
    for key in ("name", "description"):
        if stored.get(key) != base.get(key):
            items.append(_override(key, stored.get(key)))
    base_model, model = base.get("model", {}), stored.get("model", {})
    removed = sorted(set(base_model) - set(model))
    if removed:
        raise EdgehalError("stored config", f"lacks model option {removed[0]!r} of its base config",
                           "a checkpoint trained from that config with --set overrides")
    items += [_override(f"model.{k}", v) for k, v in model.items() if base_model.get(k, object()) != v]
    for section in ("data", "train"):
        b, s = base.get(section, {}), stored.get(section, {})
        items += [_override(f"{section}.{k}", v) for k, v in s.items()
                  if (section, k) not in _IGNORED and b.get(k) != v]
    return items


def reproduce_command(stored: dict[str, Any], *, configs_dir: str | Path | None = None,
                      display_root: str | Path | None = None) -> dict[str, Any]:
    """The ``edgehal train`` command that reproduces the stored config, checked by reloading it.

    The base config is ``<configs_dir>/<name>.yaml`` (``configs_dir`` defaults
    to the repository's ``models/configs``). Returns ``{"argv", "command",
    "base_config", "overrides"}``; ``argv`` is None, with a ``note``, when no
    base config reproduces the stored one (the card still carries the full config).
    """
    from edgehal.config import load_config

    folder = Path(configs_dir) if configs_dir is not None else CONFIGS_DIR
    base_path = folder / f"{stored.get('name')}.yaml"
    if not base_path.is_file():
        return {"argv": None, "command": None, "base_config": None, "overrides": [],
                "note": f"no base config {base_path.name} in {folder}; the full config is in this card"}
    try:
        overrides = config_overrides(load_config(base_path).to_dict(), stored)
        rebuilt = load_config(base_path, overrides).to_dict()
    except EdgehalError as exc:
        return {"argv": None, "command": None, "base_config": str(base_path), "overrides": [],
                "note": f"the stored config cannot be expressed as {base_path.name} + --set ({exc})"}
    rebuilt["output_dir"] = stored.get("output_dir")
    rebuilt["data"]["root"] = stored.get("data", {}).get("root")
    if rebuilt != stored:
        return {"argv": None, "command": None, "base_config": str(base_path), "overrides": overrides,
                "note": f"{base_path.name} + --set does not reproduce the stored config"}
    shown = _display(base_path, display_root)
    argv = ["edgehal", "train", shown]
    for item in overrides:
        argv += ["--set", item]
    if stored.get("output_dir"):
        argv += ["--output-dir", str(stored["output_dir"])]
    return {"argv": argv, "command": shlex.join(argv), "base_config": shown, "overrides": overrides}


def _display(path: Path, root: str | Path | None) -> str:
    root = Path(root) if root is not None else CONFIGS_DIR.parent.parent
    try:
        return str(path.resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def _parity_section(checkpoint: Path, *, data_root: str | Path | None, work_dir: Path,
                    log: Callable[[str], None]) -> dict[str, Any]:
    from edgehal.export.onnx import ExportOptions, export_onnx
    from edgehal.fileio import sha256_file
    from edgehal.parity import run_parity

    exports, paths = {}, []
    for aux in ("keep", "prune"):
        path = work_dir / f"model.{aux}.onnx"
        try:
            rep = export_onnx(checkpoint, path, options=ExportOptions(aux=aux), data_root=data_root, log=log)
        except EdgehalError as exc:
            return {"passed": False, "error": f"export --aux {aux} failed: {exc}", "artifacts": exports}
        exports[aux] = {"outputs": list(rep.outputs), "nodes": rep.nodes, "bytes": rep.bytes,
                        "sha256": sha256_file(path), "opset": ExportOptions().opset, "precision": "fp32",
                        "export_max_abs_diff": {k: float(v) for k, v in rep.max_abs_diff.items()}}
        paths.append(path)
    report = run_parity(checkpoint, paths, split="test", data_root=data_root, log=log)
    for aux, result in zip(("keep", "prune"), report.artifacts):
        exports[aux].update({
            "passed": result.passed,
            "heads": {h.head: {"error_percent": h.error, "pytorch_error_percent": h.reference_error,
                               "error_diff_pp": h.error_diff_pp, "agreement_percent": h.agreement,
                               "max_abs_logit_diff": h.max_abs_diff, "mcnemar_p": h.mcnemar_p,
                               "failures": list(h.failures)}
                      for h in result.heads}})
    return {"passed": report.passed, "split": report.split, "samples": report.samples,
            "tolerance": "edgehal.parity.DEFAULT_TOLERANCES['fp32']", "artifacts": exports}


def build_card(checkpoint: str | Path, *, data_root: str | Path | None = None, parity: bool = True,
               configs_dir: str | Path | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The card of ``checkpoint`` as a plain dict (see the module docstring)."""
    from datetime import datetime, timezone

    from edgehal.artifact import read_artifact
    from edgehal.checkpoint import versions
    from edgehal.evaluate import evaluate_checkpoint
    from edgehal.fileio import sha256_file
    from edgehal.pipeline import data_for_checkpoint

    path = Path(checkpoint)
    artifact = read_artifact(path)
    if artifact.kind != "checkpoint":
        raise EdgehalError(f"card for {path}", f"needs a checkpoint, not a {artifact.kind} file",
                           "the checkpoint.pt of a trained model")
    ckpt = artifact.checkpoint
    sha_before = sha256_file(path)
    model = ckpt.build_model()
    manifest = ckpt.manifest
    stored = ckpt.config
    data = data_for_checkpoint(ckpt, data_root=data_root)
    log(f"card for {path}: evaluating every head on the full test split")
    evaluated = evaluate_checkpoint(path, split="test", data_root=data_root, log=log)
    errors = {h: round(float(m["error_rate"]), 2) for h, m in evaluated["metrics"].items()
              if isinstance(m, dict) and "error_rate" in m}
    history = ckpt.payload.get("history", [])
    training = ckpt.payload.get("training", {})
    card: dict[str, Any] = {
        "format": CARD_FORMAT,
        "name": ckpt.payload.get("name", path.parent.name),
        "description": stored.get("description", ""),
        "checkpoint": {"file": path.name, "sha256": sha_before, "bytes": path.stat().st_size},
        "architecture": {
            "builder": ckpt.model_name, "kwargs": ckpt.model_kwargs,
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "input": {"name": manifest.input_name, "shape": list(manifest.input_shape),
                      "dtype": manifest.input_dtype},
            "heads": [{"name": h.name, "kind": h.kind, "level": h.level, "classes": h.num_outputs,
                       "case": h.case, "feeds_main": h.feeds_main} for h in manifest.heads],
        },
        "data": {"dataset": data.name, "train_samples": len(data.train), "val_samples": len(data.val),
                 "test_samples": len(data.test), "limit": stored.get("data", {}).get("limit"),
                 "preprocessing": artifact.preprocessing.to_dict() if artifact.preprocessing else None},
        "training": {**reproduce_command(stored, configs_dir=configs_dir),
                     "seed": stored.get("train", {}).get("seed"), "epochs": training.get("epoch"),
                     "train_seconds": round(sum(float(r.get("seconds", 0.0)) for r in history), 1),
                     "config": stored},
        "metrics": {"split": "test", "samples": evaluated["samples"], "test_error_percent": errors},
        "versions": {"trained_with": ckpt.payload.get("versions", {}), "card_written_with": versions()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if parity:
        log("card: exporting kept and pruned ONNX and running parity on the full test split")
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="edgehal-card-") as tmp:
            card["parity"] = _parity_section(path, data_root=data_root, work_dir=Path(tmp), log=log)
        card["parity"]["seconds"] = round(time.perf_counter() - t0, 1)
    if sha256_file(path) != sha_before:
        raise EdgehalError(f"checkpoint {path}", "changed while its card was written",
                           "nothing else writing to it; run again")
    # A JSON round trip leaves only plain types (no tuples), which YAML's safe dumper needs.
    return json.loads(json.dumps(card))


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "n/a" if v is None else format(v, spec)


def card_markdown(card: dict[str, Any]) -> str:
    arch, data, tr, m = card["architecture"], card["data"], card["training"], card["metrics"]
    lines = [f"# {card['name']}", "", card.get("description") or "", "",
             f"- **Architecture**: `{arch['builder']}`, {arch['parameters']:,} parameters, input "
             f"`{arch['input']['name']}` {arch['input']['shape']}",
             f"- **Data**: {data['dataset']} ({data['train_samples']:,} train / {data['val_samples']:,} val / "
             f"{data['test_samples']:,} test)" + (f", limited to {data['limit']} per split" if data["limit"] else ""),
             f"- **Seed**: {tr['seed']}; **epochs**: {tr['epochs']}; training time {tr['train_seconds']:.0f}s",
             f"- **Checkpoint**: `{card['checkpoint']['file']}` ({card['checkpoint']['bytes'] / 1e6:.1f} MB), "
             f"sha256 `{card['checkpoint']['sha256']}`", "",
             "## Training command", ""]
    if tr.get("command"):
        lines += ["```", f"EDGEHAL_DATA=<data dir> {tr['command']}", "```"]
    else:
        lines.append(f"Not expressible as a command ({tr.get('note')}); the full config is in `card.yaml`.")
    lines += ["", f"## Test error (recomputed from the checkpoint, {m['samples']:,} {m['split']} samples)", "",
              "| head | kind | classes | error % |", "| --- | --- | --- | --- |"]
    kinds = {h["name"]: h for h in arch["heads"]}
    for head, err in m["test_error_percent"].items():
        h = kinds.get(head, {})
        lines.append(f"| {head} | {h.get('kind', '')} | {h.get('classes', '')} | {err:.2f} |")
    parity = card.get("parity")
    if parity:
        lines += ["", f"## ONNX parity: {'PASS' if parity['passed'] else 'FAIL'}", ""]
        if parity.get("error"):
            lines.append(parity["error"])
        else:
            lines += [f"FP32 ONNX (opset {parity['artifacts']['keep']['opset']}) against PyTorch on the full "
                      f"{parity['split']} split ({parity['samples']:,} samples), `edgehal parity` tolerances.", "",
                      "| export | size KiB | nodes | head | error % | diff (pp) | agreement % | max abs diff "
                      "| result |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
            for aux, a in parity["artifacts"].items():
                for head, h in a["heads"].items():
                    lines.append(f"| {aux} | {a['bytes'] / 1024:.0f} | {a['nodes']} | {head} | "
                                 f"{_fmt(h['error_percent'])} | {_fmt(h['error_diff_pp'], '+.2f')} | "
                                 f"{_fmt(h['agreement_percent'])} | {h['max_abs_logit_diff']:.2g} | "
                                 f"{'pass' if not h['failures'] else 'FAIL: ' + '; '.join(h['failures'])} |")
    lines += ["", f"Card written {card['created']} by edgehal "
              f"{card['versions']['card_written_with'].get('edgehal')} (`benchmarks/make_card.py`)."]
    return "\n".join(lines) + "\n"


def write_card(checkpoint: str | Path, *, out_dir: str | Path | None = None, data_root: str | Path | None = None,
               parity: bool = True, configs_dir: str | Path | None = None,
               log: Callable[[str], None] = print) -> tuple[Path, Path]:
    """Write ``card.yaml`` and ``card.md`` (into ``out_dir``, defaults to the checkpoint's folder)."""
    import yaml

    from edgehal.fileio import atomic_write_text

    card = build_card(checkpoint, data_root=data_root, parity=parity, configs_dir=configs_dir, log=log)
    out = Path(out_dir) if out_dir is not None else Path(checkpoint).parent
    y, md = out / "card.yaml", out / "card.md"
    atomic_write_text(y, yaml.safe_dump(card, sort_keys=False, width=120))
    atomic_write_text(md, card_markdown(card))
    return y, md
