"""Dynamic batching: concurrent requests to one model version, one run of its runner.

Requests wait in a bounded queue. One worker per model version takes the
request at the head, adds every queued request that still fits under
``max_batch_size`` (samples, not requests), and, when ``max_queue_delay_s``
is above zero and the batch is not full, waits up to that long for more. It
then concatenates the inputs, runs the model once, and splits the outputs
back along the batch axis, each request getting views of its own rows.

With a delay of zero the batcher is greedy: it never waits, and batches form
from the requests that arrived while the previous run was busy. That keeps a
lone client's latency at one run while a loaded server still batches, which
is why zero is the default; a delay trades latency for fuller batches.

A full queue refuses at once (``Unavailable``, HTTP 503) instead of growing.
``close()`` refuses new work and finishes everything already queued.

Each run is timed in three stages (:class:`BatchTimes`: concatenate, run,
split) with one ``perf_counter_ns`` between stages; a request that passes a
:class:`RequestTimes` learns which run answered it, for the statistics
extension's queue and compute times.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from concurrent.futures import Executor, ThreadPoolExecutor
from time import perf_counter_ns
from typing import Callable, Mapping

import numpy as np

from edgehal.serve.protocol import Unavailable

log = logging.getLogger("edgehal.serve")

RunFn = Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]


class BatchTimes:
    """One model run: its samples, when it started (``perf_counter_ns``) and the nanoseconds
    spent concatenating the inputs, running the model, and splitting the outputs."""

    __slots__ = ("size", "start_ns", "input_ns", "infer_ns", "output_ns")

    def __init__(self, size: int, start_ns: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        self.size = size
        self.start_ns = start_ns
        self.input_ns = input_ns
        self.infer_ns = infer_ns
        self.output_ns = output_ns


class RequestTimes:
    """Filled by the batcher once the request's run is done: ``batch`` is that run's times
    (shared by every request in it); None until then, and for a run that failed."""

    __slots__ = ("batch",)

    def __init__(self) -> None:
        self.batch: BatchTimes | None = None


class _Item:
    __slots__ = ("inputs", "n", "future", "key", "times")

    def __init__(self, inputs: dict[str, np.ndarray], n: int, future: asyncio.Future, key: object,
                 times: RequestTimes | None) -> None:
        self.inputs = inputs
        self.n = n
        self.future = future
        self.key = key
        self.times = times


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


class DynamicBatcher:
    """Queue + worker for one model version; ``name`` labels it in errors and thread names.

    ``run`` executes one batch and blocks; it is called in a one-thread executor
    (so the event loop keeps serving while the model runs) unless
    ``inline`` is true. ``max_batch_size`` 0 means the model has no batch
    dimension: every request runs alone. ``dynamic=False`` also runs every
    request alone, still one at a time through the queue. ``shape_key``
    must be true when a non-batch dimension is dynamic, so only requests of
    equal shapes are concatenated. ``on_batch(times)`` is called with each successful run's
    :class:`BatchTimes`.
    """

    def __init__(self, run: RunFn, *, name: str, max_batch_size: int, dynamic: bool,
                 max_queue_delay_s: float, max_queue_size: int, shape_key: bool = False,
                 inline: bool = False, on_batch: Callable[[BatchTimes], None] | None = None) -> None:
        if max_queue_size < 1:
            raise ValueError("max_queue_size must be at least 1")
        self.name = name
        self._run = run
        self.max_batch_size = max_batch_size
        self.batching = dynamic and max_batch_size > 1
        self.max_queue_delay_s = max(0.0, float(max_queue_delay_s))
        self.max_queue_size = max_queue_size
        self._shape_key = shape_key
        self._on_batch = on_batch
        self._executor: Executor | None = None if inline else ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="edgehal-batcher")
        self._pending: collections.deque[_Item] = collections.deque()
        self._waiter: asyncio.Future | None = None
        self._closing = False
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._worker(), name=f"batcher {self.name}")

    async def close(self) -> None:
        """Refuse new requests, finish the queued ones, stop the worker."""
        self._closing = True
        if self._waiter is not None:
            _wake(self._waiter)
        if self._task is not None:
            await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    @property
    def depth(self) -> int:
        return len(self._pending)

    # -- request side ------------------------------------------------------
    def submit(self, inputs: dict[str, np.ndarray], n: int, times: RequestTimes | None = None) -> asyncio.Future:
        """Queue one request of ``n`` samples; the future resolves to its outputs. ``times``, when
        given, gets the times of the run that answered it before the future resolves."""
        if self._closing or self._task is None:
            raise Unavailable(self.name, "is not accepting requests (shutting down or not started)")
        if len(self._pending) >= self.max_queue_size:
            raise Unavailable(self.name, f"is overloaded: its queue of {self.max_queue_size} is full",
                              "retry later (the queue size is --max-queue-size or the model's config)")
        assert self._loop is not None
        future = self._loop.create_future()
        key = tuple(a.shape[1:] for a in inputs.values()) if self._shape_key else None
        self._pending.append(_Item(inputs, n, future, key, times))
        if self._waiter is not None:
            _wake(self._waiter)
        return future

    # -- worker ------------------------------------------------------------
    async def _wait(self, timeout: float | None) -> None:
        assert self._loop is not None
        self._waiter = waiter = self._loop.create_future()
        handle = self._loop.call_later(timeout, _wake, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()

    def _fill(self, items: list[_Item], total: int) -> int:
        pending, limit, key = self._pending, self.max_batch_size, items[0].key
        while pending and total + pending[0].n <= limit and pending[0].key == key:
            item = pending.popleft()
            items.append(item)
            total += item.n
        return total

    async def _worker(self) -> None:
        assert self._loop is not None
        loop, pending = self._loop, self._pending
        while True:
            if not pending:
                if self._closing:
                    return
                await self._wait(None)
                continue
            first = pending.popleft()
            items, total = [first], first.n
            if self.batching:
                total = self._fill(items, total)
                if total < self.max_batch_size and self.max_queue_delay_s > 0 and not self._closing:
                    deadline = loop.time() + self.max_queue_delay_s
                    while total < self.max_batch_size and not self._closing:
                        remaining = deadline - loop.time()
                        if remaining <= 0:
                            break
                        if not pending:
                            await self._wait(remaining)
                            if not pending:
                                continue
                        before = total
                        total = self._fill(items, total)
                        if total == before:  # the next request does not fit this batch
                            break
            await self._execute(items, total)
            if self._executor is None:
                # inline runs never yield: let the answered requests go out, and new ones
                # arrive, before the next batch is taken
                await asyncio.sleep(0)

    async def _execute(self, items: list[_Item], total: int) -> None:
        start = perf_counter_ns()
        try:
            if len(items) == 1:
                feed = items[0].inputs
            else:
                feed = {name: np.concatenate([it.inputs[name] for it in items]) for name in items[0].inputs}
            ran = perf_counter_ns()
            if self._executor is None:
                out = self._run(feed)
            else:
                assert self._loop is not None
                out = await self._loop.run_in_executor(self._executor, self._run, feed)
        except Exception as exc:  # handed to each request; the app's table maps it
            for it in items:
                if not it.future.done():
                    it.future.set_exception(exc)
            return
        done = perf_counter_ns()
        # The output time is set after the futures resolve: their requests resume only once
        # this worker yields, and read it then.
        times = BatchTimes(total, start, ran - start, done - ran, 0)
        if len(items) == 1:
            it = items[0]
            if it.times is not None:
                it.times.batch = times
            if not it.future.done():
                it.future.set_result(out)
        else:
            offset = 0
            for it in items:
                end = offset + it.n
                if it.times is not None:
                    it.times.batch = times
                if not it.future.done():
                    it.future.set_result({k: v[offset:end] for k, v in out.items()})
                offset = end
        times.output_ns = perf_counter_ns() - done
        if self._on_batch is not None:
            self._on_batch(times)
