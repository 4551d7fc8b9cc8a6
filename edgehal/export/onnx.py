"""ONNX export with auxiliary heads kept or pruned, metadata, and checks.

``keep`` exports every head of the manifest as a named output. ``prune``
removes the auxiliary outputs *on the graph* and then every node and
initializer that only they needed, and proves the main output is bit-for-bit
the one of the kept graph. Before anything is written the model passes
``onnx.checker`` (full check), strict shape inference, and a comparison of
onnxruntime against PyTorch on real inputs. The graph surgery and checks
themselves are generic and live in :mod:`edgehal.export.graph`.
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from edgehal.checkpoint import LoadedCheckpoint, load_checkpoint, versions
from edgehal.artifact import ArtifactMetadata, write_onnx_metadata
from edgehal.errors import EdgehalError
from edgehal.export.graph import check_model, prune_outputs, run_onnx, to_fp16
from edgehal.fileio import atomic_write_bytes, sha256_file
from edgehal.manifest import HeadManifest
from edgehal.nets.base import ExportWrapper

DEFAULT_OPSET = 17  # parsed by current onnxruntime and by TensorRT 10's ONNX parser
PRECISIONS = ("fp32", "fp16")
# Max |onnxruntime - PyTorch| per output on real inputs, per precision.
DEFAULT_ATOL = {"fp32": 1e-3, "fp16": 5e-2}


@dataclass(frozen=True)
class ExportOptions:
    """How to export. ``batch_size=None`` (the default) gives a dynamic batch dimension; a model that
    reads its input as a sequence (``sequence_axis`` in its manifest) also gets a dynamic sequence
    dimension unless ``fixed_sequence``."""

    aux: str = "keep"
    opset: int = DEFAULT_OPSET
    batch_size: int | None = None
    fixed_sequence: bool = False
    precision: str = "fp32"
    check_samples: int = 256
    atol: float | None = None  # Defaults to DEFAULT_ATOL[precision].

    def validate(self) -> None:
        if self.aux not in ("keep", "prune"):
            raise EdgehalError("--aux", f"{self.aux!r} is not a choice", "keep or prune")
        if self.precision not in PRECISIONS:
            raise EdgehalError("--precision", f"{self.precision!r} is not an export precision",
                               f"one of {PRECISIONS}; INT8 comes from `edgehal quantize`")
        if not 13 <= self.opset <= 21:
            raise EdgehalError("--opset", f"{self.opset} is out of range", "13..21 (default 17)")
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
    """Export ``checkpoint`` to ``output`` as described in the module docstring.

    ``options`` defaults to ``ExportOptions()`` (keep, opset 17, dynamic batch, fp32).
    """
    opts = options or ExportOptions()
    opts.validate()
    t0 = time.perf_counter()
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.build_model()
    full = model.manifest
    selected = full.select(opts.aux)
    if opts.aux == "prune" and not full.aux_heads:
        log(f"note: {ckpt.path} has no auxiliary heads; --aux prune changes nothing")

    x = reference_inputs(ckpt, data_root=data_root, count=opts.check_samples)
    if opts.batch_size is not None:
        reps = -(-opts.batch_size // len(x))
        x = np.concatenate([x] * reps)[:opts.batch_size]
    kept_proto = _torch_export(model, full.input_name, full.head_names, x, opts)
    kept_nodes = len(kept_proto.graph.node)
    proto = prune_outputs(kept_proto, selected.head_names) if opts.aux == "prune" else kept_proto
    if opts.precision == "fp16":
        proto = to_fp16(proto)

    meta = ArtifactMetadata(
        manifest=selected, full_manifest=full, preprocessing=ckpt.preprocessing, aux=opts.aux,
        precision=opts.precision, source_sha256=sha256_file(ckpt.path), metrics=ckpt.metrics,
        versions=versions())
    write_onnx_metadata(proto, meta)
    proto.producer_name, proto.producer_version = "edgehal", meta.versions["edgehal"]
    what = f"exported model {output}"
    check_model(proto, what=what)
    data = proto.SerializeToString()

    # onnxruntime against PyTorch on real inputs, per output.
    feed = {full.input_name: x}
    got = run_onnx(data, feed)
    with torch.no_grad():
        want = {k: v.numpy() for k, v in model(torch.from_numpy(x)).items()}
    atol = opts.atol if opts.atol is not None else DEFAULT_ATOL[opts.precision]
    diffs = {name: float(np.abs(got[name].astype(np.float64) - want[name]).max()) for name in selected.head_names}
    notes = []
    seq = sequence_axis(full, opts)
    if seq is not None and x.shape[seq] > 1:
        # The sequence dimension really is dynamic: the same check on the first half of each sequence.
        short = np.ascontiguousarray(np.take(x, range(x.shape[seq] // 2), axis=seq))
        got_short = run_onnx(data, {full.input_name: short})
        with torch.no_grad():
            want_short = {k: v.numpy() for k, v in model(torch.from_numpy(short)).items()}
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
                     f"on {len(x)} real inputs" if opts.precision == "fp32" else "")
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


def sequence_axis(manifest: HeadManifest, opts: ExportOptions) -> int | None:
    """The input axis exported as a dynamic sequence dimension, or None."""
    if opts.fixed_sequence or manifest.sequence is None:
        return None
    return manifest.sequence.axis


def _torch_export(model: torch.nn.Module, input_name: str, names, x: np.ndarray, opts: ExportOptions):
    import onnx

    wrapper = ExportWrapper(model, names).eval()
    example = torch.from_numpy(x[: min(len(x), 2)] if opts.batch_size is None else x)
    dynamic: dict[str, dict[int, str]] | None = None
    if opts.batch_size is None:
        dynamic = {input_name: {0: "batch"}, **{n: {0: "batch"} for n in names}}
    seq = sequence_axis(model.manifest, opts)
    if seq is not None:
        dynamic = dynamic or {}
        dynamic.setdefault(input_name, {})[seq] = model.manifest.sequence.name
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(wrapper, (example,), buf, input_names=[input_name], output_names=list(names),
                          dynamic_axes=dynamic, opset_version=opts.opset, do_constant_folding=True,
                          dynamo=False)
    return onnx.load_from_string(buf.getvalue())
