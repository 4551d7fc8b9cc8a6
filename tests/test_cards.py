import shlex
from pathlib import Path

import pytest
import yaml

from edgehal.cards import config_overrides, reproduce_command, write_card
from edgehal.config import load_config
from edgehal.errors import EdgehalError
from edgehal.fileio import sha256_file

CONFIGS = Path(__file__).resolve().parent.parent / "models" / "configs"


def test_overrides_turn_the_base_config_into_the_stored_one():
    base_path = CONFIGS / "mnist_hal_case1.yaml"
    stored = load_config(base_path, ["seed=3", "epochs=2", "data.limit=500",
                                     "model.aux=[{case: case2, feeds_main: true}]", "data.root=/somewhere"]).to_dict()
    items = config_overrides(load_config(base_path).to_dict(), stored)
    assert "data.root" not in " ".join(items)  # machine-specific, left to $EDGEHAL_DATA
    rebuilt = load_config(base_path, items).to_dict()
    rebuilt["data"]["root"] = "/somewhere"
    assert rebuilt == stored
    assert sorted(i.split("=")[0] for i in items) == ["data.limit", "model.aux", "train.epochs", "train.seed"]


def test_reproduce_command_round_trips_through_the_cli_parser():
    stored = load_config(CONFIGS / "mnist_baseline.yaml", ["seed=1", "lr=0.05", "output_dir=models/zoo/x"]).to_dict()
    cmd = reproduce_command(stored)
    argv = shlex.split(cmd["command"])
    assert argv[:3] == ["edgehal", "train", "models/configs/mnist_baseline.yaml"]
    assert argv[-2:] == ["--output-dir", "models/zoo/x"]
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    again = load_config(CONFIGS / "mnist_baseline.yaml", sets + ["output_dir=models/zoo/x"]).to_dict()
    assert again == stored


def test_reproduce_command_without_a_base_config_says_why(tmp_path):
    stored = load_config(CONFIGS / "mnist_baseline.yaml").to_dict()
    cmd = reproduce_command(stored, configs_dir=tmp_path)
    assert cmd["argv"] is None and "mnist_baseline.yaml" in cmd["note"]


def test_a_removed_model_option_cannot_be_expressed_with_set():
    base = load_config(CONFIGS / "mnist_baseline.yaml").to_dict()
    stored = {**base, "model": {"name": "hal_resnet"}}
    with pytest.raises(EdgehalError, match="lacks model option 'aux'"):
        config_overrides(base, stored)


@pytest.mark.slow
def test_card_of_a_trained_checkpoint(digits_checkpoint, tmp_path):
    from edgehal.evaluate import evaluate_checkpoint

    sha = sha256_file(digits_checkpoint)
    card_yaml, card_md = write_card(digits_checkpoint, out_dir=tmp_path, log=lambda _: None)
    assert sha256_file(digits_checkpoint) == sha  # the checkpoint is only read
    card = yaml.safe_load(card_yaml.read_text())
    measured = evaluate_checkpoint(digits_checkpoint, log=lambda _: None)["metrics"]
    assert set(card["metrics"]["test_error_percent"]) == {"logits", "aux_case1"}
    for head, rate in card["metrics"]["test_error_percent"].items():
        assert round(measured[head]["error_rate"], 2) == rate
    assert card["checkpoint"]["sha256"] == sha
    assert card["architecture"]["builder"] == "hal_resnet" and card["architecture"]["parameters"] > 0
    assert card["data"]["test_samples"] == 360 and card["training"]["seed"] == 0
    assert card["training"]["command"].startswith("edgehal train models/configs/digits_hal_case1.yaml")
    assert "train.epochs=6" in card["training"]["overrides"]
    parity = card["parity"]
    assert parity["passed"] and parity["samples"] == 360
    assert set(parity["artifacts"]["keep"]["heads"]) == {"logits", "aux_case1"}
    assert set(parity["artifacts"]["prune"]["heads"]) == {"logits"}
    assert parity["artifacts"]["keep"]["heads"]["logits"]["error_diff_pp"] == 0.0
    text = card_md.read_text()
    assert "ONNX parity: PASS" in text and card["training"]["command"] in text
