"""PyTorch runner for an edgehal checkpoint: eager, or ``torch.compile`` where it works."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from edgehal.checkpoint import LoadedCheckpoint, load_checkpoint
from edgehal.errors import EdgehalError
from edgehal.manifest import HeadManifest
from edgehal.runtime.base import Runner, check_feed
from edgehal.tensors import TensorSpec


class TorchRunner(Runner):
    """Runs a checkpoint's model. ``device`` defaults to CUDA when present, else CPU."""

    name = "torch"

    def __init__(self, checkpoint: str | Path | LoadedCheckpoint, *, device: str | None = None,
                 compile: bool = False, threads: int | None = None) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.compile = compile
        self._threads = threads
        self.name = "torch-compile" if compile else "torch"
        self._ckpt = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else None
        self.model: torch.nn.Module | None = None
        self._fn = None
        self._old_threads: int | None = None

    def _activate(self) -> None:
        if self._ckpt is None:
            self._ckpt = load_checkpoint(self.checkpoint)
        if self._threads:
            self._old_threads = torch.get_num_threads()
            torch.set_num_threads(self._threads)
        self.model = self._ckpt.build_model().to(self._device)
        self._fn = self.model
        if self.compile:
            try:
                self._fn = torch.compile(self.model)
            except Exception as exc:  # noqa: BLE001 - report, don't crash: compile support varies
                raise EdgehalError("torch.compile", f"is not available here ({exc.__class__.__name__})",
                                   "use the torch backend") from None

    def _deactivate(self) -> None:
        self.model = self._fn = None
        if self._old_threads is not None:
            torch.set_num_threads(self._old_threads)

    @property
    def manifest(self) -> HeadManifest:
        return self._ckpt.manifest

    def input_specs(self) -> list[TensorSpec]:
        m = self.manifest
        return [TensorSpec(m.input_name, m.input_dtype, (-1, *m.input_shape))]

    def output_names(self) -> list[str]:
        return list(self.manifest.head_names)

    @property
    def device(self) -> str:
        """``cpu`` or ``cuda:N`` (a bare ``cuda`` is the current CUDA device)."""
        d = self._device
        if d.type == "cuda":
            return f"cuda:{d.index if d.index is not None else torch.cuda.current_device()}"
        return d.type if d.index is None else f"{d.type}:{d.index}"

    @property
    def threads(self) -> int | None:
        """torch intra-op threads while active, as requested; None leaves torch's default."""
        return self._threads

    def to_device(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).to(self._device, non_blocking=True)

    @torch.no_grad()
    def _infer(self, feed: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        out = self._fn(self.to_device(feed[self.manifest.input_name]))
        return {n: out[n].float().cpu().numpy() for n in outputs}

    def device_timer(self, feed: Mapping[str, np.ndarray], *,
                     outputs: Sequence[str] | None = None) -> Callable[[], int] | None:
        """The model alone between two CUDA events on the device's current stream; None on CPU.

        The input is copied to the GPU once, here; each call enqueues the
        model and waits for the end event, without copying outputs back.
        """
        self._require_active()
        if self._device.type != "cuda":
            return None
        self._output_list(outputs)
        checked = check_feed(feed, self.input_specs(), max_batch=self.max_batch, what=f"runner {self.name}")
        x = self.to_device(checked[self.manifest.input_name])
        device = torch.device(self.device)
        torch.cuda.synchronize(device)
        stream = torch.cuda.current_stream(device)
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        fn = self._fn

        @torch.no_grad()
        def timed() -> int:
            start.record(stream)
            fn(x)
            end.record(stream)
            end.synchronize()
            return int(start.elapsed_time(end) * 1e6)

        return timed
