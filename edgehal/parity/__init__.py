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

The reference may also be an ONNX file or engine (a user's own export), run
through the same runners on the user's samples (:mod:`edgehal.parity.user_data`:
an image folder or a ``.npy``), its heads from its edgehal metadata or
named with ``--head`` (:mod:`edgehal.parity.heads`).
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
from edgehal.parity.heads import check_widths, load_manifest_file, plain_manifest
from edgehal.parity.postprocess import DEFAULT_STEPS, Postprocessed, argmax, identity, postprocess
from edgehal.parity.provenance import UNRECORDED, SourceCheck, check_source
from edgehal.parity.report import ArtifactResult, ParityReport, model_level_metrics, write_reports
from edgehal.parity.runs import RunInfo, RunInputs, RunResult, reference_inputs, run, run_batched
from edgehal.parity.user_data import array_inputs, folder_inputs, image_transform_for

__all__ = [
    "DEFAULT_STEPS", "DEFAULT_TOLERANCES", "REGRESSION_ATOL", "ArtifactResult", "Comparison", "HeadComparison",
    "ParityReport", "Postprocessed", "RunInfo", "RunInputs", "RunResult", "SourceCheck", "Tolerance",
    "ToleranceOverrides", "Tolerances", "argmax", "array_inputs", "check_source", "check_widths", "compare",
    "compare_head", "default_tolerance", "folder_inputs", "identity", "image_transform_for", "load_manifest_file",
    "mcnemar_exact", "model_level_metrics", "parse_tolerances", "plain_manifest", "postprocess", "reference_inputs",
    "run", "run_batched", "run_parity", "write_reports",
]


def run_parity(checkpoint: str | Path | None = None, artifacts: Sequence[str | Path] = (), *,
               reference: str | Path | RunResult | None = None, reference_artifact: str | Path | None = None,
               data: str | Path | None = None, labels: str | Path | None = None,
               manifest: str | Path | None = None, input_size: tuple[int, int] | None = None,
               split: str | None = None, data_root: str | Path | None = None, batch_size: int = 500,
               tolerances: Sequence[str] | ToleranceOverrides = (), head_map: Mapping[str, str] | None = None,
               precision: str | None = None, backends: Mapping[str, str] | None = None,
               limit: int | None = None, strict: bool = False, save_run: str | Path | None = None,
               log: Callable[[str], None] = print) -> ParityReport:
    """Compare each artifact with a reference run, head by head.

    The reference is one of three. ``checkpoint`` run by PyTorch on ``split``
    (defaults to test) of its data set (from ``data_root``, else
    ``$EDGEHAL_DATA``, else the training one; the first ``limit`` samples,
    defaults to all). ``reference_artifact``, an ONNX file or engine run by its
    runner on ``data``: an ImageFolder tree (``split`` picks its sub-folder,
    default test) or split (class sub-folders of images, labels from their
    names), or a ``.npy`` of raw inputs with optional ``labels`` (a ``.npy`` of
    class indices; ``limit`` reads that many, for a folder evenly spaced
    over its classes); images are resized as the artifact's metadata records,
    else to its fixed input height and width, else to ``input_size``. Its heads
    come from its edgehal metadata, else from ``manifest`` (a YAML or JSON
    head manifest), else from ``head_map``, whose first head is then the main
    classifier over the data's classes and the others are compared by values
    only. Or ``reference``: a saved run (its folder, or a loaded
    :class:`RunResult`) whose inputs the artifacts then run, with neither
    PyTorch nor the data set. ``save_run`` saves the reference run there.
    ``tolerances`` are ``[HEAD:]KEY=VALUE`` items (or their parsed form) over
    each precision's defaults. ``head_map`` maps head names to output names
    for a plain ONNX file without edgehal metadata; ``precision`` then says what
    a plain artifact computes in (defaults to the artifact's metadata, else
    fp32). ``backends`` maps an artifact (the reference artifact too) to its
    backend (defaults to its file type's). An artifact that was exported from
    another checkpoint than the reference's is reported, and fails when
    ``strict``.
    """
    t0 = time.perf_counter()
    overrides = tolerances if isinstance(tolerances, Mapping) else parse_tolerances(tolerances)
    names = [*(h for h in overrides if h is not None), *(head_map or {})]
    _check_one_reference(checkpoint, reference, reference_artifact)
    if reference_artifact is not None:
        ref_run = _artifact_reference(reference_artifact, data=data, labels=labels, manifest=manifest,
                                      input_size=input_size, split=split, data_root=data_root, limit=limit,
                                      head_map=head_map, backend=(backends or {}).get(str(reference_artifact)),
                                      batch_size=batch_size, names=names, log=log)
        saved_from = None
        if save_run is not None:
            log(f"saved the reference run to {ref_run.save(save_run)}")
        if head_map is None and manifest is not None:
            head_map = {h: h for h in ref_run.info.heads}  # plain artifacts return the manifest's heads by name
    else:
        _refuse_user_data(checkpoint, data=data, labels=labels, manifest=manifest, input_size=input_size)
        ref_run, saved_from = _reference_run(checkpoint, reference, split=split, data_root=data_root, limit=limit,
                                             batch_size=batch_size, names=names, save_run=save_run, log=log)
    ref_manifest = ref_run.info.manifest
    ref = postprocess(ref_run, ref_manifest)
    label = "PyTorch" if ref_run.info.kind == "checkpoint" else "reference"
    results = []
    for artifact in artifacts:
        result = _check_artifact(artifact, ref_run, ref, overrides=overrides, head_map=head_map,
                                 precision=precision, backend=(backends or {}).get(str(artifact)),
                                 batch_size=batch_size, strict=strict)
        results.append(result)
        _log_result(result, ref.metrics, log, label=label)
    info = ref_run.info
    described = {"saved_run": str(saved_from) if saved_from else None, "artifact": info.artifact,
                 "kind": info.kind, "sha256": info.sha256, "runner": info.runner, "device": info.device,
                 "precision": info.precision, "dataset": info.dataset, "versions": dict(info.versions)}
    return ParityReport(info.artifact, info.split, len(ref_run), dict(ref.metrics), results,
                        time.perf_counter() - t0, reference=described, strict=strict)


_REFERENCES = ("a CHECKPOINT to run with PyTorch, an ONNX file or engine with data to run it on "
               "(REFERENCE ARTIFACT... --data FOLDER; reference_artifact= and data=), or --reference DIR "
               "(a run saved with --save-run)")


def _check_one_reference(checkpoint: str | Path | None, reference: str | Path | RunResult | None,
                         reference_artifact: str | Path | None) -> None:
    given = [what for what, value in (("a checkpoint", checkpoint), ("a saved run", reference),
                                      ("a reference artifact", reference_artifact)) if value is not None]
    if len(given) != 1:
        raise EdgehalError("parity", "needs one reference: " + (f"got both {given[0]} and {given[1]}" if given
                                                                  else "got neither"), _REFERENCES)


def _refuse_user_data(checkpoint: str | Path | None, **given: object) -> None:
    """A checkpoint runs on its own data set, a saved run on its saved inputs: a user's data would be
    a second, conflicting source of samples, so it is refused rather than silently preferred."""
    for option, value in given.items():
        if value is None:
            continue
        if checkpoint is not None:
            raise EdgehalError(option, "is for an ONNX file or engine as the reference, not a checkpoint",
                               "a checkpoint runs on the data set it was trained on (split, data_root); to check "
                               "it on your own images, export it and give the ONNX file as the reference")
        raise EdgehalError(option, "cannot be combined with a saved reference run",
                           "the saved run fixes the samples; save another one to change them")


def _reference_run(checkpoint: str | Path | None, reference: str | Path | RunResult | None, *, split: str | None,
                   data_root: str | Path | None, limit: int | None, batch_size: int, names: Sequence[str],
                   save_run: str | Path | None, log: Callable[[str], None]) -> tuple[RunResult, Path | None]:
    """The reference run of a checkpoint or a saved run, and the folder it was loaded from (None when it ran here)."""
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
                           "a PyTorch checkpoint (.pt) as the reference, or --reference DIR (a saved run); an ONNX "
                           "file or engine is a reference with data to run it on (reference_artifact= and data=)")
    artifact = read_artifact(checkpoint)
    _check_head_names(artifact.manifest, names)  # before any data is loaded or model run
    inputs = reference_inputs(artifact.checkpoint, split=split, data_root=data_root, limit=limit)
    log(f"parity on {split} split: {len(inputs)} samples; reference PyTorch ({artifact.path})")
    return run(artifact, inputs, batch_size=batch_size, progress="pytorch")


_KINDS = {"onnx": "an ONNX file", "engine": "a TensorRT engine", "checkpoint": "a checkpoint"}


def _artifact_reference(path: str | Path, *, data: str | Path | None, labels: str | Path | None,
                        manifest: str | Path | None, input_size: tuple[int, int] | None, split: str | None,
                        data_root: str | Path | None, limit: int | None, head_map: Mapping[str, str] | None,
                        backend: str | None, batch_size: int, names: Sequence[str],
                        log: Callable[[str], None]) -> RunResult:
    """An ONNX file or engine run on the user's data, its run carrying the manifest its heads are scored by."""
    from dataclasses import replace

    from edgehal.artifact import artifact_kind
    from edgehal.parity.user_data import IMAGE_FOLDER, check_classes, folder_classes, is_array_file, split_folder
    from edgehal.runtime.loader import open_runner

    what = f"reference {path}"
    kind = artifact_kind(path)
    if kind == "checkpoint":
        raise EdgehalError(what, "is a checkpoint", "a checkpoint as the reference runs on its own data set: "
                           "edgehal parity CHECKPOINT ARTIFACT... (run_parity(checkpoint, ...)), without data")
    if data is None:
        raise EdgehalError(what, f"is {_KINDS[kind]} given without data to run it on",
                           "--data FOLDER (an ImageFolder tree or split: class sub-folders of images) or --data "
                           "inputs.npy (raw inputs, optionally --labels labels.npy); or a PyTorch checkpoint (.pt) "
                           "as the reference")
    if data_root is not None:
        raise EdgehalError("data_root", f"names the data of a checkpoint's data set, not of {_KINDS[kind]}",
                           "the samples as --data FOLDER or --data inputs.npy")
    array = is_array_file(data)
    if array and split is not None:
        raise EdgehalError("split", f"names no split of {data}: a .npy is one set of samples",
                           "no --split with --data inputs.npy")
    if array and input_size is not None:
        raise EdgehalError("input_size", f"resizes images, and {data} holds raw inputs",
                           "no --input-size with --data inputs.npy")
    if not array and labels is not None:
        raise EdgehalError("labels", f"are for a .npy of raw inputs; {data} is an image folder",
                           "no --labels: an image folder's labels are its class sub-folders' names")
    given = load_manifest_file(manifest) if manifest is not None else None
    with open_runner(path, backend=backend) as runner:
        meta, spec, outputs = runner.metadata, runner.input_specs()[0], list(runner.output_names())
        try:
            output_specs = {s.name: s for s in runner.output_specs()}
        except EdgehalError:  # a runner that learns its outputs only by running: widths are checked after it
            output_specs = {}
    if meta is not None and given is not None:
        raise EdgehalError("manifest", f"would replace the edgehal metadata of {path}",
                           "no --manifest: the reference's own manifest names its heads")
    known = meta.manifest if meta is not None else given
    # An edgehal export returns its heads by name: --head then maps them for the plain artifacts only,
    # as with a checkpoint reference. A plain reference returns what --head (or the manifest's names) says.
    if meta is not None or not head_map:
        mapping = {h: h for h in known.head_names} if known is not None else None
    else:
        mapping = dict(head_map)
    if mapping is None:
        raise EdgehalError(what, "has no edgehal metadata",
                           "name its outputs with --head HEAD=OUTPUT (the first is the main head, a classifier over "
                           "the data's classes; e.g. --head logits=output0), or describe its heads with --manifest "
                           "heads.yaml")
    missing = [o for o in mapping.values() if o not in outputs]
    if missing:
        raise EdgehalError(what, f"has no output {missing[0]!r}", f"one of its outputs {outputs}")
    if known is not None:
        _check_head_names(known, [*mapping, *names])
    else:
        unknown = [n for n in names if n not in mapping]
        if unknown:
            raise EdgehalError(f"head {unknown[0]!r}", "is not a head of the reference",
                               f"one of the heads --head names: {list(mapping)}")
    static = {h: output_specs[o].shape[-1] for h, o in mapping.items()
              if o in output_specs and len(output_specs[o].shape) >= 2 and output_specs[o].shape[-1] > 0}

    def plain(class_names: Sequence[str], input_shape: Sequence[int]) -> HeadManifest:
        return plain_manifest(mapping, class_names=class_names, model=Path(path).stem, input_name=spec.name,
                              input_shape=input_shape, input_dtype=spec.dtype,
                              dataset=None if array else IMAGE_FOLDER)

    heads = known
    if array:
        if known is not None:
            check_widths(known, static, what=what)
        inputs = array_inputs(data, labels=labels, limit=limit)
    else:
        folder, split_name = split_folder(data, split=split)
        found = folder_classes(folder)
        if known is not None:
            check_classes(found, known.main.class_names, folder=folder, what="the reference")
        transform = image_transform_for(preprocessing=meta.preprocessing if meta is not None else None,
                                        input_shape=spec.shape, input_size=input_size, what=what)
        heads = known or plain(found, transform.output_shape)
        check_widths(heads, static, what=what)  # before any image is read
        inputs = folder_inputs(folder, transform=transform, split=split_name, class_names=heads.main.class_names,
                               limit=limit)
    log(f"parity on {inputs.split} split: {len(inputs)} samples; reference {_KINDS[kind]} ({path})")
    ref_run = run(path, inputs, backend=backend, head_map=mapping if meta is None else None,
                  batch_size=batch_size, progress=Path(path).name)
    widths = {h: out.shape[-1] for h, out in ref_run.outputs.items() if out.ndim >= 2}
    if heads is None:
        main = next(iter(mapping))
        if main not in widths:
            raise EdgehalError(f"{what}: output {mapping[main]!r}", f"has shape {ref_run.outputs[main].shape}",
                               "[N, classes] scores for the main head (the first --head)")
        heads = plain([str(k) for k in range(widths[main])], inputs.x.shape[1:])
    check_widths(heads, widths, what=what)
    if "label" in inputs.labels:
        y, n = inputs.labels["label"], heads.main.num_outputs
        if len(y) and (y.min() < 0 or y.max() >= n):
            bad = int(y.min()) if y.min() < 0 else int(y.max())
            raise EdgehalError(f"--labels {labels}", f"has the class index {bad}",
                               f"0..{n - 1}: one of the main head's {n} classes")
    return RunResult(info=replace(ref_run.info, manifest=heads), outputs=ref_run.outputs, inputs=ref_run.inputs)


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


def _log_result(result: ArtifactResult, ref_metrics: Mapping, log: Callable[[str], None], *,
                label: str = "PyTorch") -> None:
    log(f"{'PASS' if result else 'FAIL'} {result.artifact} ({result.precision}, {result.backend}, "
        f"{result.seconds:.1f}s)")
    for kind, texts in (("FAIL", result.failures), ("warning", result.warnings), ("note", result.notes)):
        for text in texts:
            log(f"  {kind}: {text}")
    for key, ref_value, value in model_level_metrics(ref_metrics, result.metrics):
        log(f"  {key}: {value:.6g} ({label} {ref_value:.6g})")
    for h in result.heads:
        verdict = "" if h else f"  <- {'; '.join(h.failures)}"
        if h.error is not None:
            log(f"  {h.head}: error {h.error:.2f}% ({label} {h.reference_error:.2f}%, "
                f"{h.error_diff_pp:+.2f} pp), agreement {h.agreement:.2f}%, max|diff| {h.max_abs_diff:.3g}, "
                f"McNemar p {h.mcnemar_p:.3g}" + verdict)
        elif h.agreement is not None:  # no labels: predictions are compared with the reference's only
            log(f"  {h.head}: agreement {h.agreement:.2f}%, max|diff| {h.max_abs_diff:.3g} (no labels)" + verdict)
        else:
            log(f"  {h.head}: max|diff| {h.max_abs_diff:.3g}, mean {h.mean_abs_diff:.3g}" + verdict)
