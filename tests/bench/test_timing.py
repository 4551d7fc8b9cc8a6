"""The timing method: warm-up, windows until count and duration, stability, statistics.

The clock is a parameter of :func:`measure`, so these tests drive a fake clock
that a real :class:`Runner` subclass advances by scripted durations: every
statistic is then exact, and no test depends on how fast this machine is.
"""

from __future__ import annotations

import functools
import gc

import numpy as np
import pytest

from edgehal.bench.options import BenchOptions
from edgehal.bench.timing import LatencyStats, measure, spread
from edgehal.runtime.base import Runner
from edgehal.tensors import TensorSpec

from .conftest import FakeClock

MS = 1_000_000  # ns


class ScriptedRunner(Runner):
    """A real runner whose i-th call takes ``durations_ms(i)`` on a fake clock."""

    name = "scripted"

    def __init__(self, clock: FakeClock, durations_ms, *, batch_dim: int = -1) -> None:
        super().__init__()
        self.clock = clock
        self.durations_ms = durations_ms
        self.batch_dim = batch_dim
        self.calls = 0

    def _activate(self) -> None:
        pass

    @property
    def manifest(self):
        return None

    def input_specs(self):
        return [TensorSpec("x", "float32", (self.batch_dim, 4))]

    def output_names(self):
        return ["y"]

    def _infer(self, feed, outputs):
        self.clock.now += int(round(self.durations_ms(self.calls) * MS))
        self.calls += 1
        return {"y": feed["x"].sum(axis=1, keepdims=True)}


def _quick(**kw) -> BenchOptions:
    # Real preemptions over fake-clock windows mean nothing: contention has its own tests.
    base = dict(warmup_runs=0, warmup_seconds=0.0, min_runs=6, min_seconds=0.0, windows=3, max_windows=3,
                stability_threshold=0.10, max_preemptions_per_s=None)
    base.update(kw)
    return BenchOptions(**base)


def _call(runner: ScriptedRunner, batch: int = 1):
    feed = {"x": np.ones((batch, 4), np.float32)}
    runner.activate()
    runner.infer(feed)      # validated once, then timed unchecked, like run_bench does
    runner.calls = 0
    runner.clock.now = 0
    return functools.partial(runner.infer, feed, outputs=["y"], check=False)


def test_constant_latency_gives_exact_statistics():
    clock = FakeClock()
    runner = ScriptedRunner(clock, lambda i: 2.0)
    m = measure(_call(runner, batch=4), options=_quick(), batch_size=4, clock=clock)
    s = m.stats
    assert s.runs == 6 and runner.calls == 6
    assert s.min_ms == s.median_ms == s.mean_ms == s.p99_ms == s.max_ms == 2.0 and s.std_ms == 0.0
    assert s.wall_s == pytest.approx(0.012)
    assert s.calls_per_s == pytest.approx(500.0) and s.throughput_per_s == pytest.approx(2000.0)
    assert m.stability.stable and m.stability.windows_run == 3
    assert m.stability.window_medians_ms == (2.0, 2.0, 2.0) and m.timer == "perf_counter_ns"


def test_percentiles_match_numpy_on_a_known_distribution():
    durations = [1.0, 2.0, 3.0, 4.0, 10.0]  # one slow call in five
    clock = FakeClock()
    runner = ScriptedRunner(clock, lambda i: durations[i % 5])
    m = measure(_call(runner), options=_quick(min_runs=15, stability_threshold=0.5), clock=clock)
    x = np.array(durations * 3)
    s = m.stats
    assert s.runs == 15
    assert (s.min_ms, s.max_ms) == (1.0, 10.0)
    assert s.mean_ms == pytest.approx(x.mean())
    assert s.median_ms == pytest.approx(np.percentile(x, 50))
    for q, got in ((90, s.p90_ms), (95, s.p95_ms), (99, s.p99_ms)):
        assert got == pytest.approx(np.percentile(x, q))
    assert s.std_ms == pytest.approx(x.std())
    assert s.min_ms <= s.median_ms <= s.p90_ms <= s.p95_ms <= s.p99_ms <= s.max_ms


def test_warmup_runs_until_both_count_and_time():
    # 1 ms calls: 3 runs but 10 ms of warm-up means 10 warm-up calls.
    clock = FakeClock()
    runner = ScriptedRunner(clock, lambda i: 1.0)
    m = measure(_call(runner), options=_quick(warmup_runs=3, warmup_seconds=0.010), clock=clock)
    assert runner.calls - m.stats.runs == 10
    # 20 runs but only 5 ms: the count wins.
    clock2 = FakeClock()
    runner2 = ScriptedRunner(clock2, lambda i: 1.0)
    m2 = measure(_call(runner2), options=_quick(warmup_runs=20, warmup_seconds=0.005), clock=clock2)
    assert runner2.calls - m2.stats.runs == 20


def test_timed_runs_until_both_min_runs_and_min_seconds():
    # Duration wins: 3 windows of at least 10 ms each with 1 ms calls.
    clock = FakeClock()
    m = measure(_call(ScriptedRunner(clock, lambda i: 1.0)), options=_quick(min_runs=3, min_seconds=0.030),
                clock=clock)
    assert m.stats.runs == 30 and m.stats.wall_s == pytest.approx(0.030)
    # Count wins: 30 runs in 3 windows even though 1 ms would be enough time.
    clock = FakeClock()
    m = measure(_call(ScriptedRunner(clock, lambda i: 1.0)), options=_quick(min_runs=30, min_seconds=0.001),
                clock=clock)
    assert m.stats.runs == 30


def test_windows_that_disagree_are_flagged_unstable():
    # 2 runs per window: windows at 1 ms, 1 ms, then 2 ms. Never settles within max_windows=3.
    clock = FakeClock()
    runner = ScriptedRunner(clock, lambda i: 1.0 if i < 4 else 2.0)
    m = measure(_call(runner), options=_quick(), clock=clock)
    st = m.stability
    assert not st.stable and st.windows_run == 3
    assert st.window_medians_ms == (1.0, 1.0, 2.0)
    assert st.latency_spread == pytest.approx(1.0) and st.throughput_spread == pytest.approx(1.0)


def test_measuring_continues_until_the_last_windows_agree():
    # Same drift, but up to 6 windows: windows 3..5 are all 2 ms, so it settles after window 5
    # and the statistics come from those three windows only.
    clock = FakeClock()
    runner = ScriptedRunner(clock, lambda i: 1.0 if i < 4 else 2.0)
    m = measure(_call(runner), options=_quick(max_windows=6), clock=clock)
    assert m.stability.stable and m.stability.windows_run == 5
    assert m.stats.runs == 6 and m.stats.min_ms == 2.0 and runner.calls == 10


def test_small_disagreement_within_the_threshold_is_stable():
    clock = FakeClock()
    per_window = [1.0, 1.05, 1.0]
    runner = ScriptedRunner(clock, lambda i: per_window[i // 2])
    m = measure(_call(runner), options=_quick(), clock=clock)
    assert m.stability.stable and m.stability.latency_spread == pytest.approx(0.05)


def test_throughput_disagreement_alone_flags_unstable():
    # Every call reports 1 ms (CUDA events) but the host loses 9 ms after the 5th call:
    # the latencies agree, the throughput of that window does not.
    clock = FakeClock()
    count = [0]

    def timed() -> int:
        count[0] += 1
        clock.now += MS + (9 * MS if count[0] == 5 else 0)
        return MS

    m = measure(timed_call=timed, options=_quick(), clock=clock)
    assert m.timer == "timed_call" and m.stats.median_ms == 1.0
    assert m.stability.latency_spread == 0.0 and m.stability.throughput_spread > 0.1
    assert not m.stability.stable


class ScriptedSwitches:
    """Counts 'involuntary context switches': ``per_window[i]`` more at the end of window i."""

    def __init__(self, per_window) -> None:
        self.per_window, self.reads, self.total = per_window, 0, 0

    def __call__(self) -> int:
        if self.reads % 2 == 1:  # the read after a window
            self.total += self.per_window[min(self.reads // 2, len(self.per_window) - 1)]
        self.reads += 1
        return self.total


def test_a_busy_machine_is_flagged_even_when_windows_agree():
    # Windows of 2 x 1 ms agree perfectly, but 10 preemptions per 2 ms window = 5000/s.
    clock = FakeClock()
    m = measure(_call(ScriptedRunner(clock, lambda i: 1.0)), options=_quick(max_preemptions_per_s=20.0),
                clock=clock, preemptions=ScriptedSwitches([10]))
    st = m.stability
    assert st.windows_agree and st.contended and not st.stable
    assert st.preemptions_per_s == pytest.approx(5000.0) and st.windows_run == 3
    assert st.reason == "busy: preempted 5000/s"


def test_contention_clears_and_measuring_continues():
    # Busy for the first two windows, then quiet: stable once the last three windows are quiet.
    clock = FakeClock()
    m = measure(_call(ScriptedRunner(clock, lambda i: 1.0)),
                options=_quick(max_preemptions_per_s=20.0, max_windows=8), clock=clock,
                preemptions=ScriptedSwitches([10, 10, 0, 0, 0]))
    assert m.stability.stable and m.stability.windows_run == 5 and m.stability.preemptions_per_s == 0.0


def test_a_few_preemptions_are_not_judged():
    # 4 switches in 6 ms is a high rate but too few to mean anything (below MIN_PREEMPTIONS).
    clock = FakeClock()
    m = measure(_call(ScriptedRunner(clock, lambda i: 1.0)), options=_quick(max_preemptions_per_s=20.0),
                clock=clock, preemptions=ScriptedSwitches([2, 1, 1]))
    assert m.stability.stable and not m.stability.contended
    # Without getrusage (not Unix) the check is skipped, not failed.
    m = measure(_call(ScriptedRunner(FakeClock(), lambda i: 1.0)), options=_quick(max_preemptions_per_s=20.0),
                clock=FakeClock(), preemptions=lambda: None)
    assert m.stability.preemptions_per_s is None and not m.stability.contended


def test_measure_needs_exactly_one_callable_and_restores_gc():
    with pytest.raises(TypeError):
        measure(options=_quick())
    clock = FakeClock()
    assert gc.isenabled()
    measure(_call(ScriptedRunner(clock, lambda i: 1.0)), options=_quick(), clock=clock)
    assert gc.isenabled()


def test_spread():
    assert spread([1.0, 1.1]) == pytest.approx(0.1)
    assert spread([2.0, 2.0, 2.0]) == 0.0
    assert spread([0.0, 0.0]) == 0.0 and spread([0.0, 1.0]) == float("inf")


def test_latency_stats_from_ns():
    s = LatencyStats.from_ns([1 * MS, 3 * MS], wall_ns=4 * MS, batch_size=2)
    assert (s.runs, s.min_ms, s.median_ms, s.max_ms) == (2, 1.0, 2.0, 3.0)
    assert s.calls_per_s == pytest.approx(500.0) and s.throughput_per_s == pytest.approx(1000.0)
    with pytest.raises(ValueError):
        LatencyStats.from_ns([], wall_ns=1, batch_size=1)
