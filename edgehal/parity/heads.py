"""The heads of a reference without edgehal metadata: from ``--head`` mappings or a manifest file.

A plain ONNX file or engine says nothing about what its outputs mean. With
``--head HEAD=OUTPUT`` mappings the first mapped head is the main head, a
classifier whose class names are the user's (the image folder names, or
indices for raw inputs); the other heads have no class names or superclass
map to score them with, so they are compared by their values only (as
regression heads are: max |difference| against the precision's tolerance).
A manifest file (``--manifest heads.yaml``, the JSON form of a
:class:`~edgehal.manifest.HeadManifest` in YAML or JSON) describes every head
instead, superclass maps included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from edgehal.errors import EdgehalError
from edgehal.manifest import Head, HeadManifest

VALUES_ONLY = "compared by values only: a plain model's head without class names (give --manifest to score it)"


def plain_manifest(head_map: Mapping[str, str], *, class_names: Sequence[str], model: str, input_name: str,
                   input_shape: Sequence[int], input_dtype: str = "float32",
                   dataset: str | None = None) -> HeadManifest:
    """A manifest for a plain model: the first head of ``head_map`` the main classifier over
    ``class_names``, every other head compared by values only."""
    if not head_map:
        raise EdgehalError("plain model", "has no head mapped to an output", "--head HEAD=OUTPUT")
    main, *others = list(head_map)
    heads = [Head(main, "main", 0, class_names=tuple(class_names),
                  description=f"output {head_map[main]!r}; classes from the user's data")]
    heads += [Head(name, "aux", 1, task="regression", description=f"output {head_map[name]!r}; {VALUES_ONLY}")
              for name in others]
    return HeadManifest(model=model, input_name=input_name, input_shape=tuple(input_shape), heads=tuple(heads),
                        input_dtype=input_dtype, dataset=dataset)


def load_manifest_file(path: str | Path) -> HeadManifest:
    """A :class:`HeadManifest` from a YAML or JSON file (its ``to_dict()`` form)."""
    import yaml

    p = Path(path)
    what = f"--manifest {p}"
    if not p.is_file():
        raise EdgehalError(what, "file not found", "a YAML or JSON head manifest")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise EdgehalError(what, f"is not YAML or JSON ({exc.__class__.__name__})",
                           "a head manifest: model, input_name, input_shape, heads") from None
    return HeadManifest.from_dict(doc, what=what)


def check_widths(manifest: HeadManifest, widths: Mapping[str, int], *, what: str) -> None:
    """Refuse a classification head whose output width (``widths``: head -> last dimension, for the
    heads known) is not its number of class names."""
    for head in manifest.heads:
        width = widths.get(head.name)
        if head.task == "classification" and width is not None and width != head.num_outputs:
            raise EdgehalError(f"{what}: head {head.name!r}", f"has {width} outputs per sample",
                               f"one per class name: {head.num_outputs} ({_preview(head.class_names)})")


def _preview(names: Sequence[str], n: int = 8) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")
