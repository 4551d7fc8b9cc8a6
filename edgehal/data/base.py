"""DataBundle, Split, the data set registry (with what each data set declares) and the data-directory rule."""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from edgehal.errors import EdgehalError
from edgehal.manifest import LAYOUTS, Preprocessing
from edgehal.registry import Registry, place_of

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


@dataclass(frozen=True)
class DatasetInfo:
    """What a data set declares before any of it is read (timm's pretrained config).

    A model can be built, and its manifest checked, from this alone: the input
    shape and layout, the class names in label order, and ``model_kwargs``,
    the builder arguments the data set fixes before it is read (the data set's
    name for the superclass cases, the buildings' floors). Statistics fitted
    on the data (mean, std, coordinate scales) are not declared: they come
    with the loaded ``DataBundle``.
    """

    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    layout: str = "NCHW"
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise EdgehalError("data set info", f"layout {self.layout!r} is unknown", f"one of {LAYOUTS}")
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        object.__setattr__(self, "model_kwargs", dict(self.model_kwargs))


@dataclass(frozen=True)
class _Registered:
    builder: Builder
    info: DatasetInfo | None
    own_root: bool = False


DATASETS: Registry[_Registered] = Registry("data set", builtin=("edgehal.data.images", "edgehal.data.ujiindoorloc",
                                                                "edgehal.data.image_folder"))


def register_dataset(name: str, *, info: DatasetInfo | None = None,
                     own_root: bool = False) -> Callable[[Builder], Builder]:
    """Decorator registering a data set builder and what it declares; a name registered twice is refused.

    ``own_root``: the builder's ``root`` is this data set's own files (a user's
    image tree), not the shared data directory that ``$EDGEHAL_DATA`` names.
    """
    def decorator(fn: Builder) -> Builder:
        DATASETS.add(name, _Registered(fn, info, own_root), place=place_of(fn))
        return fn
    return decorator


def dataset_owns_root(name: str) -> bool:
    """Whether data set ``name``'s root is its own files, recorded as trained on (see ``register_dataset``)."""
    return DATASETS.get(name).own_root


def list_datasets() -> list[str]:
    return DATASETS.names()


def dataset_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The keyword parameters of data set ``name``'s builder."""
    return dict(inspect.signature(DATASETS.get(name).builder).parameters)


def dataset_info(name: str) -> DatasetInfo:
    """What data set ``name`` declares (shape, classes); an error when it is unknown or declares nothing."""
    info = DATASETS.get(name).info
    if info is None:
        raise EdgehalError(f"data set {name!r}", "declares no input shape or classes",
                           "register_dataset(name, info=DatasetInfo(...)), or pass them to the model")
    return info


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
    return DATASETS.get(name).builder(root=root, **options)
