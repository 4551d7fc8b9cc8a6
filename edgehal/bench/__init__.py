"""Latency benchmarks that can be trusted: timing method, statistics, stability.

The method, per artifact, backend and batch size:

1. **Validate everything first.** :class:`BenchOptions` checks its own
   values; :func:`~edgehal.bench.run.plan` checks that every artifact exists and that every
   requested backend applies to some artifact; a preflight opens each runner
   once and checks every batch size against its input specs and
   ``max_batch``. Nothing is timed until all of that passed.
2. **Warm up by count and by time**: at least ``warmup_runs`` calls *and* at
   least ``warmup_seconds``, discarded.
3. **Time in windows until stable**, as Triton's perf_analyzer does. A window
   is at least ``ceil(min_runs / windows)`` calls and ``min_seconds /
   windows`` seconds. After each window the last ``windows`` windows are
   compared: when their median latencies and their throughputs each agree
   within ``stability_threshold`` (``max / min - 1``) the result is stable and
   measuring stops; otherwise another window runs, up to ``max_windows``, and
   a result that never settled is flagged ``stable: false``. A result is
   also unstable when the process was preempted more than
   ``max_preemptions_per_s`` during those windows (involuntary context
   switches, from ``getrusage``): windows measured on a busy machine agree with
   each other about the load, and the load is what changes between runs. The
   statistics come from the last ``windows`` windows, so together they always
   hold at least ``min_runs`` runs and ``min_seconds`` of timed calls.
4. **What one timed call is.** The feed is built once and checked by the
   runner's public ``infer()`` on the first call; the timed loop then calls
   ``infer(feed, check=False)`` on that prepared feed, so per-call input
   validation (about 20 us of Python per call for an onnxruntime runner, a
   fifth of a 100 us model) is not billed to the model; what ``infer`` still
   does per call (output names, a dict copy of the feed) is about 2 us on a
   2-core VM. The loop itself costs two ``perf_counter_ns`` calls and a list
   append per run (``benchmarks/harness_overhead.py`` measures it at about
   1%). Python's garbage collector is paused during the windows, as
   ``timeit`` does.
5. **On a GPU**, two modes: ``e2e`` times ``infer()`` with host numpy in and
   out, so it includes host-device copies and the final synchronisation;
   ``device`` keeps inputs and outputs on the device and times only the
   model, with the runner's own ``device_timer(feed)``: CUDA events for
   PyTorch and TensorRT, host time around a synchronising
   ``run_with_iobinding`` with device-resident inputs and outputs for
   onnxruntime's CUDA and TensorRT providers. Bench asks the runner; a
   runner without device timing (any CPU runner) gets ``e2e`` only.
6. **On a Jetson**, the power mode and clock state are recorded (a warning
   when clocks are not locked) and ``tegrastats`` samples power during the
   ``e2e`` warm-up and windows, giving average power and energy per inference
   (average power x timed wall time / timed calls).

The modules: :mod:`~edgehal.bench.options` (what to run, checked up front),
:mod:`~edgehal.bench.timing` (the timing loop and statistics),
:mod:`~edgehal.bench.results` (results and the comparisons drawn from them),
:mod:`~edgehal.bench.report` (terminal table, JSON, CSV, PNG plots),
:mod:`~edgehal.bench.jetson` (power mode, clocks, tegrastats) and
:mod:`~edgehal.bench.run` (planning and the run).
"""

from edgehal.bench.options import BenchOptions
from edgehal.bench.report import format_table, write_reports
from edgehal.bench.results import BenchReport, BenchResult
from edgehal.bench.run import run_bench

__all__ = ["BenchOptions", "BenchReport", "BenchResult", "format_table", "run_bench", "write_reports"]
