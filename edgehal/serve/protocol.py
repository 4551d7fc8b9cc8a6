"""The Open Inference Protocol (KServe v2) as Triton speaks it over HTTP/REST.

Request and response models mirror the protocol's grammar
(``$inference_request``, ``$request_input``, ``$request_output``,
``$inference_response``, ``$response_output``); the codecs turn an HTTP body
into an :class:`InferRequest` of numpy arrays, and the model's outputs into a
``$inference_response`` body, in JSON (nested or flat ``data``) and with the binary tensor
data extension (``binary_data_size``, ``binary_data``, ``binary_data_output``
and the ``Inference-Header-Content-Length`` header).

Every request is validated here against the model's :class:`ModelIO` before
anything reaches the model's runner: datatype, rank, every non-batch dimension, the
element count against the data given, the batch against the maximum, and the
binary sizes against the body. Nothing a client sends is evaluated or written
anywhere; tensors are built with ``numpy.frombuffer`` (binary) or from the
decoded JSON lists, never from a shape alone, so memory stays proportional to
the body (which the app caps). Inputs and outputs may instead name a registered
system shared memory region (:mod:`edgehal.serve.shared_memory`), read and
written only within the region's bounds.

The head manifest travels in model metadata as ``parameters``: the model's
edgehal ``metadata_props`` verbatim (``edgehal.manifest``,
``edgehal.preprocessing``, ``edgehal.aux``, ...), each a JSON string, because
protocol parameter values may only be strings, numbers or booleans.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Hashable, Mapping, Sequence

import numpy as np

from edgehal.errors import EdgehalError
from edgehal.tensors import TensorSpec

if TYPE_CHECKING:  # shared_memory imports this module's errors
    from edgehal.serve.shared_memory import SharedMemoryRegistry

# ---------------------------------------------------------------------------
# Errors. app.py maps each class to one HTTP status in one table.


class InvalidRequest(EdgehalError):
    """The client sent something the protocol or the model does not accept (400)."""


class PayloadTooLarge(InvalidRequest):
    """The request body is larger than the server's limit (413)."""


class ModelNotFound(EdgehalError):
    """No such model, or no such version of it (404)."""


class Unavailable(EdgehalError):
    """The server or model is not ready, shutting down, or overloaded (503)."""


def invalid(what: str, problem: str, expected: str | None = None) -> InvalidRequest:
    return InvalidRequest(what, problem, expected)


# ---------------------------------------------------------------------------
# Model-side description used for validation


@dataclass
class ModelIO:
    """What the codecs need to know about one model version (built once at load).

    ``inputs`` and ``outputs`` leave the batch dimension out of their shapes
    when ``max_batch_size`` > 0: the protocol's metadata puts ``-1`` in front.
    """

    name: str
    version: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int  # 0: the model has no batch dimension the server may use
    labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # output -> class names
    input_by_name: dict[str, TensorSpec] = field(init=False, repr=False)
    output_by_name: dict[str, TensorSpec] = field(init=False, repr=False)
    # parse plans by request header: the JSON header's bytes (HTTP) or a transport's own key (gRPC);
    # see decode_infer_request and decode_infer_document
    plans: dict[Hashable, "_Plan"] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.input_by_name = {t.name: t for t in self.inputs}
        self.output_by_name = {t.name: t for t in self.outputs}
        self.plans = {}

    def metadata_shape(self, t: TensorSpec) -> list[int]:
        return ([-1] if self.max_batch_size > 0 else []) + list(t.shape)


# ---------------------------------------------------------------------------
# Request and response models


@dataclass(frozen=True, slots=True)
class SharedMemoryRef:
    """Where a tensor lies in a registered shared memory region: the ``shared_memory_region``,
    ``shared_memory_offset`` and ``shared_memory_byte_size`` parameters of an input or output."""

    region: str
    offset: int
    byte_size: int


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """``$request_output``: which output, as binary or JSON, optionally top-k classes, or written
    to a shared memory region instead of the response."""

    name: str
    binary: bool
    classification: int = 0
    shared_memory: SharedMemoryRef | None = None


@dataclass(slots=True)
class InferRequest:
    """``$inference_request`` after decoding and validation."""

    id: str | None
    inputs: dict[str, np.ndarray]
    batch: int
    outputs: tuple[RequestedOutput, ...]
    parameters: dict[str, Any]
    plan: "_Plan | None" = None


# ---------------------------------------------------------------------------
# Decoding


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_std_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode

try:  # optional: parses a 784-float JSON tensor about 8x faster than the standard library
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised where orjson is absent
    _orjson = None


def loads(data: bytes | str, *, what: str = "request body") -> Any:
    """Strict JSON: UTF-8 only, no NaN/Infinity, bounded nesting."""
    if _orjson is not None:
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError as exc:  # also invalid UTF-8, NaN, too deep
            raise invalid(what, f"is not valid JSON ({exc})", "a JSON object") from None
    try:
        return _DECODER.decode(data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data)
    except UnicodeDecodeError:
        raise invalid(what, "is not valid JSON (not UTF-8)", "a JSON object") from None
    except RecursionError:
        raise invalid(what, "is not valid JSON (nested too deeply)", "a JSON object") from None
    except ValueError as exc:  # JSONDecodeError, our NaN rejection, int too long
        raise invalid(what, f"is not valid JSON ({exc})", "a JSON object") from None


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes. Callers never pass NaN (outputs are checked first)."""
    if _orjson is not None:
        return _orjson.dumps(obj)
    return _std_dumps(obj).encode()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


PLAN_CACHE_SIZE = 256


class _Plan:
    """What a validated all-binary JSON header decodes to, kept per model keyed by the
    header's bytes: clients send the same header with new tensor bytes every time, so a
    repeat costs a dict lookup and ``numpy.frombuffer`` instead of parsing and checking
    the JSON again. The binary data itself is still checked on every request."""

    __slots__ = ("id", "params", "inputs", "batch", "outputs", "binary_size", "cache_response",
                 "response_header", "response_size")

    def __init__(self, request: InferRequest, inputs: list[tuple], binary_size: int, io: ModelIO) -> None:
        self.id, self.params, self.batch, self.outputs = request.id, request.parameters, request.batch, request.outputs
        self.inputs = inputs  # (name, meta, count, shape, offset after the header, size, what)
        self.binary_size = binary_size
        # a binary-only answer with static output dims has the same JSON header every time
        self.cache_response = all(
            o.binary and not o.classification and io.output_by_name[o.name].datatype != "BYTES"
            and all(d >= 0 for d in io.output_by_name[o.name].shape) for o in self.outputs)
        self.response_header: bytes | None = None
        self.response_size = 0

    def decode(self, body: bytes, hl: int) -> InferRequest:
        arrays = {name: _from_binary(body, hl + rel, bsize, meta, count, shape, what)
                  for name, meta, count, shape, rel, bsize, what in self.inputs}
        return InferRequest(self.id, arrays, self.batch, self.outputs, self.params, self)


def decode_infer_request(body: bytes, header_length: str | None, io: ModelIO, *,
                         shared_memory: SharedMemoryRegistry | None = None) -> InferRequest:
    """Parse and validate one ``infer`` body against the model; return numpy inputs.

    ``header_length`` is the ``Inference-Header-Content-Length`` header, or
    None when the whole body is JSON. Inputs and outputs may name regions of
    ``shared_memory`` (none: such requests are refused).
    """
    size = len(body)
    if header_length is None:
        hl = size
    else:
        try:
            hl = int(header_length)
        except ValueError:
            raise invalid("Inference-Header-Content-Length", f"{header_length[:40]!r} is not an integer",
                          "the length in bytes of the JSON header") from None
        if not 0 < hl <= size:
            raise invalid("Inference-Header-Content-Length", f"is {hl} but the body has {size} bytes",
                          "the length in bytes of the JSON header, at most the body size")
    if hl == size:
        return _decode(loads(body), body, hl, io, shared_memory)[0]
    header = body[:hl]
    plan = io.plans.get(header)
    if plan is not None and plan.binary_size == size - hl:
        return plan.decode(body, hl)
    request, binary_inputs = _decode(loads(header), body, hl, io, shared_memory)
    _remember(io, header, request, binary_inputs, size - hl)
    return request


def _remember(io: ModelIO, key: Hashable, request: InferRequest, binary_inputs: list[tuple] | None,
              binary_size: int) -> None:
    """Keep the parse plan of an all-binary request under ``key``, the whole of its header."""
    if binary_inputs is None:
        return
    if len(io.plans) >= PLAN_CACHE_SIZE:  # bounded: a client varying its header only churns it
        io.plans.clear()
    request.plan = io.plans[key] = _Plan(request, binary_inputs, binary_size, io)


def decode_infer_document(document: Callable[[], Mapping[str, Any]], body: bytes, io: ModelIO, *,
                          key: Hashable = None,
                          shared_memory: SharedMemoryRegistry | None = None) -> InferRequest:
    """Validate the ``$inference_request`` that ``document()`` builds, whose binary inputs
    (``binary_data_size``) lie in ``body`` one after another: the seam for transports other than
    HTTP/JSON (gRPC).

    ``key`` stands for everything of the request but its binary data, the sizes of each binary
    input included (so equal keys mean equal documents): with one, an all-binary request's parse
    plan is kept under it, and a request with a known key is decoded by its plan without building
    the document. None: no plan."""
    if key is not None:
        plan = io.plans.get(key)
        if plan is not None and plan.binary_size == len(body):
            return plan.decode(body, 0)
    request, binary_inputs = _decode(document(), body, 0, io, shared_memory)
    if key is not None:
        _remember(io, key, request, binary_inputs, len(body))
    return request


def _decode(doc: Any, body: bytes, hl: int, io: ModelIO,
            shm: SharedMemoryRegistry | None) -> tuple[InferRequest, list[tuple] | None]:
    """The full parse; also returns the binary inputs' layout when every input is binary (and no
    tensor is in shared memory: the layout becomes a cached plan that reads the body only)."""
    size = len(body)
    if not isinstance(doc, dict):
        raise invalid("request body", f"is a JSON {type(doc).__name__}", "a JSON object ($inference_request)")

    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise invalid("request 'id'", f"is a {type(rid).__name__}", "a string")
    params = doc.get("parameters")
    if params is None:
        params = {}
    elif not isinstance(params, dict):
        raise invalid("request 'parameters'", f"is a {type(params).__name__}", "a JSON object")
    binary_default = params.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise invalid("parameter 'binary_data_output'", f"is {binary_default!r}", "true or false")

    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise invalid("request 'inputs'", "is missing or not a non-empty list",
                      f"one entry per model input: {[t.name for t in io.inputs]}")
    arrays: dict[str, np.ndarray] = {}
    layout: list[tuple] | None = []
    batch = None
    offset = hl
    by_name = io.input_by_name
    batched = io.max_batch_size > 0
    for t in inputs:
        if not isinstance(t, dict):
            raise invalid("request 'inputs'", f"has a {type(t).__name__} entry", "objects ($request_input)")
        name = t.get("name")
        meta = by_name.get(name) if isinstance(name, str) else None
        if meta is None:
            raise invalid(f"input {name!r}", f"is not an input of model {io.name!r}",
                          f"inputs {list(by_name)}")
        if name in arrays:
            raise invalid(f"input {name!r}", "is given twice")
        what = f"input {name!r}"
        datatype = t.get("datatype")
        if datatype != meta.datatype:
            raise invalid(what, f"has datatype {datatype!r}", f"datatype {meta.datatype!r}")
        shape = t.get("shape")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise invalid(what, f"shape {shape!r} is not a list of non-negative integers",
                          f"shape {io.metadata_shape(meta)}")
        dims = shape[1:] if batched else shape
        if len(dims) != len(meta.shape) or any(w >= 0 and g != w for g, w in zip(dims, meta.shape)):
            raise invalid(what, f"has shape {shape}", f"shape {io.metadata_shape(meta)} (-1: any size)")
        if batched:
            n = shape[0]
            if not 1 <= n <= io.max_batch_size:
                raise invalid(what, f"batch size {n} is out of range",
                              f"1 to {io.max_batch_size} (the model's max_batch_size)")
            if batch is None:
                batch = n
            elif n != batch:
                raise invalid(what, f"batch size {n} differs from the other inputs' {batch}",
                              "the same batch size for every input")
        count = math.prod(shape)

        tparams = t.get("parameters")
        bsize = None
        ref = None
        if tparams is not None:
            if not isinstance(tparams, dict):
                raise invalid(f"{what} 'parameters'", f"is a {type(tparams).__name__}", "a JSON object")
            ref = _shared_memory_ref(tparams, what, shm)
            bsize = tparams.get("binary_data_size")
        if ref is not None:
            if bsize is not None or "data" in t:
                raise invalid(what, "has both shared memory and data in the body", "one of them")
            arr = _from_shared_memory(shm, ref, meta, count, shape, what)
            layout = None
        elif bsize is not None:
            if "data" in t:
                raise invalid(what, "has both 'data' and binary_data_size", "one of them")
            if not _is_int(bsize) or bsize < 0:
                raise invalid(f"{what} binary_data_size", f"is {bsize!r}", "a non-negative integer")
            if offset + bsize > size:
                raise invalid(f"{what} binary_data_size", f"is {bsize} but only {size - offset} "
                              "bytes of binary data are left in the body",
                              "binary data for every binary input after the JSON header")
            arr = _from_binary(body, offset, bsize, meta, count, shape, what)
            if layout is not None:
                layout.append((name, meta, count, shape, offset - hl, bsize, what))
            offset += bsize
        else:
            data = t.get("data")
            if data is None:
                raise invalid(what, "has neither 'data' nor binary_data_size", "tensor data")
            arr = _from_json(data, meta, count, shape, what)
            layout = None
        arrays[name] = arr
    if len(arrays) != len(io.inputs):
        missing = [n for n in by_name if n not in arrays]
        raise invalid(f"model {io.name!r}", f"input {missing[0]!r} is missing",
                      f"inputs {list(by_name)}")
    if offset != size:
        raise invalid("request body", f"has {size - offset} bytes after the tensors' binary data",
                      "binary_data_size of the inputs adding up to the bytes after the JSON header")
    outputs = _requested_outputs(doc.get("outputs"), io, binary_default, shm)
    if any(o.shared_memory is not None for o in outputs):
        layout = None
    return InferRequest(rid, arrays, batch or 1, outputs, params), layout


def _shared_memory_ref(params: Mapping[str, Any], what: str,
                       shm: SharedMemoryRegistry | None) -> SharedMemoryRef | None:
    """The shared memory parameters of an input or output; None when it names no region."""
    region = params.get("shared_memory_region")
    size = params.get("shared_memory_byte_size")
    offset = params.get("shared_memory_offset", 0)
    if region is None:
        if size is not None or "shared_memory_offset" in params:
            raise invalid(what, "has shared_memory_byte_size or shared_memory_offset without "
                          "shared_memory_region", "shared_memory_region and shared_memory_byte_size together")
        return None
    if shm is None:
        raise invalid(what, "asks for shared memory, which is not available here",
                      "data in the body (JSON or binary_data_size)")
    if not isinstance(region, str) or not region:
        raise invalid(f"{what} shared_memory_region", f"is {region!r}", "the name of a registered region")
    if size is None:
        raise invalid(what, "has shared_memory_region without shared_memory_byte_size", "both")
    for key, value in (("shared_memory_byte_size", size), ("shared_memory_offset", offset)):
        if not _is_int(value) or value < 0:
            raise invalid(f"{what} {key}", f"is {value!r}", "a non-negative integer")
    return SharedMemoryRef(region, offset, size)


def _from_shared_memory(shm: Any, ref: SharedMemoryRef, meta: TensorSpec, count: int, shape: list[int],
                        what: str) -> np.ndarray:
    if meta.datatype != "BYTES" and ref.byte_size != count * meta.numpy_dtype.itemsize:
        # checked before reading: the size must be the tensor's exactly
        raise invalid(f"{what} shared_memory_byte_size", f"is {ref.byte_size} bytes",
                      f"{count * meta.numpy_dtype.itemsize} bytes: shape {shape} of {meta.datatype}")
    data = shm.read(ref.region, offset=ref.offset, size=ref.byte_size, what=what)
    return _from_binary(data, 0, ref.byte_size, meta, count, shape, what)


def _from_binary(body: bytes, offset: int, bsize: int, meta: TensorSpec, count: int,
                 shape: list[int], what: str) -> np.ndarray:
    dtype = meta.numpy_dtype
    if meta.datatype == "BYTES":
        return _bytes_from_binary(memoryview(body)[offset:offset + bsize], count, what).reshape(shape)
    if bsize != count * dtype.itemsize:
        raise invalid(f"{what} binary_data_size", f"is {bsize} bytes",
                      f"{count * dtype.itemsize} bytes: shape {shape} of {meta.datatype}")
    arr = np.frombuffer(body, dtype=dtype, count=count, offset=offset).reshape(shape)
    if not arr.flags.aligned:  # the JSON header can have any length; kernels like alignment
        arr = arr.copy()
    if meta.datatype == "BOOL" and count and arr.view(np.uint8).max() > 1:
        raise invalid(what, "has BOOL bytes other than 0 and 1")
    return arr


def _bytes_from_binary(view: memoryview, count: int, what: str) -> np.ndarray:
    if 4 * count > len(view):  # checked before allocating: a shape alone must not cost memory
        raise invalid(what, f"BYTES data of {len(view)} bytes cannot hold {count} elements",
                      "each element as a 4-byte little-endian length and its bytes")
    out = np.empty(count, dtype=object)
    pos, end = 0, len(view)
    for i in range(count):
        if pos + 4 > end:
            raise invalid(what, f"BYTES data ends after {i} of {count} elements",
                          "each element as a 4-byte little-endian length and its bytes")
        n = int.from_bytes(view[pos:pos + 4], "little")
        pos += 4
        if pos + n > end:
            raise invalid(what, f"BYTES element {i} claims {n} bytes, {end - pos} left")
        out[i] = bytes(view[pos:pos + n])
        pos += n
    if pos != end:
        raise invalid(what, f"BYTES data has {end - pos} bytes after its {count} elements")
    return out


def _flatten(data: list, out: list, depth: int = 0) -> None:
    if depth > 32:
        raise invalid("tensor data", "is nested more than 32 levels")
    for v in data:
        if isinstance(v, list):
            _flatten(v, out, depth + 1)
        else:
            out.append(v)


def _from_json(data: Any, meta: TensorSpec, count: int, shape: list[int], what: str) -> np.ndarray:
    if not isinstance(data, list):
        raise invalid(f"{what} 'data'", f"is a {type(data).__name__}", "a (flat or nested) list")
    if data and isinstance(data[0], list):
        flat: list = []
        _flatten(data, flat)
    else:
        flat = data
    if len(flat) != count:
        raise invalid(f"{what} 'data'", f"has {len(flat)} elements",
                      f"{count} elements for shape {shape}")
    dt = meta.datatype
    types = set(map(type, flat))
    if dt == "BYTES":
        if not types <= {str}:
            raise invalid(f"{what} 'data'", "has non-string elements", "strings for BYTES")
        arr = np.empty(count, dtype=object)
        arr[:] = flat
        return arr.reshape(shape)
    if dt == "BOOL":
        if not types <= {bool}:
            raise invalid(f"{what} 'data'", "has non-boolean elements", "true/false for BOOL")
        return np.array(flat, dtype=np.bool_).reshape(shape)
    # checked by type, because numpy would quietly turn true into 1 and "1" into a number
    if dt.startswith("FP"):
        if not types <= {int, float}:
            raise invalid(f"{what} 'data'", "has non-numeric elements", f"numbers for {dt}")
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                arr = np.array(flat, dtype=meta.numpy_dtype)
        except OverflowError:
            arr = np.array([math.inf])
        if not np.isfinite(arr).all():
            raise invalid(f"{what} 'data'", f"has values out of range for {dt}")
        return arr.reshape(shape)
    if not types <= {int}:
        raise invalid(f"{what} 'data'", "has non-integer elements", f"integers for {dt}")
    raw = np.array(flat) if flat else np.zeros(0, dtype=meta.numpy_dtype)
    if raw.dtype.kind not in "iu":
        raise invalid(f"{what} 'data'", f"has values out of range for {dt}")
    arr = raw.astype(meta.numpy_dtype)
    if not np.array_equal(arr, raw):
        raise invalid(f"{what} 'data'", f"has values out of range for {dt}")
    return arr.reshape(shape)


def _requested_outputs(outputs: Any, io: ModelIO, binary_default: bool,
                       shm: SharedMemoryRegistry | None = None) -> tuple[RequestedOutput, ...]:
    if outputs is None:
        return tuple(RequestedOutput(t.name, binary_default) for t in io.outputs)
    if not isinstance(outputs, list):
        raise invalid("request 'outputs'", f"is a {type(outputs).__name__}", "a list of $request_output")
    by_name = io.output_by_name
    out: list[RequestedOutput] = []
    seen: set[str] = set()
    for o in outputs:
        if not isinstance(o, dict):
            raise invalid("request 'outputs'", f"has a {type(o).__name__} entry", "objects with a 'name'")
        name = o.get("name")
        meta = by_name.get(name) if isinstance(name, str) else None
        if meta is None:
            raise invalid(f"output {name!r}", f"is not an output of model {io.name!r}",
                          f"outputs {list(by_name)}")
        if name in seen:
            raise invalid(f"output {name!r}", "is requested twice")
        seen.add(name)
        binary, k, ref = binary_default, 0, None
        p = o.get("parameters")
        if p is not None:
            if not isinstance(p, dict):
                raise invalid(f"output {name!r} 'parameters'", f"is a {type(p).__name__}", "a JSON object")
            ref = _shared_memory_ref(p, f"output {name!r}", shm)
            binary = p.get("binary_data", binary_default)
            if not isinstance(binary, bool):
                raise invalid(f"output {name!r} binary_data", f"is {binary!r}", "true or false")
            k = p.get("classification", 0)
            if not _is_int(k) or k < 0:
                raise invalid(f"output {name!r} classification", f"is {k!r}", "a non-negative integer count")
            if k and len(meta.shape) != 1:
                raise invalid(f"output {name!r} classification",
                              f"needs a vector of class scores but the output has dims {list(meta.shape)}")
            if ref is not None:
                if k:
                    raise invalid(f"output {name!r}", "asks for classification and shared memory together",
                                  "one of them")
                # an unknown region or a range outside it is refused before the model runs
                shm.check(ref.region, offset=ref.offset, size=ref.byte_size, what=f"output {name!r}")
        out.append(RequestedOutput(name, binary, k, ref))
    return tuple(out)


# ---------------------------------------------------------------------------
# Encoding


def classify(scores: np.ndarray, k: int, labels: Sequence[str]) -> np.ndarray:
    """Top-``k`` along the last axis as ``"<value>:<index>[:<label>]"`` BYTES strings."""
    k = min(k, scores.shape[-1])
    idx = np.argsort(-scores, axis=-1, kind="stable")[..., :k]
    top = np.take_along_axis(scores, idx, axis=-1)
    out = np.empty(idx.shape, dtype=object)
    flat_out, flat_idx, flat_top = out.reshape(-1), idx.reshape(-1), top.reshape(-1)
    for j in range(flat_idx.size):
        i = int(flat_idx[j])
        text = f"{float(flat_top[j]):f}:{i}"
        if i < len(labels):
            text += f":{labels[i]}"
        flat_out[j] = text.encode()
    return out


def _serialize_bytes(arr: np.ndarray) -> bytes:
    parts = []
    for v in arr.reshape(-1):
        b = v if isinstance(v, bytes) else str(v).encode()
        parts.append(len(b).to_bytes(4, "little"))
        parts.append(b)
    return b"".join(parts)


def _json_data(arr: np.ndarray, datatype: str, name: str) -> list:
    if datatype == "BYTES":
        try:
            return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr.reshape(-1)]
        except UnicodeDecodeError:
            raise invalid(f"output {name!r}", "holds bytes that are not UTF-8",
                          "binary_data: true for this output") from None
    if datatype in ("FP16", "FP32", "FP64") and not np.isfinite(arr).all():
        # JSON has no NaN or Infinity; binary data carries them faithfully
        raise invalid(f"output {name!r}", "holds NaN or infinite values that JSON cannot carry",
                      "binary_data: true for this output")
    return arr.reshape(-1).tolist()


def encode_infer_response(io: ModelIO, request: InferRequest, results: Mapping[str, np.ndarray], *,
                          shared_memory: SharedMemoryRegistry | None = None) -> tuple[bytes, int | None]:
    """The ``$inference_response`` for ``request``: the body, and the
    ``Inference-Header-Content-Length`` (None when the body is JSON only).

    ``{"model_name", "model_version", "id"?, "outputs": [{"name", "datatype", "shape",
    "data" | "parameters": {"binary_data_size"}}]}``, the binary outputs' bytes
    following the JSON in the order of ``outputs``. An output requested in a shared
    memory region is written there and has only name, datatype and shape here (as Triton answers).
    """
    plan = request.plan
    if plan is not None and plan.response_header is not None:
        blobs = [memoryview(np.ascontiguousarray(results[o.name])).cast("B") for o in request.outputs]
        if sum(b.nbytes for b in blobs) == plan.response_size:
            header = plan.response_header
            return b"".join([header, *blobs]), len(header)
    entries = []
    blobs: list[bytes | memoryview] = []
    to_shm: list[tuple[RequestedOutput, bytes | memoryview]] = []
    for ro in request.outputs:
        arr, datatype = _output(io, ro, results)
        shape = list(arr.shape)
        if ro.shared_memory is not None:
            to_shm.append((ro, _raw(arr, datatype)))
            entries.append({"name": ro.name, "datatype": datatype, "shape": shape})
        elif ro.binary:
            raw = _serialize_bytes(arr) if datatype == "BYTES" else memoryview(np.ascontiguousarray(arr)).cast("B")
            entries.append({"name": ro.name, "datatype": datatype, "shape": shape,
                            "parameters": {"binary_data_size": len(raw)}})
            blobs.append(raw)
        else:
            entries.append({"name": ro.name, "datatype": datatype, "shape": shape,
                            "data": _json_data(arr, datatype, ro.name)})
    doc: dict[str, Any] = {"model_name": io.name, "model_version": io.version}
    if request.id:
        doc["id"] = request.id
    doc["outputs"] = entries
    header = dumps(doc)
    _write_shared_memory(shared_memory, to_shm)
    if not blobs:
        return header, None
    if plan is not None and plan.cache_response:
        plan.response_header, plan.response_size = header, sum(len(b) for b in blobs)
    return b"".join([header, *blobs]), len(header)


def _output(io: ModelIO, ro: RequestedOutput, results: Mapping[str, np.ndarray]) -> tuple[np.ndarray, str]:
    """Requested output ``ro`` of ``results`` and its datatype: the tensor, or its top-k classes as BYTES."""
    arr = results[ro.name]
    if ro.classification:
        return classify(arr, ro.classification, io.labels.get(ro.name, ())), "BYTES"
    return arr, io.output_by_name[ro.name].datatype


def raw_outputs(io: ModelIO, request: InferRequest, results: Mapping[str, np.ndarray], *,
                shared_memory: SharedMemoryRegistry | None = None) -> list[tuple[str, str, list[int], bytes]]:
    """The requested outputs as ``(name, datatype, shape, raw bytes)``, in the binary tensor
    layout (BYTES as 4-byte little-endian lengths and their bytes); top-k classes as BYTES.
    An output requested in shared memory is written there and has empty raw bytes here (as
    Triton's gRPC answer has: one raw entry per output)."""
    out = []
    to_shm: list[tuple[RequestedOutput, bytes | memoryview]] = []
    for ro in request.outputs:
        arr, datatype = _output(io, ro, results)
        if ro.shared_memory is not None:
            to_shm.append((ro, _raw(arr, datatype)))
            raw = b""
        else:
            raw = _serialize_bytes(arr) if datatype == "BYTES" else np.ascontiguousarray(arr).tobytes()
        out.append((ro.name, datatype, list(arr.shape), raw))
    _write_shared_memory(shared_memory, to_shm)
    return out


def _raw(arr: np.ndarray, datatype: str) -> bytes | memoryview:
    return _serialize_bytes(arr) if datatype == "BYTES" else memoryview(np.ascontiguousarray(arr)).cast("B")


def _write_shared_memory(shm: SharedMemoryRegistry | None,
                         outputs: list[tuple[RequestedOutput, bytes | memoryview]]) -> None:
    """Write the outputs requested in shared memory; every size is checked before any is written,
    so a request refused here leaves every region as it was."""
    if not outputs:
        return
    for ro, raw in outputs:
        ref = ro.shared_memory
        assert ref is not None and shm is not None  # decoding refused shared memory without a registry
        if len(raw) > ref.byte_size:
            raise invalid(f"output {ro.name!r} shared_memory_byte_size",
                          f"is {ref.byte_size} bytes but the output has {len(raw)} bytes",
                          f"at least {len(raw)} bytes in region {ref.region!r}")
    for ro, raw in outputs:
        ref = ro.shared_memory
        shm.write(ref.region, offset=ref.offset, data=raw, what=f"output {ro.name!r}")


def model_metadata(io: ModelIO, *, versions: Sequence[str], platform: str,
                   parameters: Mapping[str, Any]) -> dict[str, Any]:
    """``$metadata_model_response``; ``parameters`` carries the edgehal metadata."""
    doc: dict[str, Any] = {
        "name": io.name,
        "versions": list(versions),
        "platform": platform,
        "inputs": [{"name": t.name, "datatype": t.datatype, "shape": io.metadata_shape(t)} for t in io.inputs],
        "outputs": [{"name": t.name, "datatype": t.datatype, "shape": io.metadata_shape(t)}
                    for t in io.outputs],
    }
    if parameters:
        doc["parameters"] = dict(parameters)
    return doc
