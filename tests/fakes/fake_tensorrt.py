"""A strict stand-in for the ``tensorrt`` module: the TensorRT 10 or 11 Python API and nothing else.

TensorRT cannot be installed where the tests run, so this fake lets them drive
edgehal's engine build (:mod:`edgehal.export.tensorrt.build`) and runner
(:mod:`edgehal.runtime.tensorrt`) end to end on a CPU, as either supported
major (:func:`install` with ``major=10`` or ``11``; the tests run both). Where
edgehal could go wrong it is at least as strict as TensorRT:

- Which names exist is the real bindings', per major: module names, enum
  members (with their real values: bit positions matter for
  ``NetworkDefinitionCreationFlag``) and class attributes come from
  ``tensorrt_api_10.json`` / ``tensorrt_api_11.json``, which
  ``dump_tensorrt_api.py`` wrote from NVIDIA's wheels (see there how). A name
  the pretended major lacks raises ``AttributeError`` on the module, the
  enums and every object (``BuilderFlag.FP16`` and ``BuilderFlag.INT8`` under
  11, ``builder.platform_has_fast_fp16`` under 11, ``builder.max_batch_size``
  under both), and so does setting it.
- Every class is closed (``__slots__``), as TensorRT's pybind11 classes are:
  reading or setting an attribute the TensorRT class does not have raises
  ``AttributeError``, a read-only property cannot be set, and a property or
  method given a value of the wrong type (a string where an enum belongs)
  raises ``TypeError``.
- :data:`RULES` holds what the name lists cannot say: the version, strong
  typing (always on in 11; opt-in in 10, where a strongly typed network
  refuses the precision builder flags), and the build's progress phases.
- ``IOptimizationProfile.set_shape`` refuses shapes of different ranks and
  ``min <= opt <= max`` violations; the build refuses a dynamic network
  without a profile (None and an error logged, as TensorRT's builder does),
  and a profile whose shapes do not fit an input's rank or static dimensions.
- The build reports progress phases to ``config.progress_monitor`` and logs a
  warning, so tests can check both reach the user.
- The execution context really binds and runs: ``set_input_shape`` accepts
  only shapes inside the engine's profile, ``set_tensor_address`` only I/O
  tensor names, and ``execute_async_v3`` fails unless every input shape and
  every I/O address is set, then reads the inputs from their addresses and
  writes the outputs that :func:`expected_outputs` defines to theirs, through
  ctypes. The addresses must lie in buffers of :class:`fake_cuda.HostMemory`,
  the host memory that stands in for the GPU here, as TensorRT needs device
  memory.

Each rule names the page of TensorRT's Python API reference it comes from,
relative to ``DOCS``. What this cannot prove is anything TensorRT itself
computes: that runs in tests/runtime/test_tensorrt.py on a GPU.

Not a test module: the TensorRT test files import it from tests/fakes by path
(never from a folder that also holds a ``tensorrt`` directory, which Python
would import as the real package).
"""

from __future__ import annotations

import ctypes
import enum
import json
import sys
import types
from pathlib import Path
from typing import Any, Sequence

import fake_cuda
import numpy as np
import torch

DOCS = "https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/"
MAJORS = (10, 11)

# The real bindings' names, per major (dump_tensorrt_api.py)
API: dict[int, dict] = {m: json.loads((Path(__file__).with_name(f"tensorrt_api_{m}.json")).read_text())
                        for m in MAJORS}

# What the name lists cannot say, per major, and where each rule comes from.
RULES: dict[int, dict[str, Any]] = {
    10: {
        "version": API[10]["version"],
        # infer/Graph/Network.html (NetworkDefinitionCreationFlag): STRONGLY_TYPED is opt-in in 10
        "always_strongly_typed": False,
        # TensorRT 10 developer guide, "Strongly Typed Networks": the precision flags (FP16, BF16,
        # INT8, FP8, INT4) are not allowed with a strongly typed network; the build fails
        "strongly_typed_refuses": ("FP16", "BF16", "INT8", "FP8", "INT4", "FP4"),
    },
    11: {
        "version": API[11]["version"],
        # infer/Graph/Network.html (11.x) and "Migrating from TensorRT 10.x to 11.x": weak typing is
        # gone; STRONGLY_TYPED is deprecated and ignored, every network is strongly typed
        "always_strongly_typed": True,
        "strongly_typed_refuses": (),  # the precision flags do not exist at all (BuilderFlag lists)
    },
}
# infer/Core/ProgressMonitor.html (10.x and 11.x): the phases the fake build reports
PHASES = (("Building engine", None, 2), ("Tactic selection", "Building engine", 3))
BUILD_WARNING = "Weights of layer 'node_conv' are outside FP16 range; they were clamped (fake TensorRT)"

_MAJOR = 10
__version__ = RULES[10]["version"]


class Scenario:
    """What the test wants the fake machine to do; not part of TensorRT (tests reset it)."""

    __slots__ = ("dla_cores", "parse_error", "build_error", "build_warning", "deserialized")

    def __init__(self) -> None:
        self.dla_cores = 0  # DLA cores the fake device has
        self.parse_error: str | None = None  # the ONNX parser fails with this message
        self.build_error: str | None = None  # the builder fails and logs this message
        self.build_warning: str | None = BUILD_WARNING  # the builder logs this warning on every build
        self.deserialized = 0  # engines deserialised so far


scenario = Scenario()


def reset() -> None:
    """A fresh scenario and no device buffers: call at the start of every test."""
    scenario.__init__()
    fake_cuda.reset()
    _LOGGERS.clear()


# --------------------------------------------------------------------------
# Closed classes and typed properties


def _readonly(name: str) -> property:
    return property(lambda self: getattr(self, "_" + name), doc=f"read-only {name}")


def _typed(name: str, kind: type | tuple[type, ...] | str) -> property:
    """A read-write property that refuses values of the wrong type, as pybind11 does (``kind`` may name
    one of this module's enums, looked up when set: the enums are the installed major's)."""

    def get(self: Any) -> Any:
        return getattr(self, "_" + name)

    def set_(self: Any, value: Any) -> None:
        want = globals()[kind] if isinstance(kind, str) else kind
        if isinstance(value, bool) and want is int or not isinstance(value, want):
            raise TypeError(f"{name}: incompatible value {value!r} (expected {want})")
        object.__setattr__(self, "_" + name, value)

    return property(get, set_, doc=name)


class _Api:
    """Hides what the installed major's class lacks: its public attributes are the real bindings' (API)."""

    __slots__ = ()
    _api = ""  # the class's name in tensorrt_api_<major>.json

    def __getattribute__(self, name: str) -> Any:
        if name[0] != "_" and not _has(type(self), name):
            raise AttributeError(f"'tensorrt.{type(self)._api}' object has no attribute {name!r} "
                                 f"(TensorRT {_MAJOR})")
        return object.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name[0] != "_" and not _has(type(self), name):
            raise AttributeError(f"'tensorrt.{type(self)._api}' object has no attribute {name!r} "
                                 f"(TensorRT {_MAJOR})")
        if name in API[_MAJOR]["classes"].get(type(self)._api, {}).get("read_only", ()):
            raise AttributeError(f"property {name!r} of 'tensorrt.{type(self)._api}' object has no setter "
                                 f"(TensorRT {_MAJOR})")
        object.__setattr__(self, name, value)


def _has(cls: type, name: str) -> bool:
    """Whether the installed major's ``cls`` has ``name``; an application's subclass (a logger, a
    progress monitor) may add its own."""
    api = next((c._api for c in cls.__mro__ if c.__dict__.get("_api")), "")
    attributes = API[_MAJOR]["classes"].get(api, {}).get("attributes", ())
    if name in attributes:
        return True
    defining = next((c for c in cls.__mro__ if name in c.__dict__), None)
    return defining is not None and not defining.__dict__.get("_api") and defining is not _Api


def _expect(value: Any, kind: type | tuple[type, ...], what: str) -> None:
    if not isinstance(value, kind):
        raise TypeError(f"{what}(): incompatible function arguments ({value!r} is not {kind})")


# --------------------------------------------------------------------------
# Enums: the installed major's members and values (tensorrt_api_<major>.json); the pages of the
# classes that use them: infer/FoundationalTypes/DataType.html, infer/Core/BuilderConfig.html
# (BuilderFlag, MemoryPoolType, DeviceType, HardwareCompatibilityLevel), infer/Graph/Network.html
# (NetworkDefinitionCreationFlag), parsers/Onnx/pyOnnx.html (OnnxParserFlag), infer/Core/Engine.html
# (TensorIOMode), infer/Graph/LayerBase.html (TensorLocation)


class _Enum(enum.Enum):
    """A pybind11 enum: members by name, ``int(member)`` its value; no other member."""

    def __int__(self) -> int:
        return int(self.value)


ENUMS = ("BuilderFlag", "NetworkDefinitionCreationFlag", "MemoryPoolType", "DeviceType",
         "HardwareCompatibilityLevel", "OnnxParserFlag", "TensorIOMode", "TensorLocation", "DataType")


def _enums(major: int) -> dict[str, type[_Enum]]:
    return {name: _Enum(name, API[major]["enums"][name], module="tensorrt", qualname=name) for name in ENUMS}


# TensorRT 10's until install() says otherwise; methods look them up when called, so they are the installed
# major's
_DEFAULT = _enums(_MAJOR)
BuilderFlag = _DEFAULT["BuilderFlag"]
NetworkDefinitionCreationFlag = _DEFAULT["NetworkDefinitionCreationFlag"]
MemoryPoolType = _DEFAULT["MemoryPoolType"]
DeviceType = _DEFAULT["DeviceType"]
HardwareCompatibilityLevel = _DEFAULT["HardwareCompatibilityLevel"]
OnnxParserFlag = _DEFAULT["OnnxParserFlag"]
TensorIOMode = _DEFAULT["TensorIOMode"]
TensorLocation = _DEFAULT["TensorLocation"]
DataType = _DEFAULT["DataType"]

_NP = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
       "BOOL": np.bool_, "UINT8": np.uint8}
# ONNX TensorProto element types the parser imports as network I/O
_FROM_ONNX = {1: "FLOAT", 10: "HALF", 16: "BF16", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 2: "UINT8"}


def nptype(trt_type: Any) -> type:
    """infer/FoundationalTypes/DataType.html: ``tensorrt.nptype``; BF16/FP8/INT4 have no numpy type."""
    _expect(trt_type, DataType, "nptype")
    if trt_type.name not in _NP:
        raise TypeError(f"Could not resolve TensorRT datatype to an equivalent numpy datatype: {trt_type}")
    return _NP[trt_type.name]


# --------------------------------------------------------------------------
# Logging: infer/Core/Logger.html


class ILogger:
    """Subclassed by the application (``trt.ILogger.__init__(self)``, then ``log``)."""

    __slots__ = ()

    class Severity(enum.Enum):
        INTERNAL_ERROR = "INTERNAL_ERROR"
        ERROR = "ERROR"
        WARNING = "WARNING"
        INFO = "INFO"
        VERBOSE = "VERBOSE"

    # pybind11 exports the enum's values on the class: trt.Logger.WARNING
    INTERNAL_ERROR = Severity.INTERNAL_ERROR
    ERROR = Severity.ERROR
    WARNING = Severity.WARNING
    INFO = Severity.INFO
    VERBOSE = Severity.VERBOSE

    def __init__(self) -> None:
        pass

    def log(self, severity: "ILogger.Severity", msg: str) -> None:
        raise NotImplementedError("ILogger.log is implemented by the application")


class Logger(ILogger):
    __slots__ = ("_min_severity",)

    def __init__(self, min_severity: "ILogger.Severity" = ILogger.WARNING) -> None:
        self._min_severity = min_severity

    def log(self, severity: "ILogger.Severity", msg: str) -> None:
        pass


def _log(logger: ILogger, severity: ILogger.Severity, msg: str) -> None:
    logger.log(severity, msg)


# --------------------------------------------------------------------------
# The network and the parser


class ITensor(_Api):
    """infer/Graph/LayerBase.html: ``name``, ``shape``, ``location`` are read-write; ``dtype`` too in
    TensorRT 10 (read-only in 11, where the network's types are its own)."""

    __slots__ = ("_name", "_shape", "_dtype", "_location", "_is_network_input", "_is_network_output")
    _api = "ITensor"
    name = _typed("name", str)
    shape = _typed("shape", tuple)
    dtype = _typed("dtype", "DataType")
    location = _typed("location", "TensorLocation")
    is_network_input = _readonly("is_network_input")
    is_network_output = _readonly("is_network_output")

    def __init__(self, name: str, dtype: DataType, shape: tuple[int, ...], *, is_input: bool) -> None:
        self._name, self._dtype, self._shape = name, dtype, tuple(shape)
        self._location = TensorLocation.DEVICE
        self._is_network_input, self._is_network_output = is_input, not is_input


class INetworkDefinition(_Api):
    """infer/Graph/Network.html: inputs and outputs by index; ``name`` is the only settable property used."""

    __slots__ = ("_inputs", "_outputs", "_name", "_flags", "_strongly_typed", "_computes")
    _api = "INetworkDefinition"
    name = _typed("name", str)

    def __init__(self, flags: int, *, strongly_typed: bool) -> None:
        self._inputs: list[ITensor] = []
        self._outputs: list[ITensor] = []
        self._name = "network"
        self._flags = flags
        self._strongly_typed = strongly_typed
        self._computes: set[str] = set()  # "fp16", "int8": the reduced precisions the parsed graph holds

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_input(self, index: int) -> ITensor:
        _expect(index, int, "get_input")
        return self._inputs[index]

    def get_output(self, index: int) -> ITensor:
        _expect(index, int, "get_output")
        return self._outputs[index]


class IParserError(_Api):
    """parsers/Onnx/pyOnnx.html (``tensorrt.ParserError``): an error is read through methods (``desc()``),
    not attributes."""

    __slots__ = ("_desc", "_node")
    _api = "ParserError"

    def __init__(self, desc: str, node: int = -1) -> None:
        self._desc, self._node = desc, node

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node


class OnnxParser(_Api):
    """parsers/Onnx/pyOnnx.html: ``OnnxParser(network, logger)``; flags are OnnxParserFlag values."""

    __slots__ = ("_network", "_logger", "_errors", "_flags")
    _api = "OnnxParser"

    def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
        _expect(network, INetworkDefinition, "OnnxParser")
        _expect(logger, ILogger, "OnnxParser")
        self._network, self._logger = network, logger
        self._errors: list[IParserError] = []
        self._flags: set[OnnxParserFlag] = set()

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def set_flag(self, flag: OnnxParserFlag) -> None:
        _expect(flag, OnnxParserFlag, "set_flag")
        self._flags.add(flag)

    def clear_flag(self, flag: OnnxParserFlag) -> None:
        _expect(flag, OnnxParserFlag, "clear_flag")
        self._flags.discard(flag)

    def get_flag(self, flag: OnnxParserFlag) -> bool:
        _expect(flag, OnnxParserFlag, "get_flag")
        return flag in self._flags

    def get_error(self, index: int) -> IParserError:
        _expect(index, int, "get_error")
        return self._errors[index]

    def clear_errors(self) -> None:
        self._errors.clear()

    def parse_from_file(self, model: str) -> bool:
        """The network's inputs (initializers excluded) and outputs from the ONNX file; False on failure."""
        import onnx

        _expect(model, str, "parse_from_file")
        if scenario.parse_error:
            self._errors.append(IParserError(scenario.parse_error))
            return False
        graph = onnx.load(model).graph
        initializers = {i.name for i in graph.initializer}

        def tensor(vi: Any, is_input: bool) -> ITensor | None:
            t = vi.type.tensor_type
            if t.elem_type not in _FROM_ONNX:
                self._errors.append(IParserError(f"tensor {vi.name!r}: unsupported data type {t.elem_type}"))
                return None
            shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in t.shape.dim)
            return ITensor(vi.name, DataType[_FROM_ONNX[t.elem_type]], shape, is_input=is_input)

        inputs = [tensor(v, True) for v in graph.input if v.name not in initializers]
        outputs = [tensor(v, False) for v in graph.output]
        if self._errors:
            return False
        self._network._inputs, self._network._outputs = inputs, outputs
        fp16 = 10  # TensorProto.FLOAT16: weights, Casts and Constants a strongly typed network computes in
        if (any(i.data_type == fp16 for i in graph.initializer)
                or any(n.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in n.attribute)
                       for n in graph.node)):
            self._network._computes.add("fp16")
        if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node):
            self._network._computes.add("int8")
        return True


# --------------------------------------------------------------------------
# Building


class IOptimizationProfile(_Api):
    """infer/Core/OptimizationProfile.html."""

    __slots__ = ("_shapes", "_extra_memory_target")
    _api = "IOptimizationProfile"
    extra_memory_target = _typed("extra_memory_target", (float, int))

    def __init__(self) -> None:
        self._shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}
        self._extra_memory_target = 1.0

    def set_shape(self, input: str, min: Sequence[int], opt: Sequence[int], max: Sequence[int]) -> None:  # noqa: A002
        """TensorRT's binding raises RuntimeError when a shape is inconsistent with the others: a different
        rank, a negative dimension, or opt outside min..max (``setDimensions`` returns false)."""
        _expect(input, str, "set_shape")
        lo, mid, hi = (tuple(int(d) for d in s) for s in (min, opt, max))
        if any(d < 0 for d in lo):
            raise RuntimeError("Shape provided for min is inconsistent with other shapes.")
        if len(mid) != len(lo) or any(a > b for a, b in zip(lo, mid)):
            raise RuntimeError("Shape provided for opt is inconsistent with other shapes.")
        if len(hi) != len(mid) or any(a > b for a, b in zip(mid, hi)):
            raise RuntimeError("Shape provided for max is inconsistent with other shapes.")
        self._shapes[input] = (lo, mid, hi)

    def get_shape(self, input: str) -> list[tuple[int, ...]]:  # noqa: A002
        return list(self._shapes.get(input, ()))

    def __bool__(self) -> bool:
        return True


class ITimingCache(_Api):
    """infer/Core/BuilderConfig.html (``create_timing_cache``): ``serialize()`` returns the cache bytes."""

    __slots__ = ("_data",)
    _api = "ITimingCache"

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)

    def serialize(self) -> memoryview:
        return memoryview(self._data + b"+tuned")


class IBuilderConfig(_Api):
    """infer/Core/BuilderConfig.html: flags and memory pools through methods; the rest are typed properties.
    ``progress_monitor`` takes an :class:`IProgressMonitor` (or None); ``int8_calibrator`` is TensorRT 10's
    only (implicit quantization is gone in 11)."""

    __slots__ = ("_flags", "_pools", "_profiles", "_cache", "_default_device_type", "_DLA_core",
                 "_hardware_compatibility_level", "_builder_optimization_level", "_avg_timing_iterations",
                 "_max_aux_streams", "_progress_monitor", "_int8_calibrator")
    _api = "IBuilderConfig"
    default_device_type = _typed("default_device_type", "DeviceType")
    DLA_core = _typed("DLA_core", int)
    hardware_compatibility_level = _typed("hardware_compatibility_level", "HardwareCompatibilityLevel")
    progress_monitor = _typed("progress_monitor", "_MONITOR_OR_NONE")
    int8_calibrator = _typed("int8_calibrator", object)
    builder_optimization_level = _typed("builder_optimization_level", int)
    avg_timing_iterations = _typed("avg_timing_iterations", int)
    max_aux_streams = _typed("max_aux_streams", int)

    def __init__(self) -> None:
        self._flags: set[Any] = set()
        self._pools: dict[MemoryPoolType, int] = {}
        self._profiles: list[IOptimizationProfile] = []
        self._cache: ITimingCache | None = None
        self._default_device_type = DeviceType.GPU
        self._DLA_core = -1
        self._hardware_compatibility_level = HardwareCompatibilityLevel.NONE
        self._builder_optimization_level = 3
        self._avg_timing_iterations = 1
        self._max_aux_streams = -1
        self._progress_monitor: IProgressMonitor | None = None
        self._int8_calibrator = None

    @property
    def num_optimization_profiles(self) -> int:
        return len(self._profiles)

    def set_flag(self, flag: Any) -> None:
        _expect(flag, BuilderFlag, "set_flag")
        self._flags.add(flag)

    def clear_flag(self, flag: Any) -> None:
        _expect(flag, BuilderFlag, "clear_flag")
        self._flags.discard(flag)

    def get_flag(self, flag: Any) -> bool:
        _expect(flag, BuilderFlag, "get_flag")
        return flag in self._flags

    def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
        _expect(pool, MemoryPoolType, "set_memory_pool_limit")
        _expect(pool_size, int, "set_memory_pool_limit")
        self._pools[pool] = pool_size

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        _expect(profile, IOptimizationProfile, "add_optimization_profile")
        self._profiles.append(profile)
        return len(self._profiles) - 1

    def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
        return ITimingCache(serialized_timing_cache)

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        _expect(cache, ITimingCache, "set_timing_cache")
        self._cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self._cache


class IProgressMonitor:
    """infer/Core/ProgressMonitor.html (10.x and 11.x): subclassed by the application
    (``trt.IProgressMonitor.__init__(self)``, then ``phase_start``, ``step_complete``, ``phase_finish``)."""

    __slots__ = ()

    def __init__(self) -> None:
        pass

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        raise RuntimeError("Tried to call pure virtual function \"IProgressMonitor::phaseStart\"")

    def step_complete(self, phase_name: str, step: int) -> bool:
        raise RuntimeError("Tried to call pure virtual function \"IProgressMonitor::stepComplete\"")

    def phase_finish(self, phase_name: str) -> None:
        raise RuntimeError("Tried to call pure virtual function \"IProgressMonitor::phaseFinish\"")


_MONITOR_OR_NONE = (IProgressMonitor, type(None))


class Builder(_Api):
    """infer/Core/Builder.html: no ``max_batch_size`` (explicit batch only, since 10) and no
    ``build_engine``; ``num_DLA_cores`` and ``logger`` are read-only, ``max_threads`` is settable;
    ``platform_has_fast_fp16`` is TensorRT 10's only."""

    __slots__ = ("_logger", "_max_threads")
    _api = "Builder"
    max_threads = _typed("max_threads", int)

    def __init__(self, logger: ILogger) -> None:
        _expect(logger, ILogger, "Builder")
        self._logger = logger
        self._max_threads = 1

    @property
    def logger(self) -> ILogger:
        return self._logger

    @property
    def num_DLA_cores(self) -> int:
        return scenario.dla_cores

    @property
    def platform_has_fast_fp16(self) -> bool:
        return True

    def create_network(self, flags: int = 0) -> INetworkDefinition | None:
        """infer/Graph/Network.html: ``flags`` ORs ``1 << int(NetworkDefinitionCreationFlag.X)``; a bit no
        flag of this major has is an error (None, logged). STRONGLY_TYPED is opt-in in 10, always on in 11."""
        _expect(flags, int, "create_network")
        known = {int(f): f for f in NetworkDefinitionCreationFlag}
        unknown = [bit for bit in range(flags.bit_length()) if flags >> bit & 1 and bit not in known]
        if flags < 0 or unknown:
            _log(self._logger, ILogger.ERROR, f"IBuilder::createNetworkV2: Error Code 3: API Usage Error "
                                              f"(invalid NetworkDefinitionCreationFlags {flags:#x})")
            return None
        strongly = RULES[_MAJOR]["always_strongly_typed"] or bool(
            flags >> int(NetworkDefinitionCreationFlag.STRONGLY_TYPED) & 1)
        return INetworkDefinition(flags, strongly_typed=strongly)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig()

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> memoryview | None:
        """None, with the reason logged, where TensorRT's builder fails: no outputs, a DLA core the device
        lacks, a dynamic input without a profile, a profile that does not fit its input
        (infer/Core/OptimizationProfile.html), a precision flag on a strongly typed network (10), a
        build the progress monitor cancels. Reports :data:`PHASES` to ``config.progress_monitor``
        and logs ``scenario.build_warning``."""
        _expect(network, INetworkDefinition, "build_serialized_network")
        _expect(config, IBuilderConfig, "build_serialized_network")
        problem = scenario.build_error or self._network_problem(network, config)
        if not problem and config._progress_monitor is not None and not _report_progress(config._progress_monitor):
            problem = "IBuilder::buildSerializedNetwork: Error Code 4: the build was cancelled by the progress monitor"
        if problem:
            _log(self._logger, ILogger.ERROR, problem)
            return None
        if scenario.build_warning:
            _log(self._logger, ILogger.WARNING, scenario.build_warning)
        flags = {f.name for f in config._flags}
        computes = sorted(network._computes if network._strongly_typed
                          else {"fp16" for f in flags if f == "FP16"} | {"int8" for f in flags if f == "INT8"})
        doc = {
            "tensorrt": __version__,
            "strongly_typed": network._strongly_typed,
            "computes": computes,  # reduced precisions: from the graph's types, or (weakly typed) the flags
            "flags": sorted(flags),
            "pools": {p.name: size for p, size in config._pools.items()},
            "device": config.default_device_type.name, "dla_core": config.DLA_core,
            "hardware": config.hardware_compatibility_level.name,
            "profiles": [{k: [list(s) for s in v] for k, v in p._shapes.items()} for p in config._profiles],
            "inputs": [[t.name, t.dtype.name, list(t.shape)] for t in network._inputs],
            "outputs": [[t.name, t.dtype.name, list(t.shape)] for t in network._outputs],
        }
        return memoryview(json.dumps(doc, sort_keys=True).encode())

    @staticmethod
    def _network_problem(network: INetworkDefinition, config: IBuilderConfig) -> str | None:
        if not network._outputs:
            return "Network must have at least one output."
        refused = sorted(f.name for f in config._flags if f.name in RULES[_MAJOR]["strongly_typed_refuses"])
        if network._strongly_typed and refused:
            return (f"IBuilder::buildSerializedNetwork: Error Code 3: API Usage Error (BuilderFlag::k{refused[0]} "
                    "is not allowed with a strongly typed network)")
        if config.default_device_type == DeviceType.DLA and not 0 <= config.DLA_core < scenario.dla_cores:
            return f"DLA core {config.DLA_core} is not available ({scenario.dla_cores} DLA cores)."
        inputs = {t.name: t for t in network._inputs}
        dynamic = [t for t in network._inputs if any(d < 0 for d in t.shape)]
        if dynamic and not config._profiles:
            return "Network has dynamic or shape inputs, but no optimization profile has been defined."
        for profile in config._profiles:
            for name in profile._shapes:
                if name not in inputs:
                    return f"Optimization profile names {name!r}, which is not a network input."
            for t in dynamic:
                if t.name not in profile._shapes:
                    return f"{t.name}: dynamic input is missing dimensions in profile 0."
            for name, shapes in profile._shapes.items():
                want = inputs[name].shape
                for s in shapes:
                    if len(s) != len(want) or any(w >= 0 and d != w for d, w in zip(s, want)):
                        return (f"{name}: profile shape {list(s)} does not match the network input "
                                f"dimensions {list(want)}.")
        return None


def _report_progress(monitor: IProgressMonitor) -> bool:
    """:data:`PHASES`, nested as TensorRT nests them; False when ``step_complete`` asks to stop."""
    (outer, _, outer_steps), (inner, parent, inner_steps) = PHASES
    monitor.phase_start(outer, None, outer_steps)
    try:
        monitor.phase_start(inner, parent, inner_steps)
        try:
            for step in range(inner_steps):
                if not monitor.step_complete(inner, step):
                    return False
        finally:
            monitor.phase_finish(inner)
        return all(monitor.step_complete(outer, step) for step in range(outer_steps))
    finally:
        monitor.phase_finish(outer)


# --------------------------------------------------------------------------
# What the fake engine computes


def expected_outputs(inputs: dict[str, np.ndarray], outputs: dict[str, tuple[tuple[int, ...], str]]
                     ) -> dict[str, np.ndarray]:
    """What every fake engine computes, so tests can check what came back.

    For sample ``b`` and flat element ``j`` of output ``name``: the sum of
    sample ``b`` over every input, plus ``j``, plus ``offset(name)`` (the sum
    of the name's bytes), in the output's dtype. Different heads get different
    values, so an output bound to the wrong buffer or reported under the
    wrong name shows.
    """
    per_sample = sum(np.asarray(x, dtype=np.float64).reshape(len(x), -1).sum(axis=1) for x in inputs.values())
    out = {}
    for name, (shape, dtype) in outputs.items():
        rest = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        values = per_sample[:, None] + np.arange(rest)[None, :] + sum(name.encode())
        out[name] = values.reshape(shape).astype(dtype)
    return out


# --------------------------------------------------------------------------
# The engine and its execution context


class ICudaEngine(_Api):
    """infer/Core/Engine.html: I/O tensors by name; every property is read-only."""

    __slots__ = ("_doc", "_io", "_name")
    _api = "ICudaEngine"

    def __init__(self, doc: dict) -> None:
        self._doc = doc
        self._name = "network"
        self._io = {n: (TensorIOMode.INPUT, DataType[d], tuple(s)) for n, d, s in doc["inputs"]}
        self._io.update({n: (TensorIOMode.OUTPUT, DataType[d], tuple(s)) for n, d, s in doc["outputs"]})

    @property
    def num_io_tensors(self) -> int:
        return len(self._io)

    @property
    def num_optimization_profiles(self) -> int:
        return max(1, len(self._doc["profiles"]))

    @property
    def name(self) -> str:
        return self._name

    def _tensor(self, name: str) -> tuple[TensorIOMode, DataType, tuple[int, ...]]:
        _expect(name, str, "get_tensor_*")
        if name not in self._io:
            raise KeyError(f"{name!r} is not an I/O tensor of this engine (edgehal asked for a name TensorRT "
                           "does not know)")
        return self._io[name]

    def get_tensor_name(self, index: int) -> str:
        _expect(index, int, "get_tensor_name")
        return list(self._io)[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return self._io[name][0] if name in self._io else TensorIOMode.NONE

    def get_tensor_dtype(self, name: str) -> DataType:
        return self._tensor(name)[1]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self._tensor(name)[2]

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        """min, opt and max of an input in a profile; a static input's shape three times."""
        mode, _, shape = self._tensor(name)
        if mode != TensorIOMode.INPUT:
            raise RuntimeError(f"{name!r} is not an input")
        profiles = self._doc["profiles"]
        if profiles and name in profiles[profile_index]:
            return [tuple(s) for s in profiles[profile_index][name]]
        return [shape, shape, shape]

    def create_execution_context(self) -> "IExecutionContext":
        return IExecutionContext(self)


class IExecutionContext(_Api):
    """infer/Core/ExecutionContext.html: ``set_input_shape``, ``set_tensor_address`` and
    ``execute_async_v3`` return False (and log why) where TensorRT's do; ``engine`` is read-only and
    ``debug_sync`` and ``name`` are settable."""

    __slots__ = ("_engine", "_shapes", "_addresses", "_debug_sync", "_name", "_runs")
    _api = "IExecutionContext"
    debug_sync = _typed("debug_sync", bool)
    name = _typed("name", str)

    def __init__(self, engine: ICudaEngine) -> None:
        self._engine = engine
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._addresses: dict[str, int] = {}
        self._debug_sync = False
        self._name = ""
        self._runs = 0  # runs so far, for tests (TensorRT has no such counter)

    @property
    def engine(self) -> ICudaEngine:
        return self._engine

    def _error(self, msg: str) -> bool:
        _log(_LOGGERS.get(id(self._engine), Logger()), ILogger.ERROR, msg)
        return False

    def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
        """False for a tensor that is no input, a different rank, a changed static dimension or a shape
        outside profile 0."""
        _expect(name, str, "set_input_shape")
        shape = tuple(int(d) for d in shape)
        if self._engine.get_tensor_mode(name) != TensorIOMode.INPUT:
            return self._error(f"IExecutionContext::setInputShape: {name!r} is not an input tensor")
        lo, _, hi = self._engine.get_tensor_profile_shape(name, 0)
        declared = self._engine.get_tensor_shape(name)
        if len(shape) != len(declared):
            return self._error(f"setInputShape: {name!r} has rank {len(declared)}, got {list(shape)}")
        for axis, (d, want, a, b) in enumerate(zip(shape, declared, lo, hi)):
            if (want >= 0 and d != want) or not a <= d <= b:
                return self._error(f"setInputShape: {name!r} dimension {axis} is {d}, outside the profile "
                                   f"{list(lo)}..{list(hi)}")
        self._shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        """An input's set shape; an output's shape with the batch of the inputs filled in (-1 until every
        input shape is set)."""
        mode, _, declared = self._engine._tensor(name)
        if mode == TensorIOMode.INPUT:
            return self._shapes.get(name, declared)
        inputs = [n for n, t in self._engine._io.items() if t[0] == TensorIOMode.INPUT]
        if any(n not in self._shapes for n in inputs) or not inputs:
            return declared
        batch = self._shapes[inputs[0]][0]
        return tuple(batch if axis == 0 and d < 0 else d for axis, d in enumerate(declared))

    def set_tensor_address(self, name: str, memory: int) -> bool:
        _expect(name, str, "set_tensor_address")
        _expect(memory, int, "set_tensor_address")
        if self._engine.get_tensor_mode(name) == TensorIOMode.NONE:
            return self._error(f"IExecutionContext::setTensorAddress: {name!r} is not an I/O tensor")
        self._addresses[name] = memory
        return True

    def get_tensor_address(self, name: str) -> int:
        return self._addresses.get(name, 0)

    def infer_shapes(self) -> list[str]:
        """Names of the inputs whose shapes are still missing."""
        return [n for n, t in self._engine._io.items() if t[0] == TensorIOMode.INPUT and n not in self._shapes]

    def execute_async_v3(self, stream_handle: int) -> bool:
        """Read every input at its address, write :func:`expected_outputs` to every output's address."""
        _expect(stream_handle, int, "execute_async_v3")
        io = self._engine._io
        missing = self.infer_shapes()
        if missing:
            return self._error(f"IExecutionContext::enqueueV3: input shape of {missing[0]!r} is not set")
        unbound = [n for n in io if not self._addresses.get(n)]
        if unbound:
            return self._error(f"IExecutionContext::enqueueV3: tensor {unbound[0]!r} has no address")
        spans = {}
        for name, (_, dtype, _) in io.items():
            shape = self.get_tensor_shape(name)
            nbytes = int(np.prod(shape)) * np.dtype(nptype(dtype)).itemsize
            if not fake_cuda.holds(self._addresses[name], nbytes):
                return self._error(f"IExecutionContext::enqueueV3: the address of {name!r} is not "
                                   f"{nbytes} bytes of device memory")
            spans[name] = (shape, np.dtype(nptype(dtype)), nbytes)
        inputs = {}
        for name, (mode, _, _) in io.items():
            if mode == TensorIOMode.INPUT:
                shape, dtype, nbytes = spans[name]
                raw = (ctypes.c_char * nbytes).from_address(self._addresses[name])
                inputs[name] = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        outputs = {n: (spans[n][0], spans[n][1].name) for n, t in io.items() if t[0] == TensorIOMode.OUTPUT}
        for name, value in expected_outputs(inputs, outputs).items():
            data = np.ascontiguousarray(value)
            ctypes.memmove(self._addresses[name], data.ctypes.data, spans[name][2])
        self._runs += 1
        return True


# Engine -> the runtime's logger, so a context logs where TensorRT would
_LOGGERS: dict[int, ILogger] = {}


class Runtime(_Api):
    """infer/Core/Runtime.html: ``DLA_core`` and ``engine_host_code_allowed`` are settable (typed);
    ``deserialize_cuda_engine`` returns None, with the reason logged, for bytes that are no engine and
    for an engine of another TensorRT major."""

    __slots__ = ("_logger", "_DLA_core", "_engine_host_code_allowed", "_max_threads")
    _api = "Runtime"
    DLA_core = _typed("DLA_core", int)
    engine_host_code_allowed = _typed("engine_host_code_allowed", bool)
    max_threads = _typed("max_threads", int)

    def __init__(self, logger: ILogger) -> None:
        _expect(logger, ILogger, "Runtime")
        self._logger = logger
        self._DLA_core = -1
        self._engine_host_code_allowed = False
        self._max_threads = 1

    @property
    def logger(self) -> ILogger:
        return self._logger

    @property
    def num_DLA_cores(self) -> int:
        return scenario.dla_cores

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
        scenario.deserialized += 1
        try:
            doc = json.loads(bytes(serialized_engine))
            built = str(doc["tensorrt"])
            if built.split(".")[0] != str(_MAJOR):
                _log(self._logger, ILogger.ERROR, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization "
                                                  f"(Version tag does not match. Plan from TensorRT {built}, this "
                                                  f"is TensorRT {__version__})")
                return None
            engine = ICudaEngine(doc)
        except (ValueError, KeyError, TypeError):
            _log(self._logger, ILogger.ERROR, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization "
                                              "(Serialization assertion magicTagRead == kMAGIC_TAG failed.)")
            return None
        _LOGGERS[id(engine)] = self._logger
        return engine


# --------------------------------------------------------------------------
# Installing the fake


class _TensorRTModule(types.ModuleType):
    """What ``import tensorrt`` gives: this fake's names that the installed major's module has, read
    through to this module (so a test's monkeypatching shows), and no other."""

    def __getattr__(self, name: str) -> Any:
        if name == "__version__" or name in API[_MAJOR]["module"]:
            real = "ParserError" if name == "IParserError" else name
            fake = "IParserError" if real == "ParserError" else real
            if fake in _FAKE.__dict__:
                return _FAKE.__dict__[fake]
        raise AttributeError(f"module 'tensorrt' has no attribute {name!r} (TensorRT {_MAJOR})")

    def __dir__(self) -> list[str]:
        return sorted(n for n in API[_MAJOR]["module"] if n in _FAKE.__dict__ or n == "ParserError")


_FAKE = sys.modules[__name__]


def configure(major: int) -> dict[str, Any]:
    """This module's globals for TensorRT ``major``: its version and its enums (for monkeypatch)."""
    if major not in MAJORS:
        raise ValueError(f"the fake TensorRT is major {MAJORS}, not {major}")
    return {"_MAJOR": major, "__version__": RULES[major]["version"], **_enums(major)}


def install(monkeypatch: Any, major: int = 10) -> Any:
    """``import tensorrt`` gives this fake as TensorRT ``major`` (10 or 11), on an 'NVIDIA A10'
    (sm_86) that is not a Jetson, with :class:`fake_cuda.HostMemory` as the runner's device memory;
    returns this module (its test helpers included). Undone by ``monkeypatch``."""
    from edgehal.export.tensorrt import provenance
    from edgehal.runtime import tensorrt as runtime_tensorrt

    for name, value in configure(major).items():
        monkeypatch.setattr(_FAKE, name, value)
    reset()
    monkeypatch.setitem(sys.modules, "tensorrt", _TensorRTModule("tensorrt", __doc__))
    monkeypatch.setattr(provenance, "_gpu_info", lambda index: ("NVIDIA A10", "8.6"))
    monkeypatch.setattr(provenance, "_jetson_info", lambda: (None, None))
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    monkeypatch.setattr(runtime_tensorrt, "CudaMemory", fake_cuda.HostMemory)
    return _FAKE
