"""Build progress: TensorRT's phases as tqdm bars where it has a progress monitor, a spinner where not."""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fakes"))
import fake_tensorrt  # noqa: E402

from edgehal.export.tensorrt.progress import BuildProgress  # noqa: E402


@pytest.fixture(params=fake_tensorrt.MAJORS, ids=lambda m: f"trt{m}")
def trt(monkeypatch, request):
    fake_tensorrt.install(monkeypatch, request.param)
    import tensorrt

    return tensorrt


def test_phases_become_bars_and_lines_print_above_them(trt, capsys):
    with BuildProgress(trt) as progress:
        monitor = progress.monitor
        assert isinstance(monitor, trt.IProgressMonitor)
        monitor.phase_start("Building engine", None, 2)
        monitor.phase_start("Tactic selection", "Building engine", 3)
        assert all(monitor.step_complete("Tactic selection", step) for step in range(3))
        monitor.phase_finish("Tactic selection")
        progress.write("TensorRT warning: slow")
        assert monitor.step_complete("Building engine", 0)
    err = capsys.readouterr().err
    assert "Building engine" in err and "Tactic selection" in err and "3/3" in err
    assert "TensorRT warning: slow\n" in err


def test_without_a_progress_monitor_a_spinner_shows_the_elapsed_time(capsys):
    old = types.SimpleNamespace(__version__="10.0.0")  # a TensorRT without IProgressMonitor
    with BuildProgress(old, desc="building engine") as progress:
        assert progress.monitor is None
        time.sleep(0.6)  # at least one refresh of the spinner thread
    err = capsys.readouterr().err
    assert "building engine: 00:00 elapsed" in err
