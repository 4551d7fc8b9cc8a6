"""TensorRT engines: the parser's operator table, planning, provenance and the build.

- :mod:`~edgehal.export.tensorrt.ops`: TensorRT's ONNX operator support table, as data;
- :mod:`~edgehal.export.tensorrt.profile`: optimisation-profile rules shared by the
  planner, the inspector, the sidecar and the runner;
- :mod:`~edgehal.export.tensorrt.plan`: everything decidable without TensorRT;
- :mod:`~edgehal.export.tensorrt.provenance`: the sidecar and the check before loading;
- :mod:`~edgehal.export.tensorrt.library`: the lazy ``import tensorrt``, its logger, and what
  differs between the supported majors (10 and 11);
- :mod:`~edgehal.export.tensorrt.progress`: TensorRT's build progress as progress bars;
- :mod:`~edgehal.export.tensorrt.build`: the calls into TensorRT's builder.

Loading, binding and running an engine is :mod:`edgehal.runtime.tensorrt`.

The public names below are resolved on first use, so this package imports
none of its modules: importing one (``edgehal.export.inspect`` needs only
``ops`` and ``profile``) does not import the others, and the planner can use
the inspector without an import cycle through this package.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "EngineOptions": "plan", "BuildPlan": "plan", "plan_build": "plan", "parse_dim_range": "plan",
    "PRECISIONS": "plan", "onnx_float_precision": "plan",
    "ProfileShape": "profile", "check_profile": "profile", "DEFAULT_MAX_BATCH": "profile",
    "EngineProvenance": "provenance", "HostInfo": "provenance", "host_info": "provenance",
    "check_compatibility": "provenance", "check_engine_file": "provenance",
    "import_tensorrt": "library", "tensorrt_available": "library", "tensorrt_major": "library",
    "network_flags": "library", "SUPPORTED_MAJORS": "library",
    "BuildProgress": "progress",
    "BuildResult": "build", "build_engine": "build", "build_from_plan": "build", "fp16_onnx_path": "build",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
