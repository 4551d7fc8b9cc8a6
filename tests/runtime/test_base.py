"""The Runner contract every backend shares: activation, input checks, output selection."""

from __future__ import annotations

import numpy as np
import pytest

from edgehal.errors import EdgehalError
from edgehal.runtime.base import Runner, check_feed, format_shape
from edgehal.tensors import TensorSpec


class Doubling(Runner):
    """The smallest real runner: y = 2x, z = x + 1. It records what _infer received."""

    name = "doubling"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict] = []
        self.activations = 0

    def _activate(self) -> None:
        self.activations += 1

    @property
    def manifest(self):
        return None

    def input_specs(self):
        return [TensorSpec("x", "float32", (-1, 3))]

    def output_names(self):
        return ["y", "z"]

    @property
    def max_batch(self):
        return 4

    def _infer(self, feed, outputs):
        self.seen.append(feed)
        out = {"y": feed["x"] * 2, "z": feed["x"] + 1}
        return {k: out[k] for k in outputs}


def test_infer_needs_activation_and_activation_happens_once():
    r = Doubling()
    with pytest.raises(EdgehalError, match="runner doubling | is not active"):
        r.infer({"x": np.zeros((1, 3), np.float32)})
    with r:
        r.activate()
        assert r.activations == 1 and r.is_active
        out = r.infer({"x": np.ones((2, 3), np.float32)}, outputs=["z"])
        assert list(out) == ["z"] and np.array_equal(out["z"], np.full((2, 3), 2, np.float32))
    assert not r.is_active


@pytest.mark.parametrize("feed, message", [
    ({}, "input 'x' is missing"),
    ({"x": np.zeros((1, 3), np.float32), "w": np.zeros(1)}, "input 'w' is not a model input"),
    ({"x": np.zeros((1, 3), np.float64)}, "has dtype float64. Note: dtype float32"),
    ({"x": np.zeros((3,), np.float32)}, r"rank 1\). Note: rank 2, shape \(N, 3\)"),
    ({"x": np.zeros((1, 4), np.float32)}, "dimension 1 is 4"),
    ({"x": np.zeros((5, 3), np.float32)}, "batch 5 is too large. Note: at most 4"),
])
def test_a_bad_feed_is_refused_before_the_backend_sees_it(feed, message):
    with Doubling() as r:
        with pytest.raises(EdgehalError, match=message):
            r.infer(feed)
        assert r.seen == []


def test_unknown_output_lists_the_outputs():
    with Doubling() as r, pytest.raises(EdgehalError, match=r"output 'w' \| is not an output of doubling.*\['y', 'z'\]"):
        r.infer({"x": np.zeros((1, 3), np.float32)}, outputs=["w"])


def test_check_false_hands_the_arrays_over_unchanged():
    x = np.asfortranarray(np.ones((2, 3), np.float32))
    with Doubling() as r:
        r.infer({"x": x}, check=False)
        assert r.seen[-1]["x"] is x  # not copied, not checked: a timing loop's pre-checked feed
        r.infer({"x": x})
        assert r.seen[-1]["x"].flags.c_contiguous  # the checked path makes it contiguous


def test_defaults_of_the_contract():
    r = Doubling()
    assert r.precision == "fp32" and r.device == "cpu" and r.device_timer({"x": np.zeros((1, 3))}) is None
    assert format_shape((-1, None, 28)) == "(N, N, 28)"
    assert set(check_feed({"x": np.zeros((1, 3), np.float32)}, r.input_specs())) == {"x"}
