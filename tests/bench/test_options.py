"""Bench options: every bad value is refused up front, naming the option and what it accepts."""

from __future__ import annotations

import pytest

from edgehal.bench.options import BenchOptions
from edgehal.errors import EdgehalError


@pytest.mark.parametrize("kwargs, match", [
    (dict(backends=("torch", "pytorch")), "one of torch, torch-compile, ort-cpu, ort-cuda, ort-tensorrt, tensorrt"),
    (dict(backends=()), "--backend"),
    (dict(batch_sizes=()), "--batch-sizes"),
    (dict(batch_sizes=(1, 0)), "--batch-sizes"),
    (dict(batch_sizes=(8, 8)), "each batch size once"),
    (dict(threads=0), "--threads"),
    (dict(warmup_runs=-1), "--warmup-runs"),
    (dict(warmup_seconds=-0.5), "--warmup-seconds"),
    (dict(windows=1), "--windows"),
    (dict(min_runs=2, windows=3), "--min-runs"),
    (dict(min_seconds=float("nan")), "--min-seconds"),
    (dict(stability_threshold=10), "fraction between 0 and 1"),
    (dict(stability_threshold=0), "--stability-threshold"),
    (dict(max_windows=2, windows=3), "--max-windows"),
    (dict(tegrastats_interval_ms=0), "--tegrastats-interval"),
    (dict(max_preemptions_per_s=0), "--max-preemptions"),
])
def test_bad_options_are_rejected(kwargs, match):
    with pytest.raises(EdgehalError, match=match):
        BenchOptions(**kwargs).validate()


def test_default_options_are_valid_and_windows_split_the_minimums():
    o = BenchOptions().validate()
    assert o.window_runs == 34 and o.window_ns == 1_000_000_000
    assert o.to_dict()["batch_sizes"] == [1]
