"""Latency benchmarks that can be trusted: timing method, statistics, stability.

The method, per artifact, backend and batch size:

1. **Validate everything first.** :class:`BenchOptions` checks its own
   values; :func:`plan` checks that every artifact exists and that every
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
4. **What one timed call is.** The feed is built and checked once with the
   runner's public ``infer()``; the timed loop then calls ``_infer()`` on that
   prepared feed, so per-call input validation (about 20 us of Python per
   call for an onnxruntime runner, a fifth of a 100 us model) is not billed
   to the model. The loop itself costs two ``perf_counter_ns`` calls and a
   list append per run (``benchmarks/harness_overhead.py`` measures it at
   about 1%). Python's garbage collector is paused during the windows, as
   ``timeit`` does.
5. **On a GPU**, two modes: ``e2e`` times ``_infer()`` with host numpy in and
   out, so it includes host-device copies and the final synchronisation;
   ``device`` keeps inputs and outputs on the device and times only the
   model: with CUDA events when the runner implements
   :class:`DeviceTimedRunner` (``prepare_device(feed)`` then
   ``infer_device(prepared)``), or, for onnxruntime's CUDA and TensorRT
   providers, with IOBinding (device-resident inputs and outputs) around
   ``run_with_iobinding``.
6. **On a Jetson**, the power mode and clock state are recorded (a warning
   when clocks are not locked) and ``tegrastats`` samples power during the
   ``e2e`` warm-up and windows, giving average power and energy per inference
   (average power x timed wall time / timed calls).

The timing loop and statistics live in :mod:`edgehal.bench_timing`; reports
(terminal table, JSON, CSV, PNG plots) in :mod:`edgehal.bench_report`.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgehal.bench_timing import (Clock, DeviceTimedRunner, LatencyStats, Measurement, Stability,
                                  cuda_event_timer, has_device_timing, measure, ort_iobinding_call,
                                  runner_device, spread)
from edgehal.errors import EdgehalError
from edgehal.runtime.base import Runner, TensorSpec, format_shape
from edgehal.runtime.loader import BACKEND_SUFFIXES
from edgehal.runtime.loader import default_backend as default_backend

#: Backend names ``open_runner`` understands, and the artifact suffixes each runs.
BACKENDS = BACKEND_SUFFIXES
ARTIFACT_SUFFIXES = tuple(sorted({s for v in BACKENDS.values() for s in v}))
MODES = ("e2e", "device")
FORMAT = "edgehal-bench/1"

Opener = Callable[..., Runner]


# --------------------------------------------------------------------------
# Options


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


# --------------------------------------------------------------------------
# Planning


@dataclass(frozen=True)
class Artifact:
    """One file to benchmark, with what its metadata says about it."""

    path: str
    name: str
    kind: str                 # "checkpoint" | "onnx" | "engine"
    aux: str | None = None    # "keep" | "prune" | None when unknown
    precision: str | None = None
    model: str | None = None
    family: str | None = None  # groups artifacts exported from one checkpoint


@dataclass(frozen=True)
class Case:
    artifact: Artifact
    backend: str              # an explicit backend, or the loader's default for the file type


def describe_artifact(path: str | Path, *, name: str | None = None) -> Artifact:
    """Read the cheap metadata: ONNX ``edgehal.*`` props (no weights), or a checkpoint's hash."""
    p = Path(path)
    if not p.is_file():
        raise EdgehalError(f"artifact {p}", "file not found")
    suffix = p.suffix.lower()
    if suffix not in ARTIFACT_SUFFIXES:
        raise EdgehalError(f"artifact {p}", f"has an unknown type {suffix or '(no suffix)'}",
                           f"one of {', '.join(ARTIFACT_SUFFIXES)}")
    label = name or p.name
    if suffix == ".onnx":
        from edgehal.export.metadata import PREFIX, props_of
        import onnx

        try:
            model = onnx.load(str(p), load_external_data=False)
        except Exception as exc:  # onnx raises DecodeError and friends
            raise EdgehalError(f"ONNX model {p}",
                               f"is corrupt or not an ONNX file ({exc.__class__.__name__})") from None
        props = props_of(model)
        if PREFIX + "format" not in props:
            return Artifact(str(p), label, "onnx")
        from edgehal.export.metadata import OnnxMetadata

        meta = OnnxMetadata.from_props(props, what=f"ONNX model {p}")
        return Artifact(str(p), label, "onnx", meta.aux, meta.precision, meta.full_manifest.model,
                        meta.source_sha256 or meta.full_manifest.model)
    if suffix in (".pt", ".pth"):
        from edgehal.fileio import sha256_file

        # The checkpoint runs every head; its hash is what its ONNX exports record as source.
        return Artifact(str(p), label, "checkpoint", None, None, None, sha256_file(p))
    return Artifact(str(p), label, "engine")


def plan(artifacts: Sequence[str | Path], options: BenchOptions) -> list[Case]:
    """Pair every artifact with the requested backends that can run it; fail before any work."""
    options.validate()
    if not artifacts:
        raise EdgehalError("bench", "no artifact given", "one or more .pt, .onnx or .plan files")
    paths = [Path(a) for a in artifacts]
    names = [p.name for p in paths]
    described = [describe_artifact(p, name=str(p) if names.count(p.name) > 1 else p.name) for p in paths]
    cases: list[Case] = []
    used: set[str] = set()
    for art in described:
        suffix = Path(art.path).suffix.lower()
        if options.backends is None:
            cases.append(Case(art, default_backend(art.path)))
            continue
        fitting = [b for b in options.backends if suffix in BACKENDS[b]]
        if not fitting:
            wanted = [b for b, sfx in BACKENDS.items() if suffix in sfx]
            raise EdgehalError(f"artifact {art.path}", f"no requested backend runs {suffix} files "
                               f"(requested: {', '.join(options.backends)})",
                               f"add one of {', '.join(wanted)} to --backend")
        used.update(fitting)
        cases.extend(Case(art, b) for b in fitting)
    if options.backends is not None:
        unused = [b for b in options.backends if b not in used]
        if unused:
            raise EdgehalError(f"backend {unused[0]}", "applies to none of the artifacts",
                               f"an artifact ending in {', '.join(BACKENDS[unused[0]])}")
    return cases


def make_feed(specs: Sequence[TensorSpec], batch_size: int, *, fallback_shape: Sequence[int] | None = None,
              seed: int = 0, what: str = "model") -> dict[str, np.ndarray]:
    """Random inputs for ``specs`` with the batch axis set; other dynamic axes from ``fallback_shape``.

    Raises :class:`EdgehalError` when the model's batch axis is fixed to
    another size, or a non-batch axis is dynamic with nothing to fill it.
    """
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in specs:
        shape = list(spec.shape)
        if not shape:
            raise EdgehalError(f"{what}: input {spec.name!r}", "is a scalar", "a batched tensor input")
        if shape[0] is None or shape[0] < 0:
            shape[0] = batch_size
        elif shape[0] != batch_size:
            raise EdgehalError(f"{what}: input {spec.name!r}",
                               f"has a fixed batch of {shape[0]}, cannot run batch {batch_size}",
                               f"--batch-sizes {shape[0]}, or export with a dynamic batch axis")
        for axis in range(1, len(shape)):
            if shape[axis] is None or shape[axis] < 0:
                if fallback_shape is not None and len(fallback_shape) == len(shape) - 1:
                    shape[axis] = int(fallback_shape[axis - 1])
                else:
                    raise EdgehalError(f"{what}: input {spec.name!r}",
                                       f"has dynamic dimension {axis} in {format_shape(spec.shape)}",
                                       "static dimensions except the batch axis")
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feed[spec.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feed[spec.name] = np.zeros(shape, dtype=dtype)
    return feed


def check_batches(runner: Runner, batch_sizes: Sequence[int], *, what: str) -> None:
    """Reject batch sizes the runner cannot take, before anything is timed."""
    mb = runner.max_batch
    too_big = [b for b in batch_sizes if mb is not None and b > mb]
    if too_big:
        raise EdgehalError(what, f"batch {too_big[0]} is larger than the artifact's maximum {mb}",
                           f"--batch-sizes at most {mb}")
    fallback = _fallback_shape(runner)
    for b in batch_sizes:
        make_feed(runner.input_specs(), b, fallback_shape=fallback, what=what)


def _fallback_shape(runner: Runner) -> tuple[int, ...] | None:
    try:
        manifest = runner.manifest
    except EdgehalError:
        return None
    return tuple(manifest.input_shape) if manifest is not None else None


# --------------------------------------------------------------------------
# Results and the run


@dataclass(frozen=True)
class BenchResult:
    """One artifact x backend x batch size x timing mode."""

    artifact: Artifact
    backend: str
    device: str
    batch_size: int
    mode: str
    stats: LatencyStats
    stability: Stability
    timer: str
    threads: dict[str, Any]
    power: Any = None            # jetson.PowerSummary when sampled
    warnings: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        aux = f" [{self.artifact.aux}]" if self.artifact.aux else ""
        mode = "" if self.mode == "e2e" else f" ({self.mode})"
        return f"{self.artifact.name}{aux} · {self.backend}{mode}"

    def to_dict(self) -> dict[str, Any]:
        d = {
            "artifact": asdict(self.artifact), "backend": self.backend, "device": self.device,
            "batch_size": self.batch_size, "mode": self.mode, "timer": self.timer, "label": self.label,
            "stats": asdict(self.stats), "stability": asdict(self.stability), "threads": self.threads,
            "power": self.power.to_dict() if self.power is not None else None,
            "warnings": list(self.warnings),
        }
        d["stability"]["window_medians_ms"] = list(self.stability.window_medians_ms)
        d["stability"]["window_throughputs"] = list(self.stability.window_throughputs)
        return d


@dataclass(frozen=True)
class BenchReport:
    options: BenchOptions
    machine: dict[str, Any]
    results: tuple[BenchResult, ...]
    skipped: tuple[dict[str, str], ...] = ()
    warnings: tuple[str, ...] = ()
    created: str = ""

    def to_dict(self) -> dict[str, Any]:
        from edgehal.bench_report import comparisons, vs_checkpoint

        return {
            "format": FORMAT,
            "created": self.created,
            "note": self.options.note,
            "options": self.options.to_dict(),
            "machine": self.machine,
            "results": [r.to_dict() for r in self.results],
            "comparisons": comparisons(self.results),
            "vs_checkpoint": vs_checkpoint(self.results),
            "skipped": list(self.skipped),
            "warnings": list(self.warnings),
        }


def default_opener(path: str | Path, *, backend: str | None = None, threads: int | None = None,
                   device: str | None = None) -> Runner:
    """``edgehal.runtime.loader.open_runner``, imported when first needed."""
    try:
        from edgehal.runtime.loader import open_runner
    except ImportError as exc:
        raise EdgehalError("bench", f"the runtime loader is unavailable ({exc})",
                           "edgehal.runtime.loader.open_runner") from None
    return open_runner(path, backend=backend, threads=threads, device=device)


def _thread_settings(runner: Runner, backend: str, options: BenchOptions) -> dict[str, Any]:
    t: dict[str, Any] = {"requested": options.threads, "runner": getattr(runner, "threads", None)}
    if backend.startswith("torch") and "torch" in sys.modules:
        import torch

        t["torch_intra_op"] = torch.get_num_threads()
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if k in os.environ:
            t[k] = os.environ[k]
    return t


def _modes(runner: Runner, device: str) -> list[str]:
    if device != "cuda":
        return ["e2e"]
    if has_device_timing(runner) or getattr(runner, "session", None) is not None:
        return ["e2e", "device"]
    return ["e2e"]


class _Progress:
    """tqdm over the cases, quiet when disabled; the postfix shows the window count."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            # disable=None: no bar when stderr is not a terminal (CI logs, pipes).
            self.bar = tqdm(total=total, unit="case", desc="bench", leave=True, dynamic_ncols=True,
                            disable=None)

    def status(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_bench(artifacts: Sequence[str | Path], options: BenchOptions, *, opener: Opener | None = None,
              clock: Clock = time.perf_counter_ns, progress: bool = True,
              jetson_info: Any = None, warn: Callable[[str], None] | None = None) -> BenchReport:
    """Benchmark every artifact with its backends at every batch size; see the module docstring.

    ``opener`` defaults to :func:`default_opener`; ``jetson_info`` to
    :func:`edgehal.jetson.jetson_info` (pass one to test without a Jetson).
    ``warn`` receives warnings as they arise (the CLI prints them).
    """
    from datetime import datetime, timezone

    from edgehal import doctor, jetson

    options.validate()
    cases = plan(artifacts, options)
    open_ = opener or default_opener
    warnings: list[str] = []

    def note(msg: str) -> None:
        warnings.append(msg)
        if warn is not None:
            warn(msg)

    jinfo = jetson_info if jetson_info is not None else jetson.jetson_info()
    power_on = options.power if options.power is not None else bool(jinfo.is_jetson and jinfo.tegrastats)
    if options.power and not (jinfo.is_jetson and jinfo.tegrastats):
        raise EdgehalError("bench option --power", "needs tegrastats on a Jetson",
                           "leave --power out, or pass --no-power, on other machines")
    for w in jinfo.warnings:
        note(w)

    # Preflight: open each runner once and check every batch size before timing anything.
    # A runner that cannot start here (torch.compile unsupported, no GPU for ort-cuda) is
    # skipped with its reason; a batch size an artifact cannot take stops the whole run.
    skipped: list[dict[str, str]] = []
    ready: list[Case] = []
    for case in cases:
        what = f"{case.artifact.path} ({case.backend})"
        runner = open_(case.artifact.path, backend=case.backend, threads=options.threads,
                       device=options.device)
        try:
            runner.activate()
        except EdgehalError as exc:
            skipped.append({"artifact": case.artifact.path, "backend": case.backend, "reason": str(exc)})
            note(f"skipped {case.artifact.name} with {case.backend}: {exc}")
            continue
        try:
            check_batches(runner, options.batch_sizes, what=what)
        finally:
            runner.deactivate()
        ready.append(case)
    if not ready:
        raise EdgehalError("bench", "no artifact could be opened with its backends",
                           "; ".join(f"{s['artifact']} ({s['backend']}): {s['reason']}" for s in skipped))

    machine = doctor.machine_info(jetson=jinfo)
    if machine.get("load_average_1_5_15") and machine["load_average_1_5_15"][0] > 0.5 * machine["usable_cores"]:
        note(f"the machine is busy (1-minute load {machine['load_average_1_5_15'][0]} on "
             f"{machine['usable_cores']} cores): latencies include interference from other processes")

    results: list[BenchResult] = []
    bar = _Progress(len(ready) * len(options.batch_sizes), progress)
    try:
        for case in ready:
            done = len(results)
            try:
                _bench_case(case, options, open_, clock, bar, power_on, results)
            except EdgehalError as exc:
                # Results of the batch sizes that did run are kept.
                skipped.append({"artifact": case.artifact.path, "backend": case.backend, "reason": str(exc)})
                note(f"skipped {case.artifact.name} with {case.backend} after "
                     f"{len(results) - done} result(s): {exc}")
    finally:
        bar.close()
    for r in results:
        if not r.stability.stable:
            st = r.stability
            note(f"{r.label} batch {r.batch_size}: unstable after {st.windows_run} windows ({st.reason}; "
                 f"medians within {st.latency_spread:.0%}, throughput within {st.throughput_spread:.0%}, "
                 f"threshold {options.stability_threshold:.0%}"
                 + (f", preemption limit {options.max_preemptions_per_s:.0f}/s)" if st.contended else ")"))
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return BenchReport(options, machine, tuple(results), tuple(skipped), tuple(warnings), created)


def _first_call(runner: Runner, feed: dict[str, np.ndarray], names: list[str], backend: str) -> None:
    """The one validated ``infer()``; a torch.compile failure becomes a skip, not a crash.

    torch.compile compiles on the first call and fails there on platforms it
    does not support (no compiler, unsupported ops); that is the environment,
    not a bug, so it is turned into an :class:`EdgehalError` for this backend only.
    """
    if backend != "torch-compile":
        runner.infer(feed, outputs=names)
        return
    try:
        runner.infer(feed, outputs=names)
    except EdgehalError:
        raise
    except Exception as exc:  # noqa: BLE001 - see docstring
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise EdgehalError("torch.compile", f"failed on the first call ({exc.__class__.__name__}: {first})",
                           "use --backend torch") from None


def _bench_case(case: Case, options: BenchOptions, open_: Opener, clock: Clock, bar: _Progress,
                power_on: bool, out: list[BenchResult]) -> None:
    """Time one artifact with one backend at every batch size, appending to ``out``."""
    from edgehal import jetson

    with open_(case.artifact.path, backend=case.backend, threads=options.threads,
               device=options.device) as runner:
        backend = case.backend
        device = runner_device(runner)
        what = f"{case.artifact.name} ({backend})"
        names = list(runner.output_names())
        art = case.artifact
        if art.aux is None and getattr(runner, "aux", None) in ("keep", "prune"):
            art = replace(art, aux=runner.aux)
        for batch in options.batch_sizes:
            feed = make_feed(runner.input_specs(), batch, fallback_shape=_fallback_shape(runner),
                             seed=options.seed, what=what)
            _first_call(runner, feed, names, backend)
            checked = dict(feed)
            for mode in _modes(runner, device):
                def on_window(n: int, st: Stability | None, _m: str = mode, _b: int = batch) -> None:
                    state = "" if st is None else f", spread {st.latency_spread:.0%}"
                    bar.status(f"{art.name} {backend} b={_b} {_m}: window {n}/{options.max_windows}{state}")

                sampler = None
                if mode == "e2e" and power_on:
                    sampler = jetson.TegrastatsSampler(interval_ms=options.tegrastats_interval_ms)
                if mode == "e2e":
                    # partial is implemented in C: one less Python frame per timed call.
                    kwargs: dict[str, Any] = {"call": functools.partial(runner._infer, checked, names),
                                              "timer": "perf_counter_ns"}
                elif has_device_timing(runner):
                    kwargs = {"timed_call": cuda_event_timer(runner, checked), "timer": "cuda_event"}
                else:
                    kwargs = {"call": ort_iobinding_call(runner, checked, names),
                              "timer": "perf_counter_ns+iobinding"}
                if sampler is not None:
                    sampler.start()
                try:
                    m = measure(options=options, batch_size=batch, clock=clock, on_window=on_window, **kwargs)
                finally:
                    samples = sampler.stop() if sampler is not None else None
                power = None
                warns: list[str] = []
                if samples is not None:
                    power = jetson.summarize_power(samples, duration_s=m.stats.wall_s,
                                                   inferences=m.stats.runs, batch_size=batch)
                    if power.note:
                        warns.append(power.note)
                out.append(BenchResult(art, backend, device, batch, mode, m.stats, m.stability, m.timer,
                                       _thread_settings(runner, backend, options), power, tuple(warns)))
            bar.advance()


__all__ = [
    "BACKENDS", "Artifact", "BenchOptions", "BenchReport", "BenchResult", "Case", "DeviceTimedRunner",
    "LatencyStats", "Measurement", "Stability", "check_batches", "default_opener", "describe_artifact",
    "make_feed", "measure", "plan", "run_bench", "spread",
]
