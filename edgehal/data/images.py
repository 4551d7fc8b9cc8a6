"""Image classification data: MNIST, SVHN, CIFAR-10 (torchvision, from a data
directory, no download unless asked) and scikit-learn's embedded 8x8 digits.

torchvision reads the standard on-disk formats (MNIST IDX, SVHN ``.mat``,
CIFAR-10 python batches); everything is then held as uint8 tensors in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgehal.data.base import DataBundle, DatasetInfo, Split, register_dataset, resolve_data_root
from edgehal.errors import EdgehalError
from edgehal.hierarchy import CIFAR10_CLASSES, DIGIT_CLASSES


def _stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    f = x.float() / 255.0
    dims = [0] + list(range(2, f.ndim))
    return (tuple(round(float(v), 4) for v in f.mean(dim=dims)),
            tuple(round(float(v), 4) for v in f.std(dim=dims)))


def _hold_out(x: torch.Tensor, y: torch.Tensor, val_size: int, seed: int) -> tuple[Split, Split]:
    if not 0 <= val_size < len(x):
        raise EdgehalError("data.val_size", f"{val_size} is out of range", f"0..{len(x) - 1}")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:val_size].sort().values, perm[val_size:].sort().values
    return Split(x[train_idx], {"label": y[train_idx]}), Split(x[val_idx], {"label": y[val_idx]})


def _bundle(name: str, x_train, y_train, x_test, y_test, *, val_size: int, seed: int, classes,
            augment: dict[str, Any], limit: int | None) -> DataBundle:
    x_train = torch.as_tensor(np.ascontiguousarray(x_train), dtype=torch.uint8)
    y_train = torch.as_tensor(np.asarray(y_train), dtype=torch.int64)
    x_test = torch.as_tensor(np.ascontiguousarray(x_test), dtype=torch.uint8)
    y_test = torch.as_tensor(np.asarray(y_test), dtype=torch.int64)
    if x_train.ndim == 3:
        x_train, x_test = x_train.unsqueeze(1), x_test.unsqueeze(1)
    train, val = _hold_out(x_train, y_train, val_size, seed)
    test = Split(x_test, {"label": y_test})
    if limit:
        train, val, test = (s.subset(torch.arange(min(limit, len(s)))) for s in (train, val, test))
    mean, std = _stats(train.x)
    return DataBundle(name=name, train=train, val=val, test=test, input_shape=tuple(x_train.shape[1:]),
                      class_names=tuple(classes), mean=mean, std=std, augment=augment,
                      model_kwargs={"dataset": name})


def _info(name: str, *, shape: tuple[int, ...], classes: tuple[str, ...]) -> DatasetInfo:
    # model_kwargs as _bundle hands them over: the name selects the superclass cases
    return DatasetInfo(input_shape=shape, class_names=classes, layout="NCHW", model_kwargs={"dataset": name})


def _torchvision_error(name: str, root: Path, exc: Exception) -> EdgehalError:
    return EdgehalError(f"{name} data in {root}", f"could not be read ({str(exc).splitlines()[0][:200]})",
                        "the standard torchvision layout; pass download=true to fetch it")


@register_dataset("mnist", info=_info("mnist", shape=(1, 28, 28), classes=DIGIT_CLASSES))
def mnist(*, root: str | Path | None = None, val_size: int = 5000, seed: int = 0,
          download: bool = False, limit: int | None = None, verify_checksums: bool = True) -> DataBundle:
    """MNIST from ``<root>/MNIST/raw`` (the four IDX files)."""
    from torchvision.datasets import MNIST

    r = resolve_data_root(root)
    try:
        tr, te = MNIST(str(r), train=True, download=download), MNIST(str(r), train=False, download=download)
    except RuntimeError as exc:
        raise _torchvision_error("MNIST", r, exc) from None
    return _bundle("mnist", tr.data, tr.targets, te.data, te.targets, val_size=val_size, seed=seed,
                   classes=DIGIT_CLASSES, augment={"shift": 2}, limit=limit)


def _integrity_switch(cls, verify: bool):
    """torchvision checks md5 sums of the full files; tests use tiny files in the same format."""
    if verify:
        return cls

    class Unverified(cls):  # type: ignore[misc, valid-type]
        if hasattr(cls, "meta"):  # CIFAR-10's batches.meta (md5=None: existence only)
            meta = {**cls.meta, "md5": None}

        def _check_integrity(self) -> bool:
            return True
    return Unverified


@register_dataset("svhn", info=_info("svhn", shape=(3, 32, 32), classes=DIGIT_CLASSES))
def svhn(*, root: str | Path | None = None, val_size: int = 5000, seed: int = 0, download: bool = False,
         limit: int | None = None, verify_checksums: bool = True) -> DataBundle:
    """SVHN from ``<root>/train_32x32.mat`` and ``test_32x32.mat`` (torchvision's layout)."""
    from torchvision.datasets import SVHN

    r = resolve_data_root(root)
    cls = _integrity_switch(SVHN, verify_checksums)
    try:
        tr, te = cls(str(r), split="train", download=download), cls(str(r), split="test", download=download)
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        raise _torchvision_error("SVHN", r, exc) from None
    return _bundle("svhn", tr.data, tr.labels, te.data, te.labels, val_size=min(val_size, len(tr.data) // 5),
                   seed=seed, classes=DIGIT_CLASSES, augment={"crop_pad": 4}, limit=limit)


@register_dataset("cifar10", info=_info("cifar10", shape=(3, 32, 32), classes=CIFAR10_CLASSES))
def cifar10(*, root: str | Path | None = None, val_size: int = 5000, seed: int = 0, download: bool = False,
            limit: int | None = None, verify_checksums: bool = True) -> DataBundle:
    """CIFAR-10 from ``<root>/cifar-10-batches-py`` (torchvision's layout)."""
    from torchvision.datasets import CIFAR10

    r = resolve_data_root(root)
    cls = _integrity_switch(CIFAR10, verify_checksums)
    try:
        tr, te = cls(str(r), train=True, download=download), cls(str(r), train=False, download=download)
    except (RuntimeError, OSError, ValueError, KeyError, EOFError) as exc:
        raise _torchvision_error("CIFAR-10", r, exc) from None
    # torchvision keeps CIFAR-10 as NHWC uint8
    return _bundle("cifar10", tr.data.transpose(0, 3, 1, 2), tr.targets, te.data.transpose(0, 3, 1, 2),
                   te.targets, val_size=min(val_size, len(tr.data) // 5), seed=seed, classes=CIFAR10_CLASSES,
                   augment={"crop_pad": 4, "hflip": True}, limit=limit)


@register_dataset("digits", info=_info("digits", shape=(1, 8, 8), classes=DIGIT_CLASSES))
def digits(*, root: str | Path | None = None, val_size: int = 180, seed: int = 0, test_size: int = 360,
           limit: int | None = None) -> DataBundle:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images): needs no files at all."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(x))
    test_idx, train_idx = np.sort(perm[:test_size]), np.sort(perm[test_size:])
    return _bundle("digits", x[train_idx], y[train_idx], x[test_idx], y[test_idx], val_size=val_size,
                   seed=seed, classes=DIGIT_CLASSES, augment={"shift": 1}, limit=limit)


def augment_batch(x: torch.Tensor, spec: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
    """Random translation (``shift``: pixels, zero fill), pad-and-crop (``crop_pad``), ``hflip``.

    Works on a whole uint8 or float batch at once: samples are grouped by their
    random offset, so the cost is a handful of slicing ops, not one per image.
    """
    pad = int(spec.get("shift", 0) or spec.get("crop_pad", 0))
    if pad:
        n, _, h, w = x.shape
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
        out = torch.empty_like(x)
        keys = offsets[:, 0] * (2 * pad + 1) + offsets[:, 1]
        for key in keys.unique().tolist():
            idx = (keys == key).nonzero(as_tuple=True)[0]
            dy, dx = divmod(key, 2 * pad + 1)
            out[idx] = padded[idx, :, dy:dy + h, dx:dx + w]
        x = out
    if spec.get("hflip"):
        flip = torch.rand(x.shape[0], generator=generator) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    return x
