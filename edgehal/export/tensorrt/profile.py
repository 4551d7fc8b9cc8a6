"""The optimisation profile: the input shapes an engine accepts, from the build to every run.

``build-engine`` derives one profile per engine (:func:`derive_profiles`),
the sidecar records it (:class:`ProfileShape`), ``inspect`` explains how a
dynamic dimension will be profiled (:func:`dim_keys`,
:func:`default_dim_range`), and the runner refuses a shape outside it before
TensorRT sees one (:func:`check_profile`). One module, so the planner, the
inspector, the sidecar and the runner agree on these rules without importing
each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from edgehal.errors import EdgehalError
from edgehal.manifest import HeadManifest
from edgehal.tensors import TensorSpec

DEFAULT_MAX_BATCH = 32


@dataclass(frozen=True)
class ProfileShape:
    """One input's shapes in the optimisation profile."""

    input: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    @property
    def dynamic_batch(self) -> bool:
        return bool(self.min) and self.min[0] != self.max[0]

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ProfileShape":
        return cls(str(d["input"]), tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]))


def dim_keys(t: TensorSpec, axis: int) -> tuple[str, ...]:
    """The ``--dim`` names that address ``axis`` of input ``t``: its name in the file, then ``INPUT:AXIS``."""
    name = t.dim_names[axis] if axis < len(t.dim_names) else None
    return ((name,) if name else ()) + (f"{t.name}:{axis}",)


def default_dim_range(t: TensorSpec, axis: int, manifest: HeadManifest | None) -> tuple[int, int, int] | None:
    """The profile a dynamic non-batch dimension gets without ``--dim``, from the file's metadata.

    The model's sequence axis (``sequence`` in the manifest, e.g. the
    rows of a row-sequential classifier): 1 up to the trained length, tuned
    for the trained length. Any other dimension: the trained size alone. None
    when the file does not say (no edgehal metadata, or another input).
    """
    if manifest is None or t.name != manifest.input_name or not 0 < axis <= len(manifest.input_shape):
        return None
    size = int(manifest.input_shape[axis - 1])
    if size < 1:
        return None
    return (1, size, size) if (manifest.sequence is not None and manifest.sequence.axis == axis) else (size, size, size)


def derive_profiles(inputs: Sequence[TensorSpec], batch: tuple[int, int, int] | None,
                    dims: Mapping[tuple[str, int], tuple[int, int, int]] | None = None
                    ) -> tuple[ProfileShape, ...]:
    """The optimisation profile: each input's shape with the batch range and the ``dims`` ranges filled in."""
    out = []
    dims = dims or {}
    for t in inputs:
        shapes = [list(t.shape), list(t.shape), list(t.shape)]
        for axis, size in enumerate(t.shape):
            rng = batch if axis == 0 and batch is not None else dims.get((t.name, axis))
            if rng is not None:
                for k in range(3):
                    shapes[k][axis] = rng[k]
        out.append(ProfileShape(t.name, *(tuple(x) for x in shapes)))
    return tuple(out)


def check_profile(profiles: Sequence[ProfileShape], shapes: Mapping[str, Sequence[int]], *,
                what: str) -> None:
    """Refuse a shape outside the engine's profile (batch or any other dimension) before TensorRT sees it."""
    for prof in profiles:
        shape = shapes.get(prof.input)
        if shape is None or not prof.min or not len(shape):
            continue
        for axis, got in enumerate(int(v) for v in shape):
            if axis >= len(prof.min):
                break
            lo, hi = prof.min[axis], prof.max[axis]
            if lo < 0 or lo <= got <= hi:
                continue
            allowed = f"{lo}" if lo == hi else f"{lo}..{hi}"
            if axis == 0:
                raise EdgehalError(f"{what}: input {prof.input!r}",
                                   f"batch {got} is outside the engine's profile (batch {allowed})",
                                   f"a batch of {allowed}, or rebuild the engine with `edgehal build-engine "
                                   f"--max-batch {max(got, hi)}`" if got > hi else f"a batch of {allowed}")
            raise EdgehalError(f"{what}: input {prof.input!r}",
                               f"dimension {axis} is {got}, outside the engine's profile ({allowed})",
                               f"{allowed}, or rebuild the engine with `edgehal build-engine --dim "
                               f"{prof.input}:{axis}={min(got, lo)},{prof.opt[axis]},{max(got, hi)}`")
