"""What the user sees while TensorRT builds: its progress phases as tqdm bars, or a spinner.

A build takes seconds to many minutes, most of it inside one TensorRT call.
Where TensorRT has ``IProgressMonitor`` (both supported majors: the
IProgressMonitor page of the TensorRT 10.x and 11.x Python API references;
``IBuilderConfig.progress_monitor`` takes it), each phase it reports becomes a
tqdm bar named after the phase, nested under its parent phase. Where it does
not, a spinner with the elapsed time shows the build is alive. TensorRT's
warnings go through :meth:`BuildProgress.write`, so they print above the bars
instead of through them.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO


class BuildProgress:
    """A context manager around one build; :attr:`monitor` goes to ``config.progress_monitor``.

    ``monitor`` is None where TensorRT has no progress monitor; a spinner runs
    instead, from ``__enter__`` to ``__exit__``.
    """

    def __init__(self, trt: Any, *, file: TextIO | None = None, desc: str = "building engine") -> None:
        self._trt = trt
        self._file = file
        self._desc = desc
        self._lock = threading.Lock()
        self._bars: dict[str, tuple[Any, int]] = {}  # phase -> (bar, depth)
        self._spinner: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.monitor: Any = None

    @property
    def file(self) -> TextIO:
        return self._file if self._file is not None else sys.stderr

    def write(self, line: str) -> None:
        """Print ``line`` above any bar (TensorRT's warnings come through here)."""
        from tqdm.auto import tqdm

        with self._lock:
            tqdm.write(line, file=self.file)

    # -- TensorRT's phases -------------------------------------------------
    def _monitor(self) -> Any:
        from tqdm.auto import tqdm

        progress = self

        class _Monitor(self._trt.IProgressMonitor):
            """Called by TensorRT from its build threads (so every call takes the lock)."""

            def __init__(self) -> None:
                progress._trt.IProgressMonitor.__init__(self)

            def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
                with progress._lock:
                    parent = progress._bars.get(str(parent_phase)) if parent_phase else None
                    depth = parent[1] + 1 if parent is not None else 0
                    bar = tqdm(total=int(num_steps), desc=("  " * depth) + str(phase_name), unit="step",
                               file=progress.file, leave=depth == 0, position=depth, dynamic_ncols=True)
                    progress._bars[str(phase_name)] = (bar, depth)

            def step_complete(self, phase_name: str, step: int) -> bool:
                with progress._lock:
                    entry = progress._bars.get(str(phase_name))
                    if entry is not None:
                        entry[0].n = int(step) + 1
                        entry[0].refresh()
                return True  # False would cancel the build

            def phase_finish(self, phase_name: str) -> None:
                with progress._lock:
                    entry = progress._bars.pop(str(phase_name), None)
                    if entry is not None:
                        entry[0].close()

        return _Monitor()

    # -- the spinner, where TensorRT has no monitor ------------------------
    def _spin(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                self._spinner.refresh()

    def __enter__(self) -> "BuildProgress":
        if hasattr(self._trt, "IProgressMonitor"):
            self.monitor = self._monitor()
        else:
            from tqdm.auto import tqdm

            self._spinner = tqdm(total=None, desc=self._desc, file=self.file,
                                 bar_format="{desc}: {elapsed} elapsed")
            self._thread = threading.Thread(target=self._spin, name="edgehal-build-spinner", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            for bar, _ in self._bars.values():
                bar.close()
            self._bars.clear()
            if self._spinner is not None:
                self._spinner.close()
