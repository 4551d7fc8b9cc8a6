"""Run: a checkpoint or an artifact over one set of samples -> a :class:`RunResult`.

A run result can be saved and loaded (Polygraphy's saved runner outputs): a
folder with ``run.json`` (what ran, where, on which samples, with which
libraries) and three arrays files, ``outputs.npz`` (per head), ``labels.npz``
and ``inputs.npz``. The inputs travel with the outputs so that a reference
computed by PyTorch on a workstation is compared on a target that has only
onnxruntime or TensorRT, without PyTorch and without the data set.

``run.json`` is written last and records the sha256 of each arrays file, so a
folder left incomplete by a crash, or mixed from two runs, is refused rather
than half-read. Nothing on the loading side imports PyTorch.
"""

from __future__ import annotations

import json
import platform
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from edgehal.errors import EdgehalError
from edgehal.fileio import atomic_write_text, atomic_write_with, sha256_file
from edgehal.manifest import HeadManifest

if TYPE_CHECKING:  # pragma: no cover
    from edgehal.artifact import Artifact
    from edgehal.runtime.base import Runner

RUN_FORMAT = "edgehal-run"
RUN_FORMAT_VERSION = 1
RUN_JSON = "run.json"
OUTPUTS_FILE, LABELS_FILE, INPUTS_FILE = "outputs.npz", "labels.npz", "inputs.npz"
_INPUT_KEY = "x"


@dataclass(frozen=True)
class RunInputs:
    """The samples every run of one parity check sees.

    ``x`` is kept as the data set stores it (uint8 pixels, float features);
    each runner casts it to its own input dtype, which is exact for pixels.
    ``labels`` holds the data set's label arrays by name (``label``, and the
    per-head labels of some data sets).
    """

    x: np.ndarray
    labels: Mapping[str, np.ndarray]
    split: str
    dataset: str | None = None

    def __post_init__(self) -> None:
        n = len(self.x)
        wrong = [k for k, v in self.labels.items() if len(v) != n]
        if wrong:
            raise EdgehalError(f"labels {wrong[0]!r}", f"have {len(self.labels[wrong[0]])} rows",
                               f"one per input ({n})")

    def __len__(self) -> int:
        return int(len(self.x))


@dataclass(frozen=True)
class RunInfo:
    """What ran, on what, where: the JSON half of a run result.

    ``artifact`` is the path as given; ``kind`` checkpoint, onnx or engine;
    ``backend`` the loader's backend name (``torch``, ``ort-cpu``, ...) and
    ``runner`` the runner's own name; ``manifest`` the heads of the model
    (None for a plain ONNX file run through ``head_map``); ``heads`` the head
    names of the outputs, in order; ``head_map`` head -> output name;
    ``source_sha256`` the checkpoint an export records it came from (None for a
    checkpoint, or an artifact that records none); ``versions`` the libraries
    of the machine that ran it.
    """

    artifact: str
    kind: str
    sha256: str
    backend: str
    runner: str
    precision: str
    device: str
    manifest: HeadManifest | None
    heads: tuple[str, ...]
    split: str
    dataset: str | None
    samples: int
    head_map: Mapping[str, str] = field(default_factory=dict)
    source_sha256: str | None = None
    versions: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "kind": self.kind, "sha256": self.sha256, "backend": self.backend,
                "runner": self.runner, "precision": self.precision, "device": self.device,
                "manifest": self.manifest.to_dict() if self.manifest is not None else None,
                "heads": list(self.heads), "split": self.split, "dataset": self.dataset, "samples": self.samples,
                "head_map": dict(self.head_map), "source_sha256": self.source_sha256,
                "versions": dict(self.versions), "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: Any, *, what: str) -> "RunInfo":
        if not isinstance(d, Mapping):
            raise EdgehalError(what, "has a damaged run.json (its info is not an object)")
        try:
            manifest = d["manifest"]
            return cls(artifact=str(d["artifact"]), kind=str(d["kind"]), sha256=str(d["sha256"]),
                       backend=str(d["backend"]), runner=str(d["runner"]), precision=str(d["precision"]),
                       device=str(d["device"]),
                       manifest=HeadManifest.from_dict(manifest, what=f"{what}: manifest")
                       if manifest is not None else None,
                       heads=tuple(str(h) for h in d["heads"]), split=str(d["split"]), dataset=d.get("dataset"),
                       samples=int(d["samples"]), head_map={str(k): str(v) for k, v in d["head_map"].items()},
                       source_sha256=d.get("source_sha256") or None,
                       versions={str(k): str(v) for k, v in d["versions"].items()},
                       seconds=float(d.get("seconds", 0.0)))
        except KeyError as exc:
            raise EdgehalError(what, f"has a damaged run.json (no {exc.args[0]!r})") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise EdgehalError(what, f"has a damaged run.json ({exc})") from None


@dataclass(frozen=True)
class RunResult:
    """Per-head outputs (numpy, float32) of one run, the samples it ran on, and what ran."""

    info: RunInfo
    outputs: Mapping[str, np.ndarray]
    inputs: RunInputs

    @property
    def labels(self) -> Mapping[str, np.ndarray]:
        return self.inputs.labels

    def __len__(self) -> int:
        return len(self.inputs)

    # -- saving ------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the run into ``directory`` (created if needed; a run there before is replaced)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        # Without its run.json a folder is never read, so an interrupted save cannot pass for a complete one.
        (d / RUN_JSON).unlink(missing_ok=True)
        files = {}
        for name, arrays in ((OUTPUTS_FILE, self.outputs), (LABELS_FILE, self.inputs.labels),
                             (INPUTS_FILE, {_INPUT_KEY: self.inputs.x})):
            atomic_write_with(d / name, lambda tmp, arrays=arrays: _write_npz(tmp, arrays))
            files[name] = sha256_file(d / name)
        doc = {"format": f"{RUN_FORMAT}/{RUN_FORMAT_VERSION}", "info": self.info.to_dict(), "files": files,
               "labels": list(self.inputs.labels)}
        atomic_write_text(d / RUN_JSON, json.dumps(doc, indent=2, sort_keys=True))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "RunResult":
        """Read a folder written by :meth:`save`; a missing, damaged or newer-format one is an error."""
        d = Path(directory)
        what = f"saved run {d}"
        expected = "a folder written by `edgehal parity CHECKPOINT --save-run DIR`"
        if not d.is_dir():
            raise EdgehalError(what, "is not a folder" if d.exists() else "does not exist", expected)
        if not (d / RUN_JSON).is_file():
            raise EdgehalError(what, f"has no {RUN_JSON}", expected + " (a save that did not finish leaves none)")
        try:
            doc = json.loads((d / RUN_JSON).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise EdgehalError(what, f"has a damaged {RUN_JSON} ({getattr(exc, 'msg', exc)})", expected) from None
        if not isinstance(doc, Mapping):
            raise EdgehalError(what, f"has a damaged {RUN_JSON} (not a JSON object)", expected)
        _check_format(doc.get("format"), what=what)
        files = doc.get("files")
        if not isinstance(files, Mapping):
            raise EdgehalError(what, f"has a damaged {RUN_JSON} (no list of files)", expected)
        info = RunInfo.from_dict(doc.get("info"), what=what)
        outputs = _read_npz(d, OUTPUTS_FILE, files, what=what)
        labels = _read_npz(d, LABELS_FILE, files, what=what)
        x = _read_npz(d, INPUTS_FILE, files, what=what).get(_INPUT_KEY)
        if x is None:
            raise EdgehalError(what, f"{INPUTS_FILE} has no array {_INPUT_KEY!r}", expected)
        if set(outputs) != set(info.heads):
            raise EdgehalError(what, f"{OUTPUTS_FILE} holds {sorted(outputs)}",
                               f"the heads its {RUN_JSON} names: {list(info.heads)}")
        arrays = {**{f"{OUTPUTS_FILE}:{k}": v for k, v in outputs.items()},
                  **{f"{LABELS_FILE}:{k}": v for k, v in labels.items()}, f"{INPUTS_FILE}:{_INPUT_KEY}": x}
        for name, array in arrays.items():
            if array.ndim == 0 or len(array) != info.samples:
                raise EdgehalError(what, f"array {name} has shape {array.shape}",
                                   f"{info.samples} rows, one per sample, as its {RUN_JSON} says")
        inputs = RunInputs(x=x, labels=labels, split=info.split, dataset=info.dataset)
        return cls(info=info, outputs={h: outputs[h] for h in info.heads}, inputs=inputs)


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    # A file object: given a path, numpy would append ".npz" to the temporary name.
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **{k: np.asarray(v) for k, v in arrays.items()})


def _check_format(fmt: Any, *, what: str) -> None:
    name, _, version = str(fmt).partition("/")
    if name != RUN_FORMAT or not version.isdigit():
        raise EdgehalError(what, f"is not a saved edgehal run (format {fmt!r})",
                           f"format {RUN_FORMAT}/{RUN_FORMAT_VERSION}")
    if int(version) > RUN_FORMAT_VERSION:
        raise EdgehalError(what, f"was saved in format {fmt}, newer than this edgehal reads "
                           f"({RUN_FORMAT}/{RUN_FORMAT_VERSION})", "upgrade edgehal on this machine")


def _read_npz(d: Path, name: str, files: Mapping[str, Any], *, what: str) -> dict[str, np.ndarray]:
    path = d / name
    if not path.is_file():
        raise EdgehalError(what, f"has no {name}", "the complete folder that --save-run wrote")
    if sha256_file(path) != files.get(name):
        raise EdgehalError(what, f"{name} does not match its {RUN_JSON} (sha256 differs)",
                           "the files of one save, unchanged: this one is damaged or from another run")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise EdgehalError(what, f"{name} is damaged ({exc.__class__.__name__})") from None


# --------------------------------------------------------------------------
# Running


def reference_inputs(checkpoint: Any, *, split: str = "test", data_root: str | Path | None = None,
                     limit: int | None = None) -> RunInputs:
    """The samples of ``split`` of the data set a checkpoint (a ``LoadedCheckpoint``) was trained on,
    the first ``limit`` of them (defaults to all)."""
    from edgehal.pipeline import data_for_checkpoint  # the one place parity asks for data

    bundle = data_for_checkpoint(checkpoint, data_root=data_root)
    data = bundle.split(split)
    x = data.x.numpy()
    labels = data.numpy_labels()
    if limit:
        x, labels = x[:limit], {k: v[:limit] for k, v in labels.items()}
    return RunInputs(x=x, labels=labels, split=split, dataset=bundle.name)


def run_batched(runner: "Runner", x: np.ndarray, *, input_name: str, outputs: Sequence[str], batch_size: int,
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


def run(artifact: "str | Path | Artifact", inputs: RunInputs, *, backend: str | None = None,
        head_map: Mapping[str, str] | None = None, precision: str | None = None, device: str | None = None,
        batch_size: int = 500, progress: str | None = None) -> RunResult:
    """Run a checkpoint (PyTorch) or an ONNX file or engine on ``inputs``.

    ``artifact`` is a path, or an :class:`edgehal.artifact.Artifact` already
    read (a checkpoint then is not loaded twice). ``backend`` defaults to the
    file type's first (torch, ort-cpu, tensorrt); ``device`` to cpu for a
    checkpoint, so the reference is the same on every machine. ``head_map``
    maps head names to output names for a plain ONNX file without edgehal
    metadata (defaults to the heads its metadata names). ``precision`` says
    what a plain file computes in (defaults to its metadata's, else fp32).
    """
    from edgehal.artifact import Artifact, artifact_kind
    from edgehal.runtime.loader import open_runner

    t0 = time.perf_counter()
    path = Path(artifact.path if isinstance(artifact, Artifact) else artifact)
    kind = artifact_kind(path)
    if isinstance(artifact, Artifact) and artifact.checkpoint is not None and backend in (None, "torch"):
        from edgehal.runtime.torch import TorchRunner

        runner = TorchRunner(artifact.checkpoint, device=device or "cpu")
        backend = "torch"
    else:
        if kind == "checkpoint":
            device = device or "cpu"
        runner = open_runner(path, backend=backend, device=device)
        backend = backend or _default_backend(path)
    with runner:
        meta = getattr(runner, "metadata", None)  # the torch runner has none: a checkpoint is its own source
        if head_map:
            mapping = dict(head_map)
        elif runner.manifest is not None:
            mapping = {h: h for h in runner.manifest.head_names}
        else:
            raise EdgehalError(f"artifact {path}", "has no edgehal metadata",
                               "name its outputs with --head HEAD=OUTPUT (e.g. --head logits=output0)")
        missing = [o for o in mapping.values() if o not in runner.output_names()]
        if missing:
            raise EdgehalError(f"artifact {path}", f"has no output {missing[0]!r}",
                               f"outputs {list(runner.output_names())}")
        prec = precision or (meta.precision if meta else None) or runner.precision or "fp32"
        input_name = runner.input_specs()[0].name
        raw = run_batched(runner, inputs.x, input_name=input_name, outputs=list(mapping.values()),
                          batch_size=batch_size, progress=progress)
        info = RunInfo(artifact=str(path), kind=kind, sha256=sha256_file(path), backend=backend,
                       runner=runner.name, precision=prec, device=runner.device, manifest=runner.manifest,
                       heads=tuple(mapping), split=inputs.split, dataset=inputs.dataset, samples=len(inputs),
                       head_map=dict(head_map or {}), source_sha256=meta.source_sha256 if meta else None,
                       versions=_versions(), seconds=time.perf_counter() - t0)
    return RunResult(info=info, outputs={head: raw[out] for head, out in mapping.items()}, inputs=inputs)


def _default_backend(path: Path) -> str:
    from edgehal.runtime.loader import default_backend

    return default_backend(path)


def _versions() -> dict[str, str]:
    """Libraries of this machine that a run depends on; only those already loaded (nothing is imported here)."""
    import edgehal

    out = {"edgehal": edgehal.__version__, "numpy": np.__version__, "python": platform.python_version()}
    for lib in ("torch", "onnxruntime", "tensorrt"):
        version = getattr(sys.modules.get(lib), "__version__", None)
        if version:
            out[lib] = str(version)
    return out
