"""ONNX export with auxiliary heads kept or pruned, metadata, and checks.

``keep`` exports every head of the manifest as a named output. ``prune``
removes the auxiliary outputs *on the graph* and then every node and
initializer that only they needed, and proves the main output is bit-for-bit
the one of the kept graph. The graph comes from torch's torch.export-based
exporter (``exporter="dynamo"``, the default; recurrent layers become native
ONNX ``RNN``/``LSTM``/``GRU`` through :mod:`edgehal.export.recurrent_onnx`) or,
for this release only, from its deprecated TorchScript-based one
(``exporter="legacy"``). Before anything is written the model passes
``onnx.checker`` (full check), strict shape inference, and a comparison of
onnxruntime against PyTorch on real inputs. The graph surgery and checks
themselves are generic and live in :mod:`edgehal.export.graph`.
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from edgehal.artifact import ArtifactMetadata, write_onnx_metadata
from edgehal.checkpoint import LoadedCheckpoint, load_checkpoint, versions
from edgehal.errors import EdgehalError
from edgehal.export.graph import check_model, prune_outputs, run_onnx, to_fp16
from edgehal.fileio import atomic_write_bytes, sha256_file
from edgehal.manifest import HeadManifest, Preprocessing

# The torch.export-based exporter writes opset 18 and up (its torchlib's opset); 18 is parsed by
# current onnxruntime and by TensorRT 10's ONNX parser.
DEFAULT_OPSET = 18
DYNAMO_MIN_OPSET = 18
PRECISIONS = ("fp32", "fp16")
# "dynamo": torch.onnx.export(dynamo=True), the default. "legacy": the TorchScript-based exporter,
# deprecated by torch and kept for this release only.
EXPORTERS = ("dynamo", "legacy")
# Max |onnxruntime - PyTorch| per output on real inputs, per precision.
DEFAULT_ATOL = {"fp32": 1e-3, "fp16": 5e-2}


@dataclass(frozen=True)
class ExportOptions:
    """How to export. ``batch_size=None`` (the default) gives a dynamic batch dimension; a model that
    reads its input as a sequence (``sequence_axis`` in its manifest) also gets a dynamic sequence
    dimension unless ``fixed_sequence``. ``exporter`` is ``dynamo`` (torch.export-based, opset >= 18)
    or ``legacy`` (the TorchScript-based exporter: deprecated, removed in the next release)."""

    aux: str = "keep"
    opset: int = DEFAULT_OPSET
    batch_size: int | None = None
    fixed_sequence: bool = False
    precision: str = "fp32"
    check_samples: int = 256
    atol: float | None = None  # Defaults to DEFAULT_ATOL[precision].
    exporter: str = "dynamo"

    def validate(self) -> None:
        if self.exporter not in EXPORTERS:
            raise EdgehalError("--exporter", f"{self.exporter!r} is not an exporter",
                               "dynamo (the default) or legacy (deprecated)")
        if self.aux not in ("keep", "prune"):
            raise EdgehalError("--aux", f"{self.aux!r} is not a choice", "keep or prune")
        if self.precision not in PRECISIONS:
            raise EdgehalError("--precision", f"{self.precision!r} is not an export precision",
                               f"one of {PRECISIONS}; INT8 comes from `edgehal quantize`")
        if not 13 <= self.opset <= 21:
            raise EdgehalError("--opset", f"{self.opset} is out of range", f"13..21 (default {DEFAULT_OPSET})")
        if self.exporter == "dynamo" and self.opset < DYNAMO_MIN_OPSET:
            raise EdgehalError("--opset", f"{self.opset} is below {DYNAMO_MIN_OPSET}, the lowest opset the "
                               "torch.export-based exporter (the default) writes",
                               f"--opset {DYNAMO_MIN_OPSET}..21, or --exporter legacy (deprecated, removed in "
                               "the next release) for opset 13..17")
        if self.batch_size is not None and self.batch_size < 1:
            raise EdgehalError("--batch-size", f"is {self.batch_size}", "a positive fixed batch, or none for dynamic")
        if self.check_samples < 1:
            raise EdgehalError("--check-samples", f"is {self.check_samples}", "at least 1")


@dataclass
class ExportReport:
    path: Path
    outputs: list[str]
    nodes: int
    kept_nodes: int
    max_abs_diff: dict[str, float]
    atol: float
    seconds: float
    bytes: int
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"wrote {self.path} ({self.bytes / 1024:.0f} KiB, {self.nodes} nodes; kept graph had "
               f"{self.kept_nodes}) in {self.seconds:.1f}s"]
        for name, diff in self.max_abs_diff.items():
            out.append(f"  {name}: max |onnxruntime - pytorch| = {diff:.3g} (tolerance {self.atol:g})")
        out.extend(f"  {n}" for n in self.notes)
        return out


# --------------------------------------------------------------------------
# Export


def reference_inputs(ckpt: LoadedCheckpoint, *, data_root: str | Path | None, count: int,
                     split: str = "test") -> np.ndarray:
    """Real inputs from the checkpoint's data set: the first ``count`` of ``split``."""
    from edgehal.pipeline import data_for_checkpoint

    data = data_for_checkpoint(ckpt, data_root=data_root)
    x = data.split(split).x[:count]
    return x.float().numpy()


def export_onnx(checkpoint: str | Path, output: str | Path, *, options: ExportOptions | None = None,
                data_root: str | Path | None = None, log: Callable[[str], None] = print) -> ExportReport:
    """Export the edgehal ``checkpoint`` to ``output`` as described in the module docstring, checked on
    real inputs of its data set and carrying its preprocessing, metrics and sha256.

    ``options`` defaults to ``ExportOptions()`` (keep, opset 18, dynamic batch, fp32, the
    torch.export-based exporter).
    """
    opts = options or ExportOptions()
    opts.validate()
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.build_model()
    x = reference_inputs(ckpt, data_root=data_root, count=opts.check_samples)
    return export_module(model, output, example_inputs=x, manifest=model.manifest, options=opts,
                         preprocessing=ckpt.preprocessing, metrics=ckpt.metrics,
                         source_sha256=sha256_file(ckpt.path), log=log)


def export_module(model: torch.nn.Module, output: str | Path, *, example_inputs: np.ndarray | torch.Tensor,
                  manifest: HeadManifest | None = None, options: ExportOptions | None = None,
                  preprocessing: Preprocessing | None = None, metrics: Mapping[str, Any] | None = None,
                  source_sha256: str | None = None, log: Callable[[str], None] = print) -> ExportReport:
    """Export any ``nn.Module`` to ``output``, its outputs named by the heads of ``manifest``.

    ``model`` returns a dict of named outputs, a tuple or list in the
    manifest's head order, or one tensor (a manifest with one head).
    ``example_inputs`` (``[N, *manifest.input_shape]``; real ones make the
    check meaningful) are traced and compared: the first ``check_samples``
    of them run in onnxruntime and PyTorch. ``manifest`` defaults to
    ``model.manifest``; ``preprocessing``, ``metrics`` and ``source_sha256``
    go into the ONNX metadata as they are. Inputs whose shape, or outputs
    whose names, count or width do not fit the manifest are refused before
    anything is exported; nothing is written unless every check passes.
    """
    opts = options or ExportOptions()
    opts.validate()
    t0 = time.perf_counter()
    full = manifest if manifest is not None else getattr(model, "manifest", None)
    if not isinstance(full, HeadManifest):
        raise EdgehalError(f"model {type(model).__name__}", "has no head manifest",
                           "manifest=HeadManifest(...) naming its input shape and heads")
    selected = full.select(opts.aux)
    if opts.aux == "prune" and not full.aux_heads:
        log(f"note: {full.model} has no auxiliary heads; --aux prune changes nothing")

    if opts.exporter == "dynamo" and _holds_torchscript(model):
        log("note: a TorchScript module exports with the TorchScript-based exporter (torch.export does not "
            "trace TorchScript); that exporter is deprecated and goes in the next release: save the model "
            "with torch.export.save instead")
        opts = replace(opts, exporter="legacy")
    x = _example_array(example_inputs, full, opts)
    if opts.batch_size is not None:
        reps = -(-opts.batch_size // len(x))
        x = np.concatenate([x] * reps)[:opts.batch_size]
    wrapper = HeadOutputs(model, full.head_names).eval()
    want = _run_torch(wrapper, x, full, check=True)  # refuses outputs that do not fit the manifest
    kept_proto = _torch_export(wrapper, full.input_name, full.head_names, x, opts, manifest=full)
    kept_nodes = len(kept_proto.graph.node)
    proto = prune_outputs(kept_proto, selected.head_names) if opts.aux == "prune" else kept_proto
    if opts.precision == "fp16":
        proto = to_fp16(proto)

    meta = ArtifactMetadata(
        manifest=selected, full_manifest=full, preprocessing=preprocessing, aux=opts.aux,
        precision=opts.precision, source_sha256=source_sha256, metrics=dict(metrics or {}),
        versions={**versions(), **_exporter_versions(opts.exporter)})
    write_onnx_metadata(proto, meta)
    proto.producer_name, proto.producer_version = "edgehal", meta.versions["edgehal"]
    what = f"exported model {output}"
    check_model(proto, what=what)
    data = proto.SerializeToString()

    # onnxruntime against PyTorch on the example inputs, per output.
    feed = {full.input_name: x}
    got = run_onnx(data, feed)
    atol = opts.atol if opts.atol is not None else DEFAULT_ATOL[opts.precision]
    diffs = {name: float(np.abs(got[name].astype(np.float64) - want[name]).max()) for name in selected.head_names}
    notes = []
    seq = sequence_axis(full, opts)
    if seq is not None and x.shape[seq] > 1:
        # The sequence dimension really is dynamic: the same check on the first half of each sequence.
        short = np.ascontiguousarray(np.take(x, range(x.shape[seq] // 2), axis=seq))
        got_short = run_onnx(data, {full.input_name: short})
        want_short = _run_torch(wrapper, short, full)
        for name in selected.head_names:
            diffs[name] = max(diffs[name], float(np.abs(got_short[name].astype(np.float64)
                                                        - want_short[name]).max()))
        notes.append(f"dynamic sequence dimension (input axis {seq}) checked at lengths {x.shape[seq]} "
                     f"and {short.shape[seq]}")
    if opts.aux == "prune":
        kept_out = run_onnx(kept_proto.SerializeToString(), feed, outputs=[full.main.name])
        if opts.precision == "fp32" and not np.array_equal(kept_out[full.main.name], got[full.main.name]):
            raise EdgehalError(what, "the pruned graph's main output differs from the kept graph's",
                               "bit-for-bit identical main outputs (this is a bug: please report it)")
        notes.append(f"main output {full.main.name!r} bit-for-bit identical to the kept graph's "
                     f"on {len(x)} inputs" if opts.precision == "fp32" else "")
    bad = {k: v for k, v in diffs.items() if not v <= atol}
    report = ExportReport(path=Path(output), outputs=list(selected.head_names), nodes=len(proto.graph.node),
                          kept_nodes=kept_nodes, max_abs_diff=diffs, atol=atol,
                          seconds=time.perf_counter() - t0, bytes=len(data), notes=[n for n in notes if n])
    if bad:
        name, value = next(iter(bad.items()))
        raise EdgehalError(what, f"output {name!r} differs from PyTorch by {value:.3g}",
                           f"at most {atol:g} (--atol); nothing was written")
    atomic_write_bytes(output, data)
    report.seconds = time.perf_counter() - t0
    for line in report.lines():
        log(line)
    return report


def export_file(path: str | Path, output: str | Path, *, manifest: HeadManifest,
                preprocessing: Preprocessing | None = None, example_inputs: np.ndarray | None = None,
                input_shape: Sequence[int] | None = None, options: ExportOptions | None = None,
                trust_pickle: bool = False, log: Callable[[str], None] = print) -> ExportReport:
    """Export a model file edgehal did not write (a TorchScript archive, a ``torch.export`` program,
    or with ``trust_pickle`` a whole pickled module) with the heads of ``manifest``.

    Give ``example_inputs`` (real inputs: the check means something) or
    ``input_shape`` (the check then runs on random inputs in
    ``preprocessing.input_range``, else [0, 1), and says so). A bare state
    dict is refused: it has no architecture to export.
    """
    from edgehal.foreign import identify, load_module, state_dict_hint

    opts = options or ExportOptions()
    opts.validate()
    p = Path(path)
    found = identify(p)
    if found.kind == "edgehal-checkpoint":
        raise EdgehalError("--manifest", f"was given for {p.name}, an edgehal checkpoint",
                           "no --manifest, --example-inputs or --input-shape: a checkpoint carries its manifest "
                           "and its data")
    if found.kind == "state-dict":
        raise EdgehalError(f"model file {p}", f"is {found.description}", state_dict_hint())
    if (example_inputs is None) == (input_shape is None):
        raise EdgehalError(f"export of {p.name}", "needs example inputs" if example_inputs is None else
                           "was given both example inputs and an input shape",
                           "one of --example-inputs x.npy (real inputs, recommended) or --input-shape C,H,W "
                           "(random inputs)")
    model = load_module(p, trust_pickle=trust_pickle)
    if example_inputs is None:
        example_inputs, note = random_inputs(input_shape, count=opts.check_samples, preprocessing=preprocessing)
        log(note)
    return export_module(model, output, example_inputs=example_inputs, manifest=manifest, options=opts,
                         preprocessing=preprocessing, source_sha256=sha256_file(p), log=log)


def read_example_inputs(path: str | Path) -> np.ndarray:
    """Example inputs from a ``.npy`` file (no pickled objects), batch axis first."""
    p = Path(path)
    if not p.is_file():
        raise EdgehalError(f"example inputs {p}", "file not found")
    try:
        return np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise EdgehalError(f"example inputs {p}", f"is not a NumPy .npy array ({str(exc).splitlines()[0][:160]})",
                           "an array saved with numpy.save, shape [N, *input_shape]") from None


def random_inputs(shape: Sequence[int], *, count: int, preprocessing: Preprocessing | None = None,
                  seed: int = 0) -> tuple[np.ndarray, str]:
    """``count`` uniform random inputs of ``shape`` in the preprocessing's input range (else [0, 1)),
    and the note that says the check ran on them."""
    low, high = preprocessing.input_range if preprocessing and preprocessing.input_range else (0.0, 1.0)
    x = np.random.default_rng(seed).uniform(low, high, size=(count, *shape)).astype(np.float32)
    note = (f"note: the check runs on {count} random inputs of shape {list(shape)} in [{low:g}, {high:g}), "
            "not on real data; give --example-inputs x.npy for a check that means something")
    return x, note


def sequence_axis(manifest: HeadManifest, opts: ExportOptions) -> int | None:
    """The input axis exported as a dynamic sequence dimension, or None."""
    if opts.fixed_sequence or manifest.sequence is None:
        return None
    return manifest.sequence.axis


# --------------------------------------------------------------------------
# What goes in and what comes out, against the manifest


def _example_array(example_inputs: np.ndarray | torch.Tensor, manifest: HeadManifest,
                   opts: ExportOptions) -> np.ndarray:
    """The first ``check_samples`` example inputs as an array of the manifest's dtype, whose shape is
    ``[N, *manifest.input_shape]`` (a dynamic sequence axis may have any length)."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = example_inputs.detach().cpu().numpy()
    x = np.asarray(example_inputs)
    expected = ["N", *manifest.input_shape]
    seq = sequence_axis(manifest, opts)
    if seq is not None:
        expected[seq] = manifest.sequence.name
    fits = x.ndim == len(expected) and all(
        i == seq or dim <= 0 or x.shape[i] == dim for i, dim in enumerate(manifest.input_shape, start=1))
    if not fits or len(x) == 0:
        raise EdgehalError("example inputs", f"have the shape {list(x.shape)}",
                           f"[{', '.join(map(str, expected))}]: the manifest's input_shape "
                           f"{list(manifest.input_shape)} after a batch axis, with at least one input")
    try:
        return np.ascontiguousarray(x[:opts.check_samples], dtype=np.dtype(manifest.input_dtype))
    except (TypeError, ValueError) as exc:
        raise EdgehalError("example inputs", f"of dtype {x.dtype} do not convert to the manifest's "
                           f"input_dtype {manifest.input_dtype} ({exc})") from None


def head_outputs(out: Any, names: Sequence[str]) -> tuple[torch.Tensor, ...]:
    """A module's outputs in the order of the heads ``names``: from a dict of named outputs, a
    tuple or list in that order, or one tensor when there is one head."""
    if isinstance(out, Mapping):
        if set(out) != set(names):
            raise EdgehalError("model outputs", f"are named {sorted(map(str, out))} but the manifest's heads "
                               f"are {list(names)}", "one output per head, named as the head")
        values = tuple(out[n] for n in names)
    elif isinstance(out, (tuple, list)):
        if len(out) != len(names):
            raise EdgehalError("model outputs", f"are {len(out)} ({type(out).__name__}) but the manifest has "
                               f"{len(names)} heads {list(names)}", "one output per head, in the manifest's order")
        values = tuple(out)
    elif isinstance(out, torch.Tensor):
        if len(names) != 1:
            raise EdgehalError("model outputs", f"are one tensor but the manifest has {len(names)} heads "
                               f"{list(names)}", "a dict or tuple of one output per head")
        values = (out,)
    else:
        raise EdgehalError("model outputs", f"are a {type(out).__name__}",
                           "a tensor, a tuple/list of tensors or a dict of named tensors")
    for name, value in zip(names, values):
        if not isinstance(value, torch.Tensor):
            raise EdgehalError(f"model output {name!r}", f"is a {type(value).__name__}", "a tensor")
    return values


class HeadOutputs(torch.nn.Module):
    """Wraps a module so it returns a tuple of its outputs in the order of the heads ``names``."""

    def __init__(self, model: torch.nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = list(names)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return head_outputs(self.model(x), self.names)

    def train(self, mode: bool = True) -> "HeadOutputs":
        # A torch.export program's module is fixed in the mode it was exported in and refuses
        # train()/eval(); the exporter switches modes on whatever it is given.
        self.training = mode
        try:
            self.model.train(mode)
        except NotImplementedError:
            pass
        return self


def _run_torch(wrapper: HeadOutputs, x: np.ndarray, manifest: HeadManifest, *,
               check: bool = False) -> dict[str, np.ndarray]:
    """PyTorch's outputs per head; with ``check``, refuse outputs whose width is not the head's."""
    try:
        with torch.no_grad():
            values = wrapper(torch.from_numpy(x))
    except EdgehalError:
        raise
    except Exception as exc:  # the user's module failing on these inputs is the user's error
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise EdgehalError(f"model {type(wrapper.model).__name__}",
                           f"fails on example inputs of shape {list(x.shape)} ({first})",
                           "a module that takes a batch [N, *input_shape] of any N (a torch.export program "
                           "needs a dynamic batch: dynamic_shapes=)") from exc
    out = {}
    for head, value in zip(manifest.heads, values):
        if check and (value.ndim < 2 or value.shape[-1] != head.num_outputs):
            raise EdgehalError(f"head {head.name!r}", f"has {head.num_outputs} outputs in the manifest "
                               f"(its class_names) but the model's output is of shape {list(value.shape)}",
                               f"an output of shape [N, {head.num_outputs}], or a manifest whose head has "
                               f"{value.shape[-1] if value.ndim else 1} class names")
        out[head.name] = value.detach().cpu().numpy()
    return out


def _exporter_versions(exporter: str) -> dict[str, str]:
    """What ``versions`` records of the exporter: its name and, for dynamo, onnxscript's version."""
    if exporter != "dynamo":
        return {"exporter": exporter}
    import onnxscript

    return {"exporter": exporter, "onnxscript": str(onnxscript.__version__)}


# The warnings the TorchScript exporter is known to give on edgehal's call, and nothing else: a
# warning from the user's model, or a new one from torch, reaches the user. (The torch.export-based
# exporter gives none on edgehal's models with verbose=False, so nothing is filtered there.)
# Its two deprecation notices: torch/onnx/__init__.py, and exporter_context in
# torch/onnx/_internal/torchscript_exporter/utils.py.
_LEGACY_WARNINGS = (
    (r"You are using the legacy TorchScript-based ONNX export", DeprecationWarning),
    (r"The feature will be removed\. Please remove usage of this function", DeprecationWarning),
    # A TorchScript archive goes in as torch.jit.trace's result, whose forward has no Python signature.
    (r"no signature found for <torch\.ScriptMethod object", UserWarning),
    # ... and that trace is edgehal's own call, not the user's: its deprecation is ours to handle.
    (r"`torch\.jit\.trace(_method)?` is deprecated", FutureWarning),
)


def _torch_export(model: torch.nn.Module, input_name: str, names: Sequence[str], x: np.ndarray,
                  opts: ExportOptions, *, manifest: HeadManifest | None = None):
    """The one call of the exporter: ``model``'s outputs as the ONNX outputs ``names``.
    ``manifest`` (for its sequence axis) defaults to ``model.manifest``."""
    manifest = manifest if manifest is not None else model.manifest
    names = list(names)
    wrapper = model if isinstance(model, HeadOutputs) else HeadOutputs(model, names).eval()
    seq = sequence_axis(manifest, opts)
    if opts.exporter == "legacy":
        return _legacy_export(wrapper, input_name, names, x, opts, seq=seq,
                              seq_name=manifest.sequence.name if seq is not None else "")
    return _dynamo_export(wrapper, input_name, names, x, opts, seq=seq,
                          seq_name=manifest.sequence.name if seq is not None else "")


def _holds_torchscript(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.jit.ScriptModule) for m in model.modules())


def _dynamo_export(wrapper: HeadOutputs, input_name: str, names: list[str], x: np.ndarray,
                   opts: ExportOptions, *, seq: int | None, seq_name: str):
    """``torch.onnx.export(dynamo=True)``: batch and sequence dimensions as ``torch.export.Dim``s,
    recurrent layers translated to native operators."""
    from edgehal.export.recurrent_onnx import translation_table

    if _holds_torchscript(wrapper):
        raise EdgehalError("a TorchScript archive", "cannot be exported by the torch.export-based exporter "
                           "(torch.export does not trace TorchScript)",
                           "--exporter legacy (deprecated, removed in the next release), or the model as a "
                           "torch.export program (torch.export.save) or an nn.Module")
    example = x if opts.batch_size is not None else x[: min(len(x), 2)]
    dims: dict[int, torch.export.Dim] = {}
    if opts.batch_size is None:
        # torch.export treats a dimension of size 1 as a constant: the traced batch has two inputs.
        example = np.concatenate([example, example]) if len(example) < 2 else example
        dims[0] = torch.export.Dim("batch")
    if seq is not None:
        dims[seq] = torch.export.Dim(seq_name)
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                wrapper, (torch.from_numpy(example),), dynamo=True, verbose=False, opset_version=opts.opset,
                input_names=[input_name], output_names=names, dynamic_shapes=(dims,) if dims else None,
                custom_translation_table=translation_table(), optimize=True)
    except EdgehalError:
        raise
    except Exception as exc:  # torch.export could not capture the module, or a node did not translate
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise EdgehalError(f"model {type(wrapper.model).__name__}",
                           f"does not export with the torch.export-based exporter ({first})",
                           "a model torch.export can capture (https://docs.pytorch.org/docs/stable/export.html), "
                           "or --exporter legacy (deprecated, removed in the next release)") from exc
    return program.model_proto


def _legacy_export(wrapper: HeadOutputs, input_name: str, names: list[str], x: np.ndarray,
                   opts: ExportOptions, *, seq: int | None, seq_name: str):
    """``torch.onnx.export(dynamo=False)``, the TorchScript exporter: deprecated, removed next release."""
    import onnx

    example = torch.from_numpy(x[: min(len(x), 2)] if opts.batch_size is None else x)
    dynamic: dict[str, dict[int, str]] | None = None
    if opts.batch_size is None:
        dynamic = {input_name: {0: "batch"}, **{n: {0: "batch"} for n in names}}
    if seq is not None:
        dynamic = dynamic or {}
        dynamic.setdefault(input_name, {})[seq] = seq_name
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        for message, category in _LEGACY_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        module: torch.nn.Module = wrapper
        if _holds_torchscript(wrapper):
            # The exporter's tracer cannot step into a ScriptModule held by a Python module
            # (a loaded TorchScript archive); torch.jit.trace can, and the exporter takes its result.
            module = torch.jit.trace(wrapper, (example,), check_trace=False)
        torch.onnx.export(module, (example,), buf, input_names=[input_name], output_names=names,
                          dynamic_axes=dynamic, opset_version=opts.opset, do_constant_folding=True,
                          dynamo=False)
    return onnx.load_from_string(buf.getvalue())
