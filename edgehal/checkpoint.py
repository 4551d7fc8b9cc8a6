"""Checkpoints: atomic save, safe load (``torch.load(weights_only=True)``).

A checkpoint carries its meaning (torchvision's ``Weights`` with ``meta``):
config, model builder name and arguments, head manifest, class names,
preprocessing, metrics per head and split, versions, and for resuming the
optimiser and schedule state. Only tensors and plain Python values are stored,
so the safe loader reads it.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edgehal.errors import EdgehalError
from edgehal.fileio import atomic_path
from edgehal.manifest import HeadManifest, Preprocessing

FORMAT = "edgehal-checkpoint/1"


def versions() -> dict[str, str]:
    import onnx

    import edgehal

    out = {"edgehal": edgehal.__version__, "torch": str(torch.__version__), "onnx": str(onnx.__version__),
           "python": platform.python_version()}
    try:
        import onnxruntime
        out["onnxruntime"] = str(onnxruntime.__version__)
    except ImportError:
        pass
    return out


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically: a crash leaves the previous file or none, never half of one."""
    payload = {"format": FORMAT, "versions": versions(), **payload}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


@dataclass
class LoadedCheckpoint:
    path: Path
    payload: dict[str, Any]

    @property
    def manifest(self) -> HeadManifest:
        return HeadManifest.from_dict(self.payload["manifest"], what=f"checkpoint {self.path}: manifest")

    @property
    def model_name(self) -> str:
        return self.payload["model_name"]

    @property
    def model_kwargs(self) -> dict[str, Any]:
        return dict(self.payload["model_kwargs"])

    @property
    def preprocessing(self) -> Preprocessing | None:
        raw = self.payload.get("preprocessing")
        return Preprocessing.from_dict(raw, what=f"checkpoint {self.path}: preprocessing") if raw else None

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.payload.get("metrics", {}))

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.payload.get("config", {}))

    def build_model(self) -> torch.nn.Module:
        """Rebuild the architecture from the registry and load the weights (eval mode).

        The rebuilt model declares its manifest afresh from the builder
        arguments; export uses that one while parity and the torch runner read
        the stored one, so a model whose rebuilt manifest differs from the
        stored one (an edited file, a builder that changed since training) is
        refused, naming the differing fields.
        """
        from edgehal.nets.registry import create_model

        model = create_model(self.model_name, **self.model_kwargs)
        differences = self.manifest.differences(model.manifest)
        if differences:
            raise EdgehalError(f"checkpoint {self.path}",
                               f"stored manifest differs from the one its model {self.model_name!r} rebuilds "
                               f"in {', '.join(differences)}",
                               "a checkpoint whose manifest was written by `edgehal train` with this model")
        try:
            model.load_state_dict(self.payload["state_dict"])
        except RuntimeError as exc:
            raise EdgehalError(f"checkpoint {self.path}", "weights do not fit the model it names "
                               f"({str(exc).splitlines()[0][:200]})") from None
        return model.eval()


_REQUIRED = ("format", "model_name", "model_kwargs", "manifest", "state_dict")


def load_checkpoint(path: str | Path, *, map_location: str = "cpu") -> LoadedCheckpoint:
    """Load and check an edgehal checkpoint; refuse corrupt, truncated or foreign files.

    A foreign PyTorch file (a state dict, a pickled module, a TorchScript
    archive, a ``torch.export`` program) is refused saying what it is and how
    to export it instead, never as "corrupt".
    """
    from edgehal.foreign import not_a_checkpoint, read_torch_file

    p = Path(path)
    what = f"checkpoint {p}"
    if not p.is_file():
        raise EdgehalError(what, "file not found")
    found, payload = read_torch_file(p, map_location=map_location)
    if found.kind != "edgehal-checkpoint":
        raise not_a_checkpoint(found, what=what)
    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise EdgehalError(what, f"lacks {missing}", "a complete edgehal checkpoint")
    return LoadedCheckpoint(p, payload)
