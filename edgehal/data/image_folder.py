"""A user's own images: a torchvision ``ImageFolder`` tree.

The tree has ``train/<class>/<image>``, optionally ``val/`` and ``test/`` with
the same class folders. Files are found with torchvision's own folder helpers
(``find_classes``, ``make_dataset``, ``IMG_EXTENSIONS``: class names are the
sorted folder names, as ``ImageFolder`` has them), read with PIL and resized
and cropped with ``torchvision.transforms.v2`` on uint8 tensors, so an image
loads as a torchvision user expects. Every split is brought to one fixed
shape and held in memory as uint8 NCHW, like the other image data sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from edgehal.data.base import DataBundle, Split, register_dataset
from edgehal.errors import EdgehalError

MODES = {"RGB": 3, "L": 1}
# What ImageTransform applies; recorded so a reader of the metadata can reproduce it.
_INTERPOLATION = "bilinear"
_ANTIALIAS = True


def _pair(value: Any, what: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)):
        raise EdgehalError(f"image transform {what}", f"is {value!r}", "a positive integer or [height, width]")
    return int(value[0]), int(value[1])


@dataclass(frozen=True)
class ImageTransform:
    """How an image becomes a fixed-shape uint8 tensor ``output_shape`` = (C, H, W).

    ``size`` resizes to exactly [H, W] (an int: square); ``resize`` scales the
    shorter edge to that many pixels, keeping the aspect ratio; ``crop`` then
    takes the centre [H, W]. Give ``size``, or ``crop`` (after ``resize`` or
    alone), so the shape is fixed. ``mode`` is PIL's: RGB (3 channels) or L
    (1, grey). Resizing is torchvision's bilinear with antialiasing.
    """

    size: tuple[int, int] | None = None
    resize: int | None = None
    crop: tuple[int, int] | None = None
    mode: str = "RGB"

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _pair(self.size, "size"))
        object.__setattr__(self, "crop", _pair(self.crop, "crop"))
        r = self.resize
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 1):
            raise EdgehalError("image transform resize", f"is {r!r}",
                               "a positive integer: the shorter edge in pixels, aspect ratio kept")
        if self.mode not in MODES:
            raise EdgehalError("image transform mode", f"is {self.mode!r}", f"one of {sorted(MODES)}")
        if self.size is not None and r is not None:
            raise EdgehalError("image transform", f"has both size {list(self.size)} and resize {r}",
                               "one of them: size resizes to exactly [H, W], resize scales the shorter edge")
        if self.size is None and self.crop is None:
            raise EdgehalError("image transform", "gives no fixed shape" + (f" (resize {r} keeps the aspect ratio)"
                                                                          if r is not None else ""),
                               "size: [H, W], or crop: [H, W] (after resize, or alone)")
        if self.crop is not None:
            # A crop larger than the image pads it with black: never what a user means.
            bound = self.size or ((r, r) if r is not None else None)
            if bound is not None and (self.crop[0] > bound[0] or self.crop[1] > bound[1]):
                raise EdgehalError("image transform crop", f"{list(self.crop)} is larger than the resized image "
                                   f"({'size ' + str(list(self.size)) if self.size else f'shorter edge {r}'})",
                                   "a crop no larger than size (or resize)")

    @property
    def channels(self) -> int:
        return MODES[self.mode]

    @property
    def output_shape(self) -> tuple[int, int, int]:
        h, w = self.crop or self.size  # __post_init__ guarantees one of them
        return self.channels, h, w

    def as_torchvision(self):
        """This transform as a ``torchvision.transforms.v2`` one, for a uint8 CHW tensor."""
        from torchvision.transforms import v2

        steps = []
        if self.size is not None:
            steps.append(v2.Resize(list(self.size), interpolation=v2.InterpolationMode.BILINEAR,
                                   antialias=_ANTIALIAS))
        if self.resize is not None:
            steps.append(v2.Resize(self.resize, interpolation=v2.InterpolationMode.BILINEAR, antialias=_ANTIALIAS))
        if self.crop is not None:
            steps.append(v2.CenterCrop(list(self.crop)))
        return v2.Compose(steps)

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size) if self.size else None, "resize": self.resize,
                "crop": list(self.crop) if self.crop else None, "mode": self.mode,
                "interpolation": _INTERPOLATION, "antialias": _ANTIALIAS, "output_shape": list(self.output_shape)}

    @classmethod
    def from_dict(cls, d: Any, *, what: str = "image transform") -> "ImageTransform":
        """The transform ``to_dict`` wrote; one this version cannot reproduce is refused."""
        if not isinstance(d, Mapping):
            raise EdgehalError(what, f"is a {type(d).__name__}", "a mapping with size, resize, crop, mode")
        known = {"size", "resize", "crop", "mode", "interpolation", "antialias", "output_shape"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise EdgehalError(what, f"has unknown keys {unknown}", f"keys among {sorted(known)}")
        for key, ours in (("interpolation", _INTERPOLATION), ("antialias", _ANTIALIAS)):
            if key in d and d[key] != ours:
                raise EdgehalError(f"{what} {key}", f"is {d[key]!r}", f"{ours!r}, the only one edgehal applies")
        out = cls(size=d.get("size"), resize=d.get("resize"), crop=d.get("crop"), mode=d.get("mode", "RGB"))
        if "output_shape" in d and list(d["output_shape"]) != list(out.output_shape):
            raise EdgehalError(f"{what} output_shape", f"is {d['output_shape']!r} but the transform gives "
                               f"{list(out.output_shape)}", "the shape its size, crop and mode give")
        return out


@dataclass(frozen=True)
class ImageFolderSplit:
    """One folder of class folders, read: ``x`` uint8 [N, C, H, W], ``labels`` int64 [N] (indices into
    ``class_names``), and the absolute path of each image in the same order."""

    x: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    files: tuple[str, ...]


def read_image(path: str | Path, *, transform: ImageTransform) -> torch.Tensor:
    """One image file as a uint8 tensor of ``transform.output_shape``; an unreadable file names itself."""
    return _load(path, transform.mode, transform.as_torchvision())


def _load(path: str | Path, mode: str, steps) -> torch.Tensor:
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    try:
        with Image.open(path) as img:
            img = img.convert(mode)  # converting reads the whole file: a truncated one fails here
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise EdgehalError(f"image {path}", f"could not be read ({exc})",
                           "an image file PIL can open (PNG, JPEG, ...)") from None
    return steps(pil_to_tensor(img))


def _scan(folder: Path, class_names: Sequence[str] | None) -> tuple[list[tuple[str, int]], tuple[str, ...]]:
    """(absolute path, label) of every image under ``folder``'s class folders, ImageFolder's order."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if not folder.is_dir():
        raise EdgehalError(f"image folder {folder}", "does not exist" if not folder.exists() else "is not a folder",
                           "a folder with one sub-folder of images per class")
    try:
        found, _ = find_classes(folder)
    except FileNotFoundError:
        raise EdgehalError(f"image folder {folder}", "has no class folders",
                           "one sub-folder of images per class, e.g. train/cat/1.png") from None
    if class_names is not None:
        names = tuple(class_names)
        missing, extra = sorted(set(names) - set(found)), sorted(set(found) - set(names))
        if missing or extra:
            parts = ([f"lacks class folders {missing}"] if missing else []) + (
                [f"has class folders {extra} that are not classes"] if extra else [])
            raise EdgehalError(f"image folder {folder}", " and ".join(parts), f"exactly the classes {list(names)}")
    else:
        names = tuple(found)
    class_to_idx = {c: i for i, c in enumerate(names)}
    # allow_empty: an empty class is reported below naming every empty one with its folder.
    samples = make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    counts = torch.bincount(torch.tensor([y for _, y in samples], dtype=torch.int64), minlength=len(names))
    empty = [names[i] for i in range(len(names)) if counts[i] == 0]
    if empty:
        raise EdgehalError(f"image folder {folder}", f"class folder{'s' if len(empty) > 1 else ''} "
                           f"{', '.join(str(folder / c) for c in empty)} hold{'' if len(empty) > 1 else 's'} no image",
                           f"at least one image per class (extensions {', '.join(IMG_EXTENSIONS)})")
    return samples, names


def _spread(n: int, limit: int | None) -> list[int]:
    """``limit`` of ``n`` indices, evenly spaced: the files are sorted by class, so every class keeps its share."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise EdgehalError("limit", f"is {limit!r}", "a positive number of images, or none")
    if limit is None or limit >= n:
        return list(range(n))
    return [i * n // limit for i in range(limit)]


def _read(samples: Sequence[tuple[str, int]], transform: ImageTransform, *, desc: str) -> tuple[torch.Tensor,
                                                                                             torch.Tensor]:
    from tqdm.auto import tqdm

    # Filled in place: a stacked list would hold every image twice at the peak.
    x = torch.empty((len(samples), *transform.output_shape), dtype=torch.uint8)
    steps = transform.as_torchvision()
    for i, (path, _) in enumerate(tqdm(samples, desc=desc, unit="img", leave=False, disable=None)):
        x[i] = _load(path, transform.mode, steps)
    return x, torch.tensor([y for _, y in samples], dtype=torch.int64)


def read_image_folder(path: str | Path, *, class_names: Sequence[str] | None = None, transform: ImageTransform,
                      limit: int | None = None) -> ImageFolderSplit:
    """Read a folder of class folders (``ImageFolder``'s layout) into memory.

    Class names are the sorted folder names; with ``class_names`` given (a
    model's classes, in label order) the folder must have exactly those, and
    labels index them. ``limit`` reads that many images, evenly spaced over the
    sorted files so every class keeps its share. Errors name the folder, the
    empty or missing class, or the unreadable file.
    """
    folder = Path(path).expanduser().resolve()
    samples, names = _scan(folder, class_names)
    samples = [samples[i] for i in _spread(len(samples), limit)]
    x, labels = _read(samples, transform, desc=f"reading {folder.name}/")
    return ImageFolderSplit(x=x, labels=labels, class_names=names, files=tuple(p for p, _ in samples))


def _val_count(val_size: Any, n: int) -> int:
    """``val_size`` as a number of the ``n`` training images: a count, or a fraction in (0, 1)."""
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float)):
        raise EdgehalError("data.val_size", f"is {val_size!r}", "a count of images or a fraction in (0, 1)")
    if isinstance(val_size, float):
        if not 0.0 < val_size < 1.0:
            raise EdgehalError("data.val_size", f"is {val_size}", "a fraction in (0, 1), or a count of images")
        count = max(1, int(val_size * n + 0.5))  # half up, not Python's half to even
    else:
        count = val_size
    if not 0 <= count < n:
        raise EdgehalError("data.val_size", f"holds out {count} of {n} training images",
                           f"0..{n - 1} images (or a fraction), leaving some to train on")
    return count


def _statistic(value: Any, channels: int, what: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    if (not isinstance(value, (list, tuple)) or len(value) != channels
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)):
        raise EdgehalError(f"data.options.{what}", f"is {value!r}", f"{channels} numbers, one per channel, in 0..1")
    if what == "std" and any(v <= 0 for v in value):
        raise EdgehalError("data.options.std", f"is {list(value)}", "positive numbers")
    return tuple(float(v) for v in value)


@register_dataset("image_folder", own_root=True)
def image_folder(*, root: str | Path | None = None, size: int | Sequence[int] | None = None,
                 resize: int | None = None, crop: int | Sequence[int] | None = None, mode: str = "RGB",
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 val_size: int | float = 0.1, seed: int = 0, limit: int | None = None) -> DataBundle:
    """A torchvision ImageFolder tree at ``root``: ``train/``, optional ``val/`` and ``test/``.

    Without ``val/``, ``val_size`` training images (a count, or a fraction;
    10% by default) are held out with ``seed``; without ``test/``, the test
    split is the val split. Every image is brought to one shape (see
    :class:`ImageTransform`). ``mean``/``std`` (per channel, 0..1) default to
    the training split's. ``limit`` caps each split, evenly over its classes.
    """
    from edgehal.data.images import _stats

    transform = ImageTransform(size=size, resize=resize, crop=crop, mode=mode)
    mean_t, std_t = _statistic(mean, transform.channels, "mean"), _statistic(std, transform.channels, "std")
    if (mean_t is None) != (std_t is None):
        raise EdgehalError("data.options", "gives only one of mean and std", "both, or neither (fitted on train)")
    if root in (None, ""):
        raise EdgehalError("data.root", "is not set", "the image folder tree (train/<class>/*.png, ...)")
    tree = Path(root).expanduser().resolve()
    if not (tree / "train").is_dir():
        raise EdgehalError(f"image folder tree {tree}", "has no train/ folder" if tree.is_dir() else "does not exist",
                           "train/<class>/<image>, optionally val/ and test/ with the same class folders")

    train_samples, names = _scan(tree / "train", None)
    sources = {"train": "train/"}
    if (tree / "val").is_dir():
        val_samples, _ = _scan(tree / "val", names)
        sources["val"] = "val/"
    else:
        count = _val_count(val_size, len(train_samples))
        # The split of edgehal.data.images._hold_out, made on the file list so held-out files are read once.
        perm = torch.randperm(len(train_samples), generator=torch.Generator().manual_seed(seed))
        val_idx, train_idx = perm[:count].sort().values.tolist(), perm[count:].sort().values.tolist()
        val_samples = [train_samples[i] for i in val_idx]
        train_samples = [train_samples[i] for i in train_idx]
        sources["val"] = f"{count} images held out of train/ with seed {seed} (the tree has no val/)"
    has_test = (tree / "test").is_dir()
    if has_test:
        test_samples, _ = _scan(tree / "test", names)
        sources["test"] = "test/"
    else:
        sources["test"] = "the val split (the tree has no test/)"

    def read(samples: list[tuple[str, int]], name: str) -> Split:
        picked = [samples[i] for i in _spread(len(samples), limit)]
        x, y = _read(picked, transform, desc=f"reading {name}")
        return Split(x, {"label": y})

    train = read(train_samples, "train/")
    val = read(val_samples, "val/")
    test = read(test_samples, "test/") if has_test else val
    if len(test) == 0:
        raise EdgehalError(f"image folder tree {tree}", "has no val/ or test/ and data.val_size holds out nothing",
                           "a val/ or test/ folder, or a val_size above 0")
    if mean_t is None:
        mean_t, std_t = _stats(train.x)
        # A constant channel (every image black, say) has std 0; the graph divides by it.
        std_t = tuple(s if s > 0 else 1.0 for s in std_t)
    details = {"tree": str(tree), "image_transform": transform.to_dict(), "sources": sources,
               "counts": {"train": len(train), "val": len(val), "test": len(test)},
               "mean_std": "given" if mean is not None else "fitted on the train split"}
    return DataBundle(name="image_folder", train=train, val=val, test=test, input_shape=transform.output_shape,
                      class_names=names, mean=mean_t, std=std_t, model_kwargs={"dataset": "image_folder"},
                      details=details)
