"""UJIIndoorLoc through the same path as the classifiers: export (keep, prune) and parity."""

import pytest

from edgehal.parity import run_parity

quiet = lambda _: None  # noqa: E731


def test_parity_identical_hit_rates_and_coordinates(loc_checkpoint, loc_exports):
    rep = run_parity(loc_checkpoint, [loc_exports["keep"], loc_exports["prune"]], log=quiet)
    assert rep.passed and rep.samples == 1111
    keep, prune = rep.artifacts
    assert {h.head for h in prune.heads} == {"building_floor", "coordinates"}
    assert {"building", "floor_b0", "floor_b1", "floor_b2"} <= {h.head for h in keep.heads}
    coords = next(h for h in keep.heads if h.head == "coordinates")
    assert coords.max_abs_diff < 1e-3  # metres: folding BatchNormalization into Gemm moves it ~1e-4
    for result in (keep, prune):
        for key in ("building_hit_rate", "floor_hit_rate"):
            assert result.metrics["summary"][key] == rep.reference_metrics["summary"][key]
        assert result.metrics["summary"]["mean_error_m"] == pytest.approx(
            rep.reference_metrics["summary"]["mean_error_m"], abs=1e-4)
