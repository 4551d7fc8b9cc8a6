"""TensorRT runner: loads, binds and runs the engines ``edgehal build-engine`` writes.

Loading checks the engine's provenance sidecar against this machine and only
then deserialises it (:func:`load_engine`); a shape outside the engine's
optimisation profile is refused before TensorRT sees it, and so is an engine
built with another TensorRT major (10 and 11 are supported; engines never
load across majors). Binding and running use the names TensorRT 10 and 11
share: tensors by name (no binding indices), ``set_input_shape``,
``set_tensor_address`` and ``execute_async_v3`` on the runner's own CUDA
stream. Device memory is torch CUDA tensors
(:class:`CudaMemory`): torch is always installed, so no other CUDA binding is
needed. Outputs are reported in manifest order, every head of a kept-aux engine.

``tensorrt`` and CUDA are touched only on activation: importing this module
and constructing a runner work on any machine.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edgehal.artifact import read_engine_sidecar
from edgehal.errors import EdgehalError
from edgehal.export.graph import manifest_order
from edgehal.export.tensorrt.library import import_tensorrt, make_logger, tensorrt_major
from edgehal.export.tensorrt.profile import check_profile
from edgehal.export.tensorrt.provenance import (
    EngineProvenance,
    check_compatibility,
    check_engine_file,
    host_info,
)
from edgehal.manifest import HeadManifest
from edgehal.runtime.base import Runner, check_feed
from edgehal.tensors import TensorSpec, dtype_from_tensorrt

# --------------------------------------------------------------------------
# Loading


@dataclass
class LoadedEngine:
    """A deserialised engine and what keeps it alive."""

    engine: Any
    runtime: Any
    provenance: EngineProvenance
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]  # in the engine's order; the runner reports them in manifest order
    warnings: tuple[str, ...] = ()
    logger: Any = field(default=None, repr=False)


def load_engine(path: str | Path, *, device_index: int = 0) -> LoadedEngine:
    """Check the sidecar against this machine, then deserialise the engine.

    An engine from another TensorRT major, version or GPU is refused here
    (:func:`~edgehal.export.tensorrt.provenance.check_compatibility`), with
    what differs and the ``edgehal build-engine`` line that rebuilds it,
    before TensorRT ever sees it; the major comes from the sidecar, or from
    its version string for sidecars written before it was recorded.
    """
    p = Path(path)
    trt = import_tensorrt()
    tensorrt_major(trt)  # an unsupported major is one clear error
    provenance = read_engine_sidecar(p)
    check_engine_file(provenance, p)
    host = host_info(device_index=device_index)
    softer = check_compatibility(provenance, host, engine=p)
    import torch

    torch.cuda.set_device(device_index)  # TensorRT deserialises onto the current CUDA device
    logger = make_logger(trt)
    runtime = trt.Runtime(logger)
    if provenance.version_compatible:
        runtime.engine_host_code_allowed = True  # version-compatible plans embed the lean runtime
    if provenance.dla_core is not None:
        runtime.DLA_core = provenance.dla_core
    engine = runtime.deserialize_cuda_engine(p.read_bytes())
    if engine is None:
        raise EdgehalError(f"TensorRT engine {p.name}", f"TensorRT could not load it ({logger.last_error()})",
                           f"rebuild the engine on the target with `{provenance.rebuild_command(p)}`")
    inputs, outputs = engine_io(trt, engine, what=f"TensorRT engine {p.name}")
    return LoadedEngine(engine, runtime, provenance, inputs, outputs, tuple(softer), logger)


def engine_io(trt: Any, engine: Any, *, what: str = "TensorRT engine"
              ) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The engine's input and output tensors, by name (TensorRT 10 has no binding indices).

    A type the runner cannot copy between numpy and the device is refused
    here, before any run: one without a numpy type (FP8, INT4, FP4), and
    BF16, which numpy has (through ml_dtypes) but torch cannot take from it.
    """
    inputs, outputs = [], []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        tensor = f"{what}: {'input' if is_input else 'output'} {name!r}"
        dtype = dtype_from_tensorrt(engine.get_tensor_dtype(name), what=tensor)
        dtype.require_numpy(what=tensor)
        if dtype.numpy == "bfloat16":
            raise EdgehalError(tensor, "is BF16, which the runner cannot copy between numpy and the GPU "
                               "(torch takes no numpy bfloat16)", "an engine with FP32 or FP16 inputs and outputs")
        spec = TensorSpec(name, dtype, tuple(int(d) for d in engine.get_tensor_shape(name)))
        (inputs if is_input else outputs).append(spec)
    return tuple(inputs), tuple(outputs)


def create_context(loaded: LoadedEngine) -> Any:
    context = loaded.engine.create_execution_context()
    if context is None:
        raise EdgehalError("TensorRT engine", f"could not create an execution context ({loaded.logger.last_error()})",
                           "free GPU memory, or build the engine with a smaller --max-batch")
    return context


# --------------------------------------------------------------------------
# Device memory


class CudaMemory:
    """The device buffers and the CUDA stream of one runner, as torch CUDA tensors.

    Everything the runner does with CUDA goes through here, so binding and
    execution are one code path whatever holds the memory (the tests run it
    with host memory under a fake TensorRT, which has no GPU to use).
    """

    def __init__(self, device_index: int) -> None:
        import torch

        self.device = torch.device("cuda", device_index)
        self.stream = torch.cuda.Stream(device=self.device)

    @property
    def stream_handle(self) -> int:
        """The ``cudaStream_t`` that ``execute_async_v3`` enqueues on."""
        return int(self.stream.cuda_stream)

    def upload(self, array: np.ndarray) -> Any:
        """A device copy of ``array``, enqueued on this stream."""
        import torch

        with torch.cuda.stream(self.stream):
            return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def empty(self, shape: Sequence[int], dtype: str) -> Any:
        """An uninitialised device buffer of numpy dtype ``dtype``."""
        import torch

        with torch.cuda.stream(self.stream):
            return torch.empty(tuple(shape), dtype=torch_dtype(dtype), device=self.device)

    def download(self, tensor: Any) -> np.ndarray:
        """A host copy of a device buffer; call after :meth:`synchronize`."""
        return tensor.cpu().numpy()

    def synchronize(self) -> None:
        self.stream.synchronize()

    def timer(self, call: Callable[[], object]) -> Callable[[], int]:
        """``call`` between two CUDA events on this stream; each run returns the device time in ns."""
        import torch

        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)

        def timed() -> int:
            start.record(self.stream)
            call()
            end.record(self.stream)
            end.synchronize()
            return int(start.elapsed_time(end) * 1e6)

        return timed


def torch_dtype(numpy_dtype: str) -> Any:
    """The torch dtype of a numpy dtype name (``float32`` -> ``torch.float32``)."""
    import torch

    return torch.from_numpy(np.empty(0, dtype=numpy_dtype)).dtype


# --------------------------------------------------------------------------
# Binding and execution


def set_inputs(loaded: LoadedEngine, context: Any, feed: Mapping[str, Any]) -> None:
    """Give TensorRT each input's shape and address (``feed``: device tensors by input name)."""
    for name, tensor in feed.items():
        if not context.set_input_shape(name, tuple(tensor.shape)):
            raise EdgehalError(f"TensorRT engine: input {name!r}",
                               f"shape {tuple(tensor.shape)} is outside the engine's profile",
                               "a shape inside the profile recorded in the engine's sidecar")
        _set_address(loaded, context, name, tensor)


def _set_address(loaded: LoadedEngine, context: Any, name: str, tensor: Any) -> None:
    if not context.set_tensor_address(name, tensor.data_ptr()):
        raise EdgehalError(f"TensorRT engine: tensor {name!r}",
                           f"TensorRT refused its address ({loaded.logger.last_error()})")


def bind(loaded: LoadedEngine, context: Any, feed: Mapping[str, Any], *,
         outputs: Sequence[TensorSpec], memory: CudaMemory) -> dict[str, Any]:
    """Set input shapes and every I/O tensor's address; returns the output buffers.

    Each output gets a buffer of the shape TensorRT infers from the input
    shapes (TensorRT writes them all; the caller picks). ``feed`` and the
    returned buffers must outlive the run.
    """
    set_inputs(loaded, context, feed)
    results: dict[str, Any] = {}
    for out in outputs:
        shape = tuple(int(d) for d in context.get_tensor_shape(out.name))
        results[out.name] = memory.empty(shape, out.dtype)
        _set_address(loaded, context, out.name, results[out.name])
    return results


def rebind(loaded: LoadedEngine, context: Any, feed: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    """Point the context at buffers :func:`bind` made earlier (another run may have bound its own since)."""
    set_inputs(loaded, context, feed)
    for name, buf in results.items():
        _set_address(loaded, context, name, buf)


def enqueue(loaded: LoadedEngine, context: Any, stream_handle: int) -> None:
    """Enqueue one run on a CUDA stream; returns without synchronising."""
    if not context.execute_async_v3(stream_handle):
        raise EdgehalError("TensorRT engine", f"execution failed ({loaded.logger.last_error()})")


def execute(loaded: LoadedEngine, context: Any, feed: Mapping[str, Any], *,
            outputs: Sequence[TensorSpec], memory: CudaMemory) -> dict[str, Any]:
    """Bind, run on the memory's stream and wait: device tensors in, device tensors out."""
    results = bind(loaded, context, feed, outputs=outputs, memory=memory)
    enqueue(loaded, context, memory.stream_handle)
    memory.synchronize()
    return results


# --------------------------------------------------------------------------
# The runner


class TensorRTRunner(Runner):
    """Runs a TensorRT engine on CUDA device ``device_index`` (defaults to 0)."""

    name = "tensorrt"

    def __init__(self, path: str | Path, *, device_index: int = 0) -> None:
        super().__init__()
        self.path = Path(path)
        self.device_index = device_index
        self.what = f"TensorRT engine {self.path.name}"
        self._loaded: LoadedEngine | None = None
        self._context: Any = None
        self._memory: CudaMemory | None = None
        self._outputs: tuple[TensorSpec, ...] = ()
        self._provenance: EngineProvenance | None = None

    # -- lifecycle ---------------------------------------------------------
    def _activate(self) -> None:
        if not self.path.is_file():
            raise EdgehalError(self.what, "file not found")
        loaded = load_engine(self.path, device_index=self.device_index)
        for message in loaded.warnings:
            warnings.warn(message, stacklevel=3)
        self._outputs = manifest_order(loaded.outputs, loaded.provenance.manifest, what=self.what)
        self._memory = CudaMemory(self.device_index)
        self._context = create_context(loaded)
        self._loaded = loaded
        self._provenance = loaded.provenance

    def _deactivate(self) -> None:
        # Context before engine before runtime: TensorRT's own teardown order.
        self._context = None
        self._memory = None
        self._loaded = None

    # -- metadata ----------------------------------------------------------
    @property
    def provenance(self) -> EngineProvenance | None:
        return self._provenance

    @property
    def precision(self) -> str:
        """The engine's precision (fp16 for an fp16 engine built from an fp32 ONNX), from its sidecar:
        known before activation, as for every runner."""
        provenance = self._provenance or read_engine_sidecar(self.path)
        return provenance.precision

    @property
    def device(self) -> str:
        return f"cuda:{self.device_index}"

    @property
    def metadata(self):
        """The source ONNX's edgehal metadata (preprocessing, metrics, ...) with the
        engine's precision, so parity applies the engine's tolerances; or None."""
        return self._provenance.metadata if self._provenance else None

    @property
    def manifest(self) -> HeadManifest | None:
        return self._provenance.manifest if self._provenance else None

    def input_specs(self) -> list[TensorSpec]:
        return list(self._loaded.inputs)

    def output_specs(self) -> list[TensorSpec]:
        return list(self._outputs)

    def output_names(self) -> list[str]:
        return [t.name for t in self._outputs]

    @property
    def max_batch(self) -> int | None:
        batch = self._provenance.batch_range if self._provenance else None
        return batch[1] if batch else None

    # -- inference ---------------------------------------------------------
    def check_profile(self, feed: Mapping[str, Any]) -> None:
        """A shape (batch or another dimension) outside the profile is an EdgehalError before TensorRT sees it."""
        if self._provenance is not None:
            check_profile(self._provenance.profiles, {k: np.shape(v) for k, v in feed.items()}, what=self.what)

    def infer(self, feed: Mapping[str, np.ndarray], *, outputs: Sequence[str] | None = None,
              check: bool = True) -> dict[str, np.ndarray]:
        # The profile check runs first so a too-small batch is named as such too
        # (the base class checks only an upper bound).
        if check and self.is_active:
            self.check_profile(feed)
        return super().infer(feed, outputs=outputs, check=check)

    def _infer(self, feed: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        memory = self._memory
        device_feed = {name: memory.upload(arr) for name, arr in feed.items()}
        results = execute(self._loaded, self._context, device_feed, outputs=self._outputs, memory=memory)
        return {name: memory.download(results[name]) for name in outputs}

    def device_timer(self, feed: Mapping[str, np.ndarray], *,
                     outputs: Sequence[str] | None = None) -> Callable[[], int]:
        """``execute_async_v3`` between two CUDA events on the runner's stream; ns per call.

        ``feed`` is checked and copied to the GPU once, and the output buffers
        are allocated once: a call times the engine alone, without copies.
        Each call binds those buffers again before the first event, so an
        ``infer`` in between (which binds its own) does not disturb it.
        ``outputs`` is checked like ``infer``'s; TensorRT computes every
        output either way, into the device buffers the callable keeps as
        ``buffers`` (by output name), for a caller that wants to look.
        """
        self._require_active()
        self._output_list(outputs)
        self.check_profile(feed)
        checked = check_feed(feed, self.input_specs(), max_batch=self.max_batch, what=f"runner {self.name}")
        memory, loaded, context = self._memory, self._loaded, self._context
        inputs = {name: memory.upload(arr) for name, arr in checked.items()}
        buffers = bind(loaded, context, inputs, outputs=self._outputs, memory=memory)
        memory.synchronize()

        def run() -> None:
            enqueue(loaded, context, memory.stream_handle)

        timed_run = memory.timer(run)

        def timed() -> int:
            rebind(loaded, context, inputs, buffers)
            return timed_run()

        timed.buffers = buffers  # type: ignore[attr-defined]  # the outputs of the last call, on the device
        return timed
