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


# -- a user's image tree (the image_folder data set) ------------------------------

NUMBERS = ("zero", "one", "two", "three")


def write_png_tree(root: Path, *, per_class: int) -> Path:
    """train/<class>/<i>.png: grey and colour PNGs of assorted sizes; each class a brightness band so it can be
    learnt."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(NUMBERS):
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            h, w = 8 + i % 4, 12 - i % 3
            pixels = rng.integers(60 * c, 60 * c + 40, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels, "RGB").convert("L" if i % 2 else "RGB").save(folder / f"{i}.png")
    return root


def tree_config(root: str | Path, mapping: Path, out: Path, model: dict | None = None):
    from edgehal.config import config_from_dict

    return config_from_dict({
        "name": "tree", "output_dir": str(out),
        "model": model or {"name": "hal_resnet", "preset": "digits", "widths": [4, 8],
                           "aux": [{"case": str(mapping), "name": "aux_parity"}]},
        "data": {"dataset": "image_folder", "root": str(root), "val_size": 0.25,
                 "options": {"size": 8, "mode": "L"}},
        "train": {"epochs": 1, "batch_size": 8, "lr": 0.05, "device": "cpu", "threads": 2}})


@pytest.fixture(scope="module")
def tree_run(tmp_path_factory):
    """A HAL model with a by-name superclass head trained 1 epoch on a 4-class PNG tree, from a relative root."""
    from edgehal.train import train

    base = tmp_path_factory.mktemp("tree_run")
    tree = write_png_tree(base / "tree", per_class=8)
    mapping = base / "parity.yaml"
    mapping.write_text("name: parity\ngroups:\n  even: [zero, two]\n  odd: [one, three]\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)
        ckpt = train(tree_config("tree", mapping, base / "run"), log=lambda _: None, progress=False)
    return {"checkpoint": ckpt, "tree": tree, "mapping": mapping, "base": base}


def test_an_image_folder_model_trains_with_a_superclass_head_by_name(tree_run, tmp_path):
    from edgehal.artifact import read_artifact
    from edgehal.data.image_folder import ImageTransform
    from edgehal.export.onnx import ExportOptions, export_onnx

    ckpt = load_checkpoint(tree_run["checkpoint"])
    manifest = ckpt.manifest
    # labels follow the sorted folder names, as torchvision's ImageFolder has them
    assert manifest.main.class_names == ("one", "three", "two", "zero") and manifest.input_shape == (1, 8, 8)
    aux = manifest.head("aux_parity")
    assert aux.class_names == ("even", "odd") and aux.parent_map == (1, 1, 0, 0) and aux.case == "parity"
    details = ckpt.preprocessing.details
    assert details["image_transform"] == ImageTransform(size=8, mode="L").to_dict()
    assert details["tree"] == str(tree_run["tree"].resolve())
    assert details["counts"] == {"train": 24, "val": 8, "test": 8}
    # trained from a relative root: the checkpoint records the tree absolute
    assert ckpt.payload["config"]["data"]["root"] == str(tree_run["tree"].resolve())
    assert ckpt.metrics["test"]["aux_parity"]["count"] == 8
    # the details reach the ONNX metadata through export
    onnx_path = tmp_path / "m.onnx"
    export_onnx(tree_run["checkpoint"], onnx_path, options=ExportOptions(check_samples=8), log=lambda _: None)
    artifact = read_artifact(onnx_path)
    assert artifact.preprocessing.details["image_transform"] == details["image_transform"]
    assert artifact.manifest.head("aux_parity").parent_map == (1, 1, 0, 0)


def test_an_image_folder_checkpoint_keeps_its_tree_unless_a_root_is_given(tree_run, tmp_path, monkeypatch):
    ckpt = load_checkpoint(tree_run["checkpoint"])
    monkeypatch.setenv("EDGEHAL_DATA", str(tmp_path))  # the shared data directory is not the user's tree
    monkeypatch.chdir(tmp_path)  # nor does the working directory matter
    data = data_for_checkpoint(ckpt)
    assert data.details["tree"] == str(tree_run["tree"].resolve()) and len(data.train) == 24
    other = write_png_tree(tmp_path / "other", per_class=4)
    given = data_for_checkpoint(ckpt, data_root=other)
    assert given.details["tree"] == str(other.resolve()) and given.details["counts"]["train"] == 12


def test_hdcnn_on_an_image_folder_takes_a_mapping_by_name(tree_run):
    cfg = tree_config(tree_run["tree"], tree_run["mapping"], tree_run["base"] / "hd",
                      {"name": "hdcnn", "preset": "digits", "widths": [4, 8], "case": str(tree_run["mapping"])})
    cfg.data.limit = 8
    model, kwargs = build_model_from_config(cfg, load_data(cfg))
    assert kwargs["class_names"] == ["one", "three", "two", "zero"]
    assert model.manifest.head("coarse").parent_map == (1, 1, 0, 0)
    assert model.manifest.coarse_to_fine.groups == ((3, 2), (0, 1))


def test_a_broken_tree_fails_before_anything_is_written(tmp_path):
    tree = write_png_tree(tmp_path / "tree", per_class=2)
    (tree / "train" / "two" / "1.png").write_bytes(b"\x89PNG broken")
    mapping = tmp_path / "parity.yaml"
    mapping.write_text("groups: {even: [zero, two], odd: [one, three]}\n")
    from edgehal.train import train

    with pytest.raises(EdgehalError, match=r"image .*two/1.png \| could not be read"):
        train(tree_config(tree, mapping, tmp_path / "run"), log=lambda _: None, progress=False)
    assert not (tmp_path / "run").exists()


def test_data_options_and_a_fractional_val_size_are_checked_against_the_data_set():
    with pytest.raises(EdgehalError, match=r"data.val_size \| is 0.5. Note: a count of samples: digits takes no "
                                           r"fraction"):
        load_data(load_config(DIGITS, ["data.val_size=0.5"]))
    with pytest.raises(EdgehalError, match=r"data.options.sise \| is not an option of data set 'digits'. Note: "
                                           r"one of \['limit', 'seed', 'test_size', 'val_size'\]"):
        load_data(load_config(DIGITS, ["data.options={sise: 8}"]))
