from pathlib import Path

import pytest

from edgehal.config import DATA_SUPPLIED_MODEL_ARGS, config_from_dict, load_config
from edgehal.errors import EdgehalError

REPO = Path(__file__).resolve().parent.parent

CFG = REPO / "models" / "configs" / "mnist_hal_case1.yaml"


# The evaluator each architecture's manifest must name.
EVALUATOR_OF = {"hal_resnet": "classification", "rnn_classifier": "classification", "hdcnn": "hdcnn",
                "hier_localization": "localization", "recurrent_localization": "localization",
                "tv_hal": "classification", "tv_hdcnn": "hdcnn"}
# Statistics a data set fits when it is read; they set buffers, never heads, so any value builds the manifest.
FITTED_PLACEHOLDERS = {"coord_mean": [0.0, 0.0], "coord_scale": 1.0}


def _build_without_data(cfg):
    """The model a config trains, with the data set's declared facts in place of its loaded data
    (as the trainer's model_kwargs_for fills them from the data)."""
    from edgehal.data import dataset_info
    from edgehal.nets.registry import create_model, model_parameters

    info = dataset_info(cfg.data.dataset)
    name = cfg.model["name"]
    kwargs = {k: v for k, v in cfg.model.items() if k != "name"}
    params = model_parameters(name)
    derived = {"class_names": list(info.class_names), "input_shape": list(info.input_shape), **info.model_kwargs,
               **FITTED_PLACEHOLDERS}
    for key, value in derived.items():
        if key in params and key not in kwargs:
            kwargs[key] = value
    return create_model(name, **kwargs), info


def _aux_cases(cfg) -> list[tuple[str, bool]]:
    return [(a, True) if isinstance(a, str) else (a["case"], bool(a.get("feeds_main", True)))
            for a in cfg.model.get("aux") or []]


def test_every_shipped_config_loads_and_builds():
    from edgehal.hierarchy import get_case
    from edgehal.nets.registry import list_models

    paths = sorted((REPO / "models" / "configs").glob("*.yaml"))
    built = set()
    for path in paths:
        cfg = load_config(path)
        name = cfg.model["name"]
        model, info = _build_without_data(cfg)
        man = model.manifest
        what = f"{path.name} ({name})"
        built.add(name)
        assert man.model == name and man.evaluator == EVALUATOR_OF[name], what
        assert man.input_shape == info.input_shape, what
        main = man.main
        assert main.kind == "main" and main.task == "classification", what
        assert main.class_names == info.class_names and main.num_outputs == len(info.class_names), what
        dataset = cfg.model.get("dataset", cfg.data.dataset)
        if name in ("hal_resnet", "rnn_classifier", "tv_hal"):
            assert [(h.case, h.feeds_main) for h in man.aux_heads] == _aux_cases(cfg), what
            for head, (case, _) in zip(man.aux_heads, _aux_cases(cfg)):
                assert head.parent_map == get_case(dataset, case).mapping, what
        elif name in ("hdcnn", "tv_hdcnn"):
            case = get_case(dataset, cfg.model["case"])
            assert man.head("coarse").parent_map == case.mapping and man.coarse_to_fine.case == case.name, what
            assert [h.name for h in man.aux_heads] == ["coarse"] + [f"fine_b{k}" for k in range(len(case.groups))]
        else:  # localization: a building head and one floor head per building (+ a regressor each)
            floors = info.model_kwargs["building_floors"]
            expected = ["building"] + [f"floor_b{k}" for k in range(len(floors))]
            if cfg.model.get("coord_branches", "per_building") == "per_building" and name == "hier_localization":
                expected += [f"coords_b{k}" for k in range(len(floors))]
            assert [h.name for h in man.aux_heads] == expected, what
            assert [h.name for h in man.main_heads] == ["building_floor", "coordinates"], what
            assert man.building_floors.pairs == tuple((b, f) for b, fl in enumerate(floors) for f in fl), what
    assert built == set(list_models()), f"architectures without a shipped config: {set(list_models()) - built}"


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
