import pytest

from edgehal.config import load_config
from edgehal.errors import EdgehalError
from pathlib import Path

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
