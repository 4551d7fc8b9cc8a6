"""``edgehal export-triton``: a Triton model repository from an ONNX file or a TensorRT engine.

Layout (the one ``edgehal serve`` serves too, from a laptop to a Triton cluster)::

    <repository>/<name>/config.pbtxt
    <repository>/<name>/<head>_labels.txt       one class name per line, per head
    <repository>/<name>/1/model.onnx            platform "onnxruntime_onnx", or
    <repository>/<name>/1/model.plan (+ .json)  platform "tensorrt_plan", with its sidecar

Inputs and outputs come from the head manifest (ONNX metadata or engine
sidecar), never guessed. The manifest itself travels as the ``edgehal.manifest``
parameter and each head's class names as its output's ``label_filename``.
The config is written by hand (no protobuf needed at run time); the tests parse
every generated config into Triton's own ``ModelConfig`` message.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from edgehal.artifact import ArtifactMetadata, manifest_from_properties, to_properties
from edgehal.errors import EdgehalError
from edgehal.export.graph import manifest_order, read_onnx_info
from edgehal.fileio import atomic_write_text, atomic_write_with
from edgehal.manifest import HeadManifest
from edgehal.tensors import TensorSpec

KINDS = ("KIND_GPU", "KIND_CPU")
DEFAULT_ONNX_MAX_BATCH = 8
DEFAULT_QUEUE_DELAY_US = 100
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class TritonOptions:
    """How the model is served. ``name`` defaults to the model file's stem;
    ``max_batch_size`` to the engine profile's largest batch for a ``.plan``,
    to 8 for an ONNX with a dynamic batch, and to 0 (no batching) when the
    batch is fixed."""

    name: str | None = None
    max_batch_size: int | None = None
    instances: int = 1
    kind: str = "KIND_GPU"
    tensorrt_accelerator: bool = False
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise EdgehalError(f"--kind {self.kind!r}", "is not a choice", f"one of {', '.join(KINDS)}")
        if isinstance(self.instances, bool) or not isinstance(self.instances, int) or self.instances < 1:
            raise EdgehalError(f"--instances {self.instances!r}", "must be a positive integer")
        if self.max_batch_size is not None and self.max_batch_size < 0:
            raise EdgehalError(f"--max-batch-size {self.max_batch_size}", "is negative",
                               "0 (no batching) or a positive batch size")
        if self.max_queue_delay_us < 0:
            raise EdgehalError(f"--max-queue-delay-us {self.max_queue_delay_us}", "is negative")
        if self.tensorrt_accelerator and self.kind == "KIND_CPU":
            raise EdgehalError("--tensorrt-accelerator", "needs --kind KIND_GPU",
                               "TensorRT accelerates onnxruntime on a GPU only")
        if self.name is not None and not _NAME.match(self.name):
            raise EdgehalError(f"--name {self.name!r}", "is not a valid model name",
                               "letters, digits, '_', '.' and '-', starting with a letter or digit")


@dataclass(frozen=True)
class TritonModel:
    """What was written, and what the config says."""

    directory: Path
    config: Path
    model_file: Path
    platform: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    label_files: tuple[Path, ...]


@dataclass(frozen=True)
class _Source:
    path: Path
    platform: str
    filename: str
    manifest: HeadManifest
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metadata: ArtifactMetadata
    batch_max: int | None  # the engine profile's largest batch (plans only)
    sidecar: Path | None = None


def _read_source(path: Path) -> _Source:
    if not path.is_file():
        raise EdgehalError(f"model {path}", "file not found")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        info = read_onnx_info(path)
        if info.manifest is None:
            raise EdgehalError(f"ONNX model {path.name}", "has no edgehal head manifest in its metadata",
                               "a model written by `edgehal export`, whose outputs are named after its heads")
        return _Source(path, "onnxruntime_onnx", "model.onnx", info.manifest, info.inputs, info.outputs,
                       info.metadata, None)
    if suffix in (".plan", ".engine"):
        from edgehal.artifact import engine_sidecar_path, read_engine_sidecar

        prov = read_engine_sidecar(path)
        if prov.manifest is None:
            raise EdgehalError(f"TensorRT engine {path.name}", "has no head manifest in its sidecar",
                               "an engine built by `edgehal build-engine` from an `edgehal export` ONNX")
        batch = prov.batch_range
        return _Source(path, "tensorrt_plan", "model.plan", prov.manifest, prov.inputs, prov.outputs,
                       prov.metadata, batch[1] if batch and prov.inputs[0].shape[0] < 0 else None,
                       engine_sidecar_path(path))
    raise EdgehalError(f"model {path.name}", f"has suffix {path.suffix!r}", ".onnx, .plan or .engine")


def _served_outputs(src: _Source) -> tuple[TensorSpec, ...]:
    """The heads, in manifest order: Triton serves what the manifest declares, nothing else."""
    ordered = manifest_order(src.outputs, src.manifest, what=f"model {src.path.name}")
    return ordered[:len(src.manifest.head_names)]


def _resolve_max_batch(src: _Source, requested: int | None) -> int:
    dynamic = all(t.shape and t.shape[0] < 0 for t in src.inputs)
    if not dynamic:
        if requested:
            fixed = src.inputs[0].shape[0] if src.inputs and src.inputs[0].shape else "none"
            raise EdgehalError(f"--max-batch-size {requested}",
                               f"needs a dynamic batch dimension; {src.path.name} has batch {fixed}",
                               "--max-batch-size 0, or export/build with a dynamic batch")
        return 0
    if src.platform == "tensorrt_plan":
        limit = src.batch_max or 0
        if requested is not None and requested > limit:
            raise EdgehalError(f"--max-batch-size {requested}", f"exceeds the engine's profile (batch up to {limit})",
                               f"at most {limit}, or rebuild with `edgehal build-engine --max-batch {requested}`")
        return limit if requested is None else requested
    return DEFAULT_ONNX_MAX_BATCH if requested is None else requested


def _q(text: str) -> str:
    """A protobuf text-format string literal (ASCII, C escapes)."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif 32 <= byte < 127:
            out.append(ch)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _tensor_block(t: TensorSpec, *, batching: bool, label_file: str | None = None) -> list[str]:
    dtype = t.type.triton
    if dtype is None:
        raise EdgehalError(f"tensor {t.name!r}", f"has dtype {t.dtype}, which Triton has no data_type for",
                           "a model whose inputs and outputs Triton serves (float32, float16, int64, ...)")
    dims = list(t.shape[1:] if batching else t.shape) or [1]
    lines = ["  {", f"    name: {_q(t.name)}", f"    data_type: {dtype}",
             f"    dims: [ {', '.join(str(int(d)) for d in dims)} ]"]
    if label_file:
        lines.append(f"    label_filename: {_q(label_file)}")
    lines.append("  }")
    return lines


def render_config(*, name: str, platform: str, max_batch_size: int, inputs: Sequence[TensorSpec],
                  outputs: Sequence[TensorSpec], labels: Mapping[str, str], options: TritonOptions,
                  parameters: Mapping[str, str]) -> str:
    """The ``config.pbtxt`` text (protobuf text format of Triton's ``ModelConfig``)."""
    batching = max_batch_size > 0
    lines = [f"name: {_q(name)}", f"platform: {_q(platform)}", f"max_batch_size: {max_batch_size}"]
    lines.append("input [")
    for i, t in enumerate(inputs):
        block = _tensor_block(t, batching=batching)
        lines += block[:-1] + ["  }" + ("," if i < len(inputs) - 1 else "")]
    lines.append("]")
    lines.append("output [")
    for i, t in enumerate(outputs):
        block = _tensor_block(t, batching=batching, label_file=labels.get(t.name))
        lines += block[:-1] + ["  }" + ("," if i < len(outputs) - 1 else "")]
    lines.append("]")
    lines.append("instance_group [")
    lines.append(f"  {{ count: {options.instances} kind: {options.kind} }}")
    lines.append("]")
    if batching:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {options.max_queue_delay_us} }}")
    if options.tensorrt_accelerator:
        lines += ["optimization { execution_accelerators {",
                  '  gpu_execution_accelerator : [ { name : "tensorrt" } ]',
                  "} }"]
    for key, value in parameters.items():
        lines.append(f"parameters {{ key: {_q(key)} value: {{ string_value: {_q(value)} }} }}")
    return "\n".join(lines) + "\n"


def export_triton(model: str | Path, *, repository: str | Path,
                  options: TritonOptions | None = None) -> TritonModel:
    """Write ``model`` into the Triton repository ``repository``. ``options`` defaults to TritonOptions()."""
    options = options or TritonOptions()
    src = _read_source(Path(model))
    if src.platform == "tensorrt_plan":
        if options.kind == "KIND_CPU":
            raise EdgehalError("--kind KIND_CPU", "cannot serve a TensorRT engine",
                               "--kind KIND_GPU, or export the ONNX file for CPU serving")
        if options.tensorrt_accelerator:
            raise EdgehalError("--tensorrt-accelerator", "applies to ONNX models only",
                               "leave it out for a .plan, which already is a TensorRT engine")
    name = options.name or src.path.stem
    if not _NAME.match(name):
        raise EdgehalError(f"model name {name!r} (from {src.path.name})", "is not a valid model name",
                           "pass --name with letters, digits, '_', '.' and '-'")
    max_batch = _resolve_max_batch(src, options.max_batch_size)
    outputs = _served_outputs(src)

    model_dir = Path(repository) / name
    version_dir = model_dir / "1"
    labels: dict[str, str] = {}
    label_paths: list[Path] = []
    for head in src.manifest.heads:
        if head.class_names:
            fname = f"{head.name}_labels.txt"
            labels[head.name] = fname
            label_paths.append(model_dir / fname)
            atomic_write_text(model_dir / fname, "\n".join(head.class_names) + "\n")
    # Everything the artifact records (an engine's at the engine's own precision), calibration included.
    parameters = to_properties(src.metadata)
    if src.platform == "tensorrt_plan":
        from edgehal.artifact import read_engine_sidecar

        parameters["edgehal.engine_built_on"] = read_engine_sidecar(src.path).built_on.describe()

    target = version_dir / src.filename
    atomic_write_with(target, lambda tmp: shutil.copyfile(src.path, tmp))
    if src.sidecar is not None:
        atomic_write_with(version_dir / (src.filename + ".json"), lambda tmp: shutil.copyfile(src.sidecar, tmp))
    # A repository holds one platform per model: drop the other's leftovers.
    for stale in ("model.onnx", "model.plan", "model.plan.json"):
        if stale != src.filename and stale != src.filename + ".json":
            (version_dir / stale).unlink(missing_ok=True)

    text = render_config(name=name, platform=src.platform, max_batch_size=max_batch, inputs=src.inputs,
                         outputs=outputs, labels=labels, options=options, parameters=parameters)
    config = model_dir / "config.pbtxt"
    atomic_write_text(config, text)
    return TritonModel(model_dir, config, target, src.platform, max_batch, src.inputs, outputs,
                       tuple(label_paths))


def manifest_from_config(parameters: Mapping[str, Any]) -> HeadManifest | None:
    """The head manifest from a parsed config's ``parameters`` (``{key: string_value}`` or protobuf)."""
    props = {k: getattr(v, "string_value", v) for k, v in parameters.items()}
    return manifest_from_properties({k: v if isinstance(v, str) else json.dumps(v) for k, v in props.items()},
                                    what="Triton config parameters")
