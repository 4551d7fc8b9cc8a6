"""Model inputs and outputs, and their element types, described once for runtime, serve and Triton.

A :class:`TensorSpec` is a tensor's name, numpy dtype and shape (``-1`` where
a dimension is dynamic). :data:`DTYPES` is the one table of element types:
each :class:`DType` carries the type's name in every system edgehal talks to,
so no other module keeps a table of its own and a name read from one system
is translated to another by one lookup::

    numpy     ONNX TensorProto  onnxruntime     protocol  Triton config  TensorRT
    float32   1 (FLOAT)         tensor(float)   FP32      TYPE_FP32      FLOAT
    object    8 (STRING)        tensor(string)  BYTES     TYPE_STRING    -
    ...

The ``dtype_from_*`` functions look an entry up by one system's name; an
unknown name is an :class:`~edgehal.errors.EdgehalError` listing the known
ones. "protocol" is the Open Inference Protocol (KServe v2) datatype, which
Triton speaks too.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from edgehal.errors import EdgehalError


@dataclass(frozen=True)
class DType:
    """One element type under each system's name; ``tensorrt`` is None where TensorRT has no such type."""

    numpy: str  # numpy dtype name; "object" holds strings and bytes
    onnx: int  # onnx.TensorProto element type
    ort: str  # onnxruntime's NodeArg.type
    datatype: str  # Open Inference Protocol (KServe v2) datatype
    triton: str  # Triton config.pbtxt data_type
    tensorrt: str | None  # tensorrt.DataType member name

    @property
    def numpy_dtype(self) -> np.dtype:
        """The numpy dtype; bfloat16 needs ``ml_dtypes`` (installed with onnx), which adds it to numpy."""
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


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, numpy dtype name and shape, ``-1`` where a dimension is dynamic.

    ``dtype`` is normalised to the numpy name (``np.float32`` -> ``"float32"``)
    and ``None`` dimensions to ``-1``; a dtype outside :data:`DTYPES` is an
    EdgehalError naming the tensor.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    _type: DType = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        entry = dtype_from_numpy(self.dtype, what=f"tensor {self.name!r}")
        object.__setattr__(self, "_type", entry)
        object.__setattr__(self, "dtype", entry.numpy)
        object.__setattr__(self, "shape", tuple(-1 if d is None or d < 0 else int(d) for d in self.shape))

    @property
    def type(self) -> DType:
        """The element type's entry in :data:`DTYPES`."""
        return self._type

    @property
    def numpy_dtype(self) -> np.dtype:
        return self._type.numpy_dtype

    @property
    def datatype(self) -> str:
        """The Open Inference Protocol datatype (``FP32``)."""
        return self._type.datatype

    @property
    def dynamic_axes(self) -> tuple[int, ...]:
        return tuple(i for i, d in enumerate(self.shape) if d < 0)

    def without_batch(self) -> "TensorSpec":
        """The per-sample tensor: the shape without its first (batch) dimension."""
        return replace(self, shape=self.shape[1:])
