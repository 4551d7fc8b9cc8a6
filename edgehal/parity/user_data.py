"""A user's own samples for a parity check: an ImageFolder tree or split, or a ``.npy`` of raw inputs.

An ONNX file or engine used as the reference has no data set of its own, so
the samples come from the user: a folder of class sub-folders of images
(labels from the folder names, read by :mod:`edgehal.data.image_folder`), or
an array of raw inputs with optional labels. Images go into the graph as raw
pixels (0..255), as for every edgehal model, which normalises inside the
graph; :func:`image_transform_for` decides how they are resized.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from edgehal.errors import EdgehalError
from edgehal.manifest import Preprocessing
from edgehal.parity.runs import RunInputs

if TYPE_CHECKING:  # pragma: no cover
    from edgehal.data.image_folder import ImageTransform

#: The data set name recorded in a run over a user's images.
IMAGE_FOLDER = "image_folder"
SPLITS = ("train", "val", "test")
_MODES = {1: "L", 3: "RGB"}


def is_array_file(data: str | Path) -> bool:
    """Whether ``data`` names a ``.npy`` of raw inputs (else it is an image folder)."""
    return Path(data).suffix.lower() == ".npy"


def split_folder(data: str | Path, *, split: str | None = None) -> tuple[Path, str]:
    """The folder of class sub-folders to read, and the split name recorded for it.

    ``data`` is a tree (only ``train``/``val``/``test`` sub-folders: ``split``,
    default test, is read) or a split itself (class sub-folders: its own name
    is recorded, and ``split`` is refused, as it names nothing there).
    """
    root = Path(data)
    if not root.is_dir():
        raise EdgehalError(f"--data {root}", "is not a folder" if root.exists() else "does not exist",
                           "an ImageFolder tree or split (class sub-folders of images), or a .npy of raw inputs")
    subs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subs and set(subs) <= set(SPLITS):
        chosen = split or "test"
        if chosen not in subs:
            raise EdgehalError(f"--data {root}", f"has no {chosen}/ split", f"one of its splits: {subs}")
        return root / chosen, chosen
    if split is not None:
        raise EdgehalError("--split", f"names no split of {root}: it holds class sub-folders itself",
                           f"--split only with a tree of {'/'.join(SPLITS)} sub-folders; or leave it out")
    return root, root.resolve().name


def folder_classes(folder: str | Path) -> tuple[str, ...]:
    """The class names of a split folder: its sub-folders, sorted (torchvision's ImageFolder order)."""
    names = sorted(p.name for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise EdgehalError(f"--data {folder}", "has no class sub-folders",
                           "one sub-folder of images per class (the folder names are the class names)")
    return tuple(names)


def check_classes(found: Sequence[str], expected: Sequence[str], *, folder: str | Path, what: str) -> None:
    """Refuse a folder whose classes are not exactly ``expected``, naming the difference."""
    missing = [c for c in expected if c not in set(found)]
    extra = [c for c in found if c not in set(expected)]
    if missing or extra:
        problem = "; ".join(part for part in (f"lacks {missing}" if missing else "",
                                              f"has classes {what} has not: {extra}" if extra else "") if part)
        raise EdgehalError(f"--data {folder}", f"classes differ from {what}'s: {problem}",
                           f"one sub-folder per class of {what}: {list(expected)}")


def image_transform_for(*, preprocessing: Preprocessing | None, input_shape: Sequence[int],
                        input_size: tuple[int, int] | None = None, what: str = "reference") -> "ImageTransform":
    """How to turn the user's images into the model's input.

    The transform the model's metadata records
    (``preprocessing.details["image_transform"]``), else one from the input's
    fixed ``C,H,W`` (``input_shape`` with the batch axis first: resize to
    ``H,W``, mode L for one channel, RGB for three), else ``input_size``
    (``H,W``; the channels from the input, RGB when those are dynamic too).
    """
    from edgehal.data.image_folder import ImageTransform

    recorded = (preprocessing.details.get("image_transform") if preprocessing is not None else None)
    if recorded:
        transform = ImageTransform.from_dict(recorded)
        _check_size(input_size, tuple(transform.output_shape[1:]), source=f"{what}'s recorded image transform")
        return transform
    shape = tuple(input_shape)
    if len(shape) != 4:
        raise EdgehalError(f"{what} input", f"has shape {list(shape)}",
                           "an image input [N, C, H, W] to read an image folder; give a .npy of raw inputs instead")
    channels, h, w = shape[1:]
    if channels > 0 and channels not in _MODES:
        raise EdgehalError(f"{what} input", f"has {channels} channels", "1 (mode L) or 3 (RGB) to read images")
    mode = _MODES.get(channels, "RGB")
    if h > 0 and w > 0:
        _check_size(input_size, (h, w), source=f"{what}'s input shape")
        return ImageTransform(size=(h, w), resize=None, crop=None, mode=mode)
    if input_size is None:
        raise EdgehalError(f"{what} input", f"has dynamic height or width ({list(shape)}) and the model records "
                           "no image transform", "--input-size H,W: the size to resize the images to")
    return ImageTransform(size=tuple(input_size), resize=None, crop=None, mode=mode)


def _check_size(given: tuple[int, int] | None, fixed: tuple[int, int], *, source: str) -> None:
    if given is not None and tuple(given) != tuple(fixed):
        raise EdgehalError(f"--input-size {given[0]},{given[1]}", f"differs from the {source} ({fixed[0]},{fixed[1]})",
                           "no --input-size: it is for a model whose height and width are dynamic")


def folder_inputs(folder: str | Path, *, transform: "ImageTransform", split: str,
                  class_names: Sequence[str] | None = None, limit: int | None = None) -> RunInputs:
    """The images of a split folder as raw uint8 pixels, labelled by class (``class_names`` order,
    default the sorted folder names); ``limit`` of them, evenly spaced so every class keeps its share
    (default all)."""
    from edgehal.data.image_folder import read_image_folder

    data = read_image_folder(folder, class_names=class_names, transform=transform, limit=limit)
    if len(data.x) == 0:
        raise EdgehalError(f"--data {folder}", "has no images", "image files in its class sub-folders")
    return RunInputs(x=data.x.numpy(), labels={"label": data.labels.numpy()}, split=split, dataset=IMAGE_FOLDER)


def array_inputs(path: str | Path, *, labels: str | Path | None = None, limit: int | None = None) -> RunInputs:
    """Raw inputs ``[N, ...]`` from a ``.npy`` and, from ``labels`` (a ``.npy`` of N class indices), the
    label of each; without labels the heads are compared by agreement and values only."""
    x = _load_npy(path, what=f"--data {path}")
    if x.ndim < 2 or not len(x):
        raise EdgehalError(f"--data {path}", f"holds an array of shape {x.shape}",
                           "raw inputs [N, ...], one row per sample")
    if x.dtype.kind not in "uif":
        raise EdgehalError(f"--data {path}", f"holds {x.dtype} values", "numbers (the model's raw inputs)")
    found: dict[str, np.ndarray] = {}
    if labels is not None:
        y = _load_npy(labels, what=f"--labels {labels}")
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise EdgehalError(f"--labels {labels}", f"holds {y.dtype} values of shape {y.shape}",
                               "one integer class index per input")
        if len(y) != len(x):
            raise EdgehalError(f"--labels {labels}", f"has {len(y)} labels", f"one per input of --data ({len(x)})")
        found["label"] = y.astype(np.int64)
    if limit:
        x, found = x[:limit], {k: v[:limit] for k, v in found.items()}
    return RunInputs(x=x, labels=found, split=Path(path).stem, dataset=None)


def _load_npy(path: str | Path, *, what: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise EdgehalError(what, "file not found", "a .npy written by numpy.save")
    try:
        return np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise EdgehalError(what, f"is not a readable .npy ({exc.__class__.__name__})",
                           "a .npy written by numpy.save (no pickled objects)") from None
