import re
from pathlib import Path

import numpy as np
import pytest
import torch

from edgehal.checkpoint import load_checkpoint
from edgehal.config import load_config
from edgehal.errors import EdgehalError
from edgehal.pipeline import (build_model_from_config, config_of_checkpoint, data_for_checkpoint, evaluate,
                              load_data, model_kwargs_for, predict, resolve_device, to_input)

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "models" / "configs" / "digits_hal_case1.yaml"
ZOO_MNIST = REPO / "models" / "zoo" / "mnist_hal_case1" / "checkpoint.pt"


def test_load_data_hands_the_builder_only_the_options_it_takes():
    # digits has no download or checksum option: passing them on would be a TypeError in the builder.
    cfg = load_config(DIGITS, ["data.download=true", "data.verify_checksums=true", "data.val_size=20",
                               "data.limit=50", "seed=3"])
    data = load_data(cfg)
    assert data.name == "digits" and len(data.val) == 20 and len(data.train) == 50
    again = load_data(load_config(DIGITS, ["data.val_size=20", "data.limit=50", "seed=3"]))
    assert torch.equal(data.train.x, again.train.x)  # the split follows train.seed


def test_model_kwargs_take_shape_classes_and_statistics_from_the_data():
    cfg = load_config(DIGITS, ["data.limit=50", "model.widths=[4,8]", "model.blocks=[1,1]", "model.strides=[1,2]"])
    data = load_data(cfg)
    kwargs = model_kwargs_for(cfg, data)
    assert kwargs["widths"] == [4, 8] and kwargs["aux"] == cfg.model["aux"]
    assert kwargs["class_names"] == list(data.class_names) and kwargs["input_shape"] == [1, 8, 8]
    assert kwargs["mean"] == list(data.mean) and kwargs["std"] == list(data.std)
    assert kwargs["dataset"] == "digits"  # from the data set's own model_kwargs
    assert "name" not in kwargs


def test_build_model_from_config_returns_the_model_and_the_arguments_a_checkpoint_stores():
    cfg = load_config(DIGITS, ["data.limit=50", "model.widths=[4,8]", "model.blocks=[1,1]", "model.strides=[1,2]"])
    data = load_data(cfg)
    model, kwargs = build_model_from_config(cfg, data)
    assert kwargs == model_kwargs_for(cfg, data)
    assert model.manifest.head_names == ("logits", "aux_case1")
    assert model.manifest.main.class_names == data.class_names
    assert model.manifest.input_shape == (1, 8, 8)
    out = model.eval()(to_input(data.test.x[:3], torch.device("cpu")))
    assert out["logits"].shape == (3, 10)


def test_predict_and_evaluate_reproduce_the_metrics_stored_at_training(digits_checkpoint):
    ckpt = load_checkpoint(digits_checkpoint)
    model = ckpt.build_model()
    data = data_for_checkpoint(ckpt)
    outputs = predict(model, data.test, batch_size=100)
    assert set(outputs) == set(ckpt.manifest.head_names)
    assert outputs["logits"].shape == (len(data.test), 10) and outputs["logits"].dtype == np.float32
    metrics = evaluate(model, data.test, batch_size=100)
    stored = ckpt.metrics["test"]
    for head in ("logits", "aux_case1"):
        assert metrics[head]["count"] == stored[head]["count"] == len(data.test)
        assert metrics[head]["errors"] == stored[head]["errors"]


def test_data_for_checkpoint_reads_from_the_given_root_then_the_environment(tmp_path, monkeypatch):
    ckpt = load_checkpoint(ZOO_MNIST)
    given, env = tmp_path / "given", tmp_path / "env"
    given.mkdir()
    env.mkdir()
    monkeypatch.setenv("EDGEHAL_DATA", str(env))
    with pytest.raises(EdgehalError, match=f"MNIST data in {re.escape(str(given))} "):
        data_for_checkpoint(ckpt, data_root=given)
    with pytest.raises(EdgehalError, match=f"MNIST data in {re.escape(str(env))} "):
        data_for_checkpoint(ckpt)


def test_the_stored_config_is_checked_like_a_config_file(digits_checkpoint):
    payload = dict(load_checkpoint(digits_checkpoint).payload)
    cfg = config_of_checkpoint(payload)
    assert cfg.name == "digits_hal_case1" and cfg.data.dataset == "digits"
    payload["config"] = {**payload["config"], "model": {"name": "hal_resnet", "auxx": ["case1"]}}
    with pytest.raises(EdgehalError, match=r"config stored in checkpoint: model\.auxx \| .*'aux'"):
        config_of_checkpoint(payload)


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(EdgehalError, match=r"train\.device \| is cuda but no CUDA GPU is available"):
            resolve_device("cuda")


def test_to_input_keeps_raw_values_as_float32():
    x = torch.tensor([[0, 17, 255]], dtype=torch.uint8)
    y = to_input(x, torch.device("cpu"))
    assert y.dtype == torch.float32 and y.tolist() == [[0.0, 17.0, 255.0]]
