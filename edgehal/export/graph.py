"""Generic ONNX graph helpers: loading, tensor and I/O info, node walks, surgery, checks.

Nothing here knows about a target runtime: the exporter, the quantizer, the
TensorRT planner and inspector and the Triton exporter all read and reshape
ONNX graphs through these functions, so there is one loader (with one error
for a missing or corrupt file) and one idea of a graph input or output.
``onnx`` and onnxruntime are imported inside the functions that need them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np

from edgehal.errors import EdgehalError
from edgehal.fileio import sha256_file
from edgehal.manifest import HeadManifest
from edgehal.tensors import TensorSpec, dtype_from_onnx

if TYPE_CHECKING:  # pragma: no cover
    from edgehal.artifact import ArtifactMetadata

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


# --------------------------------------------------------------------------
# Tensors and I/O


@dataclass(frozen=True)
class OnnxModelInfo:
    """An ONNX file's inputs, outputs, Q/DQ node count and edgehal metadata."""

    path: Path
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    qdq_nodes: int
    metadata: ArtifactMetadata | None = None

    @property
    def manifest(self) -> HeadManifest | None:
        return self.metadata.manifest if self.metadata else None

    @property
    def has_qdq(self) -> bool:
        return self.qdq_nodes > 0


def load_onnx(path: str | Path) -> Any:
    """``onnx.load`` with one-line errors for a missing or corrupt file."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise EdgehalError(f"ONNX model {p}", "file not found")
    try:
        return onnx.load(str(p))
    except Exception as exc:  # onnx raises DecodeError and friends for corrupt files
        raise EdgehalError(f"ONNX model {p}",
                           f"is corrupt or not an ONNX file ({exc.__class__.__name__})") from None


def tensor_spec(value_info: Any, *, what: str = "ONNX graph") -> TensorSpec:
    """A :class:`~edgehal.tensors.TensorSpec` from an ONNX ``ValueInfoProto``, with its dimension names.

    Its type comes from the one dtype table, which names every ONNX element
    type (those numpy lacks too); only a value that is no tensor (a sequence,
    a map) or a type newer than the table is an EdgehalError, naming ``what``
    (the model) and the value.
    """
    ttype = value_info.type.tensor_type
    dtype = dtype_from_onnx(ttype.elem_type, what=f"{what}: tensor {value_info.name!r}")
    shape, names = [], []
    for dim in ttype.shape.dim:
        has_value = dim.HasField("dim_value") and dim.dim_value > 0
        shape.append(int(dim.dim_value) if has_value else -1)
        names.append(None if has_value else (dim.dim_param or None))
    return TensorSpec(value_info.name, dtype, tuple(shape), tuple(names))


def iter_nodes(graph: Any) -> Iterator[Any]:
    """Every node of a graph, including those of If/Loop/Scan subgraphs."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and attr.HasField("g"):
                yield from iter_nodes(attr.g)
            for sub in attr.graphs:
                yield from iter_nodes(sub)


def read_onnx_info(path: str | Path, *, model: Any = None) -> OnnxModelInfo:
    """Inputs, outputs, Q/DQ node count and edgehal metadata of an ONNX file.

    ``model`` is the already loaded ``ModelProto`` of ``path``; defaults to
    loading it.
    """
    from edgehal.artifact import onnx_metadata

    p = Path(path)
    model = model if model is not None else load_onnx(p)
    initializers = {init.name for init in model.graph.initializer}
    what = f"ONNX model {p.name}"
    inputs = tuple(tensor_spec(v, what=what) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(tensor_spec(v, what=what) for v in model.graph.output)
    qdq = sum(1 for node in iter_nodes(model.graph) if node.op_type in QDQ_OPS)
    return OnnxModelInfo(p, sha256_file(p), inputs, outputs, qdq, onnx_metadata(model, what=f"ONNX model {p}"))


_Named = TypeVar("_Named")  # a TensorSpec, or anything else with a ``name``


def manifest_order(outputs: Sequence[_Named], manifest: HeadManifest | None, *,
                   what: str) -> tuple[_Named, ...]:
    """``outputs`` (anything with a ``.name``) in the manifest's head order.

    The one place that decides the order in which outputs are reported: the
    engine sidecar, every runner and the Triton config list heads the way the
    manifest declares them, whatever order the graph or the engine keeps
    them in. Outputs that are no head follow, in their own order. Without a
    manifest the order is left as it is. A head that is not among
    ``outputs`` is an error: the manifest would promise an output the
    artifact ``what`` does not have.
    """
    outputs = tuple(outputs)
    if manifest is None:
        return outputs
    by_name = {t.name: t for t in outputs}  # type: ignore[attr-defined]
    missing = [h for h in manifest.head_names if h not in by_name]
    if missing:
        raise EdgehalError(what, f"head {missing[0]!r} of its manifest is not an output",
                           f"outputs named after the heads {list(manifest.head_names)}")
    return tuple(by_name[n] for n in manifest.order(list(by_name)))


# --------------------------------------------------------------------------
# Graph surgery


def prune_outputs(model: Any, keep: Iterable[str]) -> Any:
    """A copy of ``model`` returning only ``keep``, without nodes/initializers only the others needed."""
    import onnx

    keep = list(keep)
    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)
    graph = pruned.graph
    names = [o.name for o in graph.output]
    missing = [k for k in keep if k not in names]
    if missing:
        raise EdgehalError(f"output {missing[0]!r}", "is not an output of the graph", f"one of {names}")
    outputs = [o for o in graph.output if o.name in keep]
    del graph.output[:]
    graph.output.extend(outputs)

    needed = set(keep)
    live = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output if o):
            live.append(node)
            needed.update(i for i in node.input if i)
            needed.update(_subgraph_inputs(node))
    live.reverse()
    del graph.node[:]
    graph.node.extend(live)
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    infos = [v for v in graph.value_info if v.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(infos)
    return pruned


def _subgraph_inputs(node: Any) -> set[str]:
    """Names a control-flow node's subgraphs read from the outer scope (conservatively: all inputs)."""
    import onnx

    names: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            for n in g.node:
                names.update(i for i in n.input if i)
                for a in n.attribute:
                    if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                        names |= _subgraph_inputs(n)
    return names


def topological_sort(model: Any) -> Any:
    """Reorder nodes so each comes after its producers (the FP16 converter appends its input casts).

    Kahn's algorithm, stable: among ready nodes the original order is kept.
    """
    import heapq

    graph = model.graph
    nodes = list(graph.node)
    produced_by = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    deps = [{produced_by[name] for name in list(n.input) + sorted(_subgraph_inputs(n))
             if name in produced_by and produced_by[name] != i} for i, n in enumerate(nodes)]
    users: dict[int, list[int]] = {}
    for i, d in enumerate(deps):
        for j in d:
            users.setdefault(j, []).append(i)
    waiting = [len(d) for d in deps]
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users.get(i, []):
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        raise EdgehalError("ONNX graph", "has a cycle", "a directed acyclic graph")
    copies = []
    for i in order:
        c = type(nodes[i])()
        c.CopyFrom(nodes[i])
        copies.append(c)
    del graph.node[:]
    graph.node.extend(copies)
    return model


def to_fp16(model: Any) -> Any:
    """FP16 weights and activations with FP32 inputs and outputs (onnxruntime's converter)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    return topological_sort(converted)


# --------------------------------------------------------------------------
# Checks


def check_model(model: Any, *, what: str) -> Any:
    """``onnx.checker`` full check and strict shape inference; returns the inferred model."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise EdgehalError(what, f"fails the ONNX checker ({str(exc).splitlines()[0][:200]})") from None


def run_onnx(model_bytes: bytes, feed: Mapping[str, np.ndarray],
             outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Run serialised ONNX bytes once in onnxruntime on the CPU; ``outputs`` defaults to all."""
    from edgehal.runtime.onnxruntime import OnnxRuntimeRunner

    with OnnxRuntimeRunner(model_bytes, providers=["cpu"]) as runner:
        return runner.infer(feed, outputs=outputs)
