"""TorchRunner: device, precision and threads as bench reads them; CUDA-event timing on a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgehal.checkpoint import load_checkpoint
from edgehal.errors import EdgehalError
from edgehal.runtime.torch import TorchRunner


def _feed(manifest, batch: int) -> dict[str, np.ndarray]:
    x = np.random.default_rng(0).standard_normal((batch, *manifest.input_shape)).astype(manifest.input_dtype)
    return {manifest.input_name: x}


def test_cpu_runner_reports_device_precision_threads_and_no_device_timer(mnist_checkpoint):
    before = torch.get_num_threads()
    with TorchRunner(mnist_checkpoint, device="cpu", threads=1) as r:
        assert (r.device, r.precision, r.threads) == ("cpu", "fp32", 1)
        assert torch.get_num_threads() == 1
        assert r.device_timer(_feed(r.manifest, 2)) is None
    assert torch.get_num_threads() == before
    assert TorchRunner(mnist_checkpoint, device="cpu").threads is None


def test_unchecked_infer_gives_the_checked_result(mnist_checkpoint):
    with TorchRunner(load_checkpoint(mnist_checkpoint), device="cpu", threads=1) as r:
        feed = _feed(r.manifest, 3)
        checked, unchecked = r.infer(feed), r.infer(feed, check=False)
        assert list(checked) == list(r.manifest.head_names)
        for name in checked:
            np.testing.assert_array_equal(checked[name], unchecked[name])
        with pytest.raises(EdgehalError, match="rank"):
            r.infer({r.manifest.input_name: feed[r.manifest.input_name][0]})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
def test_device_timer_uses_cuda_events_on_a_gpu(mnist_checkpoint):  # pragma: no cover - GPU only
    from edgehal.bench.options import BenchOptions
    from edgehal.bench.timing import measure

    with TorchRunner(mnist_checkpoint, device="cuda") as r:
        assert r.device == f"cuda:{torch.cuda.current_device()}"
        timer = r.device_timer(_feed(r.manifest, 8))
        assert timer is not None and timer() > 0
        options = BenchOptions(warmup_runs=2, warmup_seconds=0.0, min_runs=6, min_seconds=0.0,
                               max_preemptions_per_s=None)
        m = measure(timed_call=timer, options=options, batch_size=8)
        assert m.stats.runs >= 6 and m.stats.median_ms > 0
