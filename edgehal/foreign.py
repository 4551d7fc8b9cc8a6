"""PyTorch files edgehal did not write: say what they are, and load the ones that can be loaded safely.

:func:`identify` tells an edgehal checkpoint from a bare state dict, a whole
pickled ``nn.Module`` (``torch.save(model)``), a TorchScript archive
(``torch.jit.save``) and a ``torch.export`` program (``torch.export.save``)
without running anything from the file: archives are told apart by their zip
members, and the only unpickling is ``torch.load(weights_only=True)``, which
refuses any class it does not know instead of importing it. A pickled module
is recognised by the classes that refusal names.

:func:`load_module` turns the loadable kinds into an ``nn.Module``. A pickled
module is loaded only when the caller says the file is trusted, because
unpickling imports and runs whatever code the file names.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from edgehal.checkpoint import FORMAT, load_checkpoint
from edgehal.errors import EdgehalError
from edgehal.manifest import MANIFEST_VERSION, HeadManifest, Preprocessing

KINDS = ("edgehal-checkpoint", "state-dict", "pickled-module", "torchscript", "exported-program", "unknown")
# Keys under which training scripts commonly nest the model's weights in a larger dict.
STATE_DICT_KEYS = ("state_dict", "model")
# Globals that only a pickled network (not a dict of tensors) refers to.
_MODULE_GLOBAL_PREFIXES = ("torch.nn.", "torchvision.")
# What torch.load(weights_only=True) and its readers raise for a damaged file.
_CORRUPT_ERRORS = (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, OSError, ValueError,
                   IndexError, KeyError)


@dataclass(frozen=True)
class TorchFile:
    """What a PyTorch file holds: one of :data:`KINDS` and a one-line description.

    ``corrupt`` marks an ``unknown`` file that could not be read at all
    (truncated, damaged, not a PyTorch file).
    """

    path: Path
    kind: str
    description: str
    corrupt: bool = False


def identify(path: str | Path) -> TorchFile:
    """Say what the PyTorch file at ``path`` is, without running any code it contains."""
    return read_torch_file(Path(path))[0]


def read_torch_file(path: str | Path, *, map_location: str = "cpu") -> tuple[TorchFile, Any]:
    """What :func:`identify` says, and for a file ``torch.load(weights_only=True)`` reads, what it read
    (None otherwise): a caller that wants the contents reads the file once."""
    p = Path(path)
    if not p.is_file():
        raise EdgehalError(f"file {p}", "file not found")
    archive = _archive_kind(p)
    if archive is not None:
        return archive, None
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refused_pickle(p, exc)
        if refused is not None:
            return refused, None
        return _corrupt(p, exc), None
    except _CORRUPT_ERRORS as exc:
        return _corrupt(p, exc), None
    return describe_payload(p, payload), payload


def _corrupt(p: Path, exc: BaseException) -> TorchFile:
    detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__
    return TorchFile(p, "unknown", f"corrupt or truncated ({detail})", corrupt=True)


def _archive_kind(p: Path) -> TorchFile | None:
    """A TorchScript archive or a ``torch.export`` program, told by its zip members; None otherwise.

    ``torch.load`` must not see these first: it hands a TorchScript archive on to ``torch.jit.load``.
    """
    if not zipfile.is_zipfile(p):
        return None
    try:
        with zipfile.ZipFile(p) as archive:
            names = archive.namelist()
            # Every member sits under one folder named after the archive; drop it.
            inner = {n.split("/", 1)[1] if "/" in n else n: n for n in names}
            fmt = archive.read(inner["archive_format"]).strip() if "archive_format" in inner else b""
    except (zipfile.BadZipFile, OSError, KeyError):
        return None
    if fmt == b"pt2" or any(n.endswith("serialized_exported_program.json") for n in inner):
        return TorchFile(p, "exported-program", "a torch.export program (torch.export.save)")
    if "constants.pkl" in inner or any(n.startswith("code/") for n in inner):
        return TorchFile(p, "torchscript", "a TorchScript archive (torch.jit.save)")
    return None


def _refused_pickle(p: Path, exc: pickle.UnpicklingError) -> TorchFile | None:
    """A pickle that names classes ``weights_only`` refuses: a pickled module when they are networks."""
    # weights_only wraps every unpickling failure; only a refused class means the pickle itself is whole.
    first = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    if first is None:
        return None
    try:
        names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(p))
    except (ValueError, RuntimeError, OSError):
        names = []
    top = first.group(1)
    if any(n.startswith(_MODULE_GLOBAL_PREFIXES) for n in [top, *names]):
        return TorchFile(p, "pickled-module", f"a whole pickled nn.Module of class {top} (torch.save(model))")
    shown = ", ".join(names[:3]) if names else top
    return TorchFile(p, "unknown", f"a pickle of Python objects ({shown}) that are not tensors")


def describe_payload(p: Path, payload: Any) -> TorchFile:
    """The kind of what ``torch.load(weights_only=True)`` read from ``p``."""
    if isinstance(payload, Mapping) and payload.get("format") == FORMAT:
        return TorchFile(p, "edgehal-checkpoint", f"an edgehal checkpoint ({FORMAT})")
    found = _state_dict_in(payload)
    if found is not None:
        weights, key = found
        keys = list(weights)
        shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
        where = f" under {key!r}" if key else ""
        tensors = "tensor" if len(keys) == 1 else "tensors"
        return TorchFile(p, "state-dict", f"a state dict of {len(keys)} {tensors}{where} ({shown})")
    if isinstance(payload, Mapping):
        keys = [str(k) for k in list(payload)[:5]]
        return TorchFile(p, "unknown", f"a {type(payload).__name__} with the keys {keys}")
    return TorchFile(p, "unknown", f"a {type(payload).__name__}")


def _is_weights(value: Any) -> bool:
    return (isinstance(value, Mapping) and len(value) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()))


def _state_dict_in(payload: Any) -> tuple[Mapping[str, torch.Tensor], str | None] | None:
    """The weights of a state dict, at the top or under one of :data:`STATE_DICT_KEYS`, and that key."""
    if _is_weights(payload):
        return payload, None
    if isinstance(payload, Mapping):
        for key in STATE_DICT_KEYS:
            if _is_weights(payload.get(key)):
                return payload[key], key
    return None


# --------------------------------------------------------------------------
# What to do instead


def export_hint(p: Path) -> str:
    return (f"export it with `edgehal export {p.name} -o model.onnx --manifest heads.yaml --input-shape 3,224,224` "
            "(or --example-inputs x.npy), or edgehal.export(model, ...) in Python")


def state_dict_hint() -> str:
    return ("it holds weights but no architecture: build the model in Python, call "
            "model.load_state_dict(torch.load(path, weights_only=True)) and export it with "
            "edgehal.export(model=model, ...)")


def pickle_hint(p: Path) -> str:
    return ("unpickling runs whatever code the file names, so edgehal does not load it by default: for a file you "
            f"made yourself, `edgehal export {p.name} --trust-pickle --manifest heads.yaml ...` (or "
            "load_module(path, trust_pickle=True)); otherwise save a state dict (torch.save(model.state_dict())) "
            "or a TorchScript archive (torch.jit.save) instead")


def not_a_checkpoint(tf: TorchFile, *, what: str) -> EdgehalError:
    """The error for a file that is not an edgehal checkpoint: what it is and what to do with it."""
    if tf.corrupt:
        return EdgehalError(what, f"is {tf.description}", "a complete file written by `edgehal train`")
    expected = {
        "torchscript": export_hint(tf.path),
        "exported-program": export_hint(tf.path),
        "pickled-module": pickle_hint(tf.path),
        "state-dict": state_dict_hint(),
    }.get(tf.kind, f"a file written by `edgehal train` (format {FORMAT})")
    return EdgehalError(what, f"is {tf.description}, not an edgehal checkpoint", expected)


# --------------------------------------------------------------------------
# Loading


def load_module(path: str | Path, *, trust_pickle: bool = False,
                model: torch.nn.Module | None = None) -> torch.nn.Module:
    """An ``nn.Module`` from a PyTorch file, in eval mode where the module allows it.

    A TorchScript archive loads with ``torch.jit.load``, a ``torch.export``
    program with ``torch.export.load(path).module()``, an edgehal checkpoint
    rebuilds its model. A state dict holds no architecture: its weights are
    loaded into ``model`` (strictly; missing, unexpected and misshapen keys
    are named). A whole pickled module is loaded only with
    ``trust_pickle=True``, since unpickling runs code the file names.
    """
    p = Path(path)
    tf, payload = read_torch_file(p)
    what = f"model file {p}"
    if model is not None and tf.kind != "state-dict":
        raise EdgehalError(what, f"is {tf.description}, which carries its own architecture",
                           "model= only for a state dict")
    if tf.kind == "edgehal-checkpoint":
        return load_checkpoint(p).build_model()
    if tf.kind == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice: the file is what it is
            return torch.jit.load(str(p), map_location="cpu").eval()
    if tf.kind == "exported-program":
        # The program is fixed in the mode it was exported in; its module refuses eval().
        return torch.export.load(str(p)).module()
    if tf.kind == "state-dict":
        if model is None:
            raise EdgehalError(what, f"is {tf.description}: weights without an architecture",
                               "build the model in Python and pass it: load_module(path, model=MyNet())")
        weights, _ = _state_dict_in(payload)
        return load_weights(model, weights, what=what)
    if tf.kind == "pickled-module":
        if not trust_pickle:
            raise EdgehalError(what, f"is {tf.description}", pickle_hint(p))
        return _unpickle_module(p, what=what)
    raise not_a_checkpoint(tf, what=what) if tf.corrupt else EdgehalError(
        what, f"is {tf.description}",
        "a TorchScript archive, a torch.export program, a state dict with model=, or a pickled module")


def _unpickle_module(p: Path, *, what: str) -> torch.nn.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own warning about what trust_pickle already decided
            obj = torch.load(p, map_location="cpu", weights_only=False)
    except (AttributeError, ModuleNotFoundError, ImportError) as exc:
        raise EdgehalError(what, f"names a class this Python cannot import ({exc})",
                           "run where the model's code is importable, or save a TorchScript archive "
                           "(torch.jit.save) that carries its code") from None
    if not isinstance(obj, torch.nn.Module):
        raise EdgehalError(what, f"unpickles to a {type(obj).__name__}", "a whole nn.Module (torch.save(model))")
    return obj.eval()


def load_weights(model: torch.nn.Module, weights: Mapping[str, torch.Tensor], *, what: str) -> torch.nn.Module:
    """``model.load_state_dict(weights)`` (strict), refused with the first mismatches named."""
    problems = state_dict_mismatches(model.state_dict(), weights)
    if problems:
        hint = "a state dict saved from this architecture (model.state_dict())"
        if all(k.startswith("module.") for k in weights) and not all(k.startswith("module.")
                                                                      for k in model.state_dict()):
            hint += "; its keys start with 'module.' (saved from DataParallel): strip that prefix"
        raise EdgehalError(what, f"weights do not fit {type(model).__name__}: {'; '.join(problems)}", hint)
    model.load_state_dict(weights, strict=True)
    return model.eval()


def state_dict_mismatches(own: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], *,
                          may_lack: Callable[[str], bool] = lambda key: False) -> list[str]:
    """What keeps ``given`` from loading into a model whose state dict is ``own``, one phrase per kind:
    the keys it lacks (except those ``may_lack``), the keys it has in excess, the shapes that differ;
    each names the first few. Empty when it fits."""
    missing = [k for k in own if k not in given and not may_lack(k)]
    unexpected = [k for k in given if k not in own]
    misshapen = [k for k in own if k in given and tuple(own[k].shape) != tuple(given[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_first(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_first(unexpected)})")
    if misshapen:
        k = misshapen[0]
        problems.append(f"{len(misshapen)} shape mismatches (first {k}: file {list(given[k].shape)}, "
                        f"model {list(own[k].shape)})")
    return problems


def _first(keys: Sequence[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


# --------------------------------------------------------------------------
# The head manifest of a foreign model


def read_head_manifest(path: str | Path, *, input_shape: Sequence[int] | None = None,
                       model: str = "custom") -> tuple[HeadManifest, Preprocessing | None]:
    """A head manifest from a YAML or JSON file, and the preprocessing it may carry.

    The file holds a manifest as ``HeadManifest.to_dict`` writes it, or the
    short form ``{input_shape: [...], heads: [...]}``: ``model`` (defaults to
    ``model``), ``input_name`` (``input``) and the schema version may be left
    out, and ``input_shape`` too when ``input_shape`` is given. An optional
    ``preprocessing`` entry is a ``Preprocessing`` (layout, input range...).
    """
    p = Path(path)
    what = f"manifest {p}"
    if not p.is_file():
        raise EdgehalError(what, "file not found")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
    except Exception as exc:  # json and yaml each raise their own parse errors
        raise EdgehalError(what, f"is not valid {'JSON' if p.suffix.lower() == '.json' else 'YAML'} "
                           f"({str(exc).splitlines()[0][:160]})") from None
    if not isinstance(raw, Mapping):
        raise EdgehalError(what, f"is a {type(raw).__name__}", "a mapping with input_shape and heads")
    d = dict(raw)
    pre = d.pop("preprocessing", None)
    d.setdefault("model", model)
    d.setdefault("input_name", "input")
    if "extra" not in d:  # version 1's marker; anything else written by hand is the current schema
        d.setdefault("version", MANIFEST_VERSION)
    if input_shape is not None:
        shape = [int(v) for v in input_shape]
        if "input_shape" not in d:
            d["input_shape"] = shape
        elif list(d["input_shape"]) != shape:
            raise EdgehalError("--input-shape", f"is {shape} but {p.name} says input_shape {list(d['input_shape'])}",
                               "the same shape in both, or leave input_shape out of the manifest")
    manifest = HeadManifest.from_dict(d, what=what)
    preprocessing = Preprocessing.from_dict(pre, what=f"{what}: preprocessing") if pre is not None else None
    return manifest, preprocessing
