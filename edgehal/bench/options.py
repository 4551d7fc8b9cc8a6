"""What decides how ``edgehal bench`` runs: :class:`BenchOptions`, checked before any work."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from edgehal.errors import EdgehalError
from edgehal.runtime.loader import BACKEND_SUFFIXES

#: Backend names ``open_runner`` understands, and the artifact suffixes each runs.
BACKENDS = BACKEND_SUFFIXES


@dataclass(frozen=True)
class BenchOptions:
    """Everything that decides how a benchmark runs, checked by :meth:`validate`.

    ``backends`` defaults to the default backend of each artifact's type;
    ``threads`` to the backend's own choice; ``power`` (tegrastats sampling)
    to on when a Jetson with tegrastats is detected. ``max_preemptions_per_s``
    (None: not checked) marks a result unstable when the process was preempted
    more often than that: other work was competing for its cores.
    """

    backends: tuple[str, ...] | None = None
    batch_sizes: tuple[int, ...] = (1,)
    threads: int | None = None
    device: str | None = None
    warmup_runs: int = 10
    warmup_seconds: float = 1.0
    min_runs: int = 100
    min_seconds: float = 3.0
    windows: int = 3
    stability_threshold: float = 0.10
    max_windows: int = 10
    # An idle 2-core cloud VM here showed 28-48 involuntary switches/s from the hypervisor alone;
    # with one competing job, 100-120/s. 75 separates the two.
    max_preemptions_per_s: float | None = 75.0
    power: bool | None = None
    tegrastats_interval_ms: int = 100
    seed: int = 0
    note: str = ""

    def validate(self) -> "BenchOptions":
        """Return self, or raise :class:`EdgehalError` naming the first bad value."""
        def need(ok: bool, what: str, got: object, expected: str) -> None:
            if not ok:
                raise EdgehalError(f"bench option {what}", f"{got!r} is not allowed", expected)

        if self.backends is not None:
            need(len(self.backends) > 0, "--backend", self.backends, "at least one backend")
            for b in self.backends:
                if b not in BACKENDS:
                    raise EdgehalError(f"backend {b!r}", "is not a backend", f"one of {', '.join(BACKENDS)}")
        need(len(self.batch_sizes) > 0, "--batch-sizes", self.batch_sizes, "at least one batch size")
        for b in self.batch_sizes:
            need(isinstance(b, int) and not isinstance(b, bool) and b >= 1, "--batch-sizes", b,
                 "positive integers, e.g. 1,8,64")
        need(len(set(self.batch_sizes)) == len(self.batch_sizes), "--batch-sizes", self.batch_sizes,
             "each batch size once")
        need(self.threads is None or (isinstance(self.threads, int) and self.threads >= 1),
             "--threads", self.threads, "a positive integer, or leave it out for the backend's default")
        need(_is_int(self.warmup_runs) and self.warmup_runs >= 0, "--warmup-runs", self.warmup_runs,
             "an integer >= 0")
        need(_is_num(self.warmup_seconds) and self.warmup_seconds >= 0, "--warmup-seconds",
             self.warmup_seconds, "a number of seconds >= 0")
        need(_is_int(self.windows) and self.windows >= 2, "--windows", self.windows,
             "an integer >= 2: stability compares windows with each other")
        need(_is_int(self.min_runs) and self.min_runs >= self.windows, "--min-runs", self.min_runs,
             f"an integer >= --windows ({self.windows}), so every window holds a run")
        need(_is_num(self.min_seconds) and self.min_seconds >= 0, "--min-seconds", self.min_seconds,
             "a number of seconds >= 0")
        need(_is_num(self.stability_threshold) and 0 < self.stability_threshold < 1,
             "--stability-threshold", self.stability_threshold,
             "a fraction between 0 and 1, e.g. 0.1 for 10%")
        need(_is_int(self.max_windows) and self.max_windows >= self.windows, "--max-windows",
             self.max_windows, f"an integer >= --windows ({self.windows})")
        need(self.max_preemptions_per_s is None or (_is_num(self.max_preemptions_per_s)
                                                    and self.max_preemptions_per_s > 0),
             "--max-preemptions", self.max_preemptions_per_s, "a rate > 0, or 0 on the command line to turn it off")
        need(_is_int(self.tegrastats_interval_ms) and self.tegrastats_interval_ms >= 1,
             "--tegrastats-interval", self.tegrastats_interval_ms, "milliseconds >= 1")
        return self

    @property
    def window_runs(self) -> int:
        return math.ceil(self.min_runs / self.windows)

    @property
    def window_ns(self) -> int:
        return int(self.min_seconds * 1e9 / self.windows)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("backends", "batch_sizes"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
