"""Compare: two postprocessed runs, head by head, against typed tolerances.

Per head: max and mean |output difference|; for a head with targets
(classification) also both error rates, their difference in percentage
points, prediction agreement and an exact McNemar test on the samples where
exactly one of the two is right. A comparison is truthy when it passed and
carries its statistics (Polygraphy's ``comparator/compare.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Mapping, Sequence

import numpy as np

from edgehal.errors import EdgehalError
from edgehal.manifest import HeadManifest
from edgehal.parity.postprocess import Postprocessed


@dataclass(frozen=True)
class Tolerance:
    """Pass criteria for one head.

    ``max_error_diff``: |artifact error - reference error| in percentage points.
    ``min_agreement``: % of samples with the same prediction.
    ``max_abs_diff``: largest |output difference|, in the head's units (logits, or metres for regression heads).
    ``mcnemar_alpha``: fail when the artifact is worse and McNemar's p is below this.
    """

    max_error_diff: float
    min_agreement: float
    max_abs_diff: float = math.inf
    mcnemar_alpha: float = 0.01

    def __post_init__(self) -> None:
        if not self.max_error_diff >= 0 or not self.max_abs_diff >= 0:
            raise EdgehalError("tolerance", f"{self} has a negative or NaN limit", "limits >= 0")
        if not 0 <= self.min_agreement <= 100:
            raise EdgehalError("tolerance", f"min_agreement {self.min_agreement:g} is outside 0..100",
                               "a percentage")
        if not 0 <= self.mcnemar_alpha <= 1:
            raise EdgehalError("tolerance", f"mcnemar_alpha {self.mcnemar_alpha:g} is outside 0..1",
                               "a probability (0 disables the test)")


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
# Regression heads are judged by |output difference| alone, in their units (metres). FP32: 1 mm.
# PyTorch fp32 is itself ~1e-4 m from an fp64 reference on UJIIndoorLoc's coordinates, and an
# exporter that folds BatchNormalization into the next Gemm (the torch.export-based one does, as
# TensorRT does) moves an output by a few 1e-4 m; a wrong input or weight moves it by metres.
REGRESSION_ATOL = {"fp32": 1e-3, "fp16": 0.5, "int8": 2.0}

#: Parsed ``--tolerance`` items: head name (None: every head) -> {criterion: value}.
ToleranceOverrides = Mapping[str | None, Mapping[str, float]]


def default_tolerance(precision: str, *, task: str = "classification") -> Tolerance:
    """The default of a precision (fp32's for an unknown one) for a head of ``task``."""
    base = DEFAULT_TOLERANCES.get(precision, DEFAULT_TOLERANCES["fp32"])
    if task == "regression":
        return replace(base, max_abs_diff=REGRESSION_ATOL.get(precision, REGRESSION_ATOL["fp32"]))
    return base


@dataclass(frozen=True)
class Tolerances:
    """The tolerance of each head: ``heads[name]`` where given, else ``default``."""

    default: Tolerance
    heads: Mapping[str, Tolerance] = field(default_factory=dict)

    def for_head(self, name: str) -> Tolerance:
        return self.heads.get(name, self.default)

    @classmethod
    def for_precision(cls, precision: str, manifest: HeadManifest, *,
                      overrides: ToleranceOverrides | None = None) -> "Tolerances":
        """The precision's default for each head of ``manifest`` (by its task), with ``overrides``
        applied: those for every head (key None) first, then a head's own."""
        overrides = overrides or {}
        common = dict(overrides.get(None, {}))
        heads = {h.name: replace(default_tolerance(precision, task=h.task), **{**common, **overrides.get(h.name, {})})
                 for h in manifest.heads}
        return cls(default=replace(default_tolerance(precision), **common), heads=heads)


def parse_tolerances(items: Sequence[str]) -> dict[str | None, dict[str, float]]:
    """``[HEAD:]KEY=VALUE`` items -> {head or None: {key: value}}."""
    keys = {f.name for f in fields(Tolerance)}
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
    """One head's statistics and verdict; truthy when it passed."""

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
class Comparison:
    """Every head of a candidate compared with the reference; truthy when each passed."""

    heads: list[HeadComparison]

    @property
    def passed(self) -> bool:
        return bool(self.heads) and all(self.heads)

    def __bool__(self) -> bool:
        return self.passed

    def head(self, name: str) -> HeadComparison:
        for h in self.heads:
            if h.head == name:
                return h
        raise EdgehalError(f"head {name!r}", "was not compared", f"one of {[h.head for h in self.heads]}")


def compare(reference: Postprocessed, candidate: Postprocessed, tolerances: Tolerances) -> Comparison:
    """Compare each head of ``candidate`` with the same head of ``reference``."""
    if candidate.samples != reference.samples:
        raise EdgehalError("candidate run", f"has {candidate.samples} samples",
                           f"the reference's {reference.samples}: both must run the same inputs")
    missing = [h for h in candidate.heads if h not in reference.outputs]
    if missing:
        raise EdgehalError(f"head {missing[0]!r}", "is not in the reference run",
                           f"one of {list(reference.outputs)}")
    return Comparison([compare_head(reference, candidate, name, tolerances.for_head(name))
                       for name in candidate.heads])


def compare_head(reference: Postprocessed, candidate: Postprocessed, name: str, tol: Tolerance) -> HeadComparison:
    task = candidate.manifest.head(name).task
    ref, got = reference.outputs[name], candidate.outputs[name]
    if ref.shape != got.shape:
        return HeadComparison(name, task, None, None, None, None, math.inf, math.inf, passed=False,
                              failures=[f"shape {got.shape} differs from the reference's {ref.shape}"])
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    max_diff = float(diff.max()) if diff.size else 0.0
    mean_diff = float(diff.mean()) if diff.size else 0.0
    if not np.isfinite(got).all():
        max_diff = mean_diff = math.inf
    cmp = HeadComparison(name, task, None, None, None, None, max_diff, mean_diff)
    too_far = f"max abs diff {max_diff:.3g} (> {tol.max_abs_diff:g})" if not max_diff <= tol.max_abs_diff else None
    if task != "classification":
        cmp.failures += [too_far] if too_far else []
    else:
        ref_pred, got_pred = reference.predictions[name], candidate.predictions[name]
        same = ref_pred == got_pred
        same = same.reshape(len(same), -1).all(axis=1) if same.ndim > 1 else same
        cmp.agreement = 100.0 * float(same.mean()) if same.size else 100.0
        cmp.failures += _error_statistics(cmp, reference, candidate, name, tol)
        if cmp.agreement < tol.min_agreement:
            cmp.failures.append(f"agreement {cmp.agreement:.2f}% (< {tol.min_agreement:g}%)")
        cmp.failures += [too_far] if too_far else []
        if cmp.only_reference_right > cmp.only_artifact_right and cmp.mcnemar_p < tol.mcnemar_alpha:
            cmp.failures.append(f"significantly worse (McNemar p={cmp.mcnemar_p:.2g})")
    cmp.passed = not cmp.failures
    return cmp


def _error_statistics(cmp: HeadComparison, reference: Postprocessed, candidate: Postprocessed, name: str,
                      tol: Tolerance) -> list[str]:
    """Fill in both error rates and McNemar's counts; the failure of the error difference, if any.
    A run without labels has no targets: the head is then judged by agreement and values alone."""
    if name not in reference.targets:
        return []
    ref_pred, got_pred = reference.predictions[name], candidate.predictions[name]
    target = reference.targets[name]
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
        return [f"error differs by {cmp.error_diff_pp:+.2f} pp (> {tol.max_error_diff:g})"]
    return []
