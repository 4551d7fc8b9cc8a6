"""TensorRT runner: ``.plan``/``.engine`` files built by ``edgehal build-engine``.

Activation checks the engine's provenance sidecar against this machine and
only then deserialises it (:func:`edgehal.export.tensorrt.load_engine`); a
shape outside the engine's optimisation profile is refused here, before
TensorRT sees it. Device memory is torch CUDA tensors: torch is always
installed, so no other CUDA binding is needed. A kept-aux engine reports every
head, in manifest order.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgehal.errors import EdgehalError
from edgehal.export.tensorrt_plan import check_profile
from edgehal.export.tensorrt_provenance import EngineProvenance
from edgehal.hierarchy import HeadManifest
from edgehal.runtime.base import Runner, TensorSpec


class TensorRTRunner(Runner):
    """Runs a TensorRT engine on CUDA device ``device_index`` (defaults to 0)."""

    name = "tensorrt"

    def __init__(self, path: str | Path, *, device_index: int = 0) -> None:
        super().__init__()
        self.path = Path(path)
        self.device_index = device_index
        self.what = f"TensorRT engine {self.path.name}"
        self._loaded: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._device: Any = None
        self._provenance: EngineProvenance | None = None

    # -- lifecycle ---------------------------------------------------------
    def _activate(self) -> None:
        from edgehal.export import tensorrt as trt_backend

        if not self.path.is_file():
            raise EdgehalError(self.what, "file not found")
        loaded = trt_backend.load_engine(self.path, device_index=self.device_index)
        for message in loaded.warnings:
            warnings.warn(message, stacklevel=3)
        import torch

        self._device = torch.device("cuda", self.device_index)
        self._context = trt_backend.create_context(loaded)
        self._stream = torch.cuda.Stream(device=self._device)
        self._loaded = loaded
        self._provenance = loaded.provenance

    def _deactivate(self) -> None:
        # Context before engine before runtime: TensorRT's own teardown order.
        self._context = None
        self._stream = None
        self._loaded = None

    # -- metadata ----------------------------------------------------------
    @property
    def provenance(self) -> EngineProvenance | None:
        return self._provenance

    @property
    def precision(self) -> str | None:
        """The engine's precision (fp16 for an fp16 engine built from an fp32 ONNX)."""
        return self._provenance.precision if self._provenance else None

    @property
    def metadata(self):
        """The source ONNX's edgehal metadata (preprocessing, metrics, ...) with the
        engine's precision, so parity applies the engine's tolerances; or None."""
        from edgehal.export.metadata import PREFIX, OnnxMetadata

        props = self._provenance.onnx_props if self._provenance else {}
        if not props.get(PREFIX + "format"):
            return None
        return OnnxMetadata.from_props(dict(props), what=self.what).with_precision(self._provenance.precision)

    @property
    def manifest(self) -> HeadManifest | None:
        return self._provenance.manifest if self._provenance else None

    def input_specs(self) -> list[TensorSpec]:
        return [TensorSpec(t.name, t.dtype, t.shape) for t in self._loaded.inputs]

    def output_specs(self) -> list[TensorSpec]:
        return [TensorSpec(t.name, t.dtype, t.shape) for t in self._ordered_outputs()]

    def output_names(self) -> list[str]:
        return [t.name for t in self._ordered_outputs()]

    def _ordered_outputs(self):
        outs = list(self._loaded.outputs)
        if self.manifest is None:
            return outs
        rank = {n: i for i, n in enumerate(self.manifest.head_names)}
        return sorted(outs, key=lambda t: rank.get(t.name, len(rank)))

    @property
    def max_batch(self) -> int | None:
        batch = self._provenance.batch_range if self._provenance else None
        return batch[1] if batch else None

    # -- inference ---------------------------------------------------------
    def check_profile(self, feed: dict[str, np.ndarray]) -> None:
        """A shape (batch or another dimension) outside the profile is an EdgehalError before TensorRT sees it."""
        if self._provenance is not None:
            check_profile(self._provenance.profiles, {k: np.shape(v) for k, v in feed.items()}, what=self.what)

    def _infer(self, feed: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        self.check_profile(feed)
        import torch

        from edgehal.export import tensorrt as trt_backend

        with torch.cuda.stream(self._stream):
            device_feed = {name: torch.from_numpy(arr).to(self._device) for name, arr in feed.items()}
            results = trt_backend.execute(self._loaded, self._context, device_feed,
                                          outputs=self._ordered_outputs(), device=self._device,
                                          stream=self._stream)
        return {name: results[name].cpu().numpy() for name in outputs}

    # -- device-resident timing (edgehal.bench_timing.DeviceTimedRunner) -------
    @property
    def device(self) -> str:
        return f"cuda:{self.device_index}"

    def prepare_device(self, feed) -> dict[str, Any]:
        """Check ``feed``, copy it to the GPU once and bind every I/O tensor.

        The binding holds until the next ``infer`` or ``prepare_device`` on this runner.
        """
        from edgehal.runtime.base import check_feed

        checked = check_feed(feed, self.input_specs(), max_batch=self.max_batch, what=f"runner {self.name}")
        self.check_profile(checked)
        import torch

        from edgehal.export import tensorrt as trt_backend

        inputs = {name: torch.from_numpy(arr).to(self._device) for name, arr in checked.items()}
        outputs = trt_backend.bind(self._loaded, self._context, inputs, outputs=self._ordered_outputs(),
                                   device=self._device)
        torch.cuda.synchronize(self._device)
        return {"inputs": inputs, "outputs": outputs}

    def infer_device(self, prepared: dict[str, Any]) -> dict[str, Any]:
        """Enqueue the bound run on the current CUDA stream; no copies, no synchronisation."""
        import torch

        from edgehal.export import tensorrt as trt_backend

        trt_backend.enqueue(self._loaded, self._context, torch.cuda.current_stream(self._device).cuda_stream)
        return prepared["outputs"]

    def infer(self, feed, *, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        # The profile check runs first so a too-small batch is named as such too
        # (the base class checks only an upper bound).
        if self.is_active:
            self.check_profile({k: np.asarray(v) for k, v in feed.items()})
        return super().infer(feed, outputs=outputs)
