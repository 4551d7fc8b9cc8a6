import pytest

from edgehal.config import load_config
from edgehal.errors import EdgehalError
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CFG = REPO / "models" / "configs" / "mnist_hal_case1.yaml"


# The evaluator each architecture's manifest must name.
EVALUATOR_OF = {"hal_resnet": "classification", "rnn_classifier": "classification", "hdcnn": "hdcnn",
                "hier_localization": "localization", "recurrent_localization": "localization"}
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
        if name in ("hal_resnet", "rnn_classifier"):
            assert [(h.case, h.feeds_main) for h in man.aux_heads] == _aux_cases(cfg), what
            for head, (case, _) in zip(man.aux_heads, _aux_cases(cfg)):
                assert head.parent_map == get_case(dataset, case).mapping, what
        elif name == "hdcnn":
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
