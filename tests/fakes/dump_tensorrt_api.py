"""Write tensorrt_api_<major>.json: the names the real TensorRT Python bindings have, for the fake.

The fake TensorRT (fake_tensorrt.py) hides every module name, enum member and
class attribute that the major it pretends to be lacks; these lists are where
it learns which. They were produced from NVIDIA's PyPI wheels, without a GPU
and without TensorRT's libraries, like this (the bindings load against three
stub libraries that only satisfy the dynamic linker; nothing is called)::

    python -m venv /tmp/trtscratch11
    /tmp/trtscratch11/bin/pip install tensorrt_cu13_bindings==11.4.0.106
    python -m venv /tmp/trtscratch10
    /tmp/trtscratch10/bin/pip install tensorrt_cu12_bindings==10.16.1.11
    # stub libnvinfer.so.N / libnvonnxparser.so.N / libnvinfer_plugin.so.N exporting
    # createInferBuilder_INTERNAL, createInferRuntime_INTERNAL, createInferRefitter_INTERNAL,
    # getPluginRegistry, getBuilderPluginRegistry, createNvOnnxParser_INTERNAL,
    # createNvOnnxParserRefitter_INTERNAL, getNvOnnxParserVersion, initLibNvInferPlugins
    # (each returning 0/NULL), built with `gcc -shared -fPIC -Wl,-soname,<name>` into /tmp/trtstubs/N
    LD_LIBRARY_PATH=/tmp/trtstubs/11 /tmp/trtscratch11/bin/python tests/fakes/dump_tensorrt_api.py
    LD_LIBRARY_PATH=/tmp/trtstubs/10 /tmp/trtscratch10/bin/python tests/fakes/dump_tensorrt_api.py

Run it again with newer wheels to refresh the lists; the fake reads them at import.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CLASSES = ("Builder", "IBuilderConfig", "INetworkDefinition", "ITensor", "OnnxParser", "ParserError",
           "IOptimizationProfile", "ITimingCache", "ICudaEngine", "IExecutionContext", "Runtime",
           "ILogger", "Logger", "IProgressMonitor")
ENUMS = ("BuilderFlag", "NetworkDefinitionCreationFlag", "MemoryPoolType", "DeviceType",
         "HardwareCompatibilityLevel", "OnnxParserFlag", "TensorIOMode", "TensorLocation", "DataType")


def _public(names) -> list[str]:
    return sorted(n for n in names if not n.startswith("_"))


def _parameters(method) -> list[list[str]] | None:
    """Each overload's parameter names, from pybind11's signature lines (``name(self: T, a: int, b: X) -> R``)."""
    import re

    doc = getattr(method, "__doc__", None) or ""
    name = getattr(method, "__name__", "")
    out = []
    for line in doc.splitlines():
        m = re.match(rf"\s*(?:\d+\. )?{re.escape(name)}\((.*)\)\s*->", line)
        if m:
            names = [p.split(":")[0].strip() for p in re.split(r",\s*(?![^\[]*\])", m.group(1)) if p.strip()]
            out.append([n for n in names if n != "self"])
    return out or None


def _members(enum) -> dict[str, int]:
    """name -> int value: the values matter where they are bit positions (``1 << int(flag)``)."""
    return {name: int(value) for name, value in enum.__members__.items()}


def dump(trt) -> dict:
    """Module names, class attributes (with the read-only properties and each method's parameter names)
    and enum members of ``trt``."""
    classes = {}
    for name in CLASSES:
        cls = getattr(trt, name, None)
        if cls is None:
            continue
        attrs = _public(dir(cls))
        readonly = [a for a in attrs if isinstance(getattr(cls, a, None), property) and getattr(cls, a).fset is None]
        methods = {a: _parameters(getattr(cls, a)) for a in attrs if callable(getattr(cls, a, None))
                   and not isinstance(getattr(cls, a), property) and not isinstance(getattr(cls, a), type)}
        classes[name] = {"attributes": attrs, "read_only": readonly,
                         "parameters": {a: p for a, p in methods.items() if p}}
    enums = {name: _members(getattr(trt, name)) for name in ENUMS if hasattr(trt, name)}
    enums["ILogger.Severity"] = _members(trt.ILogger.Severity)
    return {"version": trt.__version__, "module": _public(dir(trt)), "classes": classes, "enums": enums}


def main() -> None:
    try:
        import tensorrt as trt
    except ImportError:
        import tensorrt_bindings as trt  # the bindings wheel alone
    api = dump(trt)
    major = int(api["version"].split(".")[0])
    out = Path(__file__).with_name(f"tensorrt_api_{major}.json")
    out.write_text(json.dumps(api, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out} ({api['version']})", file=sys.stderr)


if __name__ == "__main__":
    main()
