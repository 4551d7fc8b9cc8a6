"""Hierarchical localization: manifest, in-graph preprocessing, routing, loss, ONNX export.

Its evaluator is tested in tests/scoring/test_localization.py."""

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from edgehal.scoring import compute_metrics
from edgehal.nets import create_model
from edgehal.nets.base import ExportWrapper

FLOORS = [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3, 4]]
PAIRS = [(b, f) for b, fl in enumerate(FLOORS) for f in fl]


def _model(**kw):
    torch.manual_seed(0)
    heard = [1] * 20
    heard[3] = 0  # an access point never heard in training
    args = dict(building_floors=FLOORS, coord_mean=[200.0, 100.0], coord_scale=150.0, access_points_heard=heard,
                coordinate_origin=[-7700.0, 4864740.0], input_shape=[20], hidden=[32], branch_hidden=[16],
                coord_hidden=[16], dropout=0.0)
    return create_model("hier_localization", **{**args, **kw})


def _rssi(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = -40.0 - 60.0 * torch.rand(n, 20, generator=g)
    return torch.where(torch.rand(n, 20, generator=g) < 0.5, torch.full_like(x, 100.0), x)


def test_manifest_describes_the_hierarchy():
    m = _model()
    man = m.manifest
    assert [h.name for h in man.main_heads] == ["building_floor", "coordinates"]
    assert {h.name for h in man.aux_heads} == {"building", "floor_b0", "floor_b1", "floor_b2",
                                               "coords_b0", "coords_b1", "coords_b2"}
    assert man.head("building").parent_map == tuple(b for b, _ in PAIRS)
    assert man.head("floor_b2").parent_map == tuple(f if b == 2 else -1 for b, f in PAIRS)
    assert man.head("coordinates").task == "regression" and man.head("coordinates").units == "m"
    assert all(h.feeds_main for h in man.aux_heads)  # pruning removes outputs, not the routing
    assert man.evaluator == "localization"
    assert man.building_floors.pairs == tuple(tuple(p) for p in PAIRS)
    assert man.input_shape == (20,)


def test_rssi_preprocessing_is_in_the_graph():
    m = _model().eval()
    x = torch.tensor([[100.0, -110.0, 0.0, -30.0, -55.0] + [100.0] * 15])
    pos = m.rssi(x)
    # not detected -> 0, the floor (-110 dBm) -> 0, 0 dBm -> 1, a never-heard access point -> 0
    torch.testing.assert_close(pos[0, :5], torch.tensor([0.0, 0.0, 1.0, 0.0, 55.0 / 110.0]))
    powed = _model(power=2.0).eval().rssi(x)  # the "powed" representation
    torch.testing.assert_close(powed[0, :5], torch.tensor([0.0, 0.0, 1.0, 0.0, (55.0 / 110.0) ** 2]))


def test_augmentation_is_training_only():
    m = _model(input_dropout=0.3, rssi_shift_db=3.0, rssi_noise_db=1.0)
    x = _rssi(8)
    m.eval()
    with torch.no_grad():
        a, b = m(x), m(x)
    torch.testing.assert_close(a["coordinates"], b["coordinates"])
    pos = m.rssi.linear(x)
    aug = m.augment(pos)
    assert torch.all(aug[pos == 0] == 0)          # nothing appears where nothing was heard
    assert not torch.equal(aug, pos) and float(aug.min()) >= 0.0 and float(aug.max()) <= 1.0


def test_the_predicted_buildings_floor_head_decides():
    m = _model().eval()
    with torch.no_grad():
        out = m(_rssi(64))
    b = out["building"].argmax(1)
    assert len(set(b.tolist())) > 1
    for n in range(64):
        k = int(b[n])
        floor = FLOORS[k][int(out[f"floor_b{k}"][n].argmax())]
        assert PAIRS[int(out["building_floor"][n].argmax())] == (k, floor)
        torch.testing.assert_close(out["coordinates"][n], out[f"coords_b{k}"][n])


def test_coordinates_are_denormalised_in_graph():
    m = _model(coord_branches="shared").eval()
    last = m.coords_shared[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    with torch.no_grad():
        out = m(_rssi(3))
    torch.testing.assert_close(out["coordinates"], torch.tensor([[200.0, 100.0]] * 3))
    assert "coords_b0" not in out


def test_training_routes_each_sample_to_its_true_buildings_heads():
    m = _model().train()
    out = m(_rssi(16))
    labels = {"building": torch.full((16,), 1), "floor": torch.tensor([0, 1, 2, 3] * 4),
              "label": torch.tensor([4, 5, 6, 7] * 4), "coords": torch.randn(16, 2) * 50 + 100}
    loss, parts = m.loss(out, labels, aux_weight=1.0)
    loss.backward()
    assert set(parts) == {"building", "floor", "coords"}

    def grad(module):
        g = [p.grad for p in module.parameters()]
        return sum(float(x.abs().sum()) for x in g if x is not None)

    # every sample is in building 1: only building 1's floor head and regressor learn,
    # whatever building the (untrained) building head predicts
    assert grad(m.floors.branches[1]) > 0 and grad(m.coords.branches[1]) > 0
    for k in (0, 2):
        assert grad(m.floors.branches[k]) == 0 and grad(m.coords.branches[k]) == 0
    assert grad(m.floors.coarse) > 0 and grad(m.shared) > 0


@pytest.mark.parametrize("combine", ["hard", "weighted"])
def test_exports_to_onnx_and_matches_onnxruntime(combine):
    ort = pytest.importorskip("onnxruntime")
    m = _model(combine=combine).eval()
    names = list(m.manifest.head_names)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(ExportWrapper(m, names).eval(), (_rssi(2),), buf, input_names=["rssi"], output_names=names,
                          dynamic_axes={"rssi": {0: "batch"}, **{n: {0: "batch"} for n in names}},
                          opset_version=17, dynamo=False)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for n in (1, 37):
        x = _rssi(n, seed=n)
        with torch.no_grad():
            want = {k: v.numpy() for k, v in m(x).items()}
        got = dict(zip(names, sess.run(None, {"rssi": x.numpy()})))
        for name in names:
            assert np.abs(got[name] - want[name]).max() < 1e-4, name
        for name in ("building_floor", "building"):
            assert np.array_equal(got[name].argmax(1), want[name].argmax(1))


def _data_root():
    root = Path(os.environ.get("EDGEHAL_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
    if not (root / "UJIIndoorLoc" / "trainingData.csv").is_file():
        pytest.skip("UJIIndoorLoc not found: set EDGEHAL_DATA to the shared data folder")
    return root


def test_trains_on_real_data_and_onnxruntime_gives_the_same_metrics(tmp_path):
    """One short epoch on real fingerprints from the config; the evaluator on torch and onnxruntime outputs."""
    ort = pytest.importorskip("onnxruntime")
    from edgehal.checkpoint import load_checkpoint
    from edgehal.config import load_config
    from edgehal.pipeline import data_for_checkpoint, predict
    from edgehal.train import train

    root = _data_root()
    cfg = load_config(Path(__file__).resolve().parents[2] / "models" / "configs" / "ujiindoorloc_hier.yaml",
                      [f"output_dir={tmp_path / 'run'}", "epochs=1", "data.limit=3000", f"data.root={root}",
                       "model.hidden=[128]"])
    ckpt = load_checkpoint(train(cfg, log=lambda _: None, progress=False))
    test = ckpt.metrics["test"]["summary"]
    assert test["count"] == 1111 and test["building_hit_rate"] > 80.0
    assert ckpt.preprocessing.details["coordinate_origin"] == [-7700.0, 4864740.0]
    model = ckpt.build_model()
    data = data_for_checkpoint(ckpt, data_root=root)
    names = list(model.manifest.head_names)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(ExportWrapper(model, names).eval(), (data.test.x[:2],), buf, input_names=["rssi"],
                          output_names=names, opset_version=17, dynamo=False,
                          dynamic_axes={"rssi": {0: "batch"}, **{n: {0: "batch"} for n in names}})
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    got = dict(zip(names, sess.run(None, {"rssi": data.test.x.numpy()})))
    want = predict(model, data.test)
    assert np.abs(got["coordinates"] - want["coordinates"]).max() < 1e-4  # metres
    onnx_metrics = compute_metrics(model.manifest, got, data.test.numpy_labels())
    torch_metrics = compute_metrics(model.manifest, want, data.test.numpy_labels())
    for key in ("building_hit_rate", "floor_hit_rate"):
        assert onnx_metrics["summary"][key] == torch_metrics["summary"][key] == test[key]
    assert onnx_metrics["summary"]["mean_error_m"] == pytest.approx(test["mean_error_m"], abs=1e-4)
