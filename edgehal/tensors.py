"""Model inputs and outputs, and their element types, described once for every stage.

A :class:`TensorSpec` is a tensor's name, element type and shape (``-1``
where a dimension is dynamic), with the names an ONNX file gives its dynamic
dimensions (``"batch"``). The ONNX tools (export, inspect, the TensorRT
planner, the Triton exporter), the engine sidecar, every runtime and serve
describe tensors with it. :data:`DTYPES` is the one table of element types:
each :class:`DType` carries the type's name in every system edgehal talks to,
so no other module keeps a table of its own and a name read from one system
is translated to another by one lookup::

    numpy     ONNX TensorProto   onnxruntime           protocol  Triton config  TensorRT
    float32   1 (FLOAT)          tensor(float)         FP32      TYPE_FP32      FLOAT
    object    8 (STRING)         tensor(string)        BYTES     TYPE_STRING    -
    -         17 (FLOAT8E4M3FN)  tensor(float8e4m3fn)  -         -              FP8
    ...

The ``dtype_from_*`` functions look an entry up by one system's name; an
unknown name is an :class:`~edgehal.errors.EdgehalError` listing the known
ones. "protocol" is the Open Inference Protocol (KServe v2) datatype, which
Triton speaks too.

Types edgehal names but holds no arrays of. The table has a row for every
ONNX element type (UNDEFINED aside), so every tensor of a graph has a
description whatever its type. The complex, float8, 4-, 2- and 6-bit types
have ``numpy=None`` and no protocol or Triton name: numpy lacks them, and
neither the runtimes nor the protocol carry complex arrays. Such a tensor's
``TensorSpec.dtype`` is its ONNX name (``"FLOAT8E4M3FN"``, never a numpy
name); the ONNX tools handle it like any other (``inspect`` reports what
TensorRT makes of the type), and whatever needs its numpy dtype refuses it
with an EdgehalError naming the tensor (:meth:`DType.require_numpy`). The
onnxruntime and TensorRT runners ask for it as they describe a model's inputs
and outputs, so ``serve`` refuses such a model as it loads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import numpy as np

from edgehal.errors import EdgehalError


@dataclass(frozen=True)
class DType:
    """One element type under each system's name; None where a system has no such type."""

    numpy: str | None  # numpy dtype name; "object" holds strings and bytes; None: edgehal holds no arrays of it
    onnx: int  # onnx.TensorProto element type
    ort: str  # onnxruntime's NodeArg.type
    datatype: str | None  # Open Inference Protocol (KServe v2) datatype
    triton: str | None  # Triton config.pbtxt data_type
    tensorrt: str | None  # tensorrt.DataType member name

    @property
    def onnx_name(self) -> str:
        """ONNX's name of the type (``FLOAT``, ``FLOAT8E4M3FN``); onnxruntime spells it in lower case."""
        return self.ort[len("tensor("):-1].upper()

    @property
    def name(self) -> str:
        """What :attr:`TensorSpec.dtype` holds: the numpy name, or ONNX's name for a type numpy lacks."""
        return self.numpy or self.onnx_name

    @property
    def numpy_dtype(self) -> np.dtype:
        """The numpy dtype; an EdgehalError for a type numpy cannot hold."""
        return self.require_numpy()

    def require_numpy(self, *, what: str | None = None) -> np.dtype:
        """The numpy dtype, or an EdgehalError naming ``what`` for a type numpy cannot hold.

        bfloat16 needs ``ml_dtypes`` (installed with onnx), which adds it to numpy.
        """
        if self.numpy is None:
            label = f"{what}: " if what else ""
            raise EdgehalError(f"{label}dtype {self.onnx_name}",
                               "has no numpy type that edgehal runs or serves",
                               f"a model whose inputs and outputs are one of {', '.join(_BY['numpy'])}")
        dt = _NUMPY_DTYPES.get(self.numpy)
        if dt is None:  # the server asks per request: build each once
            if self.numpy == "bfloat16":
                try:
                    import ml_dtypes  # noqa: F401 - registers bfloat16 with numpy
                except ImportError:
                    raise EdgehalError("dtype bfloat16", "has no numpy type without ml_dtypes",
                                       "pip install ml_dtypes") from None
            dt = _NUMPY_DTYPES[self.numpy] = np.dtype(self.numpy)
        return dt


_NUMPY_DTYPES: dict[str, np.dtype] = {}


DTYPES: tuple[DType, ...] = (
    DType("bool", 9, "tensor(bool)", "BOOL", "TYPE_BOOL", "BOOL"),
    DType("uint8", 2, "tensor(uint8)", "UINT8", "TYPE_UINT8", "UINT8"),
    DType("uint16", 4, "tensor(uint16)", "UINT16", "TYPE_UINT16", None),
    DType("uint32", 12, "tensor(uint32)", "UINT32", "TYPE_UINT32", None),
    DType("uint64", 13, "tensor(uint64)", "UINT64", "TYPE_UINT64", None),
    DType("int8", 3, "tensor(int8)", "INT8", "TYPE_INT8", "INT8"),
    DType("int16", 5, "tensor(int16)", "INT16", "TYPE_INT16", None),
    DType("int32", 6, "tensor(int32)", "INT32", "TYPE_INT32", "INT32"),
    DType("int64", 7, "tensor(int64)", "INT64", "TYPE_INT64", "INT64"),
    DType("float16", 10, "tensor(float16)", "FP16", "TYPE_FP16", "HALF"),
    DType("bfloat16", 16, "tensor(bfloat16)", "BF16", "TYPE_BF16", "BF16"),
    DType("float32", 1, "tensor(float)", "FP32", "TYPE_FP32", "FLOAT"),
    DType("float64", 11, "tensor(double)", "FP64", "TYPE_FP64", None),
    DType("object", 8, "tensor(string)", "BYTES", "TYPE_STRING", None),
    # ONNX types edgehal names but holds no arrays of (the module docstring says why);
    # TensorRT's FP8 is FLOAT8E4M3FN and its FP4 FLOAT4E2M1
    DType(None, 14, "tensor(complex64)", None, None, None),
    DType(None, 15, "tensor(complex128)", None, None, None),
    DType(None, 17, "tensor(float8e4m3fn)", None, None, "FP8"),
    DType(None, 18, "tensor(float8e4m3fnuz)", None, None, None),
    DType(None, 19, "tensor(float8e5m2)", None, None, None),
    DType(None, 20, "tensor(float8e5m2fnuz)", None, None, None),
    DType(None, 21, "tensor(uint4)", None, None, None),
    DType(None, 22, "tensor(int4)", None, None, "INT4"),
    DType(None, 23, "tensor(float4e2m1)", None, None, "FP4"),
    DType(None, 24, "tensor(float8e8m0)", None, None, "E8M0"),
    DType(None, 25, "tensor(uint2)", None, None, None),
    DType(None, 26, "tensor(int2)", None, None, None),
    DType(None, 27, "tensor(float6e2m3)", None, None, None),
    DType(None, 28, "tensor(float6e3m2)", None, None, None),
)

_SYSTEMS = {
    "numpy": "numpy dtype",
    "onnx": "ONNX element type",
    "ort": "onnxruntime type",
    "datatype": "protocol datatype",
    "triton": "Triton data_type",
    "tensorrt": "TensorRT DataType",
}
_BY: dict[str, dict[Any, DType]] = {
    system: {getattr(d, system): d for d in DTYPES if getattr(d, system) is not None} for system in _SYSTEMS}


def _lookup(system: str, key: Any, shown: Any, what: str | None) -> DType:
    entry = _BY[system].get(key)
    if entry is None:
        label = f"{what}: " if what else ""
        raise EdgehalError(f"{label}{_SYSTEMS[system]} {shown!r}", "is not a tensor type edgehal knows",
                           f"one of {', '.join(str(k) for k in _BY[system])}")
    return entry


def dtype_from_numpy(dtype: Any, *, what: str | None = None) -> DType:
    """By numpy dtype (``"float32"``, ``np.float32``, ``np.dtype("float32")``); str and bytes
    arrays are BYTES, as the protocol carries them. ``what`` names the tensor in the error."""
    if isinstance(dtype, str) and dtype in _BY["numpy"]:
        return _BY["numpy"][dtype]
    if dtype is None:  # np.dtype(None) would be float64
        return _lookup("numpy", None, None, what)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        return _lookup("numpy", str(dtype), dtype, what)
    name = "object" if dt.kind in "OUS" else dt.name
    return _lookup("numpy", name, str(dtype) if isinstance(dtype, str) else dt.name, what)


def dtype_from_onnx(elem_type: int, *, what: str | None = None) -> DType:
    """By ``onnx.TensorProto`` element type (``1`` is FLOAT)."""
    return _lookup("onnx", int(elem_type), elem_type, what)


def dtype_from_ort(type_name: str, *, what: str | None = None) -> DType:
    """By onnxruntime's type string (``"tensor(float)"``)."""
    return _lookup("ort", type_name, type_name, what)


def dtype_from_datatype(datatype: str, *, what: str | None = None) -> DType:
    """By Open Inference Protocol datatype (``"FP32"``)."""
    return _lookup("datatype", datatype, datatype, what)


def dtype_from_triton(data_type: str, *, what: str | None = None) -> DType:
    """By Triton config ``data_type`` name (``"TYPE_FP32"``)."""
    return _lookup("triton", data_type, data_type, what)


def dtype_from_tensorrt(data_type: Any, *, what: str | None = None) -> DType:
    """By ``tensorrt.DataType`` member or its name (``"FLOAT"``)."""
    name = getattr(data_type, "name", data_type)
    return _lookup("tensorrt", str(name), name, what)


#: Each system's lookup, by the DType field it reads.
LOOKUPS: dict[str, Callable[..., DType]] = {
    "numpy": dtype_from_numpy, "onnx": dtype_from_onnx, "ort": dtype_from_ort,
    "datatype": dtype_from_datatype, "triton": dtype_from_triton, "tensorrt": dtype_from_tensorrt,
}


_BY_NAME: dict[str, DType] = {d.name: d for d in DTYPES}


def _dtype_of(dtype: Any, *, what: str) -> DType:
    """A :data:`DTYPES` entry as given to :class:`TensorSpec`: the entry itself, its
    :attr:`DType.name`, or anything :func:`dtype_from_numpy` takes."""
    if isinstance(dtype, DType):
        return dtype
    if isinstance(dtype, str) and dtype in _BY_NAME:
        return _BY_NAME[dtype]
    return dtype_from_numpy(dtype, what=what)


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, dtype, shape (``-1`` where a dimension is dynamic) and dimension names.

    ``dtype`` may be given as a numpy dtype (``np.float32``, ``"float32"``) or
    a :data:`DTYPES` entry; it is kept as the entry's :attr:`DType.name`: the
    numpy name, or ONNX's name for a type numpy cannot hold (the module
    docstring). ``None`` and negative dimensions become ``-1``.
    ``dim_names`` are the names an ONNX file gives its dimensions (``None``
    for a fixed or unnamed one), empty where the source has none; they take
    part in equality, like every field. A dtype outside :data:`DTYPES` is an
    EdgehalError naming the tensor.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    dim_names: tuple[str | None, ...] = ()
    _type: DType = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        entry = _dtype_of(self.dtype, what=f"tensor {self.name!r}")
        object.__setattr__(self, "_type", entry)
        object.__setattr__(self, "dtype", entry.name)
        object.__setattr__(self, "shape", tuple(-1 if d is None or d < 0 else int(d) for d in self.shape))
        names = tuple(None if n is None else str(n) for n in self.dim_names)
        if names and len(names) != len(self.shape):
            raise ValueError(f"tensor {self.name!r}: {len(names)} dimension names for shape {self.shape}")
        object.__setattr__(self, "dim_names", names)

    @property
    def type(self) -> DType:
        """The element type's entry in :data:`DTYPES`."""
        return self._type

    @property
    def numpy_dtype(self) -> np.dtype:
        """The numpy dtype; an EdgehalError naming the tensor for a type numpy cannot hold."""
        entry = self._type
        if entry.numpy is not None:  # asked per request by the server: no message to build
            return entry.require_numpy()
        return entry.require_numpy(what=f"tensor {self.name!r}")

    @property
    def datatype(self) -> str | None:
        """The Open Inference Protocol datatype (``FP32``); None for a type the protocol lacks."""
        return self._type.datatype

    @property
    def dynamic_axes(self) -> tuple[int, ...]:
        return tuple(i for i, d in enumerate(self.shape) if d < 0)

    def dim_label(self, axis: int) -> str:
        """``axis`` as messages show it: ``"2 ('rows')"`` where the dimension has a name, else ``"2"``."""
        name = self.dim_names[axis] if axis < len(self.dim_names) else None
        return f"{axis} ({name!r})" if name else str(axis)

    def without_batch(self) -> "TensorSpec":
        """The per-sample tensor: the shape without its first (batch) dimension."""
        return replace(self, shape=self.shape[1:], dim_names=self.dim_names[1:])

    def to_dict(self) -> dict[str, Any]:
        """``{"name", "dtype", "shape"}``: the engine sidecar's form; dimension names stay behind."""
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TensorSpec":
        return cls(str(d["name"]), str(d["dtype"]), tuple(int(x) for x in d["shape"]))
