"""Builder defaults taken from what a data set declares, never from a table of guesses.

A builder called without ``class_names`` or ``input_shape`` (a test, a config
built without loading its data) takes them from its data set's declaration
(:class:`edgehal.data.base.DatasetInfo`); when there is none, it fails naming
the argument to pass.
"""

from __future__ import annotations

from typing import Sequence

from edgehal.data.base import dataset_info
from edgehal.errors import EdgehalError


def class_names_for(*, dataset: str, class_names: Sequence[str] | None) -> tuple[str, ...]:
    """``class_names`` if given, else the classes data set ``dataset`` declares, in label order."""
    if class_names:
        return tuple(class_names)
    try:
        return dataset_info(dataset).class_names
    except EdgehalError as exc:
        raise EdgehalError("model.class_names", f"are not given and data set {dataset!r} cannot tell them "
                           f"({exc.problem})", "class_names, or a data set that declares its classes") from None


def input_shape_for(*, dataset: str, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    """``input_shape`` if given, else the shape data set ``dataset`` declares (without the batch axis)."""
    if input_shape:
        return tuple(int(v) for v in input_shape)
    try:
        return dataset_info(dataset).input_shape
    except EdgehalError as exc:
        raise EdgehalError("model.input_shape", f"is not given and data set {dataset!r} cannot tell it "
                           f"({exc.problem})", "input_shape, or a data set that declares its shape") from None
