"""A strict stand-in for the ``tensorrt`` module (TensorRT 10 Python API names only).

TensorRT cannot be installed where the tests run, so this fake lets them drive
edgehal's thin TensorRT module end to end on a CPU: every attribute the thin
module touches must exist here under its TensorRT 10 name, and setting an
unknown attribute (``max_workspace_size``, removed in TensorRT 10) raises. It
records what it was asked so tests can check the builder configuration. It
proves the wiring, not TensorRT's behaviour: that only runs on a GPU.
"""

from __future__ import annotations

import json
import types
from typing import Any

import numpy as np

__version__ = "10.7.0.23"


class _Strict:
    """Objects whose unknown attributes fail, as pybind11 objects without __dict__ do."""

    _attrs: tuple[str, ...] = ()

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and name not in self._attrs:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        object.__setattr__(self, name, value)


class ILogger:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = "INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"

    def __init__(self) -> None:
        pass


class Logger(ILogger):
    """``trt.Logger``: the severities are reachable from it as in TensorRT."""


class MemoryPoolType:
    WORKSPACE = "WORKSPACE"
    DLA_MANAGED_SRAM = "DLA_MANAGED_SRAM"


class BuilderFlag:
    FP16 = "FP16"
    INT8 = "INT8"
    GPU_FALLBACK = "GPU_FALLBACK"
    VERSION_COMPATIBLE = "VERSION_COMPATIBLE"


class DeviceType:
    GPU = "GPU"
    DLA = "DLA"


class HardwareCompatibilityLevel:
    NONE = "NONE"
    AMPERE_PLUS = "AMPERE_PLUS"


class OnnxParserFlag:
    NATIVE_INSTANCENORM = "NATIVE_INSTANCENORM"


class TensorIOMode:
    NONE, INPUT, OUTPUT = "NONE", "INPUT", "OUTPUT"


class DataType:
    FLOAT, HALF, INT8, INT32, INT64, BOOL = "FLOAT", "HALF", "INT8", "INT32", "INT64", "BOOL"


_NP = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
       "BOOL": np.bool_}
_FROM_ONNX = {1: "FLOAT", 10: "HALF", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL"}


def nptype(dtype: str):
    return _NP[dtype]


class _Tensor:
    def __init__(self, name: str, dtype: str, shape: tuple[int, ...]) -> None:
        self.name, self.dtype, self.shape = name, dtype, shape


class INetworkDefinition:
    def __init__(self) -> None:
        self.inputs: list[_Tensor] = []
        self.outputs: list[_Tensor] = []

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, index: int) -> _Tensor:
        return self.inputs[index]


class _ParserError:
    def __init__(self, text: str) -> None:
        self.text = text

    def desc(self) -> str:
        return self.text


class OnnxParser:
    fail_with: str | None = None  # set by a test to make parsing fail

    def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
        self.network, self.logger, self.flags, self.errors = network, logger, set(), []

    def set_flag(self, flag: str) -> None:
        self.flags.add(flag)

    def parse_from_file(self, path: str) -> bool:
        import onnx

        if OnnxParser.fail_with:
            self.errors.append(_ParserError(OnnxParser.fail_with))
            return False
        model = onnx.load(path)
        inits = {i.name for i in model.graph.initializer}

        def tensor(vi):
            t = vi.type.tensor_type
            return _Tensor(vi.name, _FROM_ONNX[t.elem_type],
                           tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim))

        self.network.inputs = [tensor(v) for v in model.graph.input if v.name not in inits]
        self.network.outputs = [tensor(v) for v in model.graph.output]
        return True

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> _ParserError:
        return self.errors[index]


class IOptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple] = {}

    def set_shape(self, name: str, min: tuple, opt: tuple, max: tuple) -> None:  # noqa: A002
        assert all(a <= b <= c for a, b, c in zip(min, opt, max)), (min, opt, max)
        self.shapes[name] = (tuple(min), tuple(opt), tuple(max))


class ITimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)

    def serialize(self) -> bytes:
        return self.data + b"+tuned"


class IBuilderConfig(_Strict):
    _attrs = ("default_device_type", "DLA_core", "hardware_compatibility_level")

    def __init__(self) -> None:
        self._flags: set[str] = set()
        self._pools: dict[str, int] = {}
        self._profiles: list[IOptimizationProfile] = []
        self._cache: ITimingCache | None = None
        self.default_device_type = DeviceType.GPU
        self.DLA_core = -1
        self.hardware_compatibility_level = HardwareCompatibilityLevel.NONE

    def set_flag(self, flag: str) -> None:
        self._flags.add(flag)

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self._pools[pool] = int(size)

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self._profiles.append(profile)
        return len(self._profiles) - 1

    def create_timing_cache(self, data: bytes) -> ITimingCache:
        return ITimingCache(data)

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        self._cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache:
        return self._cache


class Builder:
    num_DLA_cores = 0
    fail_build = False

    def __init__(self, logger: ILogger) -> None:
        self.logger = logger

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        return INetworkDefinition()

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig()

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig):
        if Builder.fail_build:
            self.logger.log(ILogger.ERROR, "fake build failure: no implementation for layer")
            return None
        doc = {
            "flags": sorted(config._flags), "pools": config._pools,
            "device": config.default_device_type, "dla_core": config.DLA_core,
            "hardware": config.hardware_compatibility_level,
            "profiles": [{k: [list(s) for s in v] for k, v in p.shapes.items()} for p in config._profiles],
            "inputs": [[t.name, t.dtype, list(t.shape)] for t in network.inputs],
            "outputs": [[t.name, t.dtype, list(t.shape)] for t in network.outputs],
        }
        return memoryview(json.dumps(doc, sort_keys=True).encode())


class ICudaEngine:
    def __init__(self, doc: dict) -> None:
        self.doc = doc
        self._io = [(n, TensorIOMode.INPUT, d, s) for n, d, s in doc["inputs"]] + \
                   [(n, TensorIOMode.OUTPUT, d, s) for n, d, s in doc["outputs"]]

    @property
    def num_io_tensors(self) -> int:
        return len(self._io)

    def _find(self, name: str):
        return next(t for t in self._io if t[0] == name)

    def get_tensor_name(self, index: int) -> str:
        return self._io[index][0]

    def get_tensor_mode(self, name: str) -> str:
        return self._find(name)[1]

    def get_tensor_dtype(self, name: str) -> str:
        return self._find(name)[2]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._find(name)[3])

    def create_execution_context(self):
        return types.SimpleNamespace(engine=self)


class Runtime(_Strict):
    _attrs = ("engine_host_code_allowed", "DLA_core")
    deserialized = 0

    def __init__(self, logger: ILogger) -> None:
        self.engine_host_code_allowed = False
        self.DLA_core = -1

    def deserialize_cuda_engine(self, data: bytes) -> ICudaEngine:
        Runtime.deserialized += 1
        return ICudaEngine(json.loads(bytes(data)))
