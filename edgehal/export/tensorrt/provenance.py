"""Engine provenance: the sidecar beside every engine, and the check before loading it.

``edgehal build-engine`` writes ``model.plan.json`` beside ``model.plan``: the
TensorRT version, GPU name and compute capability, the L4T/JetPack release on
a Jetson, precision, optimisation profile, head manifest and the source ONNX's
sha256. Before an engine is deserialised, :func:`check_compatibility` compares
it with this machine (:func:`host_info`) and, on a mismatch, says exactly what
differs and gives the ``edgehal build-engine`` line that rebuilds it on the
target, instead of TensorRT's "version tag does not match". Only
:func:`host_info` needs TensorRT (for its version) and a GPU.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from edgehal.artifact import (
    ArtifactMetadata,
    engine_metadata_from_sidecar,
    engine_sidecar_path,
)
from edgehal.errors import EdgehalError
from edgehal.export.tensorrt.library import import_tensorrt, version_major
from edgehal.export.tensorrt.profile import ProfileShape
from edgehal.fileio import sha256_file
from edgehal.host import NV_TEGRA_RELEASE, parse_l4t_release
from edgehal.manifest import HeadManifest
from edgehal.tensors import TensorSpec

SIDECAR_FORMAT = "edgehal-trt/1"


# --------------------------------------------------------------------------
# The machine


@dataclass(frozen=True)
class HostInfo:
    """The machine an engine is built or loaded on."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.6"
    l4t_release: str | None = None  # "36.4.0" on a Jetson (edgehal.host.parse_l4t_release)
    jetpack: str | None = None  # "6.1" when the nvidia-jetpack package says so

    @property
    def sm(self) -> str:
        return "sm_" + self.compute_capability.replace(".", "")

    def describe(self) -> str:
        extra = f", L4T {self.l4t_release}" if self.l4t_release else ""
        extra += f", JetPack {self.jetpack}" if self.jetpack else ""
        return f"TensorRT {self.tensorrt_version} on {self.gpu_name} ({self.sm}{extra})"


def parse_jetpack_version(dpkg_version: str) -> str | None:
    """``6.1`` from the ``nvidia-jetpack`` package version ("6.1+b123")."""
    import re

    m = re.match(r"\s*(\d+(?:\.\d+)*)", dpkg_version or "")
    return m.group(1) if m else None


def _gpu_info(device_index: int) -> tuple[str, str]:
    """(name, compute capability "8.6") of the CUDA device, through torch (always installed)."""
    import torch

    if not torch.cuda.is_available():
        raise EdgehalError("CUDA GPU", "none is visible to this process",
                           "TensorRT engines are built and run on an NVIDIA GPU; check `nvidia-smi` "
                           "and CUDA_VISIBLE_DEVICES")
    count = torch.cuda.device_count()
    if not 0 <= device_index < count:
        raise EdgehalError(f"GPU {device_index}", f"does not exist ({count} visible)",
                           f"a device index 0..{count - 1}")
    major, minor = torch.cuda.get_device_capability(device_index)
    return torch.cuda.get_device_name(device_index), f"{major}.{minor}"


def _jetson_info() -> tuple[str | None, str | None]:
    """(L4T release, JetPack version) on a Jetson; (None, None) elsewhere."""
    try:
        l4t = parse_l4t_release(Path(NV_TEGRA_RELEASE).read_text(errors="replace"))
    except OSError:
        return None, None
    jetpack = None
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"],
                             capture_output=True, text=True, timeout=10, check=False)
        jetpack = parse_jetpack_version(out.stdout) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return l4t, jetpack


def host_info(*, device_index: int = 0) -> HostInfo:
    """TensorRT version, GPU and (on a Jetson) L4T/JetPack release of this machine."""
    trt = import_tensorrt()
    name, cc = _gpu_info(device_index)
    l4t, jetpack = _jetson_info()
    return HostInfo(str(trt.__version__), name, cc, l4t, jetpack)


# --------------------------------------------------------------------------
# The sidecar


@dataclass(frozen=True)
class EngineProvenance:
    """The sidecar JSON written beside every engine ``build-engine`` makes."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profiles: tuple[ProfileShape, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    source_onnx: str
    source_onnx_sha256: str
    engine_sha256: str
    metadata: ArtifactMetadata | None = None
    l4t_release: str | None = None
    jetpack: str | None = None
    dla_core: int | None = None
    gpu_fallback: bool = True
    version_compatible: bool = False
    hardware_compatible: bool = False
    workspace_mib: int | None = None
    built_at: str = ""
    edgehal_version: str = ""
    strongly_typed: bool = True  # False: TensorRT 10's weakly typed build (DLA; every engine before 11 support)
    fp16_onnx: str | None = None  # the FP16 ONNX the build converted from source_onnx, beside the engine
    fp16_onnx_sha256: str | None = None
    format: str = SIDECAR_FORMAT

    @property
    def tensorrt_major(self) -> int | None:
        """The TensorRT major the engine was built with; engines never load across majors."""
        return version_major(self.tensorrt_version)

    @property
    def manifest(self) -> HeadManifest | None:
        return self.metadata.manifest if self.metadata else None

    @property
    def built_on(self) -> HostInfo:
        return HostInfo(self.tensorrt_version, self.gpu_name, self.compute_capability,
                        self.l4t_release, self.jetpack)

    @property
    def batch_range(self) -> tuple[int, int] | None:
        batched = [p for p in self.profiles if p.min]
        return (batched[0].min[0], batched[0].max[0]) if batched else None

    def rebuild_command(self, engine: str | Path) -> str:
        """The ``edgehal build-engine`` line that rebuilds this engine on the target."""
        args = ["edgehal", "build-engine", self.source_onnx, "-o", Path(engine).name,
                "--precision", self.precision]
        batched = [p for p in self.profiles if p.min]
        if batched and batched[0].dynamic_batch:
            p = batched[0]
            args += ["--min-batch", str(p.min[0]), "--opt-batch", str(p.opt[0]), "--max-batch", str(p.max[0])]
        if self.dla_core is not None:
            args += ["--dla-core", str(self.dla_core)]
        if self.version_compatible:
            args.append("--version-compatible")
        if self.hardware_compatible:
            args.append("--hardware-compatible")
        return shlex.join(args)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "edgehal_version": self.edgehal_version,
            "built_at": self.built_at,
            "tensorrt_version": self.tensorrt_version,
            "tensorrt_major": self.tensorrt_major,
            "strongly_typed": self.strongly_typed,
            "fp16_onnx": self.fp16_onnx,
            "fp16_onnx_sha256": self.fp16_onnx_sha256,
            "gpu_name": self.gpu_name,
            "compute_capability": self.compute_capability,
            "l4t_release": self.l4t_release,
            "jetpack": self.jetpack,
            "precision": self.precision,
            "profiles": [p.to_dict() for p in self.profiles],
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            # The source ONNX's edgehal metadata at the engine's precision: what parity, serve and
            # export-triton read about the engine (the same record an ONNX file carries).
            "metadata": self.metadata.to_dict() if self.metadata else None,
            "source_onnx": self.source_onnx,
            "source_onnx_sha256": self.source_onnx_sha256,
            "engine_sha256": self.engine_sha256,
            "dla_core": self.dla_core,
            "gpu_fallback": self.gpu_fallback,
            "version_compatible": self.version_compatible,
            "hardware_compatible": self.hardware_compatible,
            "workspace_mib": self.workspace_mib,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, what: str = "engine sidecar") -> "EngineProvenance":
        if d.get("format") != SIDECAR_FORMAT:
            raise EdgehalError(what, f"has format {d.get('format')!r}",
                               f"{SIDECAR_FORMAT!r}, as `edgehal build-engine` writes")
        recorded = d.get("tensorrt_major")  # absent from older sidecars: the version string says it
        if recorded is not None and recorded != version_major(str(d.get("tensorrt_version", ""))):
            raise EdgehalError(what, f"says TensorRT major {recorded!r} but version {d.get('tensorrt_version')!r}",
                               "the JSON `edgehal build-engine` writes beside the engine")
        try:
            return cls(
                tensorrt_version=str(d["tensorrt_version"]),
                gpu_name=str(d["gpu_name"]),
                compute_capability=str(d["compute_capability"]),
                precision=str(d["precision"]),
                profiles=tuple(ProfileShape.from_dict(p) for p in d["profiles"]),
                inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
                outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
                source_onnx=str(d["source_onnx"]),
                source_onnx_sha256=str(d["source_onnx_sha256"]),
                engine_sha256=str(d["engine_sha256"]),
                metadata=engine_metadata_from_sidecar(d, precision=str(d["precision"]), what=what),
                l4t_release=d.get("l4t_release"),
                jetpack=d.get("jetpack"),
                dla_core=d.get("dla_core"),
                gpu_fallback=bool(d.get("gpu_fallback", True)),
                version_compatible=bool(d.get("version_compatible", False)),
                hardware_compatible=bool(d.get("hardware_compatible", False)),
                workspace_mib=d.get("workspace_mib"),
                built_at=str(d.get("built_at", "")),
                edgehal_version=str(d.get("edgehal_version", "")),
                # sidecars without the field predate strongly typed builds
                strongly_typed=bool(d.get("strongly_typed", False)),
                fp16_onnx=d.get("fp16_onnx"),
                fp16_onnx_sha256=d.get("fp16_onnx_sha256"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EdgehalError(what, f"is malformed ({exc.__class__.__name__}: {exc})",
                               "the JSON `edgehal build-engine` writes beside the engine") from None


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in str(version).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _bare_l4t(release: str) -> str:
    """``36.4.0`` from either form a sidecar may hold: bare, or ``R36.4.0`` as edgehal once wrote it."""
    return release[1:] if release[:1] in ("R", "r") else release


def _cc_tuple(cc: str) -> tuple[int, int]:
    major, _, minor = str(cc).partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return (0, 0)


def check_compatibility(provenance: EngineProvenance, host: HostInfo, *,
                        engine: str | Path) -> list[str]:
    """Refuse an engine this machine cannot deserialise; return softer warnings.

    An engine from another TensorRT major is refused first, on its own: it
    never loads, version-compatible or not. TensorRT versions must match
    (major.minor.patch) unless the engine is
    version-compatible (then the same major and this machine's version at
    least the builder's); compute capabilities must match unless the engine is
    hardware-compatible (then this GPU must be Ampere, sm_80, or newer). A
    different GPU model with the same compute capability, or a different L4T
    release, is a warning: TensorRT loads it but tuned its kernels elsewhere.
    """
    built = provenance.built_on
    built_major, host_major = provenance.tensorrt_major, version_major(host.tensorrt_version)
    if built_major != host_major:
        raise EdgehalError(
            f"TensorRT engine {Path(engine).name}",
            f"was built with TensorRT {built.tensorrt_version} (major {built_major}); this machine has TensorRT "
            f"{host.tensorrt_version} (major {host_major}), and engines never load across TensorRT majors",
            f"rebuild the engine here with `{provenance.rebuild_command(engine)}`")
    differences: list[str] = []
    bv, hv = _version_tuple(built.tensorrt_version), _version_tuple(host.tensorrt_version)
    if provenance.version_compatible:
        if not bv or not hv or bv[0] != hv[0] or hv < bv:
            differences.append(f"TensorRT {host.tensorrt_version} cannot run a version-compatible engine "
                               f"from TensorRT {built.tensorrt_version} (same major version, same or newer needed)")
    elif bv[:3] != hv[:3]:
        differences.append(f"TensorRT {built.tensorrt_version} != {host.tensorrt_version}")
    bcc, hcc = _cc_tuple(built.compute_capability), _cc_tuple(host.compute_capability)
    if provenance.hardware_compatible:
        if hcc < (8, 0):
            differences.append(f"{host.sm} is older than Ampere (sm_80), which hardware-compatible engines need")
    elif bcc != hcc:
        differences.append(f"compute capability {built.sm} != {host.sm}")
    if differences:
        raise EdgehalError(
            f"TensorRT engine {Path(engine).name}",
            f"built with {built.describe()}; this machine has {host.describe()}: "
            + "; ".join(differences),
            f"rebuild the engine on the target with `{provenance.rebuild_command(engine)}`")
    warnings = []
    if built.gpu_name != host.gpu_name:
        warnings.append(f"TensorRT engine {Path(engine).name} was built on {built.gpu_name} and runs on "
                        f"{host.gpu_name}: same {host.sm}, but its kernels were timed on the other GPU; "
                        "rebuild on the target for its best speed")
    if built.l4t_release and host.l4t_release and _bare_l4t(built.l4t_release) != _bare_l4t(host.l4t_release):
        warnings.append(f"TensorRT engine {Path(engine).name} was built on L4T {built.l4t_release}; "
                        f"this Jetson runs L4T {host.l4t_release}")
    return warnings


def check_engine_file(provenance: EngineProvenance, engine: str | Path) -> None:
    """The sidecar must describe this very engine file (not one rebuilt since)."""
    p = Path(engine)
    if not p.is_file():
        raise EdgehalError(f"TensorRT engine {p}", "file not found")
    digest = sha256_file(p)
    if digest != provenance.engine_sha256:
        raise EdgehalError(f"TensorRT engine {p.name}",
                           f"does not match its sidecar {engine_sidecar_path(p).name} (sha256 {digest[:12]}..., "
                           f"sidecar says {provenance.engine_sha256[:12]}...)",
                           "the engine and the sidecar that `edgehal build-engine` wrote together; rebuild it")
