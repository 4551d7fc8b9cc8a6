"""Typed training configs: dataclasses, YAML loading, ``--set key=value`` overrides.

Unknown keys are refused by name with the valid ones listed; values are
type-checked against the dataclass fields before any work starts. The model
section is ``name`` plus keyword arguments of that model's registered builder,
checked against the builder's signature when the config loads, before any
data set is read: a typo in ``model:`` fails at once, naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from edgehal.errors import EdgehalError


@dataclass
class DataConfig:
    """Which data set, where it lives and how it is split."""

    dataset: str = "mnist"
    root: str | None = None          # Defaults to $EDGEHAL_DATA.
    val_size: int | float | None = None  # A count (a fraction where the data set takes one); else its default.
    download: bool = False
    limit: int | None = None         # Cap on samples per split, for smoke runs.
    verify_checksums: bool = True
    options: dict = field(default_factory=dict)  # Extra keyword arguments of the data set builder.


@dataclass
class TrainConfig:
    """Optimisation. Loss = CE(main) + aux_weight * sum CE(aux)."""

    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 1000
    optimizer: str = "sgd"           # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"         # cosine | constant
    warmup_epochs: float = 0.5
    aux_weight: float = 1.0
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda
    amp: bool | None = None          # Defaults to True on CUDA.
    threads: int | None = None       # torch intra-op threads; defaults to torch's choice.
    stages: list = field(default_factory=list)  # Staged training (HD-CNN); empty = joint.


@dataclass
class Config:
    name: str
    model: dict
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str | None = None    # Defaults to runs/<name>.
    description: str = ""

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir or f"runs/{self.name}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Builder arguments every data set supplies (``edgehal.pipeline.model_kwargs_for``
# fills them from the loaded data); set in a config they would build a model
# that disagrees with the data it is trained and evaluated on.
DATA_SUPPLIED_MODEL_ARGS = ("class_names", "input_shape", "mean", "std")

_SECTIONS = {"data": DataConfig, "train": TrainConfig}
_OPTIONS = {"sgd", "adamw"}


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation in (list, dict, str, bool):
        return isinstance(value, annotation)
    return True


def _section(cls: type, raw: Any, what: str):
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise EdgehalError(what, f"is a {type(raw).__name__}", "a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    for key, value in raw.items():
        if key not in hints:
            raise EdgehalError(f"{what}.{key}", "is not a known key", f"one of {sorted(hints)}")
        if not _type_ok(value, hints[key]):
            expected = getattr(hints[key], "__name__", None) or str(hints[key]).replace("typing.", "")
            raise EdgehalError(f"{what}.{key}", f"has value {value!r} of type {type(value).__name__}",
                               f"type {expected}")
    return cls(**dict(raw))


def config_from_dict(raw: Any, *, what: str = "config") -> Config:
    if not isinstance(raw, Mapping):
        raise EdgehalError(what, "is not a mapping", "a YAML mapping with name, model, data, train")
    allowed = {f.name for f in dataclasses.fields(Config)}
    for key in raw:
        if key not in allowed:
            raise EdgehalError(f"{what}: key {key!r}", "is not a known key", f"one of {sorted(allowed)}")
    if "name" not in raw or not isinstance(raw["name"], str):
        raise EdgehalError(what, "has no 'name'", "a string naming the run")
    model = raw.get("model")
    if not isinstance(model, Mapping) or not isinstance(model.get("name"), str):
        raise EdgehalError(f"{what}: model", "has no 'name'", "model: {name: hal_resnet, ...builder options}")
    _check_model_args(model, what)
    cfg = Config(name=raw["name"], model=dict(model),
                 data=_section(DataConfig, raw.get("data"), "data"),
                 train=_section(TrainConfig, raw.get("train"), "train"),
                 output_dir=raw.get("output_dir"), description=str(raw.get("description", "")))
    _check_values(cfg)
    return cfg


def _closest_first(key: str, valid: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the close matches of ``key``, every valid name with those first)."""
    close = difflib.get_close_matches(key, valid, n=3)
    return close, close + sorted(v for v in valid if v not in close)


def _check_model_args(model: Mapping[str, Any], what: str) -> None:
    """Every key of ``model:`` is a keyword of the named builder that the data set does not supply.

    Only the model registry is consulted (its builders' signatures), never a
    data set, so a typo fails before any data is read.
    """
    from edgehal.nets.registry import list_models, model_parameters

    name = model["name"]
    known = list_models()
    if name not in known:
        raise EdgehalError(f"{what}: model.name", f"{name!r} is not a known model",
                           f"one of {_closest_first(name, known)[1]}")
    params = model_parameters(name)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # a builder taking **kwargs checks its own arguments
    supplied = [k for k in DATA_SUPPLIED_MODEL_ARGS if k in params]
    valid = [k for k in params if k not in supplied]
    for key in model:
        if key == "name":
            continue
        if key in supplied:
            raise EdgehalError(f"{what}: model.{key}", "is supplied by the data set",
                               f"leave it out; options of {name}: {sorted(valid)}")
        if key not in params:
            close, ordered = _closest_first(str(key), valid)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise EdgehalError(f"{what}: model.{key}", f"is not an option of {name}",
                               f"{hint}options of {name}: {ordered}")


def _check_values(cfg: Config) -> None:
    t = cfg.train
    if t.epochs < 1:
        raise EdgehalError("train.epochs", f"is {t.epochs}", "at least 1")
    if t.batch_size < 1 or t.eval_batch_size < 1:
        raise EdgehalError("train.batch_size", f"is {t.batch_size}", "at least 1")
    if t.optimizer not in _OPTIONS:
        raise EdgehalError("train.optimizer", f"is {t.optimizer!r}", f"one of {sorted(_OPTIONS)}")
    if t.schedule not in ("cosine", "constant"):
        raise EdgehalError("train.schedule", f"is {t.schedule!r}", "one of ['constant', 'cosine']")
    if t.device not in ("auto", "cpu", "cuda"):
        raise EdgehalError("train.device", f"is {t.device!r}", "one of ['auto', 'cpu', 'cuda']")
    if t.lr <= 0:
        raise EdgehalError("train.lr", f"is {t.lr}", "a positive learning rate")


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config and apply ``key=value`` overrides (``epochs=1``, ``model.widths=[8,16]``)."""
    p = Path(path)
    if not p.is_file():
        raise EdgehalError(f"config {p}", "file not found")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise EdgehalError(f"config {p}", f"is not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise EdgehalError(f"config {p}", "is not a mapping", "a YAML mapping with name, model, data, train")
    for item in overrides:
        apply_override(raw, item)
    return config_from_dict(raw, what=f"config {p}")


def apply_override(raw: dict, item: str) -> None:
    """Set one ``key=value``; a bare key is looked up in the data and train sections."""
    if "=" not in item:
        raise EdgehalError(f"--set {item!r}", "has no '='", "key=value, e.g. epochs=1 or train.lr=0.05")
    key, text = item.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    parts = key.split(".")
    if len(parts) == 1:
        owners = [s for s, cls in _SECTIONS.items() if key in {f.name for f in dataclasses.fields(cls)}]
        if key in {f.name for f in dataclasses.fields(Config)}:
            raw[key] = value
            return
        if len(owners) != 1:
            valid = sorted({f.name for cls in _SECTIONS.values() for f in dataclasses.fields(cls)})
            raise EdgehalError(f"--set {key}", "is not a known key" if not owners else
                               f"is ambiguous (in {owners})", f"one of {valid}, or section.key")
        parts = [owners[0], key]
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise EdgehalError(f"--set {key}", f"{part!r} is not a section")
    node[parts[-1]] = value
