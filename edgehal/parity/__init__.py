"""Parity: run -> postprocess -> compare (Polygraphy's comparator shape).

:func:`~edgehal.parity.runs.run` runs the PyTorch checkpoint (the reference)
and every artifact on the same full split and returns a
:class:`~edgehal.parity.runs.RunResult` that can be saved and loaded, so the
reference may be computed where PyTorch runs and compared on a target that
has only onnxruntime or TensorRT. :func:`~edgehal.parity.postprocess.postprocess`
turns a run's outputs into predictions per head and scores them with the
manifest's evaluator; :func:`~edgehal.parity.compare.compare` compares two
postprocessed runs head by head against typed tolerances and returns a
result that is truthy when it passed. :func:`run_parity` chains the three
for a reference and a list of artifacts and checks that each artifact was
exported from the reference checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from edgehal.errors import EdgehalError
from edgehal.manifest import HeadManifest
from edgehal.parity.compare import (DEFAULT_TOLERANCES, REGRESSION_ATOL, Comparison, HeadComparison, Tolerance,
                                    ToleranceOverrides, Tolerances, compare, compare_head, default_tolerance,
                                    mcnemar_exact, parse_tolerances)
from edgehal.parity.postprocess import DEFAULT_STEPS, Postprocessed, argmax, identity, postprocess
from edgehal.parity.provenance import UNRECORDED, SourceCheck, check_source
from edgehal.parity.report import ArtifactResult, ParityReport, model_level_metrics, write_reports
from edgehal.parity.runs import RunInfo, RunInputs, RunResult, reference_inputs, run, run_batched

__all__ = [
    "DEFAULT_STEPS", "DEFAULT_TOLERANCES", "REGRESSION_ATOL", "ArtifactResult", "Comparison", "HeadComparison",
    "ParityReport", "Postprocessed", "RunInfo", "RunInputs", "RunResult", "SourceCheck", "Tolerance",
    "ToleranceOverrides", "Tolerances", "argmax", "check_source", "compare", "compare_head", "default_tolerance",
    "identity", "mcnemar_exact", "model_level_metrics", "parse_tolerances", "postprocess", "reference_inputs",
    "run", "run_batched", "run_parity", "write_reports",
]


def run_parity(checkpoint: str | Path | None = None, artifacts: Sequence[str | Path] = (), *,
               reference: str | Path | RunResult | None = None, split: str | None = None,
               data_root: str | Path | None = None, batch_size: int = 500,
               tolerances: Sequence[str] | ToleranceOverrides = (), head_map: Mapping[str, str] | None = None,
               precision: str | None = None, backends: Mapping[str, str] | None = None,
               limit: int | None = None, strict: bool = False, save_run: str | Path | None = None,
               log: Callable[[str], None] = print) -> ParityReport:
    """Compare each artifact with a reference run of a checkpoint, head by head.

    The reference is ``checkpoint`` run by PyTorch on ``split`` (defaults to
    test) of its data set (from ``data_root``, else ``$EDGEHAL_DATA``, else the
    training one; the first ``limit`` samples, defaults to all), or
    ``reference``: a saved run (its folder, or a loaded :class:`RunResult`)
    whose inputs the artifacts then run, with neither PyTorch nor the data
    set. ``save_run`` saves the reference run there. ``tolerances`` are
    ``[HEAD:]KEY=VALUE`` items (or their parsed form) over each precision's
    defaults. ``head_map`` maps head names to output names for a plain ONNX
    file without edgehal metadata; ``precision`` then says what it is
    (defaults to the artifact's metadata, else fp32). ``backends`` maps an
    artifact to its backend (defaults to its file type's). An artifact that
    was exported from another checkpoint than the reference's is reported,
    and fails when ``strict``.
    """
    t0 = time.perf_counter()
    overrides = tolerances if isinstance(tolerances, Mapping) else parse_tolerances(tolerances)
    ref_run, saved_from = _reference_run(checkpoint, reference, split=split, data_root=data_root, limit=limit,
                                         batch_size=batch_size, names=[*(h for h in overrides if h is not None),
                                                                       *(head_map or {})],
                                         save_run=save_run, log=log)
    manifest = ref_run.info.manifest
    ref = postprocess(ref_run, manifest)
    results = []
    for artifact in artifacts:
        result = _check_artifact(artifact, ref_run, ref, overrides=overrides, head_map=head_map,
                                 precision=precision, backend=(backends or {}).get(str(artifact)),
                                 batch_size=batch_size, strict=strict)
        results.append(result)
        _log_result(result, ref.metrics, log)
    info = ref_run.info
    described = {"saved_run": str(saved_from) if saved_from else None, "artifact": info.artifact,
                 "kind": info.kind, "sha256": info.sha256, "runner": info.runner, "device": info.device,
                 "precision": info.precision, "dataset": info.dataset, "versions": dict(info.versions)}
    return ParityReport(info.artifact, info.split, len(ref_run), dict(ref.metrics), results,
                        time.perf_counter() - t0, reference=described, strict=strict)


def _reference_run(checkpoint: str | Path | None, reference: str | Path | RunResult | None, *, split: str | None,
                   data_root: str | Path | None, limit: int | None, batch_size: int, names: Sequence[str],
                   save_run: str | Path | None, log: Callable[[str], None]) -> tuple[RunResult, Path | None]:
    """The reference run and the folder it was loaded from (None when it ran here)."""
    if (checkpoint is None) == (reference is None):
        raise EdgehalError("parity", "needs one reference: " + ("got both a checkpoint and a saved run"
                                                                  if checkpoint is not None else "got neither"),
                           "a CHECKPOINT to run with PyTorch, or --reference DIR (a run saved with --save-run)")
    if reference is not None:
        fixed = [opt for opt, value in (("data_root", data_root), ("limit", limit), ("save_run", save_run))
                 if value is not None]
        if fixed:
            raise EdgehalError(fixed[0], "cannot be combined with a saved reference run",
                               "the saved run fixes the samples; save another one to change them")
        return _saved_reference(reference, split=split, names=names, log=log)
    ref_run = _checkpoint_reference(checkpoint, split=split or "test", data_root=data_root, limit=limit,
                                    batch_size=batch_size, names=names, log=log)
    if save_run is not None:
        log(f"saved the reference run to {ref_run.save(save_run)}")
    return ref_run, None


def _saved_reference(reference: str | Path | RunResult, *, split: str | None, names: Sequence[str],
                     log: Callable[[str], None]) -> tuple[RunResult, Path | None]:
    ref_run = reference if isinstance(reference, RunResult) else RunResult.load(reference)
    folder = None if isinstance(reference, RunResult) else Path(reference)
    info = ref_run.info
    if split is not None and split != info.split:
        raise EdgehalError(f"split {split!r}", f"differs from the saved reference run's ({info.split})",
                           "the split the reference was saved with")
    if info.manifest is None:
        raise EdgehalError(f"saved run {folder or info.artifact}", "has no head manifest",
                           "a run of an edgehal checkpoint or export")
    _check_head_names(info.manifest, names)
    log(f"parity on {info.split} split: {len(ref_run)} samples; reference: saved run "
        f"{folder or '(in memory)'} ({info.runner} on {info.device}, {info.artifact})")
    return ref_run, folder


def _checkpoint_reference(checkpoint: str | Path, *, split: str, data_root: str | Path | None, limit: int | None,
                          batch_size: int, names: Sequence[str], log: Callable[[str], None]) -> RunResult:
    from edgehal.artifact import artifact_kind, read_artifact

    kind = artifact_kind(checkpoint)
    if kind != "checkpoint":
        raise EdgehalError(f"checkpoint {checkpoint}", f"is an {kind} file",
                           "a PyTorch checkpoint (.pt) as the reference, or --reference DIR (a saved run)")
    artifact = read_artifact(checkpoint)
    _check_head_names(artifact.manifest, names)  # before any data is loaded or model run
    inputs = reference_inputs(artifact.checkpoint, split=split, data_root=data_root, limit=limit)
    log(f"parity on {split} split: {len(inputs)} samples; reference PyTorch ({artifact.path})")
    return run(artifact, inputs, batch_size=batch_size, progress="pytorch")


def _check_head_names(manifest: HeadManifest, names: Sequence[str]) -> None:
    for name in names:
        manifest.head(name)  # an unknown head name is an error, listing the valid ones


def _check_artifact(artifact: str | Path, ref_run: RunResult, ref: Postprocessed, *, overrides: ToleranceOverrides,
                    head_map: Mapping[str, str] | None, precision: str | None, backend: str | None,
                    batch_size: int, strict: bool) -> ArtifactResult:
    a0 = time.perf_counter()
    manifest = ref_run.info.manifest
    got_run = run(artifact, ref_run.inputs, backend=backend, head_map=head_map, precision=precision,
                  batch_size=batch_size, progress=Path(artifact).name)
    foreign = [h for h in got_run.outputs if h not in manifest.head_names]
    if foreign:
        raise EdgehalError(f"artifact {artifact}", f"returns the head {foreign[0]!r}, which the reference has not",
                           f"an export of the reference checkpoint, heads among {list(manifest.head_names)}")
    got = postprocess(got_run, manifest)
    info = got_run.info
    comparison = compare(ref, got, Tolerances.for_precision(info.precision, manifest, overrides=overrides))
    source = check_source(ref_run.info, info)
    warnings, notes, failures = [], [], []
    if source.mismatch:
        (failures if strict else warnings).append(source.message)
    elif source.status == UNRECORDED:
        notes.append(source.message)
    return ArtifactResult(str(artifact), info.runner, info.precision, comparison.heads, dict(got.metrics),
                          time.perf_counter() - a0, device=info.device, sha256=info.sha256,
                          source_sha256=info.source_sha256, source_check=source.status, warnings=warnings,
                          notes=notes, failures=failures)


def _log_result(result: ArtifactResult, ref_metrics: Mapping, log: Callable[[str], None]) -> None:
    log(f"{'PASS' if result else 'FAIL'} {result.artifact} ({result.precision}, {result.backend}, "
        f"{result.seconds:.1f}s)")
    for label, texts in (("FAIL", result.failures), ("warning", result.warnings), ("note", result.notes)):
        for text in texts:
            log(f"  {label}: {text}")
    for key, ref_value, value in model_level_metrics(ref_metrics, result.metrics):
        log(f"  {key}: {value:.6g} (PyTorch {ref_value:.6g})")
    for h in result.heads:
        if h.error is not None:
            log(f"  {h.head}: error {h.error:.2f}% (PyTorch {h.reference_error:.2f}%, "
                f"{h.error_diff_pp:+.2f} pp), agreement {h.agreement:.2f}%, max|diff| {h.max_abs_diff:.3g}, "
                f"McNemar p {h.mcnemar_p:.3g}" + ("" if h else f"  <- {'; '.join(h.failures)}"))
        else:
            log(f"  {h.head}: max|diff| {h.max_abs_diff:.3g}, mean {h.mean_abs_diff:.3g}"
                + ("" if h else f"  <- {'; '.join(h.failures)}"))
