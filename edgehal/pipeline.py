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
from edgehal.data.base import dataset_parameters
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
    for key in ("val_size", "download", "limit", "verify_checksums"):
        value = getattr(cfg.data, key)
        if value is not None and key in _builder_params(cfg.data.dataset):
            options[key] = value
    return build_dataset(cfg.data.dataset, root=cfg.data.root, seed=cfg.train.seed, **options)


def _builder_params(dataset: str) -> set[str]:
    return set(dataset_parameters(dataset))


def config_of_checkpoint(payload: dict) -> Config:
    return config_from_dict(payload["config"], what="config stored in checkpoint")


def data_for_checkpoint(ckpt: LoadedCheckpoint, *, data_root: str | Path | None = None) -> DataBundle:
    """The data set a checkpoint was trained on, with the same split seed.

    The data directory is ``data_root``, else ``$EDGEHAL_DATA``, else the one
    recorded at training time.
    """
    from edgehal.data.base import DATA_ENV

    cfg = config_of_checkpoint(ckpt.payload)
    cfg.data.root = str(data_root) if data_root else (os.environ.get(DATA_ENV) or cfg.data.root)
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
