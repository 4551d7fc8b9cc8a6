"""Jetson: detection, power mode, clock locking, and power sampling with tegrastats.

Everything that reads a file or runs a command takes the path or the command
as a keyword argument, so the parsers are tested on CPU machines against
fixture files and real output lines; only :class:`TegrastatsSampler` needs a
Jetson, and even it only needs *a* command that prints tegrastats lines.

Rail names differ between boards and releases, so the parser reads every
``NAME <mW>/<mW>`` pair it finds instead of a fixed list:

========================  ============================================  =====================
board                     rails (tegrastats)                            total input
========================  ============================================  =====================
Nano (JetPack 4)          POM_5V_IN, POM_5V_GPU, POM_5V_CPU             POM_5V_IN
TX1 / TX2 / Xavier NX,    VDD_IN, VDD_CPU_GPU_CV, VDD_SOC, ...          VDD_IN
Orin NX / Orin Nano
AGX Xavier                GPU, CPU, SOC, CV, VDDRQ, SYS5V               sum of the rails
AGX Orin                  VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0, ...     sum of the rails
Thor                      VDD_GPU, VDD_CPU_SOC_MSS, VIN_SYS_5V0, VIN    VIN
========================  ============================================  =====================

Where a board has no total input rail the module power is estimated as the
sum of every rail tegrastats prints, as jetson_stats does; the report says
which rule it used (``total_source``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from edgehal.errors import EdgehalError
from edgehal.host import NV_TEGRA_RELEASE, parse_l4t_release

RELEASE_FILE = NV_TEGRA_RELEASE
MODEL_FILE = "/proc/device-tree/model"
NVPMODEL_QUERY = ("nvpmodel", "-q")
JETSON_CLOCKS_SHOW = ("jetson_clocks", "--show")
TEGRASTATS = ("tegrastats",)

# Rails that measure the whole module's input, in order of preference.
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN", "VIN")


# --------------------------------------------------------------------------
# Detection


def _read_text(path: str | Path) -> str | None:
    try:
        # The device-tree model ends with a NUL byte.
        return Path(path).read_bytes().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return None


def detect_jetson(*, release_file: str | Path = RELEASE_FILE,
                  model_file: str | Path = MODEL_FILE) -> tuple[bool, str | None, str | None]:
    """Return ``(is_jetson, model, l4t_release)`` from the L4T release file and device tree.

    A machine is a Jetson when the L4T release file exists or the device-tree
    model names a Jetson. ``l4t_release`` is like ``"35.4.1"``.
    """
    release_text = _read_text(release_file)
    model = _read_text(model_file)
    l4t = parse_l4t_release(release_text) if release_text else None
    is_jetson = release_text is not None or bool(model and "jetson" in model.lower())
    return is_jetson, (model or None) if is_jetson else None, l4t


# --------------------------------------------------------------------------
# Power mode and clocks


@dataclass(frozen=True)
class PowerMode:
    name: str
    id: int | None = None


def parse_nvpmodel(text: str) -> PowerMode | None:
    """Parse ``nvpmodel -q``: ``NV Power Mode: MAXN`` then the mode id on its own line."""
    m = re.search(r"NV Power Mode:\s*(\S+)", text)
    if not m:
        return None
    rest = text[m.end():]
    id_match = re.search(r"^\s*(\d+)\s*$", rest, re.MULTILINE)
    return PowerMode(m.group(1), int(id_match.group(1)) if id_match else None)


@dataclass(frozen=True)
class ClockStatus:
    """What ``jetson_clocks --show`` says about DVFS.

    A clock is locked when its minimum frequency was raised to its maximum
    (what ``jetson_clocks`` does); the EMC is locked when ``FreqOverride=1``.
    ``None`` means the output did not mention that clock.
    """

    cpu_locked: bool | None
    gpu_locked: bool | None
    emc_locked: bool | None
    power_mode: str | None = None

    @property
    def locked(self) -> bool:
        known = [v for v in (self.cpu_locked, self.gpu_locked, self.emc_locked) if v is not None]
        return bool(known) and all(known)


def parse_jetson_clocks(text: str) -> ClockStatus:
    cpu_states = []
    for m in re.finditer(r"^cpu\d+:\s*Online=(\d)\b.*?MinFreq=(\d+)\s+MaxFreq=(\d+)", text, re.MULTILINE):
        if m.group(1) == "1":
            cpu_states.append(m.group(2) == m.group(3))
    gpu = re.search(r"^GPU\s+MinFreq=(\d+)\s+MaxFreq=(\d+)", text, re.MULTILINE)
    emc = re.search(r"^EMC\s+.*?FreqOverride=(\d)", text, re.MULTILINE)
    mode = re.search(r"NV Power Mode:\s*(\S+)", text)
    return ClockStatus(
        cpu_locked=all(cpu_states) if cpu_states else None,
        gpu_locked=(gpu.group(1) == gpu.group(2)) if gpu else None,
        emc_locked=(emc.group(1) == "1") if emc else None,
        power_mode=mode.group(1) if mode else None,
    )


def _run(command: Sequence[str], timeout: float) -> tuple[str | None, str]:
    """Run ``command``; return (stdout, "") or (None, why it failed)."""
    if not command or shutil.which(command[0]) is None:
        return None, f"{command[0] if command else 'command'} not found"
    try:
        proc = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{command[0]} failed ({exc.__class__.__name__})"
    if proc.returncode != 0:
        first = (proc.stderr or proc.stdout).strip().splitlines()
        return None, f"{command[0]} exited {proc.returncode}" + (f": {first[0][:120]}" if first else "")
    return proc.stdout, ""


def query_power_mode(*, command: Sequence[str] = NVPMODEL_QUERY,
                     timeout: float = 10.0) -> tuple[PowerMode | None, str]:
    """``(PowerMode, "")`` or ``(None, reason)``."""
    out, why = _run(command, timeout)
    if out is None:
        return None, why
    mode = parse_nvpmodel(out)
    return (mode, "") if mode else (None, "nvpmodel printed no power mode")


def query_clocks(*, command: Sequence[str] = JETSON_CLOCKS_SHOW,
                 timeout: float = 15.0) -> tuple[ClockStatus | None, str]:
    """``(ClockStatus, "")`` or ``(None, reason)``; ``jetson_clocks --show`` needs root."""
    out, why = _run(command, timeout)
    if out is None:
        return None, why
    return parse_jetson_clocks(out), ""


@dataclass(frozen=True)
class JetsonInfo:
    is_jetson: bool
    model: str | None = None
    l4t_release: str | None = None
    power_mode: PowerMode | None = None
    clocks: ClockStatus | None = None
    tegrastats: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def warnings(self) -> tuple[str, ...]:
        """What makes latency on this Jetson less trustworthy."""
        if not self.is_jetson:
            return ()
        if self.clocks is None:
            return ("could not tell whether clocks are locked (`sudo jetson_clocks --show` needs root); "
                    "latencies vary with DVFS unless `sudo jetson_clocks` was run",)
        if not self.clocks.locked:
            return ("clocks are not locked: run `sudo jetson_clocks` before benchmarking, "
                    "or latencies will vary with DVFS",)
        return ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["clocks_locked"] = self.clocks.locked if self.clocks else None
        d["warnings"] = list(self.warnings)
        return d


def jetson_info(*, release_file: str | Path = RELEASE_FILE, model_file: str | Path = MODEL_FILE,
                nvpmodel: Sequence[str] = NVPMODEL_QUERY,
                jetson_clocks: Sequence[str] = JETSON_CLOCKS_SHOW,
                tegrastats: Sequence[str] = TEGRASTATS) -> JetsonInfo:
    """Detect a Jetson and, on one, query its power mode, clocks and tegrastats."""
    is_jetson, model, l4t = detect_jetson(release_file=release_file, model_file=model_file)
    if not is_jetson:
        return JetsonInfo(False)
    notes = []
    mode, why = query_power_mode(command=nvpmodel)
    if why:
        notes.append(f"power mode unknown: {why}")
    clocks, why = query_clocks(command=jetson_clocks)
    if why:
        notes.append(f"clock state unknown: {why}")
    tegra = shutil.which(tegrastats[0]) if tegrastats else None
    if not tegra:
        notes.append("tegrastats not found: no power measurement")
    return JetsonInfo(True, model, l4t, mode, clocks, tegra, tuple(notes))


# --------------------------------------------------------------------------
# tegrastats


@dataclass(frozen=True)
class Rail:
    """One power rail in milliwatts: the instantaneous and tegrastats' running average."""

    current_mw: int
    average_mw: int | None = None


@dataclass(frozen=True)
class TegrastatsSample:
    rails: dict[str, Rail]
    total_mw: int | None
    total_source: str | None


# NAME cur/avg[/max], with or without the "mW" unit (older releases omit it),
# or a single "NAME cur mW" (Thor). The lookahead keeps "RAM 721/31927MB" and
# "IRAM 0/252kB" out.
_RAIL_RE = re.compile(
    r"(?<![\w@./])(?P<name>[A-Za-z][A-Za-z0-9_]*) (?P<cur>\d+)"
    r"(?:(?:mW)?/(?P<avg>\d+)(?:mW)?(?:/\d+(?:mW)?)?|mW)(?=\s|$)")


def parse_tegrastats_line(line: str) -> TegrastatsSample:
    """Every power rail on one tegrastats line, and the module's total input power.

    The total is the first of :data:`TOTAL_RAILS` present; otherwise the sum
    of all rails (AGX Xavier, AGX Orin). A line without rails (tegrastats run
    without root on some releases) gives no rails and ``total_mw=None``.
    """
    rails: dict[str, Rail] = {}
    for m in _RAIL_RE.finditer(line):
        avg = m.group("avg")
        rails[m.group("name")] = Rail(int(m.group("cur")), int(avg) if avg is not None else None)
    for name in TOTAL_RAILS:
        if name in rails:
            return TegrastatsSample(rails, rails[name].current_mw, name)
    if rails:
        return TegrastatsSample(rails, sum(r.current_mw for r in rails.values()),
                                "sum:" + "+".join(rails))
    return TegrastatsSample(rails, None, None)


@dataclass(frozen=True)
class PowerSummary:
    """Average power over the timed runs and the energy one inference took."""

    avg_power_w: float | None
    total_source: str | None
    samples: int
    duration_s: float
    inferences: int
    batch_size: int
    energy_per_inference_mj: float | None
    energy_per_sample_mj: float | None
    rails_avg_mw: dict[str, float] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize_power(samples: Sequence[TegrastatsSample], *, duration_s: float, inferences: int,
                    batch_size: int = 1) -> PowerSummary:
    """Average the samples' total power and turn it into energy per inference (mJ).

    Energy per inference = average power x timed duration / inferences: one
    inference is one call on a batch, so ``energy_per_sample_mj`` divides
    again by the batch size.
    """
    totals = [s.total_mw for s in samples if s.total_mw is not None]
    if not totals:
        note = ("tegrastats printed no power rails (some releases need root)" if samples
                else "no tegrastats samples during the timed runs (run longer than the interval)")
        return PowerSummary(None, None, len(samples), duration_s, inferences, batch_size, None, None, note=note)
    sources = {s.total_source for s in samples if s.total_mw is not None}
    avg_w = sum(totals) / len(totals) / 1000.0
    per_inf = avg_w * duration_s / inferences * 1000.0 if inferences else None
    names = sorted({n for s in samples for n in s.rails})
    rails_avg = {n: sum(s.rails[n].current_mw for s in samples if n in s.rails) /
                 sum(1 for s in samples if n in s.rails) for n in names}
    note = "" if len(totals) >= 2 else "only one tegrastats sample: lower --tegrastats-interval or run longer"
    return PowerSummary(avg_w, " | ".join(sorted(str(s) for s in sources)), len(totals), duration_s,
                        inferences, batch_size, per_inf,
                        per_inf / batch_size if per_inf is not None else None, rails_avg, note)


class TegrastatsSampler:
    """Runs ``tegrastats --interval N`` in the background and collects parsed lines.

    Start it right before the timed runs and stop it right after; the samples
    in between are what :func:`summarize_power` averages. Used as a context
    manager, it always stops the subprocess. Reading happens on a daemon
    thread, which costs a little CPU: the report says power was sampled.
    """

    def __init__(self, *, command: Sequence[str] = TEGRASTATS, interval_ms: int = 100,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if interval_ms < 1:
            raise EdgehalError("tegrastats interval", f"{interval_ms} ms is not positive", "at least 1 ms")
        self.command = list(command) + ["--interval", str(int(interval_ms))]
        self.interval_ms = interval_ms
        self.clock = clock
        self.samples: list[tuple[float, TegrastatsSample]] = []
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> "TegrastatsSampler":
        if shutil.which(self.command[0]) is None:
            raise EdgehalError(f"power sampling ({self.command[0]})", "command not found",
                               "a Jetson with tegrastats on PATH, or bench with --no-power")
        self.samples = []
        self._proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      text=True, bufsize=1)
        self._thread = threading.Thread(target=self._read, name="tegrastats-reader", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            sample = parse_tegrastats_line(line)
            with self._lock:
                self.samples.append((self.clock(), sample))

    def stop(self) -> list[TegrastatsSample]:
        """Stop tegrastats and return the samples it printed while running."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            return [s for _, s in self.samples]

    def __enter__(self) -> "TegrastatsSampler":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
