"""DataBundle, Split, the data set registry and the data-directory rule."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from edgehal.errors import EdgehalError
from edgehal.manifest import Preprocessing

DATA_ENV = "EDGEHAL_DATA"


@dataclass
class Split:
    """Inputs ``x`` (uint8 images or float features) and named label tensors."""

    x: torch.Tensor
    labels: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, index: torch.Tensor) -> "Split":
        return Split(self.x[index], {k: v[index] for k, v in self.labels.items()})

    def batches(self, batch_size: int) -> Iterator["Split"]:
        for start in range(0, len(self), batch_size):
            sl = slice(start, start + batch_size)
            yield Split(self.x[sl], {k: v[sl] for k, v in self.labels.items()})

    def numpy_labels(self) -> dict[str, Any]:
        return {k: v.numpy() for k, v in self.labels.items()}


@dataclass
class DataBundle:
    name: str
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layout: str = "NCHW"
    input_range: tuple[float, float] | None = (0.0, 255.0)
    scale: float = 1.0 / 255.0
    normalization: str = "in-graph: (x / 255 - mean) / std"
    augment: dict[str, Any] = field(default_factory=dict)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise EdgehalError(f"split {name!r}", "is unknown", "one of train, val, test")
        return getattr(self, name)

    def preprocessing(self) -> Preprocessing:
        """What a deployed model expects; recorded in checkpoints and ONNX metadata."""
        return Preprocessing(layout=self.layout, input_shape=self.input_shape, input_dtype="float32",
                             input_range=self.input_range, scale=self.scale, mean=self.mean, std=self.std,
                             normalization=self.normalization, dataset=self.name, augment=dict(self.augment),
                             details=dict(self.details))


Builder = Callable[..., DataBundle]
_DATASETS: dict[str, Builder] = {}


def register_dataset(name: str) -> Callable[[Builder], Builder]:
    def decorator(fn: Builder) -> Builder:
        _DATASETS[name] = fn
        return fn
    return decorator


def _load_builtin() -> None:
    import importlib

    for module in ("images", "ujiindoorloc", "sequences"):
        try:
            importlib.import_module(f"edgehal.data.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"edgehal.data.{module}":
                raise


def list_datasets() -> list[str]:
    _load_builtin()
    return sorted(_DATASETS)


def resolve_data_root(root: str | Path | None, *, required: bool = True) -> Path | None:
    """``root``, else ``$EDGEHAL_DATA``; an error naming both when neither exists."""
    value = root if root not in (None, "") else os.environ.get(DATA_ENV)
    if value in (None, ""):
        if required:
            raise EdgehalError("data directory", "is not set",
                               f"pass --data-dir or set {DATA_ENV}, e.g. {DATA_ENV}=../shared/data")
        return None
    p = Path(value).expanduser()
    if not p.is_dir():
        raise EdgehalError(f"data directory {p}", "does not exist", "a folder holding the data sets")
    return p


def build_dataset(name: str, *, root: str | Path | None = None, **options: Any) -> DataBundle:
    _load_builtin()
    if name not in _DATASETS:
        raise EdgehalError(f"dataset {name!r}", "is unknown", f"one of {sorted(_DATASETS)}")
    return _DATASETS[name](root=root, **options)
