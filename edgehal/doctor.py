"""What this machine can run: Python, torch and CUDA, onnxruntime, TensorRT, GPU, Jetson.

:func:`diagnose` returns a typed :class:`DoctorReport`; ``edgehal doctor``
prints it. :func:`machine_info` is the smaller record a benchmark stores
beside its numbers. Nothing here raises for a missing library or device: an
absent TensorRT or GPU is an answer, not an error. Heavy libraries are
imported only inside the functions that ask about them.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from edgehal.bench import jetson as jetson_mod
from edgehal.host import usable_cores

# Every distribution that installs the ``onnxruntime`` module; two at once
# overwrite each other's files and the providers you get depend on install order.
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                     "onnxruntime-qnn", "onnxruntime-training", "ort-nightly", "ort-nightly-gpu")
LIBRARIES = ("edgehal", "numpy", "torch", "torchvision", "onnx", *ORT_DISTRIBUTIONS[:2], "tensorrt")


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str | None = None
    memory_mib: int | None = None
    driver: str | None = None


@dataclass(frozen=True)
class TorchInfo:
    version: str | None
    cuda_build: str | None = None       # CUDA version torch was built with
    cuda_available: bool = False
    cudnn: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class OrtInfo:
    version: str | None
    distributions: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class DoctorReport:
    python: str
    platform: str
    cpu_model: str
    logical_cores: int
    usable_cores: int
    torch: TorchInfo
    onnxruntime: OrtInfo
    tensorrt: str | None
    tensorrt_note: str
    gpus: tuple[GpuInfo, ...]
    jetson: jetson_mod.JetsonInfo
    backends: dict[str, str]             # backend -> "yes" or why not
    warnings: tuple[str, ...] = ()

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)

    @property
    def runnable_backends(self) -> list[str]:
        return [b for b, why in self.backends.items() if why == "yes"]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["jetson"] = self.jetson.to_dict()
        d["has_gpu"] = self.has_gpu
        return d

    def lines(self) -> list[str]:
        """The report as aligned ``label  value`` lines for a terminal."""
        t = self.torch
        if t.version is None:
            torch_line = f"not installed ({t.error})" if t.error else "not installed"
        else:
            cuda = f"built with CUDA {t.cuda_build}" if t.cuda_build else "CPU-only build"
            avail = "CUDA available" if t.cuda_available else "CUDA not available"
            torch_line = f"{t.version}, {cuda}, {avail}" + (f", cuDNN {t.cudnn}" if t.cudnn else "")
        o = self.onnxruntime
        if o.version is None:
            ort_line = f"not installed ({o.error})" if o.error else "not installed"
        else:
            ort_line = f"{o.version} ({', '.join(o.distributions) or 'unknown distribution'})"
        gpu_line = "; ".join(
            g.name + (f", compute capability {g.compute_capability}" if g.compute_capability else "")
            + (f", {g.memory_mib} MiB" if g.memory_mib else "") + (f", driver {g.driver}" if g.driver else "")
            for g in self.gpus) or "none found"
        j = self.jetson
        if j.is_jetson:
            mode = f"{j.power_mode.name} (id {j.power_mode.id})" if j.power_mode else "unknown"
            clocks = ("locked" if j.clocks.locked else "not locked") if j.clocks else "unknown"
            jetson_line = (f"{j.model or 'unknown model'}, L4T {j.l4t_release or 'unknown'}, "
                           f"power mode {mode}, clocks {clocks}")
        else:
            jetson_line = "no"
        rows = [
            ("Python", self.python),
            ("Platform", self.platform),
            ("CPU", f"{self.cpu_model}, {self.logical_cores} logical cores ({self.usable_cores} usable)"),
            ("torch", torch_line),
            ("onnxruntime", ort_line),
            ("ORT providers", ", ".join(o.providers) or "none"),
            ("TensorRT", self.tensorrt or f"not installed ({self.tensorrt_note})"),
            ("GPU", gpu_line),
            ("Jetson", jetson_line),
        ]
        width = max(len(k) for k, _ in rows)
        out = [f"{k:<{width}}  {v}" for k, v in rows]
        out.append("")
        out.append("Backends for `edgehal bench`:")
        bw = max(len(b) for b in self.backends)
        for b, why in self.backends.items():
            out.append(f"  {b:<{bw}}  {'yes' if why == 'yes' else 'no: ' + why}")
        for w in (*self.warnings, *j.warnings, *j.notes):
            out.append(f"warning: {w}")
        return out


# --------------------------------------------------------------------------
# Pieces


def cpu_model(*, cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            # x86 says "model name"; many aarch64 kernels only "Hardware" or nothing.
            if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def installed_versions(names: Sequence[str] = LIBRARIES) -> dict[str, str]:
    """Versions of the installed distributions among ``names`` (absent ones left out)."""
    out = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def ort_distributions() -> tuple[str, ...]:
    return tuple(installed_versions(ORT_DISTRIBUTIONS))


def ort_conflict_warning(distributions: Sequence[str]) -> str | None:
    """A warning when more than one distribution provides the ``onnxruntime`` module."""
    if len(distributions) < 2:
        return None
    return (f"several onnxruntime distributions are installed ({', '.join(distributions)}); they overwrite "
            "the same `onnxruntime` module, so the providers you get depend on install order. Uninstall "
            "all of them and install exactly one (`pip install 'edgehal[cpu]'` or `'edgehal[gpu]'`)")


def torch_info() -> TorchInfo:
    if importlib.util.find_spec("torch") is None:
        return TorchInfo(None)
    try:
        import torch
    except Exception as exc:  # a broken install should be reported, not crash doctor
        return TorchInfo(None, error=f"import failed: {exc.__class__.__name__}: {str(exc)[:120]}")
    cudnn = None
    try:
        if torch.backends.cudnn.is_available():
            cudnn = torch.backends.cudnn.version()
    except Exception:
        pass
    return TorchInfo(torch.__version__, torch.version.cuda, bool(torch.cuda.is_available()), cudnn)


def ort_info() -> OrtInfo:
    dists = ort_distributions()
    if importlib.util.find_spec("onnxruntime") is None:
        return OrtInfo(None, dists)
    try:
        import onnxruntime as ort
    except Exception as exc:
        return OrtInfo(None, dists, error=f"import failed: {exc.__class__.__name__}: {str(exc)[:120]}")
    return OrtInfo(ort.__version__, dists, tuple(ort.get_available_providers()))


def tensorrt_info() -> tuple[str | None, str]:
    """``(version, "")`` or ``(None, why not)``, importing TensorRT only if it is installed."""
    if importlib.util.find_spec("tensorrt") is None:
        return None, "pip install 'edgehal[tensorrt]' on a machine with an NVIDIA GPU"
    try:
        import tensorrt
    except Exception as exc:
        return None, f"installed but import failed: {exc.__class__.__name__}: {str(exc)[:120]}"
    return str(getattr(tensorrt, "__version__", "unknown")), ""


def nvidia_smi_gpus(*, command: Sequence[str] = ("nvidia-smi",)) -> list[GpuInfo]:
    """GPUs from ``nvidia-smi`` (name, compute capability, memory, driver); empty if absent."""
    if not command or shutil.which(command[0]) is None:
        return []
    query = [*command, "--query-gpu=name,compute_cap,memory.total,driver_version", "--format=csv,noheader,nounits"]
    try:
        proc = subprocess.run(query, capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if proc.returncode != 0:
        return []
    return parse_nvidia_smi(proc.stdout)


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4 or not parts[0]:
            continue

        def known(v: str) -> str | None:
            return None if not v or v.startswith("[") or v.upper() == "N/A" else v

        mem = known(parts[2])
        gpus.append(GpuInfo(parts[0], known(parts[1]), int(float(mem)) if mem else None, known(parts[3])))
    return gpus


def torch_gpus() -> list[GpuInfo]:
    """GPUs as torch sees them; only asks when torch is already imported or CUDA is likely."""
    if "torch" not in sys.modules:
        return []
    import torch
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append(GpuInfo(p.name, f"{p.major}.{p.minor}", int(p.total_memory // (1 << 20))))
    return out


def gpus(*, nvidia_smi: Sequence[str] = ("nvidia-smi",)) -> list[GpuInfo]:
    found = nvidia_smi_gpus(command=nvidia_smi)
    return found or torch_gpus()


def _backends(t: TorchInfo, o: OrtInfo, trt: str | None, gpu_list: Sequence[GpuInfo]) -> dict[str, str]:
    no_torch = "torch is not installed"
    no_ort = "onnxruntime is not installed"
    compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    out = {
        "torch": "yes" if t.version else no_torch,
        "torch-compile": ("yes" if t.version and (t.cuda_available or compiler)
                          else no_torch if not t.version else "no C++ compiler on PATH for inductor"),
        "ort-cpu": ("yes" if "CPUExecutionProvider" in o.providers else no_ort if not o.version
                    else "CPUExecutionProvider missing"),
        "ort-cuda": ("yes" if "CUDAExecutionProvider" in o.providers else no_ort if not o.version
                     else "CUDAExecutionProvider missing (needs onnxruntime-gpu and a GPU)"),
        "ort-tensorrt": ("yes" if "TensorrtExecutionProvider" in o.providers else no_ort if not o.version
                         else "TensorrtExecutionProvider missing (needs onnxruntime-gpu and TensorRT)"),
        "tensorrt": ("yes" if trt and gpu_list else "TensorRT is not installed" if not trt else "no GPU found"),
    }
    # onnxruntime-gpu lists the CUDA provider even without a GPU; it fails at session creation.
    if not gpu_list:
        for b in ("ort-cuda", "ort-tensorrt"):
            if out[b] == "yes":
                out[b] = "provider installed but no GPU found"
    return out


def diagnose(*, release_file: str | Path = jetson_mod.RELEASE_FILE,
             model_file: str | Path = jetson_mod.MODEL_FILE,
             nvpmodel: Sequence[str] = jetson_mod.NVPMODEL_QUERY,
             jetson_clocks: Sequence[str] = jetson_mod.JETSON_CLOCKS_SHOW,
             nvidia_smi: Sequence[str] = ("nvidia-smi",),
             cpuinfo: str | Path = "/proc/cpuinfo") -> DoctorReport:
    """Inspect this machine. Paths and commands are parameters so tests can point them at fixtures."""
    t = torch_info()
    o = ort_info()
    trt, trt_note = tensorrt_info()
    gpu_list = nvidia_smi_gpus(command=nvidia_smi)
    if not gpu_list and t.cuda_available:
        gpu_list = torch_gpus()
    j = jetson_mod.jetson_info(release_file=release_file, model_file=model_file,
                               nvpmodel=nvpmodel, jetson_clocks=jetson_clocks)
    if j.is_jetson and not gpu_list and t.cuda_available:
        gpu_list = torch_gpus()
    warnings = []
    conflict = ort_conflict_warning(o.distributions)
    if conflict:
        warnings.append(conflict)
    if t.cuda_build and not t.cuda_available and gpu_list:
        warnings.append(f"torch was built with CUDA {t.cuda_build} but cannot use the GPU "
                        "(driver too old for this CUDA?)")
    return DoctorReport(
        python=f"{platform.python_version()} ({platform.python_implementation()}) at {sys.executable}",
        platform=platform.platform(),
        cpu_model=cpu_model(cpuinfo=cpuinfo),
        logical_cores=os.cpu_count() or 1,
        usable_cores=usable_cores(),
        torch=t, onnxruntime=o, tensorrt=trt, tensorrt_note=trt_note,
        gpus=tuple(gpu_list), jetson=j, backends=_backends(t, o, trt, gpu_list),
        warnings=tuple(warnings),
    )


def machine_info(*, jetson: jetson_mod.JetsonInfo | None = None) -> dict[str, Any]:
    """What a benchmark records about the machine it ran on (cheap: no torch import)."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    gpu_list = gpus()
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count() or 1,
        "usable_cores": usable_cores(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpus": [asdict(g) for g in gpu_list],
        "gpu_name": gpu_list[0].name if gpu_list else None,
        "gpu_driver": gpu_list[0].driver if gpu_list else None,
        "libraries": installed_versions(),
        "load_average_1_5_15": load,
        "env_threads": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ORT_NUM_THREADS")
                        if k in os.environ},
        "jetson": jetson.to_dict() if jetson is not None and jetson.is_jetson else None,
    }


__all__ = ["DoctorReport", "GpuInfo", "OrtInfo", "TorchInfo", "diagnose", "machine_info"]
