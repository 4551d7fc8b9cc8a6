from pathlib import Path

import pytest

from edgehal.config import DATA_SUPPLIED_MODEL_ARGS, config_from_dict, load_config
from edgehal.errors import EdgehalError

REPO = Path(__file__).resolve().parent.parent

CFG = REPO / "models" / "configs" / "mnist_hal_case1.yaml"


def test_every_shipped_config_loads_and_builds(tmp_path):
    from edgehal.nets.registry import create_model
    for path in sorted((REPO / "models" / "configs").glob("*.yaml")):
        cfg = load_config(path)
        kwargs = {k: v for k, v in cfg.model.items() if k != "name"}
        if cfg.model["name"] in ("hal_resnet", "hdcnn"):
            kwargs.setdefault("dataset", cfg.data.dataset)
        if cfg.model["name"] == "hal_resnet":
            create_model(cfg.model["name"], **kwargs)


def test_overrides_resolve_bare_and_dotted_keys():
    cfg = load_config(CFG, ["epochs=1", "train.lr=0.05", "data.limit=100", "model.widths=[8,16,32]"])
    assert cfg.train.epochs == 1 and cfg.train.lr == 0.05 and cfg.data.limit == 100
    assert cfg.model["widths"] == [8, 16, 32]


@pytest.mark.parametrize("override,match", [
    ("epoch=1", "epoch.*not a known key"),
    ("train.epoch=1", "train.epoch.*not a known key"),
    ("epochs=one", "epochs.*type int"),
    ("epochs", "has no '='"),
    ("epochs=0", "at least 1"),
    ("optimizer=lbfgs", "optimizer"),
])
def test_bad_overrides_are_refused(override, match):
    with pytest.raises(EdgehalError, match=match):
        load_config(CFG, [override])


def test_unknown_top_level_key_and_bad_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\nmodel: {name: hal_resnet}\nmodle: 3\n")
    with pytest.raises(EdgehalError, match="'modle' \\| is not a known key"):
        load_config(p)
    p.write_text("name: x\nmodel: [unclosed\n")
    with pytest.raises(EdgehalError, match="not valid YAML at line"):
        load_config(p)
    with pytest.raises(EdgehalError, match="file not found"):
        load_config(tmp_path / "missing.yaml")


# -- model arguments are checked when the config loads, before any data ---------

def _train_cli(config: Path, tmp_path: Path):
    from click.testing import CliRunner

    from edgehal.cli import main

    return CliRunner().invoke(main, ["train", str(config), "--output-dir", str(tmp_path / "run")])


def test_misspelled_model_argument_fails_before_any_data_is_read(tmp_path):
    empty = tmp_path / "no_data"
    empty.mkdir()
    good, typo = tmp_path / "good.yaml", tmp_path / "typo.yaml"
    for path, key in ((good, "aux"), (typo, "auxx")):
        path.write_text(f"name: typo\nmodel: {{name: hal_resnet, {key}: [case1]}}\n"
                        f"data: {{dataset: mnist, root: {empty}}}\ntrain: {{epochs: 1, device: cpu}}\n")

    # The correct config gets as far as reading the (missing) data ...
    r = _train_cli(good, tmp_path)
    assert r.exit_code == 1 and "could not be read" in r.output and str(empty) in r.output
    # ... the misspelled one stops at the config, so the data set is never opened.
    r = _train_cli(typo, tmp_path)
    assert r.exit_code == 1
    assert "model.auxx | is not an option of hal_resnet" in r.output
    assert "did you mean 'aux'?" in r.output and "options of hal_resnet: ['aux', " in r.output
    assert str(empty) not in r.output and not (tmp_path / "run").exists()


def test_model_arguments_are_checked_for_every_way_a_config_is_built(tmp_path):
    with pytest.raises(EdgehalError, match=r"model\.widht \| is not an option of hal_resnet\. "
                                           r"Note: did you mean 'widths'\?"):
        load_config(CFG, ["model.widht=[8,16]"])
    with pytest.raises(EdgehalError, match=r"^config: model\.hiden \| .*did you mean 'hidden'"):
        config_from_dict({"name": "x", "model": {"name": "hier_localization", "hiden": [64]}})
    with pytest.raises(EdgehalError, match="options of hier_localization: .*'coord_hidden'"):
        config_from_dict({"name": "x", "model": {"name": "hier_localization", "zzz": 1}})


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(EdgehalError, match=r"model\.name \| 'hal_resnt' is not a known model\. "
                                           r"Note: one of \['hal_resnet', .*'rnn_classifier'"):
        config_from_dict({"name": "x", "model": {"name": "hal_resnt"}})


@pytest.mark.parametrize("key", DATA_SUPPLIED_MODEL_ARGS)
def test_model_arguments_the_data_set_supplies_are_refused(key):
    with pytest.raises(EdgehalError, match=rf"model\.{key} \| is supplied by the data set"):
        config_from_dict({"name": "x", "model": {"name": "hal_resnet", key: [1]}})
