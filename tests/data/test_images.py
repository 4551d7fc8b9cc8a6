import pickle

import numpy as np
import pytest
import torch

from edgehal.data import build_dataset, dataset_info, resolve_data_root
from edgehal.data.images import augment_batch
from edgehal.errors import EdgehalError


def test_mnist_from_the_shared_folder(data_root):
    d = build_dataset("mnist", root=data_root)
    assert (len(d.train), len(d.val), len(d.test)) == (55000, 5000, 10000)
    assert d.train.x.dtype == torch.uint8 and d.train.x.shape[1:] == (1, 28, 28)
    assert 0.12 < d.mean[0] < 0.14 and 0.30 < d.std[0] < 0.32  # MNIST's well-known statistics
    pre = d.preprocessing()
    assert pre.dataset == "mnist" and pre.layout == "NCHW" and pre.scale == 1.0 / 255.0
    info = dataset_info("mnist")  # what a model is built from before the data is read
    assert (info.input_shape, info.class_names, info.layout, info.model_kwargs) == \
        (d.input_shape, d.class_names, d.layout, d.model_kwargs)


def test_embedded_digits_need_no_files():
    d = build_dataset("digits")
    assert d.input_shape == (1, 8, 8) and len(d.test) == 360
    assert int(d.train.x.max()) == 255


def test_missing_data_directory_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEHAL_DATA", raising=False)
    with pytest.raises(EdgehalError, match="EDGEHAL_DATA"):
        resolve_data_root(None)
    with pytest.raises(EdgehalError, match="does not exist"):
        build_dataset("mnist", root=tmp_path / "nowhere")
    with pytest.raises(EdgehalError, match="MNIST data in"):
        build_dataset("mnist", root=tmp_path)
    with pytest.raises(EdgehalError, match="one of"):
        build_dataset("imagenet", root=tmp_path)


def test_svhn_reads_the_real_mat_format(tmp_path):
    from scipy.io import savemat
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 12)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(-1, 1)  # SVHN labels digit 0 as 10
        savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
    d = build_dataset("svhn", root=tmp_path, verify_checksums=False, val_size=8)
    assert d.input_shape == (3, 32, 32) and len(d.train) == 32 and len(d.test) == 12
    assert sorted(set(d.test.labels["label"].tolist())) == list(range(10))
    assert (d.input_shape, d.class_names) == (dataset_info("svhn").input_shape, dataset_info("svhn").class_names)
    with pytest.raises(EdgehalError, match="SVHN data"):
        build_dataset("svhn", root=tmp_path)  # real md5 check refuses the tiny files


def test_cifar10_reads_the_real_pickle_batches(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
    for name in names:
        entry = {"data": rng.integers(0, 256, size=(10, 3072), dtype=np.uint8), "labels": list(range(10))}
        with open(base / name, "wb") as fh:
            pickle.dump(entry, fh)
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"]}, fh)
    d = build_dataset("cifar10", root=tmp_path, verify_checksums=False, val_size=5)
    assert d.input_shape == (3, 32, 32) and len(d.train) == 45 and len(d.test) == 10
    assert d.class_names[0] == "airplane" and d.augment == {"crop_pad": 4, "hflip": True}
    assert (d.input_shape, d.class_names) == (dataset_info("cifar10").input_shape, dataset_info("cifar10").class_names)
    # CHW order is restored from torchvision's HWC arrays
    raw = pickle.load(open(base / "test_batch", "rb"))["data"][0].reshape(3, 32, 32)
    assert torch.equal(d.test.x[0], torch.as_tensor(raw))


def test_augmentation_shifts_without_changing_shape_or_content_type():
    x = torch.zeros(64, 1, 8, 8, dtype=torch.uint8)
    x[:, :, 3:5, 3:5] = 255
    g = torch.Generator().manual_seed(0)
    y = augment_batch(x, {"shift": 2}, g)
    assert y.shape == x.shape and y.dtype == torch.uint8
    assert (y.flatten(1).sum(1) == x.flatten(1).sum(1)).all()  # a 2-pixel shift keeps the blob inside
    assert not torch.equal(y, x)
    flipped = augment_batch(torch.arange(8.0).view(1, 1, 1, 8).repeat(32, 1, 1, 1), {"hflip": True}, g)
    assert {tuple(r) for r in flipped[:, 0, 0, :].tolist()} == {tuple(range(8)), tuple(range(7, -1, -1))}
