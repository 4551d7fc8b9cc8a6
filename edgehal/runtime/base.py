"""The one Runner interface: torch checkpoints, onnxruntime, TensorRT.

A runner is a context manager. ``activate()`` builds what it needs (a session,
an engine context); ``deactivate()`` frees only what it built. The public
``infer()`` checks every input against the model's metadata before the
backend-specific ``_infer()`` sees it (Polygraphy's runner shape), so a
wrong-shaped tensor is a clear ``EdgehalError``, never a crash inside a backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np

from edgehal.errors import EdgehalError
from edgehal.manifest import HeadManifest
from edgehal.tensors import TensorSpec

if TYPE_CHECKING:  # pragma: no cover
    from edgehal.artifact import ArtifactMetadata

__all__ = ["Runner", "check_feed", "format_shape"]


class Runner(ABC):
    """Runs a model on a batch of named numpy arrays and returns named arrays."""

    name: str = "runner"

    def __init__(self) -> None:
        self.is_active = False

    # -- lifecycle ---------------------------------------------------------
    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def activate(self) -> None:
        if not self.is_active:
            self._activate()
            self.is_active = True

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False

    @abstractmethod
    def _activate(self) -> None: ...

    def _deactivate(self) -> None:  # noqa: B027 - optional hook
        pass

    # -- metadata ----------------------------------------------------------
    @property
    def metadata(self) -> "ArtifactMetadata | None":
        """edgehal's metadata of the artifact (manifest, preprocessing, metrics, calibration, ...);
        None for a model edgehal did not write."""
        return None

    @property
    @abstractmethod
    def manifest(self) -> HeadManifest | None:
        """The head manifest, or None for a plain model without edgehal metadata."""

    @abstractmethod
    def input_specs(self) -> Sequence[TensorSpec]: ...

    @abstractmethod
    def output_names(self) -> Sequence[str]: ...

    def output_specs(self) -> Sequence[TensorSpec]:
        """Every output's name, dtype and shape, in :meth:`output_names` order.

        Runners of a serialised graph (ONNX, TensorRT) know them before running
        anything; a runner that learns them only by running says so.
        """
        raise EdgehalError(f"runner {self.name}", "cannot describe its outputs before running",
                           "an ONNX file or a TensorRT engine")

    @property
    def max_batch(self) -> int | None:
        """The largest batch the backend accepts; None when unbounded."""
        return None

    @property
    def precision(self) -> str:
        """``fp32``, ``fp16`` or ``int8``: what the artifact computes in. Defaults to fp32."""
        return "fp32"

    @property
    def device(self) -> str:
        """Where the model computes: ``cpu`` or ``cuda:N``."""
        return "cpu"

    @property
    def threads(self) -> int | None:
        """The CPU threads the runner was told to compute with; None leaves it to the backend."""
        return None

    # -- inference ---------------------------------------------------------
    def infer(self, feed: Mapping[str, np.ndarray], *, outputs: Sequence[str] | None = None,
              check: bool = True) -> dict[str, np.ndarray]:
        """Run and return the requested outputs (every output of the model by default).

        ``check=True`` validates names, dtypes and shapes of ``feed`` against
        :meth:`input_specs` first; ``check=False`` skips that for a feed that a
        caller already checked once (a timing loop), and hands the arrays over as
        they are.
        """
        self._require_active()
        names = self._output_list(outputs)
        if check:
            feed = check_feed(feed, self.input_specs(), max_batch=self.max_batch,
                              what=f"runner {self.name}")
        return self._infer(feed if isinstance(feed, dict) else dict(feed), names)

    def device_timer(self, feed: Mapping[str, np.ndarray], *,
                     outputs: Sequence[str] | None = None) -> Callable[[], int] | None:
        """A call that runs ``feed`` with inputs and outputs resident on the device
        and returns the nanoseconds it took there (CUDA events, or host time
        around a synchronising IOBinding run), or None when the runner has no
        device-side timing (a CPU runner). The feed is checked and copied to the
        device once, before the first call.
        """
        return None

    def _require_active(self) -> None:
        if not self.is_active:
            raise EdgehalError(f"runner {self.name}", "is not active",
                               "use it as a context manager: with runner: ...")

    def _output_list(self, outputs: Sequence[str] | None) -> list[str]:
        available = list(self.output_names())
        if outputs is None:  # every output, as a server asks on each run: nothing to look up
            return available
        names = list(outputs)
        unknown = [n for n in names if n not in available]
        if unknown:
            raise EdgehalError(f"output {unknown[0]!r}", f"is not an output of {self.name}",
                               f"one of {available}")
        return names

    @abstractmethod
    def _infer(self, feed: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]: ...


def check_feed(feed: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], *,
               max_batch: int | None = None, what: str = "input") -> dict[str, np.ndarray]:
    """Validate names, dtypes, ranks and static dims; return contiguous arrays."""
    expected = {s.name for s in specs}
    missing = expected - set(feed)
    if missing:
        raise EdgehalError(what, f"input {sorted(missing)[0]!r} is missing", f"inputs {sorted(expected)}")
    extra = set(feed) - expected
    if extra:
        raise EdgehalError(what, f"input {sorted(extra)[0]!r} is not a model input", f"inputs {sorted(expected)}")
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        arr = np.asarray(feed[spec.name])
        if arr.dtype != spec.numpy_dtype:
            raise EdgehalError(f"{what}: input {spec.name!r}", f"has dtype {arr.dtype}",
                               f"dtype {spec.dtype}")
        if arr.ndim != len(spec.shape):
            raise EdgehalError(f"{what}: input {spec.name!r}",
                               f"has shape {tuple(arr.shape)} (rank {arr.ndim})",
                               f"rank {len(spec.shape)}, shape {format_shape(spec.shape)}")
        for axis, (got, want) in enumerate(zip(arr.shape, spec.shape)):
            if want is not None and want >= 0 and got != want:
                raise EdgehalError(f"{what}: input {spec.name!r}",
                                   f"has shape {tuple(arr.shape)}, dimension {axis} is {got}",
                                   f"shape {format_shape(spec.shape)}")
        if max_batch is not None and arr.ndim and arr.shape[0] > max_batch:
            raise EdgehalError(f"{what}: input {spec.name!r}", f"batch {arr.shape[0]} is too large",
                               f"at most {max_batch}")
        out[spec.name] = np.ascontiguousarray(arr)
    return out


def format_shape(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("N" if d is None or d < 0 else str(d) for d in shape) + ")"
