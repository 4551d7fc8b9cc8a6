"""torchvision's classification networks as feature extractors: pooled features [N, F], no classifier.

``backbone_features(name)`` builds a network with
``torchvision.models.get_model(name, weights=None)`` (nothing is ever
downloaded), optionally loads a local weights file into it, and replaces its
final classification layer with ``nn.Identity`` so the module returns the
features that layer read. The rule is generic: the final classification layer
is the last ``nn.Linear`` in module order, and it must be the 1000-way
ImageNet classifier the builder makes by default (a network whose classifier
is not a Linear, like SqueezeNet's 1x1 convolution, is refused). torchvision
is imported only when a backbone is built, so ``import edgehal`` stays light.

Weights: a file saved from the torchvision network (any classifier width, its
training-only auxiliary classifiers included) or from the headless feature
extractor. The keys of the removed layers are dropped before loading rather
than loaded first and discarded with the layer: a user's fine-tuned network
with a 10-class ``fc`` would otherwise fail on a shape that is thrown away
anyway, and a file saved without any head could not load at all.
"""

from __future__ import annotations

import difflib
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from edgehal.errors import EdgehalError

IMAGENET_CLASSES = 1000
# Training-only auxiliary classifiers (GoogLeNet, Inception v3): their outputs are not features, so they go.
_AUX_CLASSIFIERS = ("aux1", "aux2", "AuxLogits")


def classification_backbones() -> list[str]:
    """The names of torchvision's classification builders (``resnet18``, ``mobilenet_v3_small``, ...)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


class ChannelRepeat(nn.Module):
    """[N, 1, H, W] -> [N, channels, H, W] by ``expand`` (a view; one Expand node in ONNX), so a
    deployed model takes the raw single-channel pixels into a 3-channel backbone."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = int(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, self.channels, -1, -1)


class TorchvisionFeatures(nn.Module):
    """A torchvision network without its classifier: input [N, C, H, W] -> pooled features [N, F]."""

    def __init__(self, *, name: str, net: nn.Module, num_features: int, in_channels: int) -> None:
        super().__init__()
        self.name = name
        self.num_features = int(num_features)
        self.expand = ChannelRepeat(3) if in_channels == 1 else nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.expand(x))


def backbone_features(name: str, *, weights: str | Path | None = None,
                      in_channels: int = 3) -> tuple[TorchvisionFeatures, int]:
    """torchvision network ``name`` without its classifier, and its feature width F.

    ``weights``: a local file of the network's weights (``torch.load(weights_only=True)``; a
    state dict, or a dict holding one under ``state_dict`` or ``model``); its classifier's keys
    are ignored. ``in_channels``: 3, or 1 (the channel is repeated to 3 in the graph).
    """
    known = classification_backbones()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=4, cutoff=0.5)
        raise EdgehalError(f"backbone {name!r}", "is not a torchvision classification network",
                           (f"did you mean {' or '.join(repr(c) for c in close)}? " if close else "")
                           + "any name of edgehal.nets.torchvision_backbones.classification_backbones()")
    if in_channels not in (1, 3):
        raise EdgehalError(f"backbone {name!r}", f"input has {in_channels} channels",
                           "3 channels, or 1 (repeated to 3 in the graph)")
    import torchvision

    with warnings.catch_warnings():
        # GoogLeNet and Inception v3 announce a future change of their default initialisation.
        warnings.filterwarnings("ignore", message="The default weight initialization", category=FutureWarning)
        net = torchvision.models.get_model(name, weights=None)
    num_features, removed = _remove_classifier(name, net)
    if weights is not None:
        load_weights(net, weights, backbone=name, removed=removed)
    return TorchvisionFeatures(name=name, net=net, num_features=num_features, in_channels=in_channels), num_features


def _remove_classifier(name: str, net: nn.Module) -> tuple[int, list[str]]:
    """Replace the final classifier (and auxiliary classifiers) in place; returns F and the removed paths."""
    linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears or linears[-1][1].out_features != IMAGENET_CLASSES:
        last = f"its last Linear is {linears[-1][0]!r} with {linears[-1][1].out_features} outputs" if linears \
            else "it has no Linear layer"
        raise EdgehalError(f"backbone {name!r}", f"has no final Linear classifier to remove ({last}; "
                           "its classifier is another kind of layer)",
                           "a torchvision network whose last layer is a Linear classifier (resnet18, "
                           "mobilenet_v3_small, efficientnet_b0, ...)")
    path, layer = linears[-1]
    _set_submodule(net, path, nn.Identity())
    removed = [path]
    for attr in _AUX_CLASSIFIERS:
        if getattr(net, attr, None) is not None:
            setattr(net, attr, None)
            removed.append(attr)
    if hasattr(net, "aux_logits"):
        net.aux_logits = False  # eager forward returns the main output only
    return layer.in_features, removed


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, leaf = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, leaf, module)


# -- weights ------------------------------------------------------------------

def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a weights file: the file itself, or its ``state_dict`` / ``model`` entry."""
    p = Path(path)
    what = f"weights file {p}"
    if not p.is_file():
        raise EdgehalError(what, "file not found", "a local state-dict file (nothing is downloaded)")
    try:
        raw = torch.load(p, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, OSError, ValueError,
            IndexError, KeyError) as exc:
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__
        raise EdgehalError(what, f"cannot be read as tensors only ({detail})",
                           "a state dict saved with torch.save(model.state_dict(), path)") from None
    if isinstance(raw, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(raw.get(key), Mapping):
                raw = raw[key]
                break
    if not isinstance(raw, Mapping) or not raw or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in raw.items()):
        raise EdgehalError(what, "holds no state dict (name -> tensor)",
                           "a state dict, or a dict with one under 'state_dict' or 'model'")
    state = dict(raw)
    if all(k.startswith("module.") for k in state):  # saved from DataParallel / DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_weights(net: nn.Module, path: str | Path, *, backbone: str, removed: Sequence[str] = ()) -> None:
    """Load the weights file ``path`` into ``net``; keys under the ``removed`` module paths are ignored.

    Any other key the file lacks or has in excess, or a tensor of another shape, is refused,
    naming the first of each (and both shapes). Batch-norm ``num_batches_tracked`` counters,
    which older files lack, may be missing.
    """
    state = {k: v for k, v in read_state_dict(path).items()
             if not any(k.startswith(prefix + ".") for prefix in removed)}
    from edgehal.foreign import state_dict_mismatches

    problems = state_dict_mismatches(net.state_dict(), state, may_lack=lambda k: k.endswith("num_batches_tracked"))
    if problems:
        raise EdgehalError(f"weights file {path}", f"does not fit torchvision's {backbone}: " + "; ".join(problems),
                           f"the weights of a torchvision {backbone} (its classifier's keys are ignored)")
    net.load_state_dict(state, strict=False)


def check_input(features: nn.Module, *, backbone: str, input_shape: Sequence[int]) -> None:
    """Run two zero inputs of ``input_shape`` through ``features`` (eval mode, no gradient) and refuse
    an input the network cannot take, or an output other than [2, F], naming the shapes."""
    shape = [2, *(int(v) for v in input_shape)]
    was_training = features.training
    features.eval()
    try:
        with torch.no_grad():
            out = features(torch.zeros(shape))
    except (RuntimeError, ValueError, AssertionError) as exc:
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
        raise EdgehalError(f"backbone {backbone!r}", f"cannot take input {list(input_shape)} ({detail})",
                           "an input shape [C, H, W] the network accepts (large enough for its "
                           "downsampling; a vision transformer takes its own image size only)") from None
    finally:
        features.train(was_training)
    num_features = getattr(features, "num_features", None)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_features):
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise EdgehalError(f"backbone {backbone!r}", f"returns {got} for input {shape}",
                           f"pooled features [N, {num_features}] once its classifier is removed")
