"""``edgehal inspect MODEL.onnx --target tensorrt``: will TensorRT build this graph?

Runs anywhere (no TensorRT, no GPU): the graph is checked against TensorRT's
published ONNX operator table (:mod:`edgehal.export.tensorrt.ops`). Findings:

- error: an operator the parser lacks, a data type TensorRT does not support
  for an operator's data input, a violated restriction the table states
  (pooling rank, Q/DQ zero points, constant axes, Resize modes, ...), an
  opset outside the parser's range;
- warning: INT64 shape/index inputs of operators without INT64 support (cast to
  INT32 with values clamped to +-INT32_MAX), DOUBLE tensors (cast to FP32), a
  dynamic non-batch dimension whose sizes the file does not give (the profile
  then needs ``build-engine --dim``);
- info: the dynamic batch dimension, and a dynamic sequence dimension whose
  trained size the metadata gives; ``build-engine``'s profile covers both.

Any error means the model will not build: the command exits 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from edgehal.errors import EdgehalError
from edgehal.export.graph import iter_nodes, load_onnx, tensor_spec
from edgehal.export.tensorrt import ops
from edgehal.export.tensorrt.profile import DEFAULT_MAX_BATCH, default_dim_range, dim_keys

SEVERITIES = ("error", "warning", "info")
TARGETS = ("tensorrt",)


@dataclass(frozen=True)
class Finding:
    severity: str
    kind: str  # operator | dtype | restriction | int64 | double | dynamic | opset
    message: str
    node: str | None = None
    op_type: str | None = None

    def format(self) -> str:
        return f"{self.severity}: {self.message}"


@dataclass(frozen=True)
class InspectReport:
    """What ``inspect`` found; truthy when TensorRT can build the model."""

    path: Path
    target: str
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "warning")

    @property
    def ok(self) -> bool:
        return not self.errors

    def __bool__(self) -> bool:
        return self.ok

    def lines(self) -> list[str]:
        head = (f"{self.path.name}: checked against TensorRT's ONNX parser table "
                f"(TensorRT {ops.TABLE_TENSORRT_VERSION}, opset {ops.MIN_OPSET}..{ops.MAX_OPSET})")
        order = {s: i for i, s in enumerate(SEVERITIES)}
        body = [f.format() for f in sorted(self.findings, key=lambda f: order[f.severity])]
        n_err, n_warn = len(self.errors), len(self.warnings)
        verdict = ("TensorRT will not build this model" if n_err
                   else "TensorRT can build this model")
        tail = f"{n_err} error{'s' * (n_err != 1)}, {n_warn} warning{'s' * (n_warn != 1)}: {verdict}"
        return [head, *body, tail]


def inspect_tensorrt(path: str | Path) -> InspectReport:
    """Check the ONNX file at ``path`` against TensorRT's parser support table."""
    p = Path(path)
    return inspect_model(load_onnx(p), path=p)


def inspect_model(model: Any, *, path: str | Path = "model.onnx") -> InspectReport:
    return InspectReport(Path(path), "tensorrt", tuple(_Checker(model).run()))


def _manifest_of(model: Any):
    """The head manifest in the file's edgehal metadata, or None (no metadata, or unreadable metadata:
    that is ``edgehal export``'s concern, not TensorRT's)."""
    from edgehal.artifact import onnx_metadata

    try:
        meta = onnx_metadata(model)
    except EdgehalError:
        return None
    return meta.manifest if meta else None


def _node_label(node: Any) -> str:
    return f"{node.op_type} (node {node.name!r})" if node.name else node.op_type


class _Checker:
    def __init__(self, model: Any) -> None:
        import onnx

        self.model = model
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        except Exception:  # shape inference is a help, not a requirement
            inferred = model
        graph = inferred.graph
        self.types: dict[str, int] = {}
        for vi in [*graph.input, *graph.output, *graph.value_info]:
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                self.types[vi.name] = vi.type.tensor_type.elem_type
        self.initializers = {init.name: init for init in model.graph.initializer}
        for init in model.graph.initializer:
            self.types[init.name] = init.data_type
        self.constants: dict[str, Any] = {}
        for node in iter_nodes(model.graph):
            if node.op_type == "Constant" and node.output:
                for attr in node.attribute:
                    if attr.name == "value":
                        self.constants[node.output[0]] = attr.t
                        self.types[node.output[0]] = attr.t.data_type
        self.graph_inputs = {vi.name for vi in model.graph.input} - set(self.initializers)
        self.graph_io = self.graph_inputs | {vi.name for vi in model.graph.output}
        self.seen_zero_points: set[str] = set()
        self.manifest = _manifest_of(model)

    # -- helpers -----------------------------------------------------------
    def type_name(self, tensor: str) -> str | None:
        code = self.types.get(tensor)
        return ops.ONNX_TYPE_NAMES.get(code, f"type {code}") if code else None

    def is_constant(self, tensor: str) -> bool:
        return tensor in self.initializers or tensor in self.constants

    def value(self, tensor: str):
        from onnx import numpy_helper

        proto = self.initializers.get(tensor) or self.constants.get(tensor)
        return numpy_helper.to_array(proto) if proto is not None else None

    @staticmethod
    def attrs(node: Any) -> dict[str, Any]:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    # -- the checks --------------------------------------------------------
    def run(self) -> Iterator[Finding]:
        yield from self.check_opsets()
        yield from self.check_inputs()
        yield from self.check_tensor_types()
        for node in iter_nodes(self.model.graph):
            yield from self.check_node(node)

    def check_opsets(self) -> Iterator[Finding]:
        for entry in self.model.opset_import:
            if entry.domain in ("", "ai.onnx") and not ops.MIN_OPSET <= entry.version <= ops.MAX_OPSET:
                yield Finding("error", "opset",
                              f"ONNX opset {entry.version} is outside TensorRT's range "
                              f"{ops.MIN_OPSET}..{ops.MAX_OPSET}; re-export with an opset in that range")

    def check_inputs(self) -> Iterator[Finding]:
        for vi in self.model.graph.input:
            if vi.name not in self.graph_inputs:
                continue
            try:
                t = tensor_spec(vi)
            except EdgehalError:  # no tensor (a sequence), or a type newer than the dtype table: nothing to profile
                continue
            for axis in t.dynamic_axes:
                if axis == 0:
                    yield Finding("info", "dynamic",
                                  f"input {t.name!r}: the batch dimension {t.dim_label(0)} is dynamic; "
                                  "`edgehal build-engine` gives it an optimisation profile "
                                  f"(--min-batch/--opt-batch/--max-batch, defaults 1/{DEFAULT_MAX_BATCH}/"
                                  f"{DEFAULT_MAX_BATCH})")
                    continue
                key = dim_keys(t, axis)[0]
                default = default_dim_range(t, axis, self.manifest)
                if default is not None:
                    yield Finding("info", "dynamic",
                                  f"input {t.name!r}: dimension {t.dim_label(axis)} is dynamic; "
                                  f"`edgehal build-engine` profiles it {default[0]}..{default[2]} (opt "
                                  f"{default[1]}, from the model's trained input shape; "
                                  f"--dim {key}=MIN,OPT,MAX to change)")
                else:
                    yield Finding("warning", "dynamic",
                                  f"input {t.name!r}: dimension {t.dim_label(axis)} is dynamic and the file "
                                  "does not say which sizes to expect; `edgehal build-engine` needs "
                                  f"--dim {key}=MIN,OPT,MAX for it")

    def check_tensor_types(self) -> Iterator[Finding]:
        for name, code in sorted(self.types.items()):
            tname = ops.ONNX_TYPE_NAMES.get(code, f"type {code}")
            if tname == "DOUBLE":
                yield Finding("warning", "double",
                              f"tensor {name!r} is DOUBLE: TensorRT casts it to FP32, clamping to +-FLT_MAX")
            elif tname not in ops.SUPPORTED_TYPES:
                yield Finding("error", "dtype",
                              f"tensor {name!r} has data type {tname}, which TensorRT does not support "
                              f"(supported: {', '.join(sorted(ops.SUPPORTED_TYPES))})")
            elif tname == "UINT8" and name not in self.graph_io and not self._consumed_only_by(name, {"Cast"}):
                yield Finding("error", "dtype",
                              f"tensor {name!r} is UINT8 inside the graph: TensorRT supports UINT8 only "
                              "for network inputs and outputs")

    def _consumed_only_by(self, tensor: str, op_types: set[str]) -> bool:
        consumers = [n.op_type for n in iter_nodes(self.model.graph) if tensor in n.input]
        return bool(consumers) and all(c in op_types for c in consumers)

    def check_node(self, node: Any) -> Iterator[Finding]:
        label = _node_label(node)
        if node.domain not in ("", "ai.onnx"):
            yield Finding("error", "operator",
                          f"operator {node.domain}::{node.op_type} ({label}) is not an ONNX operator "
                          "TensorRT's parser imports; it needs a TensorRT plugin",
                          node.name, node.op_type)
            return
        if node.op_type not in ops.OPERATORS:
            yield Finding("error", "operator",
                          f"operator {label} is not in TensorRT's ONNX operator table",
                          node.name, node.op_type)
            return
        supported = ops.OPERATORS[node.op_type]
        if not supported:
            yield Finding("error", "operator",
                          f"operator {label} is not supported by TensorRT's ONNX parser",
                          node.name, node.op_type)
            return
        yield from self.check_node_types(node, label, supported)
        check = getattr(self, f"restrict_{node.op_type}", None)
        if check is None and node.op_type.startswith("Reduce"):
            check = self.restrict_reduce
        if check is not None:
            for message in check(node):
                yield Finding("error", "restriction", f"{label}: {message}", node.name, node.op_type)

    def check_node_types(self, node: Any, label: str, supported: tuple[str, ...]) -> Iterator[Finding]:
        data = [name for name in node.input[:1] if name]
        if node.op_type == "Constant":
            data = [name for name in node.output[:1]]
        for name in data:
            tname = self.type_name(name)
            if tname is None or tname in supported:
                continue
            if tname == "DOUBLE" and "FP32" in supported:
                continue  # reported once per tensor as a cast
            hint = ""
            if node.op_type == "DequantizeLinear" and tname == "INT32":
                hint = " (a quantized bias: quantize with QuantizeBias=False so biases stay float)"
            elif node.op_type == "DequantizeLinear" and tname == "UINT8":
                hint = " (quantize activations and weights with QuantType.QInt8, symmetric)"
            yield Finding("error", "dtype",
                          f"{label} gets {tname} input {name!r}; TensorRT supports "
                          f"{', '.join(supported)} there{hint}", node.name, node.op_type)
        if "INT64" in supported:
            return
        for name in node.input[1:]:
            if name and self.type_name(name) == "INT64":
                yield Finding("warning", "int64",
                              f"INT64 input {name!r} of {label} will be cast to INT32 by TensorRT "
                              "(values clamped to +-INT32_MAX)", node.name, node.op_type)

    # -- restrictions the table states, one method per operator ---------------
    def _pool(self, node: Any) -> list[str]:
        a = self.attrs(node)
        out = []
        kernel = a.get("kernel_shape") or []
        if node.op_type in ("AveragePool", "MaxPool") and len(kernel) not in (2, 3):
            out.append(f"{len(kernel)}D pooling; TensorRT pools in 2D or 3D only")
        if any(d != 1 for d in a.get("dilations") or []):
            out.append(f"dilations {list(a['dilations'])}; TensorRT needs them empty or all ones")
        return out

    def restrict_AveragePool(self, node: Any) -> list[str]:
        return self._pool(node)

    def restrict_LpPool(self, node: Any) -> list[str]:
        return self._pool(node)

    def restrict_MaxPool(self, node: Any) -> list[str]:
        out = self._pool(node)
        if len(node.output) > 1 and node.output[1]:
            out.append("its Indices output is used; TensorRT does not support it")
        return out

    def _zero_point(self, node: Any, which: str) -> list[str]:
        if len(node.input) < 3 or not node.input[2]:
            return []
        name = node.input[2]
        if name in self.seen_zero_points or self.type_name(node.input[0]) == "INT32":
            return []  # one finding per zero point; an INT32 bias is reported as such
        self.seen_zero_points.add(name)
        out = []
        tname = self.type_name(name)
        if tname and tname not in ("INT8", "FP8", "FP4", "INT4"):
            out.append(f"{which} {name!r} is {tname}; TensorRT quantizes to INT8 (or FP8/INT4/FP4): quantize "
                       "with signed INT8 weights and activations (QuantType.QInt8)")
        value = self.value(name)
        if value is None:
            out.append(f"{which} {name!r} is not an initializer; TensorRT needs a constant zero")
        elif value.size and bool((value != 0).any()):
            out.append(f"{which} {name!r} is not zero; TensorRT supports symmetric quantization only "
                       "(ActivationSymmetric/WeightSymmetric)")
        return out

    def restrict_QuantizeLinear(self, node: Any) -> list[str]:
        return self._zero_point(node, "y_zero_point")

    def restrict_DequantizeLinear(self, node: Any) -> list[str]:
        return self._zero_point(node, "x_zero_point")

    def restrict_Dropout(self, node: Any) -> list[str]:
        if len(node.input) < 3 or not node.input[2]:
            return []
        value = self.value(node.input[2])
        if value is None:
            return ["`is_training` is not an initializer"]
        return ["`is_training` is True"] if bool(value.reshape(-1)[0]) else []

    def restrict_LayerNormalization(self, node: Any) -> list[str]:
        if any(node.output[1:]):
            return ["outputs other than Y are used; TensorRT supports only the first output"]
        return []

    def restrict_TopK(self, node: Any) -> list[str]:
        out = []
        if self.attrs(node).get("sorted", 1) != 1:
            out.append("`sorted` is 0; TensorRT needs 1")
        if len(node.input) > 1 and node.input[1]:
            k = self.value(node.input[1])
            if k is not None and k.size and int(k.reshape(-1)[0]) >= 3840:
                out.append(f"K is {int(k.reshape(-1)[0])}; TensorRT needs K < 3840")
        return out

    def restrict_ScatterND(self, node: Any) -> list[str]:
        reduction = self.attrs(node).get("reduction", b"none")
        reduction = reduction.decode() if isinstance(reduction, bytes) else reduction
        return [] if reduction == "none" else [f"reduction {reduction!r}; TensorRT supports 'none' only"]

    def restrict_CumSum(self, node: Any) -> list[str]:
        if len(node.input) > 1 and node.input[1] and not self.is_constant(node.input[1]):
            return ["`axis` is not a build-time constant"]
        return []

    def _axes_from_input(self, node: Any) -> list[str]:
        if len(node.input) > 1 and node.input[1] in self.graph_inputs:
            return [f"`axes` comes from the network input {node.input[1]!r}; TensorRT needs a constant"]
        return []

    def restrict_Squeeze(self, node: Any) -> list[str]:
        return self._axes_from_input(node)

    def restrict_Unsqueeze(self, node: Any) -> list[str]:
        return self._axes_from_input(node)

    def restrict_reduce(self, node: Any) -> list[str]:
        if len(node.input) > 1 and node.input[1] and not self.is_constant(node.input[1]):
            return ["`axes` is not an initializer"]
        return []

    def restrict_Resize(self, node: Any) -> list[str]:
        a = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in self.attrs(node).items()}
        out = []
        mode = a.get("mode", "nearest")
        if mode not in ops.RESIZE_MODES:
            out.append(f"mode {mode!r}; TensorRT supports {sorted(ops.RESIZE_MODES)}")
        transform = a.get("coordinate_transformation_mode", "half_pixel")
        if transform not in ops.RESIZE_TRANSFORMS:
            out.append(f"coordinate_transformation_mode {transform!r}; TensorRT supports "
                       f"{sorted(ops.RESIZE_TRANSFORMS)}")
        nearest = a.get("nearest_mode", "round_prefer_floor")
        if mode == "nearest" and nearest not in ops.RESIZE_NEAREST_MODES:
            out.append(f"nearest_mode {nearest!r}; TensorRT supports {sorted(ops.RESIZE_NEAREST_MODES)}")
        if a.get("antialias", 0):
            out.append("antialias is set; TensorRT does not support antialiasing")
        policy = a.get("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            out.append(f"keep_aspect_ratio_policy {policy!r}; TensorRT supports 'stretch' only")
        return out

    def restrict_LSTM(self, node: Any) -> list[str]:
        a = self.attrs(node)
        return [f"`{k}` is {a[k]}; TensorRT needs 0" for k in ("input_forget", "layout") if a.get(k, 0)]

    def restrict_Constant(self, node: Any) -> list[str]:
        bad = [a.name for a in node.attribute if a.name in ("sparse_value", "value_string", "value_strings")]
        return [f"attribute `{name}` is unsupported" for name in bad]
