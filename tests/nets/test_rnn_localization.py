"""Hierarchical localization by recurrence: manifest, step feedback, teacher forcing, ONNX export, training, parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgehal.nets import create_model
from edgehal.nets.rnn import CELLS

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[2]
FLOORS = [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3, 4]]
PAIRS = [(b, f) for b, fl in enumerate(FLOORS) for f in fl]
COMMON = dict(building_floors=FLOORS, coord_mean=[200.0, 100.0], coord_scale=150.0,
              coordinate_origin=[-7700.0, 4864740.0], input_shape=[20], hidden=[32], coord_hidden=[16])
quiet = lambda _: None  # noqa: E731


def _model(**kw):
    torch.manual_seed(0)
    return create_model("recurrent_localization", **{**COMMON, "hidden_size": 16, "dropout": 0.0, **kw})


def _rssi(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = -40.0 - 60.0 * torch.rand(n, 20, generator=g)
    return torch.where(torch.rand(n, 20, generator=g) < 0.5, torch.full_like(x, 100.0), x)


def _labels(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(len(PAIRS), (n,), generator=g)
    return {"label": label, "building": torch.tensor([PAIRS[i][0] for i in label]),
            "floor": torch.tensor([PAIRS[i][1] for i in label]), "coords": torch.randn(n, 2, generator=g) * 50 + 150}


def _cell_inputs(model):
    """Record the input of every call of the recurrent cell."""
    seen: list[torch.Tensor] = []
    handle = model.cell.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach().clone()))
    return seen, handle


def test_manifest_has_hier_localizations_heads_and_evaluator():
    rec = _model(cell="gru").manifest
    hier = create_model("hier_localization", **COMMON).manifest
    assert [h.name for h in rec.main_heads] == ["building_floor", "coordinates"]
    assert {h.name for h in rec.aux_heads} == {"building", "floor_b0", "floor_b1", "floor_b2"}
    for name in rec.head_names:  # same name, same meaning: classes, hierarchy, units
        a, b = rec.head(name), hier.head(name)
        assert (a.kind, a.level, a.task, a.class_names, a.parent_map, a.units, a.feeds_main) == \
            (b.kind, b.level, b.task, b.class_names, b.parent_map, b.units, b.feeds_main)
    assert rec.evaluator == "localization" and rec.input_name == "rssi" and rec.input_shape == (20,)
    assert rec.building_floors == hier.building_floors
    assert rec.notes["cell"] == "gru" and rec.notes["recurrence"]["steps"] == ["building", "floor", "coordinates"]


@pytest.mark.parametrize("bad,match", [
    ({"cell": "transformer"}, "not a recurrent cell"), ({"teacher_forcing": 1.5}, "teacher_forcing"),
    ({"combine": "vote"}, "combine"), ({"building_floors": [[0, 0]]}, "distinct floor"),
    ({"activation": "gelu"}, "activation"), ({"coord_frame": "floor"}, "coord_frame")])
def test_bad_options_are_refused_by_name(bad, match):
    from edgehal.errors import EdgehalError

    with pytest.raises(EdgehalError, match=match):
        _model(**bad)


@pytest.mark.parametrize("cell", list(CELLS))
def test_each_step_is_fed_the_shared_features_and_the_previous_steps_output(cell):
    m = _model(cell=cell).eval()
    x = _rssi(32)
    seen, handle = _cell_inputs(m)
    with torch.no_grad():
        features = m.forward_features(x)
        out = m.forward_heads(features)
    handle.remove()
    assert len(seen) == 3
    d, nb = features.shape[1], len(FLOORS)
    for step in seen:
        torch.testing.assert_close(step[:, :d], features)
    zero_b, zero_f = torch.zeros(32, nb), torch.zeros(32, 5)
    torch.testing.assert_close(seen[0][:, d:], torch.cat([zero_b, zero_f], 1))
    torch.testing.assert_close(seen[1][:, d:], torch.cat([torch.softmax(out["building"], 1), zero_f], 1))
    # building 2 has every floor level 0..4, so its floor output is the whole floor step's logits
    torch.testing.assert_close(seen[2][:, d:], torch.cat([zero_b, torch.softmax(out["floor_b2"], 1)], 1))
    # the decision: the building of step 1, and the best of that building's floors from step 2
    for n in range(32):
        k = int(out["building"][n].argmax())
        floor = FLOORS[k][int(out[f"floor_b{k}"][n].argmax())]
        assert PAIRS[int(out["building_floor"][n].argmax())] == (k, floor)


def test_teacher_forcing_feeds_the_truth_in_training_only():
    labels = _labels(16)
    m = _model(teacher_forcing=1.0).train()
    out = m(_rssi(16))
    seen, handle = _cell_inputs(m)
    loss, parts = m.loss(out, labels, aux_weight=1.0)
    handle.remove()
    d = seen[0].shape[1] - len(FLOORS) - 5     # [features, building slot (3), floor slot (5)]
    torch.testing.assert_close(seen[1][:, d:d + 3], torch.nn.functional.one_hot(labels["building"], 3).float())
    torch.testing.assert_close(seen[2][:, d + 3:], torch.nn.functional.one_hot(labels["floor"], 5).float())
    loss.backward()
    assert set(parts) == {"building", "floor", "coords"} and torch.isfinite(loss)
    assert m.cell.weight_x.grad is not None and float(m.cell.weight_x.grad.abs().sum()) > 0
    # inference never sees the labels: no extra outputs, deterministic
    m.eval()
    with torch.no_grad():
        a, b = m(_rssi(16)), m(_rssi(16))
    assert set(a) == set(m.manifest.head_names)
    torch.testing.assert_close(a["coordinates"], b["coordinates"])
    # without teacher forcing, training uses the free-running outputs as they are
    assert "_features" not in _model(teacher_forcing=0.0).train()(_rssi(4))


def test_step_3_predicts_the_position_in_the_predicted_buildings_frame():
    m = _model(cell="lstm").eval()
    m.building_centre.copy_(torch.tensor([[50.0, 200.0], [210.0, 140.0], [350.0, 80.0]]))
    m.building_spread.copy_(torch.tensor([40.0, 60.0, 41.0]))
    torch.nn.init.normal_(m.building_head.weight, std=3.0)          # so that several buildings are predicted
    x = _rssi(32)
    with torch.no_grad():
        features = m.forward_features(x)
        building, _, position = m.steps(features)
        out = m.forward_heads(features)
    k = building.argmax(1)
    assert len(set(k.tolist())) > 1
    want = m.building_centre[k] + m.building_spread[k].unsqueeze(1) * position
    torch.testing.assert_close(out["coordinates"], want)
    weighted = _model(cell="lstm", combine="weighted").eval()   # frames weighted by building probability
    p = torch.tensor([[0.5, 0.5, 0.0]])
    torch.testing.assert_close(weighted.metres(torch.ones(1, 2), torch.log(p + 1e-30)),
                               weighted.building_centre[:2].mean(0, keepdim=True) + weighted.building_spread[0])


def test_building_frames_are_the_running_mean_and_rms_spread_of_training_coordinates():
    m = _model().train()
    torch.testing.assert_close(m.building_centre, torch.tensor([[200.0, 100.0]] * 3))   # the global frame
    torch.testing.assert_close(m.building_spread, torch.full((3,), 150.0))
    g = torch.Generator().manual_seed(3)
    building = torch.tensor([0] * 30 + [1] * 50)                    # building 2 never seen
    centre = torch.where(building.unsqueeze(1) == 0, torch.tensor([50.0, 200.0]), torch.tensor([210.0, 140.0]))
    coords = torch.randn(80, 2, generator=g) * 20 + centre
    for chunk in torch.arange(80).split(17):                        # batch by batch = all at once
        m.update_frames(building[chunk], coords[chunk])
    for b in (0, 1):
        c = coords[building == b].double()
        torch.testing.assert_close(m.building_centre[b].double(), c.mean(0), rtol=0, atol=1e-3)
        rms = (c - c.mean(0)).square().sum(1).mean().sqrt()
        torch.testing.assert_close(m.building_spread[b].double(), rms, rtol=1e-3, atol=0)
    torch.testing.assert_close(m.building_centre[2], torch.tensor([200.0, 100.0]))
    assert float(m.building_spread[2]) == 150.0
    # training updates the frames through loss(); evaluation and coord_frame: global leave them alone
    labels = _labels(16)
    before = m.building_centre.clone()
    m.loss(m(_rssi(16)), labels, aux_weight=1.0)
    assert not torch.equal(m.building_centre, before)
    glob = _model(coord_frame="global").train()
    glob.loss(glob(_rssi(16)), labels, aux_weight=1.0)
    torch.testing.assert_close(glob.building_centre, torch.tensor([[200.0, 100.0]] * 3))
    m.eval()
    before = m.building_centre.clone()
    with torch.no_grad():
        m.loss(m(_rssi(16)), labels, aux_weight=1.0)
    assert torch.equal(m.building_centre, before)


@pytest.mark.parametrize("cell", list(CELLS))
def test_onnx_export_is_an_unroll_that_onnxruntime_runs_like_pytorch(cell):
    from edgehal.export.inspect import inspect_model
    from edgehal.export.graph import check_model, prune_outputs
    from edgehal.export.onnx import ExportOptions, _torch_export

    m = _model(cell=cell, hidden_size=24).eval()
    for p in m.cell.parameters():     # larger than the init, so the gates saturate somewhere
        torch.nn.init.uniform_(p, -0.5, 0.5)
    names = list(m.manifest.head_names)
    proto = _torch_export(m, "rssi", names, _rssi(4).numpy(), ExportOptions())   # what `edgehal export` runs
    check_model(proto, what=cell)
    ops = {n.op_type for n in proto.graph.node}
    assert not {"Loop", "Scan", "If", "RNN", "LSTM", "GRU"} & ops, ops
    pruned = prune_outputs(proto, m.manifest.select("prune").head_names)
    for graph in (proto, pruned):                                   # `edgehal inspect --target tensorrt`
        report = inspect_model(graph, path=f"{cell}.onnx")
        assert report.ok, report.lines()
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (1, 37):            # dynamic batch
        x = _rssi(batch, seed=batch)
        got = dict(zip(names, sess.run(None, {"rssi": x.numpy()})))
        with torch.no_grad():
            want = {k: v.numpy() for k, v in m(x).items()}
        assert float(np.abs(got["coordinates"] - want["coordinates"]).max()) < 1e-4   # metres
        for name in ("building_floor", "building", "floor_b0", "floor_b1", "floor_b2"):
            np.testing.assert_array_equal(got[name].argmax(1), want[name].argmax(1))
            np.testing.assert_allclose(got[name], want[name], atol=1e-5)


# -- real data (UJIIndoorLoc from the shared data folder) -------------------------------------------------


def _config(cell, tmp, extra=()):
    from edgehal.config import load_config

    return load_config(REPO / "models" / "configs" / f"ujiindoorloc_recurrent_{cell}.yaml",
                       [f"output_dir={tmp}", "epochs=1", "data.limit=2000", "threads=1", "warmup_epochs=0",
                        "batch_size=16", *extra])


@pytest.fixture(scope="module")
def uji(data_root):
    if not (data_root / "UJIIndoorLoc" / "trainingData.csv").is_file():
        pytest.skip("UJIIndoorLoc not found in the shared data folder")
    return data_root


def test_configs_name_every_cell():
    from edgehal.config import load_config

    for cell in CELLS:
        cfg = load_config(REPO / "models" / "configs" / f"ujiindoorloc_recurrent_{cell}.yaml")
        assert cfg.model["name"] == "recurrent_localization" and cfg.model["cell"] == cell
        assert cfg.name == f"ujiindoorloc_recurrent_{cell}" and cfg.data.dataset == "ujiindoorloc"


def test_a_training_step_on_real_data_reduces_the_loss(uji, tmp_path):
    from edgehal.pipeline import load_data, model_kwargs_for
    from edgehal.train import _optimizer

    cfg = _config("gru", tmp_path, ["model.teacher_forcing=0.5"])
    data = load_data(cfg)
    torch.manual_seed(0)
    model = create_model("recurrent_localization", **model_kwargs_for(cfg, data)).train()
    batch = data.train.subset(torch.arange(256))
    x, labels = batch.x.float(), batch.labels

    def loss_now():
        torch.manual_seed(1)      # the same augmentation, dropout and teacher-forcing draws each time
        return model.loss(model(x), labels, aux_weight=1.0)[0]

    with torch.no_grad():
        before = float(loss_now())
    opt = _optimizer(cfg, model)
    for _ in range(10):
        loss = loss_now()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(loss_now()) < 0.8 * before


def test_parity_passes_on_kept_and_pruned_exports_of_a_trained_model(uji, tmp_path):
    from edgehal.checkpoint import load_checkpoint
    from edgehal.export.onnx import ExportOptions, export_onnx
    from edgehal.parity import run_parity
    from edgehal.train import train

    ckpt = train(_config("peephole_lstm", tmp_path / "run"), log=quiet, progress=False)
    summary = load_checkpoint(ckpt).metrics["test"]["summary"]   # the localization evaluator
    assert summary["count"] == 1111 and summary["building_hit_rate"] > 60.0  # chance: about 40
    paths = {aux: tmp_path / f"rec.{aux}.onnx" for aux in ("keep", "prune")}
    for aux, path in paths.items():
        export_onnx(ckpt, path, options=ExportOptions(aux=aux), log=quiet)
    rep = run_parity(ckpt, [paths["keep"], paths["prune"]], log=quiet)
    assert rep.passed and rep.samples == 1111
    keep, prune = rep.artifacts
    assert {h.head for h in prune.heads} == {"building_floor", "coordinates"}
    assert {"building", "floor_b0", "floor_b1", "floor_b2"} <= {h.head for h in keep.heads}
    for result in (keep, prune):
        coords = next(h for h in result.heads if h.head == "coordinates")
        assert coords.max_abs_diff < 1e-4  # metres
        decision = next(h for h in result.heads if h.head == "building_floor")
        assert decision.agreement == 100.0
        for key in ("building_hit_rate", "floor_hit_rate"):
            assert result.metrics["summary"][key] == rep.reference_metrics["summary"][key]
