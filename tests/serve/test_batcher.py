"""The dynamic batcher on its own, with a real (numpy) model function."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from edgehal.serve.batcher import BatchTimes, DynamicBatcher, RequestTimes
from edgehal.serve.protocol import Unavailable


class Model:
    """y = 2x and the row sums; records every batch it was given."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.delay = delay
        self.fail = fail

    def __call__(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feed["x"]
        self.batches.append(x.shape[0])
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("model exploded")
        return {"y": x * 2, "s": x.reshape(x.shape[0], -1).sum(axis=1)}


def make(model: Model, **kw) -> DynamicBatcher:
    opts = dict(name="model 'm' version 1", max_batch_size=8, dynamic=True, max_queue_delay_s=0.0,
                max_queue_size=64, inline=True)
    opts.update(kw)
    return DynamicBatcher(model, **opts)


def feed(i: int, n: int = 1, width: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.full((n, width), float(i), np.float32)}


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "thread"])
def test_concurrent_requests_share_a_run_and_get_their_own_rows(inline):
    model = Model()

    async def main():
        b = make(model, inline=inline)
        b.start()
        futures = [b.submit(feed(i), 1) for i in range(6)]
        results = await asyncio.gather(*futures)
        await b.close()
        return results

    results = asyncio.run(main())
    assert model.batches == [6]
    for i, r in enumerate(results):
        np.testing.assert_array_equal(r["y"], np.full((1, 3), 2.0 * i, np.float32))
        np.testing.assert_array_equal(r["s"], [3.0 * i])


def test_batches_never_exceed_max_and_requests_are_never_split():
    model = Model()

    async def main():
        b = make(model, max_batch_size=8)
        b.start()
        futures = [b.submit(feed(i, n=3), 3) for i in range(7)]
        results = await asyncio.gather(*futures)
        await b.close()
        return results

    results = asyncio.run(main())
    assert model.batches == [6, 6, 6, 3]
    assert [r["y"].shape for r in results] == [(3, 3)] * 7
    assert all((r["y"] == 2.0 * i).all() for i, r in enumerate(results))


@pytest.mark.parametrize("kw", [{"dynamic": False}, {"max_batch_size": 0}], ids=["off", "no-batch-dim"])
def test_without_batching_every_request_runs_alone(kw):
    model = Model()

    async def main():
        b = make(model, **kw)
        b.start()
        await asyncio.gather(*[b.submit(feed(i), 1) for i in range(4)])
        await b.close()

    asyncio.run(main())
    assert model.batches == [1, 1, 1, 1]


def test_queue_delay_waits_for_late_requests():
    model = Model()

    async def main(delay: float):
        model.batches.clear()
        b = make(model, max_queue_delay_s=delay)
        b.start()
        first = b.submit(feed(0), 1)
        await asyncio.sleep(0.02)
        second = b.submit(feed(1), 1)
        await asyncio.gather(first, second)
        await b.close()
        return list(model.batches)

    assert asyncio.run(main(0.0)) == [1, 1]
    assert asyncio.run(main(0.5)) == [2]


def test_queue_delay_ends_early_when_the_batch_is_full():
    model = Model()

    async def main():
        b = make(model, max_batch_size=2, max_queue_delay_s=5.0)
        b.start()
        t0 = time.perf_counter()
        await asyncio.gather(b.submit(feed(0), 1), b.submit(feed(1), 1))
        elapsed = time.perf_counter() - t0
        await b.close()
        return elapsed

    assert asyncio.run(main()) < 2.0
    assert model.batches == [2]


def test_full_queue_refuses_at_once_and_the_rest_still_complete():
    model = Model(delay=0.05)

    async def main():
        b = make(model, max_queue_size=2, dynamic=False, inline=False)
        b.start()
        accepted = [b.submit(feed(0), 1)]
        await asyncio.sleep(0.01)  # the first is now running; two may wait
        accepted += [b.submit(feed(1), 1), b.submit(feed(2), 1)]
        assert b.depth == 2
        with pytest.raises(Unavailable, match="is overloaded: its queue of 2 is full"):
            b.submit(feed(3), 1)
        results = await asyncio.gather(*accepted)
        await b.close()
        return results

    results = asyncio.run(main())
    assert [float(r["s"][0]) for r in results] == [0.0, 3.0, 6.0]


def test_close_finishes_queued_requests_then_refuses():
    model = Model(delay=0.01)

    async def main():
        b = make(model, dynamic=False, inline=False)
        b.start()
        futures = [b.submit(feed(i), 1) for i in range(5)]
        await b.close()
        assert all(f.done() and not f.exception() for f in futures)
        with pytest.raises(Unavailable, match="is not accepting requests"):
            b.submit(feed(9), 1)

    asyncio.run(main())
    assert model.batches == [1] * 5


def test_a_failing_run_fails_its_requests_and_the_worker_goes_on():
    model = Model(fail=True)

    async def main():
        b = make(model)
        b.start()
        futures = [b.submit(feed(i), 1) for i in range(3)]
        results = await asyncio.gather(*futures, return_exceptions=True)
        model.fail = False
        ok = await b.submit(feed(4), 1)
        await b.close()
        return results, ok

    results, ok = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)
    assert float(ok["s"][0]) == 12.0


def test_requests_of_different_shapes_are_not_concatenated():
    model = Model()

    async def main():
        b = make(model, shape_key=True)
        b.start()
        futures = [b.submit(feed(0, width=3), 1), b.submit(feed(1, width=3), 1),
                   b.submit(feed(2, width=5), 1), b.submit(feed(3, width=5), 1)]
        results = await asyncio.gather(*futures)
        await b.close()
        return results

    results = asyncio.run(main())
    assert model.batches == [2, 2]
    assert [r["y"].shape[1] for r in results] == [3, 3, 5, 5]


def test_requests_sharing_a_run_get_its_times_and_on_batch_sees_each_run():
    model = Model()
    runs: list[BatchTimes] = []

    async def main():
        b = make(model, on_batch=runs.append)
        b.start()
        times = [RequestTimes() for _ in range(3)]
        await asyncio.gather(*[b.submit(feed(i), 1, t) for i, t in enumerate(times)])
        await b.close()
        return times

    times = asyncio.run(main())
    assert model.batches == [3] and len(runs) == 1
    assert all(t.batch is runs[0] for t in times)
    run = runs[0]
    assert run.size == 3 and run.start_ns > 0 and run.infer_ns > 0
    assert run.input_ns >= 0 and run.output_ns >= 0


def test_a_failed_run_leaves_the_request_times_empty():
    runs: list[BatchTimes] = []

    async def main():
        b = make(Model(fail=True), on_batch=runs.append)
        b.start()
        times = RequestTimes()
        with pytest.raises(RuntimeError):
            await b.submit(feed(0), 1, times)
        await b.close()
        return times

    assert asyncio.run(main()).batch is None and runs == []
