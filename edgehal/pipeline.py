"""Config -> data -> model wiring, shared by train, eval, export, parity and cards.

Everything that turns a config (or the config stored in a checkpoint) into
the data set it names and the model it builds lives here, so a stage that
needs a checkpoint's data asks this module and never the training loop
(the training loop uses this module, not the other way round).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from edgehal.config import DATA_SUPPLIED_MODEL_ARGS, Config, config_from_dict
from edgehal.data import DataBundle, Split, build_dataset
from edgehal.data.base import dataset_owns_root, dataset_parameters
from edgehal.errors import EdgehalError
from edgehal.nets.registry import create_model, model_parameters
from edgehal.scoring import compute_metrics

if TYPE_CHECKING:
    from edgehal.checkpoint import LoadedCheckpoint


# -- data ---------------------------------------------------------------------

def load_data(cfg: Config) -> DataBundle:
    """The data set ``cfg`` names, split with ``cfg.train.seed``.

    ``data.val_size``, ``download``, ``limit`` and ``verify_checksums`` reach
    the builder only when it takes them, so a data set without a validation
    split is not handed a size it would reject.
    """
    options = dict(cfg.data.options)
    params = dataset_parameters(cfg.data.dataset)
    takes = sorted(k for k, p in params.items() if k != "root" and p.kind is p.KEYWORD_ONLY)
    for key in options:
        if key not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            raise EdgehalError(f"data.options.{key}", f"is not an option of data set {cfg.data.dataset!r}",
                               f"one of {takes}")
    for key in ("val_size", "download", "limit", "verify_checksums"):
        value = getattr(cfg.data, key)
        if value is not None and key in params:
            options[key] = value
    # DataConfig admits a fraction for the data sets that take one; the others would fail slicing with it.
    fraction = options.get("val_size")
    if isinstance(fraction, float) and "val_size" in params and "float" not in str(params["val_size"].annotation):
        raise EdgehalError("data.val_size", f"is {fraction}",
                           f"a count of samples: {cfg.data.dataset} takes no fraction")
    return build_dataset(cfg.data.dataset, root=cfg.data.root, seed=cfg.train.seed, **options)


def config_of_checkpoint(payload: dict) -> Config:
    return config_from_dict(payload["config"], what="config stored in checkpoint")


def checkpoint_config(cfg: Config) -> dict[str, Any]:
    """``cfg`` as a checkpoint records it: the root of a data set that owns its files (a user's image
    tree) made absolute, so the checkpoint finds its data from any working directory."""
    out = cfg.to_dict()
    if cfg.data.root and dataset_owns_root(cfg.data.dataset):
        out["data"]["root"] = str(Path(cfg.data.root).expanduser().resolve())
    return out


def data_for_checkpoint(ckpt: LoadedCheckpoint, *, data_root: str | Path | None = None) -> DataBundle:
    """The data set a checkpoint was trained on, with the same split seed.

    The data directory is ``data_root``, else ``$EDGEHAL_DATA``, else the one
    recorded at training time. A data set that owns its root (a user's image
    tree) keeps the recorded one unless ``data_root`` is given:
    ``$EDGEHAL_DATA`` is the shared data directory, not that tree.
    """
    from edgehal.data.base import DATA_ENV

    cfg = config_of_checkpoint(ckpt.payload)
    if data_root:
        cfg.data.root = str(data_root)
    elif not dataset_owns_root(cfg.data.dataset):
        cfg.data.root = os.environ.get(DATA_ENV) or cfg.data.root
    return load_data(cfg)


# -- model --------------------------------------------------------------------

def model_kwargs_for(cfg: Config, data: DataBundle) -> dict[str, Any]:
    """The builder's arguments: the config's, plus what the data set tells (shape, classes, stats)."""
    kwargs = {k: v for k, v in cfg.model.items() if k != "name"}
    params = model_parameters(cfg.model["name"])
    # Every data set has these as DataBundle fields; config.py refuses them in a config's model section.
    supplied = {key: list(getattr(data, key)) for key in DATA_SUPPLIED_MODEL_ARGS}
    for key, value in {**supplied, **data.model_kwargs}.items():
        if key in params and key not in kwargs:
            kwargs[key] = value
    return kwargs


def build_model_from_config(cfg: Config, data: DataBundle) -> tuple[nn.Module, dict[str, Any]]:
    """The model ``cfg`` names, built for ``data``, and the builder arguments it was built with.

    The arguments are what a checkpoint stores so that
    :meth:`edgehal.checkpoint.LoadedCheckpoint.build_model` rebuilds the same
    architecture without the data.
    """
    kwargs = model_kwargs_for(cfg, data)
    return create_model(cfg.model["name"], **kwargs), kwargs


# -- running a model over a split ------------------------------------------------

def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when there is a GPU, else the CPU; ``cuda`` without a GPU is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EdgehalError("train.device", "is cuda but no CUDA GPU is available", "auto or cpu")
    return torch.device(name)


def to_input(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    # Splits hold raw uint8 pixels (or float features); the graph normalises, so only the dtype changes.
    return x.to(device, non_blocking=True).float()


@torch.no_grad()
def predict(model: nn.Module, split: Split, *, batch_size: int = 1000,
            device: torch.device | None = None) -> dict[str, np.ndarray]:
    """Every named output of ``model`` on ``split``, concatenated, as float32 numpy arrays.

    ``device`` defaults to the device of the model's parameters.
    """
    device = device or next(model.parameters()).device
    model.eval()
    chunks: dict[str, list[np.ndarray]] = {}
    for batch in split.batches(batch_size):
        out = model(to_input(batch.x, device))
        for name, value in out.items():
            chunks.setdefault(name, []).append(value.float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in chunks.items()}


def evaluate(model: nn.Module, split: Split, *, batch_size: int = 1000,
             device: torch.device | None = None) -> dict[str, Any]:
    """The metrics of every head of ``model`` on ``split`` (scored as its manifest says)."""
    outputs = predict(model, split, batch_size=batch_size, device=device)
    return compute_metrics(model.manifest, outputs, split.numpy_labels())
