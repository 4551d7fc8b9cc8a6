"""PyTorch runner for an edgehal checkpoint: eager, or ``torch.compile`` where it works."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgehal.checkpoint import LoadedCheckpoint, load_checkpoint
from edgehal.errors import EdgehalError
from edgehal.hierarchy import HeadManifest
from edgehal.runtime.base import Runner, TensorSpec


class TorchRunner(Runner):
    """Runs a checkpoint's model. ``device`` defaults to CUDA when present, else CPU."""

    name = "torch"

    def __init__(self, checkpoint: str | Path | LoadedCheckpoint, *, device: str | None = None,
                 compile: bool = False, threads: int | None = None) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self.torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.compile = compile
        self.threads = threads
        self.name = "torch-compile" if compile else "torch"
        self._ckpt = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else None
        self.model: torch.nn.Module | None = None
        self._fn = None
        self._old_threads: int | None = None

    def _activate(self) -> None:
        if self._ckpt is None:
            self._ckpt = load_checkpoint(self.checkpoint)
        if self.threads:
            self._old_threads = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        self.model = self._ckpt.build_model().to(self.torch_device)
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
        return str(self.torch_device)

    def to_device(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).to(self.torch_device, non_blocking=True)

    @torch.no_grad()
    def run_tensor(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model on an already-placed tensor (for device-side timing)."""
        return self._fn(x)

    @torch.no_grad()
    def _infer(self, feed: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        out = self._fn(self.to_device(feed[self.manifest.input_name]))
        return {n: out[n].float().cpu().numpy() for n in outputs}
