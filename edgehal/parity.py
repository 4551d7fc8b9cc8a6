"""Parity: run -> postprocess -> compare (Polygraphy's comparator shape).

PyTorch and every artifact are run on the same full split; each head is scored
by the manifest's evaluator; then per artifact and head: error rate, its
difference from PyTorch in percentage points, prediction agreement, max and
mean |output difference| and an exact McNemar test on the samples where
exactly one of the two is right. A comparison result is truthy when it passed.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from edgehal.errors import EdgehalError
from edgehal.manifest import HeadManifest
from edgehal.scoring import compute_metrics, head_target


@dataclass(frozen=True)
class Tolerance:
    """Pass criteria for one head.

    ``max_error_diff``: |artifact error - PyTorch error| in percentage points.
    ``min_agreement``: % of samples with the same prediction.
    ``max_abs_diff``: largest |output difference| (logits, or metres for regression heads).
    ``mcnemar_alpha``: fail when the artifact is worse and McNemar's p is below this.
    """

    max_error_diff: float
    min_agreement: float
    max_abs_diff: float = math.inf
    mcnemar_alpha: float = 0.01


# Why these defaults: FP32 runs the same arithmetic in a different order, so its
# logits move by ~1e-6 and a prediction may flip only on an exact near-tie: the
# error rate must not move at all and at most 1 in 10,000 predictions may flip.
# FP16 keeps ~3 significant digits: a few near-ties may flip (0.2%), costing at
# most 0.1 pp. Per-channel INT8 with calibration typically moves MNIST/CIFAR
# error by <0.2 pp; 0.5 pp and 99% agreement leave room for harder data while
# still catching a broken calibration (which costs whole percentage points).
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_error_diff=0.0, min_agreement=99.99, max_abs_diff=1e-3),
    "fp16": Tolerance(max_error_diff=0.10, min_agreement=99.8),
    "int8": Tolerance(max_error_diff=0.50, min_agreement=99.0),
}
REGRESSION_ATOL = {"fp32": 1e-4, "fp16": 0.5, "int8": 2.0}


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant pairs (binomial, p=0.5)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    # log-space binomial tail to stay exact-enough for large n
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
            for i in range(k + 1)]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(v - top) for v in logs)
    return min(1.0, 2.0 * tail)


@dataclass
class HeadComparison:
    head: str
    task: str
    reference_error: float | None
    error: float | None
    error_diff_pp: float | None
    agreement: float | None
    max_abs_diff: float
    mean_abs_diff: float
    only_reference_right: int = 0
    only_artifact_right: int = 0
    mcnemar_p: float | None = None
    passed: bool = True
    failures: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.passed


@dataclass
class ArtifactResult:
    artifact: str
    backend: str
    precision: str
    heads: list[HeadComparison]
    metrics: dict
    seconds: float

    @property
    def passed(self) -> bool:
        return all(self.heads) and bool(self.heads)

    def __bool__(self) -> bool:
        return self.passed


@dataclass
class ParityReport:
    checkpoint: str
    split: str
    samples: int
    reference_metrics: dict
    artifacts: list[ArtifactResult]
    seconds: float

    @property
    def passed(self) -> bool:
        return all(self.artifacts)

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        for a, obj in zip(d["artifacts"], self.artifacts):
            a["passed"] = obj.passed
        return _finite(d)

    def markdown(self) -> str:
        lines = [f"# Parity report: {'PASS' if self.passed else 'FAIL'}", "",
                 f"- checkpoint: `{self.checkpoint}`", f"- split: {self.split} ({self.samples} samples)",
                 f"- total time: {self.seconds:.1f}s", "",
                 "| artifact | precision | head | PyTorch error % | artifact error % | diff (pp) | agreement % "
                 "| max abs diff | mean abs diff | McNemar p | result |",
                 "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for a in self.artifacts:
            for h in a.heads:
                lines.append(
                    f"| `{Path(a.artifact).name}` | {a.precision} | {h.head} | {_f(h.reference_error)} | "
                    f"{_f(h.error)} | {_f(h.error_diff_pp, '+.2f')} | {_f(h.agreement, '.2f')} | "
                    f"{h.max_abs_diff:.3g} | {h.mean_abs_diff:.3g} | {_f(h.mcnemar_p, '.3g')} | "
                    f"{'pass' if h.passed else 'FAIL: ' + '; '.join(h.failures)} |")
        extra = [(Path(a.artifact).name, row) for a in self.artifacts
                 for row in model_level_metrics(self.reference_metrics, a.metrics)]
        if extra:
            lines += ["", "| artifact | metric | PyTorch | artifact |", "| --- | --- | --- | --- |"]
            lines += [f"| `{name}` | {key} | {ref:.6g} | {got:.6g} |" for name, (key, ref, got) in extra]
        return "\n".join(lines) + "\n"


def _f(v, fmt: str = ".2f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def parse_tolerances(items: Sequence[str]) -> dict[str | None, dict[str, float]]:
    """``[HEAD:]KEY=VALUE`` items -> {head or None: {key: value}}."""
    keys = {f for f in Tolerance.__dataclass_fields__}
    out: dict[str | None, dict[str, float]] = {}
    for item in items:
        if "=" not in item:
            raise EdgehalError(f"--tolerance {item!r}", "has no '='", "[HEAD:]KEY=VALUE, e.g. max_error_diff=0.2")
        left, value = item.split("=", 1)
        head, _, key = left.rpartition(":")
        if key not in keys:
            raise EdgehalError(f"--tolerance {item!r}", f"{key!r} is not a tolerance", f"one of {sorted(keys)}")
        try:
            out.setdefault(head or None, {})[key] = float(value)
        except ValueError:
            raise EdgehalError(f"--tolerance {item!r}", f"{value!r} is not a number") from None
    return out


def tolerance_for(head: str, precision: str, overrides: Mapping[str | None, Mapping[str, float]]) -> Tolerance:
    base = DEFAULT_TOLERANCES.get(precision, DEFAULT_TOLERANCES["fp32"])
    return replace(base, **{**overrides.get(None, {}), **overrides.get(head, {})})


def run_batched(runner, x: np.ndarray, *, input_name: str, outputs: Sequence[str], batch_size: int,
                progress: str | None = None) -> dict[str, np.ndarray]:
    """Run ``runner`` over ``x`` in batches; pads the last batch for fixed-batch models."""
    from tqdm.auto import tqdm

    spec = next(s for s in runner.input_specs() if s.name == input_name)
    fixed = spec.shape[0] if spec.shape and spec.shape[0] and spec.shape[0] > 0 else None
    bs = fixed or min(batch_size, runner.max_batch or batch_size)
    chunks: dict[str, list[np.ndarray]] = {n: [] for n in outputs}
    bar = tqdm(total=len(x), desc=progress, unit="img", leave=False, disable=None if progress else True)
    for start in range(0, len(x), bs):
        batch = x[start:start + bs]
        n = len(batch)
        if fixed and n < fixed:
            batch = np.concatenate([batch, np.repeat(batch[-1:], fixed - n, axis=0)])
        out = runner.infer({input_name: np.ascontiguousarray(batch, dtype=np.dtype(spec.dtype))}, outputs=outputs)
        for name in outputs:
            chunks[name].append(np.asarray(out[name])[:n].astype(np.float32))
        bar.update(n)
    bar.close()
    return {k: np.concatenate(v) for k, v in chunks.items()}


def compare_head(manifest: HeadManifest, head_name: str, ref: np.ndarray, got: np.ndarray,
                 labels: Mapping[str, np.ndarray], tol: Tolerance, *, regression_atol: float) -> HeadComparison:
    head = manifest.head(head_name)
    if ref.shape != got.shape:
        return HeadComparison(head_name, head.task, None, None, None, None, math.inf, math.inf, passed=False,
                              failures=[f"shape {got.shape} differs from PyTorch's {ref.shape}"])
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    max_diff = float(diff.max()) if diff.size else 0.0
    mean_diff = float(diff.mean()) if diff.size else 0.0
    if not np.isfinite(got).all():
        max_diff = mean_diff = math.inf
    cmp = HeadComparison(head_name, head.task, None, None, None, None, max_diff, mean_diff)
    if head.task == "regression":
        if not max_diff <= regression_atol:
            cmp.failures.append(f"max abs diff {max_diff:.3g} > {regression_atol:g}")
    else:
        ref_pred = ref.argmax(1)
        got_pred = got.argmax(1)
        cmp.agreement = 100.0 * float((ref_pred == got_pred).mean())
        target = np.asarray(head_target(head, labels))
        # A target of -1 means the head does not apply to that sample (a floor head of another
        # building, an HD-CNN branch of another superclass): it is scored on the others only.
        scored = target >= 0
        ref_right, got_right = (ref_pred == target)[scored], (got_pred == target)[scored]
        cmp.reference_error = 100.0 * float((~ref_right).mean()) if scored.any() else 0.0
        cmp.error = 100.0 * float((~got_right).mean()) if scored.any() else 0.0
        cmp.error_diff_pp = cmp.error - cmp.reference_error
        cmp.only_reference_right = int((ref_right & ~got_right).sum())
        cmp.only_artifact_right = int((~ref_right & got_right).sum())
        cmp.mcnemar_p = mcnemar_exact(cmp.only_reference_right, cmp.only_artifact_right)
        if abs(cmp.error_diff_pp) > tol.max_error_diff + 1e-9:
            cmp.failures.append(f"error differs by {cmp.error_diff_pp:+.2f} pp (> {tol.max_error_diff:g})")
        if cmp.agreement < tol.min_agreement:
            cmp.failures.append(f"agreement {cmp.agreement:.2f}% (< {tol.min_agreement:g}%)")
        if not max_diff <= tol.max_abs_diff:
            cmp.failures.append(f"max abs diff {max_diff:.3g} (> {tol.max_abs_diff:g})")
        if cmp.only_reference_right > cmp.only_artifact_right and cmp.mcnemar_p < tol.mcnemar_alpha:
            cmp.failures.append(f"significantly worse (McNemar p={cmp.mcnemar_p:.2g})")
    cmp.passed = not cmp.failures
    return cmp


def run_parity(checkpoint: str | Path, artifacts: Sequence[str | Path], *, split: str = "test",
               data_root: str | Path | None = None, batch_size: int = 500,
               tolerances: Sequence[str] = (), head_map: Mapping[str, str] | None = None,
               precision: str | None = None, backends: Mapping[str, str] | None = None,
               limit: int | None = None, log: Callable[[str], None] = print) -> ParityReport:
    """Evaluate PyTorch and each artifact on ``split`` and compare them head by head.

    ``head_map`` maps manifest head names to output names for a plain ONNX file
    without edgehal metadata; ``precision`` then says what it is (defaults to
    the artifact's metadata, else fp32).
    """
    from edgehal.checkpoint import load_checkpoint
    from edgehal.runtime.loader import open_runner
    from edgehal.runtime.torch import TorchRunner
    from edgehal.pipeline import data_for_checkpoint

    t0 = time.perf_counter()
    overrides = parse_tolerances(tolerances)
    ckpt = load_checkpoint(checkpoint)
    manifest = ckpt.manifest
    for head in {h for h in overrides if h is not None} | set(head_map or {}):
        manifest.head(head)  # an unknown head name is an error, listing the valid ones
    data = data_for_checkpoint(ckpt, data_root=data_root).split(split)
    if limit:
        import torch
        data = data.subset(torch.arange(min(limit, len(data))))
    x = data.x.float().numpy()
    labels = data.numpy_labels()
    log(f"parity on {split} split: {len(x)} samples; reference PyTorch ({ckpt.path})")
    with TorchRunner(ckpt, device="cpu") as ref_runner:
        ref = run_batched(ref_runner, x, input_name=manifest.input_name, outputs=manifest.head_names,
                          batch_size=batch_size, progress="pytorch")
    ref_metrics = compute_metrics(manifest, ref, labels)
    results = []
    for artifact in artifacts:
        a0 = time.perf_counter()
        runner = open_runner(artifact, backend=(backends or {}).get(str(artifact)))
        with runner:
            meta = getattr(runner, "metadata", None)
            if head_map:
                mapping = dict(head_map)
            elif runner.manifest is not None:
                mapping = {h: h for h in runner.manifest.head_names}
            else:
                raise EdgehalError(f"artifact {artifact}", "has no edgehal metadata",
                                   "name its outputs with --head HEAD=OUTPUT (e.g. --head logits=output0)")
            missing = [o for o in mapping.values() if o not in runner.output_names()]
            if missing:
                raise EdgehalError(f"artifact {artifact}", f"has no output {missing[0]!r}",
                                   f"outputs {list(runner.output_names())}")
            prec = precision or (meta.precision if meta else None) or getattr(runner, "precision", None) or "fp32"
            input_name = runner.input_specs()[0].name
            raw = run_batched(runner, x, input_name=input_name, outputs=list(mapping.values()),
                              batch_size=batch_size, progress=Path(artifact).name)
        got = {head: raw[out] for head, out in mapping.items()}
        sub = manifest.only([h for h in manifest.head_names if h in got] or [manifest.main.name])
        got_metrics = compute_metrics(sub, got, labels) if manifest.main.name in got else {}
        heads = [compare_head(manifest, h, ref[h], got[h], labels, tolerance_for(h, prec, overrides),
                              regression_atol=REGRESSION_ATOL.get(prec, 1e-4))
                 for h in manifest.head_names if h in got]
        result = ArtifactResult(str(artifact), runner.name, prec, heads, got_metrics, time.perf_counter() - a0)
        results.append(result)
        log(f"{'PASS' if result else 'FAIL'} {artifact} ({prec}, {runner.name}, {result.seconds:.1f}s)")
        for key, ref_value, value in model_level_metrics(ref_metrics, got_metrics):
            log(f"  {key}: {value:.6g} (PyTorch {ref_value:.6g})")
        for h in heads:
            if h.error is not None:
                log(f"  {h.head}: error {h.error:.2f}% (PyTorch {h.reference_error:.2f}%, "
                    f"{h.error_diff_pp:+.2f} pp), agreement {h.agreement:.2f}%, max|diff| {h.max_abs_diff:.3g}, "
                    f"McNemar p {h.mcnemar_p:.3g}" + ("" if h else f"  <- {'; '.join(h.failures)}"))
            else:
                log(f"  {h.head}: max|diff| {h.max_abs_diff:.3g}, mean {h.mean_abs_diff:.3g}"
                    + ("" if h else f"  <- {'; '.join(h.failures)}"))
    return ParityReport(str(ckpt.path), split, len(x), ref_metrics, results, time.perf_counter() - t0)


def model_level_metrics(ref_metrics: dict, got_metrics: dict) -> list[tuple[str, float, float]]:
    """Model-level numbers of an evaluator (``summary``: hit rates, metres; HD-CNN's coarse/fine
    consistency), as (name, PyTorch value, artifact value)."""
    rows = []
    for section in ("summary", "coarse_fine_consistency"):
        ref, got = ref_metrics.get(section), got_metrics.get(section)
        if isinstance(ref, dict) and isinstance(got, dict):
            rows += [(f"{section}.{k}", float(ref[k]), float(got[k])) for k in ref
                     if k in got and isinstance(ref[k], (int, float)) and isinstance(got[k], (int, float))]
        elif isinstance(ref, (int, float)) and isinstance(got, (int, float)):
            rows.append((section, float(ref), float(got)))
    return rows


def write_reports(report: ParityReport, out_dir: str | Path) -> tuple[Path, Path]:
    from edgehal.fileio import atomic_write_text

    out = Path(out_dir)
    md, js = out / "parity.md", out / "parity.json"
    atomic_write_text(md, report.markdown())
    atomic_write_text(js, json.dumps(report.to_dict(), indent=2, sort_keys=True))
    return md, js
