"""Host memory in the place of the GPU, for the runner under the fake TensorRT.

:class:`HostMemory` has the methods of :class:`edgehal.runtime.tensorrt.CudaMemory`,
so the runner's binding and execution code runs unchanged on a machine
without a GPU. Its buffers are torch CPU tensors, registered here as "device
memory": the fake execution context reads and writes only addresses inside
them (:func:`holds`), as TensorRT needs device memory and would not take a
stray host pointer.

Not a test module: imported from tests/fakes by path, like fake_tensorrt.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
import torch

# Buffers handed out by HostMemory: address -> (bytes, tensor kept alive)
_DEVICE: dict[int, tuple[int, torch.Tensor]] = {}


def reset() -> None:
    """Forget every buffer: call at the start of every test."""
    _DEVICE.clear()


def holds(address: int, nbytes: int) -> bool:
    """Whether ``nbytes`` at ``address`` lie inside one buffer handed out as device memory."""
    for start, (size, _) in _DEVICE.items():
        if start <= address and address + nbytes <= start + size:
            return True
    return False


class HostMemory:
    """Host memory in the place of :class:`edgehal.runtime.tensorrt.CudaMemory` (same methods).

    Buffers are torch CPU tensors, registered as this fake's device memory so
    that the execution context accepts their addresses, and nothing else's. The
    stream is synchronous: the fake engine runs inside ``execute_async_v3``.
    """

    def __init__(self, device_index: int) -> None:
        self.device = torch.device("cpu")
        self.device_index = device_index

    @property
    def stream_handle(self) -> int:
        return 0x5EED  # any cudaStream_t; the fake runs synchronously

    def _register(self, tensor: torch.Tensor) -> torch.Tensor:
        _DEVICE[tensor.data_ptr()] = (tensor.numel() * tensor.element_size(), tensor)
        return tensor

    def upload(self, array: np.ndarray) -> torch.Tensor:
        return self._register(torch.from_numpy(np.array(array, copy=True, order="C")))

    def empty(self, shape: Sequence[int], dtype: str) -> torch.Tensor:
        # NaN-filled where it can be: an output the engine never wrote is visible
        buf = torch.from_numpy(np.empty(tuple(shape), dtype=dtype))
        if buf.is_floating_point():
            buf.fill_(float("nan"))
        return self._register(buf)

    def download(self, tensor: torch.Tensor) -> np.ndarray:
        return tensor.numpy().copy()

    def synchronize(self) -> None:
        pass

    def timer(self, call: Callable[[], object]) -> Callable[[], int]:
        def timed() -> int:
            t0 = time.perf_counter_ns()
            call()
            return time.perf_counter_ns() - t0

        return timed
