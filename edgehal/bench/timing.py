"""The timing method of ``edgehal bench``: warm-up, windows, stability, statistics.

:func:`measure` is the harness. It knows nothing about artifacts or backends:
it times a zero-argument ``call`` on the host with ``perf_counter_ns`` (or a
``timed_call`` that measures itself: a runner's ``device_timer``) and
returns :class:`LatencyStats` and a :class:`Stability` verdict. The clock is
a parameter, so tests drive it deterministically. See :mod:`edgehal.bench`
for the method as a whole.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from edgehal.bench.options import BenchOptions

Clock = Callable[[], int]


# --------------------------------------------------------------------------
# Statistics


@dataclass(frozen=True)
class LatencyStats:
    """Latency in milliseconds over the kept windows; throughput over their wall time."""

    runs: int
    batch_size: int
    min_ms: float
    mean_ms: float
    median_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    std_ms: float
    wall_s: float
    throughput_per_s: float     # samples (batch items) per second of wall time
    calls_per_s: float

    @classmethod
    def from_ns(cls, latencies_ns: Sequence[int], *, wall_ns: int, batch_size: int) -> "LatencyStats":
        """Percentiles use numpy's default (linear interpolation between order statistics)."""
        x = np.asarray(latencies_ns, dtype=np.float64) / 1e6
        if x.size == 0:
            raise ValueError("no latencies")
        p50, p90, p95, p99 = np.percentile(x, [50, 90, 95, 99])
        wall_s = wall_ns / 1e9
        calls = x.size / wall_s if wall_s > 0 else float("inf")
        return cls(int(x.size), batch_size, float(x.min()), float(x.mean()), float(p50), float(p90),
                   float(p95), float(p99), float(x.max()), float(x.std()), wall_s,
                   calls * batch_size, calls)


@dataclass(frozen=True)
class Stability:
    """Whether the numbers can be trusted.

    ``windows_agree`` when the last windows' median latencies and throughputs
    each agree within ``threshold``; ``contended`` when this process was
    preempted (involuntary context switches) more than ``max_preemptions_per_s``
    during them, i.e. something else wanted the same cores. ``stable`` needs
    both: windows that agree on a busy machine agree about the load, which
    changes between runs, so such a result would not repeat.
    """

    window_medians_ms: tuple[float, ...]
    window_throughputs: tuple[float, ...]
    latency_spread: float          # max/min - 1 of the window medians
    throughput_spread: float       # max/min - 1 of the window throughputs
    threshold: float
    stable: bool
    windows_run: int
    windows_agree: bool = True
    preemptions_per_s: float | None = None
    contended: bool = False

    @property
    def reason(self) -> str:
        """Why the result is unstable, in a few words; empty when stable."""
        why = []
        if not self.windows_agree:
            why.append(f"windows disagree by {max(self.latency_spread, self.throughput_spread):.0%}")
        if self.contended:
            why.append(f"busy: preempted {self.preemptions_per_s:.0f}/s")
        return ", ".join(why)


@dataclass(frozen=True)
class Measurement:
    stats: LatencyStats
    stability: Stability
    timer: str


def spread(values: Sequence[float]) -> float:
    """``max / min - 1``: 0.1 means the largest is 10% above the smallest."""
    lo, hi = min(values), max(values)
    if lo <= 0:
        return 0.0 if hi <= 0 else float("inf")
    return hi / lo - 1.0


def involuntary_switches() -> int | None:
    """This process's involuntary context switches so far (None where getrusage is missing)."""
    try:
        import resource
    except ImportError:  # not on Unix
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


# Below this many preemptions in the kept windows the rate is not judged: a
# couple of kernel wake-ups in a short window is not a busy machine.
MIN_PREEMPTIONS = 5


def _window_summary(lat: Sequence[int], wall_ns: int, batch: int) -> tuple[float, float]:
    median_ms = float(np.median(np.asarray(lat, dtype=np.float64))) / 1e6
    thr = len(lat) * batch / (wall_ns / 1e9) if wall_ns > 0 else float("inf")
    return median_ms, thr


# --------------------------------------------------------------------------
# The timing loop


def _run_host(call: Callable[[], object], clock: Clock, min_runs: int, min_ns: int) -> tuple[list[int], int]:
    """Call until both ``min_runs`` calls and ``min_ns`` have passed; per-call latencies in ns."""
    lat: list[int] = []
    append = lat.append
    start = clock()
    deadline = start + min_ns
    t1 = start
    while True:
        t0 = clock()
        call()
        t1 = clock()
        append(t1 - t0)
        if t1 >= deadline and len(lat) >= min_runs:
            return lat, t1 - start


def _run_timed(timed_call: Callable[[], int], clock: Clock, min_runs: int,
               min_ns: int) -> tuple[list[int], int]:
    """Like :func:`_run_host`, but ``timed_call`` measures itself (on the device) and returns ns."""
    lat: list[int] = []
    append = lat.append
    start = clock()
    deadline = start + min_ns
    while True:
        append(timed_call())
        t1 = clock()
        if t1 >= deadline and len(lat) >= min_runs:
            return lat, t1 - start


def measure(call: Callable[[], object] | None = None, *, options: BenchOptions, batch_size: int = 1,
            timed_call: Callable[[], int] | None = None, clock: Clock = time.perf_counter_ns,
            on_window: Callable[[int, Stability | None], None] | None = None,
            timer: str | None = None,
            preemptions: Callable[[], int | None] = involuntary_switches) -> Measurement:
    """Warm up, then time windows until the last ``options.windows`` agree (or ``max_windows``).

    Give ``call`` (timed on the host with ``clock``) or ``timed_call`` (returns
    its own duration in ns, e.g. a runner's ``device_timer``; ``clock`` then only tracks
    the windows' wall time). ``on_window(n, stability)`` is called after each
    window for progress display. ``preemptions`` counts involuntary context
    switches (a parameter so tests can script contention).
    """
    if (call is None) == (timed_call is None):
        raise TypeError("give exactly one of call and timed_call")
    options.validate()
    if call is not None:
        def run(min_runs: int, min_ns: int) -> tuple[list[int], int]:
            return _run_host(call, clock, min_runs, min_ns)
    else:
        def run(min_runs: int, min_ns: int) -> tuple[list[int], int]:
            return _run_timed(timed_call, clock, min_runs, min_ns)

    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        if options.warmup_runs > 0 or options.warmup_seconds > 0:
            run(options.warmup_runs, int(options.warmup_seconds * 1e9))
        kept: list[tuple[list[int], int, float, float, int | None]] = []
        k = options.windows
        limit = options.max_preemptions_per_s
        stability: Stability | None = None
        for n in range(1, options.max_windows + 1):
            p0 = preemptions()
            lat, wall = run(options.window_runs, options.window_ns)
            p1 = preemptions()
            switched = p1 - p0 if p0 is not None and p1 is not None else None
            kept.append((lat, wall, *_window_summary(lat, wall, batch_size), switched))
            kept = kept[-k:]
            if len(kept) == k:
                medians = tuple(w[2] for w in kept)
                thrs = tuple(w[3] for w in kept)
                ls, ts = spread(medians), spread(thrs)
                agree = ls <= options.stability_threshold and ts <= options.stability_threshold
                rate = contended = None
                if all(w[4] is not None for w in kept):
                    count = sum(w[4] for w in kept)
                    wall_s = sum(w[1] for w in kept) / 1e9
                    rate = count / wall_s if wall_s > 0 else 0.0
                    contended = limit is not None and count >= MIN_PREEMPTIONS and rate > limit
                stability = Stability(medians, thrs, ls, ts, options.stability_threshold,
                                      agree and not contended, n, agree, rate, bool(contended))
            if on_window is not None:
                on_window(n, stability)
            if stability is not None and stability.stable:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    assert stability is not None  # max_windows >= windows
    all_lat = [x for w in kept for x in w[0]]
    stats = LatencyStats.from_ns(all_lat, wall_ns=sum(w[1] for w in kept), batch_size=batch_size)
    return Measurement(stats, stability, timer or ("perf_counter_ns" if call is not None else "timed_call"))
