"""The UJIIndoorLoc loader on the real shared files, and clear errors on broken ones."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from edgehal.data import build_dataset, dataset_info
from edgehal.data.ujiindoorloc import COLUMNS, read_uji_csv
from edgehal.errors import EdgehalError

REPO = Path(__file__).resolve().parents[2]


def _root() -> Path:
    root = Path(os.environ.get("EDGEHAL_DATA", REPO.parent / "shared" / "data"))
    if not (root / "UJIIndoorLoc" / "trainingData.csv").is_file():
        pytest.skip("UJIIndoorLoc not found: set EDGEHAL_DATA to the shared data folder")
    return root


@pytest.fixture(scope="module")
def bundle():
    return build_dataset("ujiindoorloc", root=_root(), val_size=1000, seed=0)


def test_real_files_load_with_the_published_shape(bundle):
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (18937, 1000, 1111)
    assert bundle.input_shape == (520,)
    assert len(bundle.class_names) == 13 and bundle.class_names[0] == "B0F0" and bundle.class_names[-1] == "B2F4"
    assert bundle.model_kwargs["building_floors"] == [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3, 4]]
    info = dataset_info("ujiindoorloc")  # what a model is built from before the files are read
    assert (info.input_shape, info.class_names, info.layout) == (bundle.input_shape, bundle.class_names, bundle.layout)
    assert info.model_kwargs["building_floors"] == bundle.model_kwargs["building_floors"]
    x = bundle.train.x
    assert x.dtype == torch.float32 and x.shape[1] == 520
    assert float(x.max()) == 100.0 and float(x.min()) >= -110.0     # raw values: the model maps them
    for split in (bundle.train, bundle.val, bundle.test):
        lab = split.labels
        assert set(lab) == {"label", "building", "floor", "coords"}
        assert int(lab["building"].max()) == 2 and int(lab["floor"].max()) == 4
        assert lab["coords"].dtype == torch.float32
        # metres from the local origin: small numbers, resolved to well under a millimetre in float32
        assert 0.0 <= float(lab["coords"].min()) and float(lab["coords"].max()) < 500.0


def test_preprocessing_is_fitted_on_the_training_split_only(bundle):
    k = bundle.model_kwargs
    heard = (bundle.train.x != 100).any(0).int().tolist()
    assert k["access_points_heard"] == heard
    coords = bundle.train.labels["coords"].double()
    np.testing.assert_allclose(k["coord_mean"], coords.mean(0).numpy(), rtol=1e-6)
    assert k["coordinate_origin"] == [-7700.0, 4864740.0]
    pre = bundle.preprocessing()
    assert pre.layout == "NC" and pre.input_range == (-120.0, 0.0) and pre.scale == 1.0
    assert pre.details["undetected_dbm"] == -110.0 and pre.details["coordinate_origin"] == [-7700.0, 4864740.0]
    assert "validationData.csv" in pre.details["test_file"] and "held-out" in pre.details["fitted_on"]


def test_test_split_is_validationdata_and_labels_are_consistent(bundle):
    raw = read_uji_csv(_root() / "UJIIndoorLoc" / "validationData.csv")
    np.testing.assert_array_equal(bundle.test.x.numpy(), raw[:, :520].astype(np.float32))
    b, f = bundle.test.labels["building"].numpy(), bundle.test.labels["floor"].numpy()
    np.testing.assert_array_equal(b, raw[:, COLUMNS.index("BUILDINGID")])
    pairs = [(int(n[1]), int(n[3])) for n in bundle.class_names]
    assert [pairs[i] for i in bundle.test.labels["label"].tolist()] == list(zip(b.tolist(), f.tolist()))


# -- broken files, written in the exact format ---------------------------------------------

def _row(rng, building=0, floor=0):
    rssi = np.where(rng.random(520) < 0.9, 100, rng.integers(-100, -30, 520))
    meta = [-7600.5, 4864900.25, floor, building, 101, 2, 1, 14, 1371713733]
    return ",".join(str(v) for v in list(rssi) + meta)


def _write(path: Path, rows, header=None):
    header = header if header is not None else ",".join(COLUMNS)
    path.write_text(header + "\n" + "\n".join(rows) + ("\n" if rows else ""))
    return path


def test_a_good_small_file_reads(tmp_path):
    rng = np.random.default_rng(0)
    data = read_uji_csv(_write(tmp_path / "ok.csv", [_row(rng) for _ in range(3)]))
    assert data.shape == (3, 529)


def test_truncated_file_names_the_last_line(tmp_path):
    rng = np.random.default_rng(0)
    rows = [_row(rng) for _ in range(4)]
    p = tmp_path / "trunc.csv"
    text = ",".join(COLUMNS) + "\n" + "\n".join(rows)
    p.write_text(text[: len(text) - 1500])  # cut in the middle of the 4th row
    with pytest.raises(EdgehalError, match=r"line 5 \| has \d+ fields .*truncated.*Note: .*529"):
        read_uji_csv(p)


def test_wrong_column_count_is_a_clear_error(tmp_path):
    rng = np.random.default_rng(0)
    rows = [",".join(_row(rng).split(",")[1:]) for _ in range(2)]
    header = ",".join(COLUMNS[1:])
    with pytest.raises(EdgehalError, match=r"line 1 \(header\) \| has 528 columns"):
        read_uji_csv(_write(tmp_path / "cols.csv", rows, header))
    # right header, one short row in the middle
    good = [_row(rng) for _ in range(3)]
    good[1] = ",".join(good[1].split(",")[:-1])
    with pytest.raises(EdgehalError, match=r"line 3 \| has 528 fields"):
        read_uji_csv(_write(tmp_path / "row.csv", good))


@pytest.mark.parametrize("column,value,match", [
    ("WAP007", "50", r"line 3, column WAP007 \| RSSI 50 is out of range"),
    ("WAP001", "abc", r"line 3, column WAP001 \| value 'abc' is not a number"),
    ("FLOOR", "7", r"line 3, column FLOOR \| value 7 is out of range"),
    ("BUILDINGID", "1.5", r"line 3, column BUILDINGID \| value 1.5 is out of range"),
    ("LATITUDE", "nan", r"line 3, column LATITUDE \| value nan is not finite"),
])
def test_bad_values_name_line_and_column(tmp_path, column, value, match):
    rng = np.random.default_rng(0)
    rows = [_row(rng) for _ in range(3)]
    fields = rows[1].split(",")
    fields[COLUMNS.index(column)] = value
    rows[1] = ",".join(fields)
    with pytest.raises(EdgehalError, match=match):
        read_uji_csv(_write(tmp_path / "bad.csv", rows))


def test_wrong_header_empty_and_missing_files(tmp_path):
    rng = np.random.default_rng(0)
    header = ",".join(COLUMNS).replace("LONGITUDE", "LONGITUD")
    with pytest.raises(EdgehalError, match="column 521 is 'LONGITUD', not 'LONGITUDE'"):
        read_uji_csv(_write(tmp_path / "h.csv", [_row(rng)], header))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(EdgehalError, match="is empty"):
        read_uji_csv(tmp_path / "empty.csv")
    with pytest.raises(EdgehalError, match="no data rows"):
        read_uji_csv(_write(tmp_path / "hdr.csv", []))
    with pytest.raises(EdgehalError, match="file not found"):
        read_uji_csv(tmp_path / "nope.csv")


def test_builder_on_small_files_and_a_missing_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "UJIIndoorLoc"
    folder.mkdir()
    train_rows = [_row(rng, b, f) for b in range(3) for f in range(2) for _ in range(4)]
    _write(folder / "trainingData.csv", train_rows)
    _write(folder / "validationData.csv", [_row(rng, 1, 1), _row(rng, 2, 0)])
    b = build_dataset("ujiindoorloc", root=tmp_path, val_size=4)
    assert (len(b.train), len(b.val), len(b.test)) == (20, 4, 2)
    assert b.class_names == ("B0F0", "B0F1", "B1F0", "B1F1", "B2F0", "B2F1")
    _write(folder / "validationData.csv", [_row(rng, 2, 3)])
    with pytest.raises(EdgehalError, match=r"building/floor \(2, 3\)"):
        build_dataset("ujiindoorloc", root=tmp_path, val_size=4)
    with pytest.raises(EdgehalError, match="UJIIndoorLoc/ not found"):
        build_dataset("ujiindoorloc", root=tmp_path / "UJIIndoorLoc")


# -- the validation split and the test file ------------------------------------------------

def _user_row(rng, building, floor, user):
    rssi = np.where(rng.random(520) < 0.9, 100, rng.integers(-100, -30, 520))
    meta = [-7600.5 + 10 * building, 4864900.25 + 3 * floor, floor, building, 101, 2, user, 20 + user, 1371713733]
    return ",".join(str(v) for v in list(rssi) + meta)


def _users_folder(root: Path, *, with_test: bool) -> Path:
    """Users 1 and 2 cover every building-floor pair, user 3 only (0, 0) and (1, 1)."""
    rng = np.random.default_rng(1)
    folder = root / "UJIIndoorLoc"
    folder.mkdir()
    rows = [_user_row(rng, b, f, u) for u in (1, 2) for b in range(2) for f in range(2) for _ in range(5)]
    rows += [_user_row(rng, 0, 0, 3) for _ in range(4)] + [_user_row(rng, 1, 1, 3) for _ in range(3)]
    _write(folder / "trainingData.csv", rows)
    if with_test:
        _write(folder / "validationData.csv", [_user_row(rng, 1, 0, 0), _user_row(rng, 0, 1, 0)])
    return folder


def test_held_out_users_are_the_validation_split_and_nothing_of_theirs_is_trained_on(tmp_path):
    _users_folder(tmp_path, with_test=True)
    b = build_dataset("ujiindoorloc", root=tmp_path, val_split="held_out_users", val_users=[2, 3])
    assert (len(b.train), len(b.val), len(b.test)) == (20, 27, 2)
    # user 1's rows are exactly the training split (its coordinates encode building and floor)
    assert sorted(b.train.labels["label"].tolist()) == sorted([0] * 5 + [1] * 5 + [2] * 5 + [3] * 5)
    assert b.preprocessing().details["val_split"] == "held_out_users"
    assert "users [2, 3]" in b.preprocessing().details["fitted_on"]
    # what is fitted comes from the training users only: training on user 3 too moves the coordinate mean
    with_user_3 = build_dataset("ujiindoorloc", root=tmp_path, val_split="held_out_users", val_users=[2])
    assert with_user_3.model_kwargs["coord_mean"] != b.model_kwargs["coord_mean"]
    assert len(with_user_3.train) == 27


def test_validation_split_options_are_checked(tmp_path):
    _users_folder(tmp_path, with_test=True)
    with pytest.raises(EdgehalError, match="one of"):
        build_dataset("ujiindoorloc", root=tmp_path, val_split="latest")
    with pytest.raises(EdgehalError, match="no rows of user 7"):
        build_dataset("ujiindoorloc", root=tmp_path, val_split="held_out_users", val_users=[2, 7])
    with pytest.raises(EdgehalError, match="every row"):
        build_dataset("ujiindoorloc", root=tmp_path, val_split="held_out_users", val_users=[1, 2, 3])
    with pytest.raises(EdgehalError, match="no val_size"):
        build_dataset("ujiindoorloc", root=tmp_path, val_split="held_out_users", val_size=10)
    with pytest.raises(EdgehalError, match="val_users only"):
        build_dataset("ujiindoorloc", root=tmp_path, val_users=[2])


def test_the_published_split_holds_out_users_covering_every_building_floor():
    from edgehal.data.ujiindoorloc import HELD_OUT_USERS

    raw = read_uji_csv(_root() / "UJIIndoorLoc" / "trainingData.csv")
    user = raw[:, COLUMNS.index("USERID")].astype(int)
    pair = [tuple(p) for p in raw[:, [COLUMNS.index("BUILDINGID"), COLUMNS.index("FLOOR")]].astype(int).tolist()]
    held = np.isin(user, HELD_OUT_USERS)
    everything = set(pair)
    assert len(everything) == 13
    assert {p for p, h in zip(pair, held) if h} == everything      # validation sees every floor
    assert {p for p, h in zip(pair, held) if not h} == everything  # and training still has every floor
    assert int(held.sum()) == 5484


def test_training_and_selection_never_open_the_test_file(tmp_path):
    """A data folder without validationData.csv: selection (read_test=False) trains and scores; the final
    evaluation (read_test=True) is what needs the file."""
    from edgehal.checkpoint import load_checkpoint
    from edgehal.config import load_config
    from edgehal.train import train

    _users_folder(tmp_path, with_test=False)
    cfg = load_config(REPO / "models" / "configs" / "ujiindoorloc_hier.yaml", [
        f"data.root={tmp_path}", "data.options.read_test=false", "data.options.val_users=[2]",
        f"output_dir={tmp_path / 'run'}", "epochs=1", "batch_size=16", "model.hidden=[16]",
        "model.branch_hidden=[8]", "model.coord_hidden=[8]"])
    assert cfg.data.options["val_split"] == "held_out_users"   # the config's own split
    ckpt = load_checkpoint(train(cfg, log=lambda _: None, progress=False))
    val = ckpt.metrics["val"]["summary"]
    assert val["count"] == 20 and 0.0 <= val["floor_hit_rate"] <= 100.0
    assert ckpt.metrics["test"] == {"summary": {"count": 0}}
    assert ckpt.preprocessing.details["test_file"].startswith("not read")
    with pytest.raises(EdgehalError, match="file not found"):
        build_dataset("ujiindoorloc", root=tmp_path, val_split="held_out_users", val_users=[2])
