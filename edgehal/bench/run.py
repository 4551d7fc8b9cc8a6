"""Planning and running ``edgehal bench``: which artifact runs with which backend, then the timing.

:func:`plan` pairs artifacts with backends and fails before any work;
:func:`run_bench` preflights every runner, then times every case with
:func:`edgehal.bench.timing.measure`. The method as a whole is described in
:mod:`edgehal.bench`.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgehal.artifact import artifact_kind, engine_sidecar_path, read_artifact
from edgehal.bench import jetson
from edgehal.bench.options import BACKENDS, BenchOptions
from edgehal.bench.results import ArtifactInfo, BenchReport, BenchResult
from edgehal.bench.timing import Clock, Stability, measure
from edgehal.errors import EdgehalError
from edgehal.fileio import sha256_file
from edgehal.runtime.base import Runner, format_shape
from edgehal.runtime.loader import default_backend, open_runner
from edgehal.tensors import TensorSpec

Opener = Callable[..., Runner]


# --------------------------------------------------------------------------
# Planning


@dataclass(frozen=True)
class Case:
    artifact: ArtifactInfo
    backend: str              # an explicit backend, or the loader's default for the file type


def describe_artifact(path: str | Path, *, name: str | None = None) -> ArtifactInfo:
    """What the artifact's edgehal metadata says about it (read without running it)."""
    p = Path(path)
    kind = artifact_kind(p)
    if not p.is_file():
        raise EdgehalError(f"artifact {p}", "file not found")
    label = name or p.name
    if kind == "engine" and not engine_sidecar_path(p).is_file():
        return ArtifactInfo(str(p), label, "engine")  # a foreign engine: the runner says what it lacks
    if kind == "checkpoint":
        # The checkpoint runs every head; its hash is what its ONNX exports record as source.
        # (The runner loads and checks it; hashing here keeps planning cheap.)
        return ArtifactInfo(str(p), label, "checkpoint", None, None, None, sha256_file(p))
    meta = read_artifact(p).metadata
    if meta is None:
        return ArtifactInfo(str(p), label, kind)
    return ArtifactInfo(str(p), label, kind, meta.aux, meta.precision, meta.full_manifest.model,
                        meta.source_sha256 or meta.full_manifest.model)


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
# The run


def _thread_settings(runner: Runner, backend: str, options: BenchOptions) -> dict[str, Any]:
    t: dict[str, Any] = {"requested": options.threads, "runner": runner.threads}
    if backend.startswith("torch") and "torch" in sys.modules:
        import torch

        t["torch_intra_op"] = torch.get_num_threads()
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if k in os.environ:
            t[k] = os.environ[k]
    return t


def _device_kind(runner: Runner) -> str:
    """``cuda`` or ``cpu``: results record the kind of device, not its index."""
    return "cuda" if runner.device.startswith("cuda") else "cpu"


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
              jetson_info: jetson.JetsonInfo | None = None,
              warn: Callable[[str], None] | None = None) -> BenchReport:
    """Benchmark every artifact with its backends at every batch size; the method is :mod:`edgehal.bench`'s.

    ``opener`` defaults to :func:`edgehal.runtime.loader.open_runner`; ``jetson_info`` to
    :func:`edgehal.bench.jetson.jetson_info` (pass one to test without a Jetson).
    ``warn`` receives warnings as they arise (the CLI prints them).
    """
    from datetime import datetime, timezone

    # doctor imports edgehal.bench.jetson, which runs this package's __init__ and so this
    # module: importing doctor at the top here would make that a cycle.
    from edgehal import doctor

    options.validate()
    cases = plan(artifacts, options)
    open_ = opener or open_runner
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
    """Time one artifact with one backend at every batch size, appending to ``out``.

    ``e2e`` times ``infer(check=False)`` on a feed checked once by the first
    call; ``device`` times the runner's own :meth:`~edgehal.runtime.base.Runner.device_timer`,
    where it has one.
    """
    with open_(case.artifact.path, backend=case.backend, threads=options.threads,
               device=options.device) as runner:
        backend = case.backend
        device = _device_kind(runner)
        what = f"{case.artifact.name} ({backend})"
        names = list(runner.output_names())
        art = case.artifact
        if art.precision is None:
            # Checkpoints and engines carry no ONNX metadata; the runner knows what it computes in.
            art = replace(art, precision=runner.precision)
        for batch in options.batch_sizes:
            feed = make_feed(runner.input_specs(), batch, fallback_shape=_fallback_shape(runner),
                             seed=options.seed, what=what)
            _first_call(runner, feed, names, backend)

            def measured(mode: str, **timing: Any) -> None:
                def on_window(n: int, st: Stability | None) -> None:
                    state = "" if st is None else f", spread {st.latency_spread:.0%}"
                    bar.status(f"{art.name} {backend} b={batch} {mode}: window {n}/{options.max_windows}{state}")

                sampler = None
                if mode == "e2e" and power_on:
                    sampler = jetson.TegrastatsSampler(interval_ms=options.tegrastats_interval_ms)
                    sampler.start()
                try:
                    m = measure(options=options, batch_size=batch, clock=clock, on_window=on_window, **timing)
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

            # partial is implemented in C: one less Python frame per timed call.
            measured("e2e", call=functools.partial(runner.infer, feed, outputs=names, check=False),
                     timer="perf_counter_ns")
            device_timer = runner.device_timer(feed, outputs=names)
            if device_timer is not None:
                measured("device", timed_call=device_timer, timer="device_timer")
            bar.advance()


__all__ = [
    "Case", "check_batches", "describe_artifact", "make_feed", "plan", "run_bench",
]
