"""Finding and loading the models to serve.

A path given to ``edgehal serve`` is one of:

* a model file: an ONNX file, or a TensorRT engine (``.plan``/``.engine``
  beside the sidecar ``edgehal build-engine`` writes); served under its stem,
  version "1";
* a folder of model files: each served under its stem, version "1";
* a Triton-style model folder ``<model>/config.pbtxt`` + ``<model>/<version>/model.onnx``
  (platform ``onnxruntime_onnx``) or ``model.plan`` (platform ``tensorrt_plan``),
  or a model repository folder holding several of them: what ``edgehal
  export-triton`` writes. The config is parsed with ``google.protobuf.text_format``
  into tritonclient's ``ModelConfig``; ``platform``/``backend``,
  ``max_batch_size``, ``dynamic_batching { max_queue_delay_microseconds,
  default_queue_policy { max_queue_size } }``, ``version_policy``,
  ``default_model_filename``, the ``input``/``output`` lists (checked against
  the model; a listed output subset is what is served) and an output's
  ``label_filename`` are honoured. A config without ``dynamic_batching`` runs
  each request alone, as Triton does. Other fields are ignored.

Every model version is opened with :func:`edgehal.runtime.loader.open_runner`
(onnxruntime for ONNX, the TensorRT runner for an engine) and used only
through the Runner interface, so serving knows no backend. A model that does
not match its config (names, dtypes, dims, or a ``max_batch_size`` beyond an
engine's optimisation profile) is refused at load, naming the mismatch.

Command-line batching options are the defaults for models without a config.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgehal.artifact import SUFFIXES, ArtifactMetadata, artifact_kind, to_properties
from edgehal.errors import EdgehalError
from edgehal.host import usable_cores
from edgehal.runtime.loader import open_runner
from edgehal.serve.protocol import ModelIO
from edgehal.tensors import TensorSpec, dtype_from_triton

log = logging.getLogger("edgehal.serve")


@dataclass(frozen=True)
class Platform:
    """A Triton platform edgehal serves, and how it is run."""

    name: str  # config.pbtxt ``platform``
    backend: str  # config.pbtxt ``backend``, Triton's other name for it
    filename: str  # the model file in a version folder unless ``default_model_filename`` says otherwise
    kind: str  # the artifact kind it runs (edgehal.artifact.SUFFIXES)
    runner: str  # the edgehal.runtime.loader backend that runs it
    noun: str  # what the model is called in errors


PLATFORMS: tuple[Platform, ...] = (
    # onnxruntime's execution providers come from ModelOptions.providers, in place of the backend's CPU
    Platform("onnxruntime_onnx", "onnxruntime", "model.onnx", "onnx", "ort-cpu", "the graph"),
    Platform("tensorrt_plan", "tensorrt", "model.plan", "engine", "tensorrt", "the engine"),
)
_BY_KIND = {p.kind: p for p in PLATFORMS}
MODEL_SUFFIXES = tuple(sfx for sfx, kind in SUFFIXES.items() if kind in _BY_KIND)
# The one type of edgehal.tensors the protocol codecs do not decode or encode.
_UNSERVED_DATATYPES = ("BF16",)


@dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """Defaults for every served model; a Triton ``config.pbtxt`` overrides the batching ones.

    ``threads`` (onnxruntime intra-op threads) defaults to one less than the
    cores this process may run on (at least 1): the event loop parsing HTTP
    needs the other, and a server pinned to one core with ``taskset`` uses one.
    ``providers`` (onnxruntime execution providers of ONNX models) defaults to
    the best available, as for the runners. A TensorRT engine's batch is
    capped by its optimisation profile.
    """

    max_batch_size: int = 64
    dynamic_batching: bool = True
    max_queue_delay_ms: float = 0.0
    max_queue_size: int = 256
    providers: tuple[str, ...] | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.max_batch_size < 0:
            raise EdgehalError("--max-batch-size", f"is {self.max_batch_size}", "0 (no batching) or more")
        if self.max_queue_delay_ms < 0:
            raise EdgehalError("--max-queue-delay-ms", f"is {self.max_queue_delay_ms}", "0 or more")
        if self.max_queue_size < 1:
            raise EdgehalError("--max-queue-size", f"is {self.max_queue_size}", "at least 1")
        if self.threads is not None and self.threads < 1:
            raise EdgehalError("--threads", f"is {self.threads}", "at least 1")


@dataclass(frozen=True)
class ModelSource:
    """One model version on disk, before anything is loaded."""

    name: str
    version: str
    path: Path
    config: Any = None  # tritonclient ModelConfig, when the model came with config.pbtxt
    config_path: Path | None = None

    @property
    def platform(self) -> Platform:
        """From the file's suffix; discovery has checked it against the config's platform."""
        return _BY_KIND[artifact_kind(self.path)]


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int  # 0: the model has no batch dimension
    dynamic: bool
    max_queue_delay_s: float
    max_queue_size: int


# ---------------------------------------------------------------------------
# Triton config.pbtxt


_MODEL_CONFIG_CLASS: Any = None


def model_config_class() -> Any:
    """tritonclient's ``ModelConfig`` message class.

    ``tritonclient.grpc`` refuses to import without grpcio, but its
    ``model_config_pb2`` needs only protobuf, so that file is loaded on its own
    when the package import fails.
    """
    global _MODEL_CONFIG_CLASS
    if _MODEL_CONFIG_CLASS is not None:
        return _MODEL_CONFIG_CLASS
    try:
        from tritonclient.grpc import model_config_pb2  # type: ignore[import-not-found]
        _MODEL_CONFIG_CLASS = model_config_pb2.ModelConfig
        return _MODEL_CONFIG_CLASS
    except Exception:  # ImportError, or RuntimeError when grpcio is missing
        pass
    try:
        spec = importlib.util.find_spec("tritonclient")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("tritonclient")
        path = Path(list(spec.submodule_search_locations)[0]) / "grpc" / "model_config_pb2.py"
        mod_spec = importlib.util.spec_from_file_location("_edgehal_triton_model_config_pb2", path)
        if mod_spec is None or mod_spec.loader is None or not path.is_file():
            raise ImportError(str(path))
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
        _MODEL_CONFIG_CLASS = module.ModelConfig
        return _MODEL_CONFIG_CLASS
    except Exception as exc:
        raise EdgehalError("Triton config.pbtxt", f"cannot be read: tritonclient's model_config_pb2 is "
                           f"not importable ({exc.__class__.__name__}: {exc})",
                           "pip install 'tritonclient[http]' (it ships the ModelConfig protobuf), "
                           "or serve the .onnx files directly") from None


def parse_config(path: Path) -> Any:
    """Parse a ``config.pbtxt``; unknown fields (a newer Triton's) are skipped with a warning."""
    from google.protobuf import text_format

    cls = model_config_class()
    what = f"Triton config {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgehalError(what, f"cannot be read ({exc.__class__.__name__})") from None
    try:
        return text_format.Parse(text, cls())
    except text_format.ParseError as exc:
        first = str(exc)
        if "no field named" not in first and "has no field" not in first:
            raise EdgehalError(what, f"does not parse ({first})",
                               "a ModelConfig in protobuf text format") from None
    try:
        config = text_format.Parse(text, cls(), allow_unknown_field=True)
    except text_format.ParseError as exc:
        raise EdgehalError(what, f"does not parse ({exc})", "a ModelConfig in protobuf text format") from None
    log.warning("%s: skipping fields this tritonclient does not know (%s)", path, first)
    return config


def _is_triton_model_dir(d: Path) -> bool:
    if (d / "config.pbtxt").is_file():
        return True
    return any(c.is_dir() and c.name.isdigit() and any((c / p.filename).is_file() for p in PLATFORMS)
               for c in d.iterdir())


def _config_platform(config: Any, d: Path, what: str) -> Platform | None:
    """The platform a config names (by ``platform`` or ``backend``), or None for one edgehal does not serve.
    A config naming neither is read by its version folders' files, ONNX first."""
    platform, backend = config.platform if config else "", config.backend if config else ""
    by_platform = next((p for p in PLATFORMS if p.name == platform), None)
    by_backend = next((p for p in PLATFORMS if p.backend == backend), None)
    if platform and backend and by_platform is not None and by_backend is not None and by_platform != by_backend:
        raise EdgehalError(what, f"config.pbtxt gives platform {platform!r} and backend {backend!r}, "
                           "which disagree", f"platform {by_backend.name!r} for backend {backend!r}")
    if (platform and by_platform is None) or (backend and by_backend is None):
        return None
    if by_platform or by_backend:
        return by_platform or by_backend
    folders = [c for c in d.iterdir() if c.is_dir() and c.name.isdigit()]
    return next((p for p in PLATFORMS if any((c / p.filename).is_file() for c in folders)), PLATFORMS[0])


def _triton_model(d: Path, *, in_repository: bool = False) -> list[ModelSource]:
    """The versions of one Triton model folder. Inside a repository, a model for a platform
    edgehal does not serve (a Python backend, say) is skipped with a warning, as Triton would
    fail only it."""
    cfg_path = d / "config.pbtxt"
    config = parse_config(cfg_path) if cfg_path.is_file() else None
    name = d.name
    what = f"Triton model {d}"
    if config is not None and config.name and config.name != name:
        raise EdgehalError(what, f"config.pbtxt names it {config.name!r}",
                           f"the folder's name {name!r}, as Triton requires")
    platform = _config_platform(config, d, what)
    if platform is None:
        served = " or ".join(repr(p.name) for p in PLATFORMS)
        if in_repository:
            log.warning("%s: skipped, platform %r / backend %r is not one edgehal serves (%s)", what,
                        config.platform, config.backend, served)
            return []
        raise EdgehalError(what, f"is for platform {config.platform!r} / backend {config.backend!r}",
                           f"platform {served}: edgehal serves ONNX models and TensorRT engines")
    filename = (config.default_model_filename if config is not None else "") or platform.filename
    suffixes = [sfx for sfx, kind in SUFFIXES.items() if kind == platform.kind]
    if Path(filename).suffix.lower() not in suffixes:
        raise EdgehalError(what, f"default_model_filename {filename!r} is not a file of platform {platform.name!r}",
                           f"a file name ending in {' or '.join(suffixes)}")
    found = sorted(int(c.name) for c in d.iterdir()
                   if c.is_dir() and c.name.isdigit() and (c / filename).is_file())
    if not found:
        raise EdgehalError(what, f"has no version folder holding {filename}",
                           f"{d}/1/{filename}")
    versions = found[-1:]
    if config is not None and config.HasField("version_policy"):
        policy = config.version_policy
        choice = policy.WhichOneof("policy_choice")
        if choice == "all":
            versions = found
        elif choice == "latest":
            versions = found[-max(1, policy.latest.num_versions):]
        elif choice == "specific":
            wanted = sorted(int(v) for v in policy.specific.versions)
            missing = [v for v in wanted if v not in found]
            if missing:
                raise EdgehalError(what, f"version_policy asks for version {missing[0]}, which has no {filename}",
                                   f"one of {found}")
            versions = wanted
    return [ModelSource(name, str(v), d / str(v) / filename, config, cfg_path if config else None)
            for v in versions]


def _is_model_file(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in MODEL_SUFFIXES


def discover(paths: Sequence[str | Path]) -> list[ModelSource]:
    """Every model version the given paths name, without loading any."""
    if not paths:
        raise EdgehalError("edgehal serve", "was given no model",
                           "one or more .onnx or .plan files or folders")
    sources: list[ModelSource] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file():
            if not _is_model_file(p):
                raise EdgehalError(f"model {p}", "is not an .onnx file or a TensorRT engine",
                                   "an .onnx file, a .plan or .engine file, a folder of them, "
                                   "or a Triton model repository")
            sources.append(ModelSource(p.stem, "1", p))
        elif p.is_dir():
            if _is_triton_model_dir(p):
                sources.extend(_triton_model(p))
                continue
            children = sorted(p.iterdir())
            triton = [c for c in children if c.is_dir() and _is_triton_model_dir(c)]
            files = [c for c in children if _is_model_file(c)]
            if not triton and not files:
                raise EdgehalError(f"model folder {p}", "holds no model file and no Triton model",
                                   ".onnx, .plan or .engine files, or <model>/config.pbtxt + "
                                   "<model>/1/model.onnx (or model.plan)")
            for c in triton:
                sources.extend(_triton_model(c, in_repository=True))
            sources.extend(ModelSource(c.stem, "1", c) for c in files)
            if not sources:
                raise EdgehalError(f"model folder {p}", "holds no model that edgehal can serve",
                                   "models with platform " + " or ".join(repr(x.name) for x in PLATFORMS))
        else:
            raise EdgehalError(f"model {p}", "file not found")
    seen: dict[tuple[str, str], Path] = {}
    for s in sources:
        if (s.name, s.version) in seen:
            raise EdgehalError(f"model {s.name!r} version {s.version}",
                               f"is given twice ({seen[(s.name, s.version)]} and {s.path})",
                               "unique model names: rename one file")
        seen[(s.name, s.version)] = s.path
    return sources


# ---------------------------------------------------------------------------
# Loading


def default_threads() -> int:
    """onnxruntime intra-op threads: one core fewer than usable, left to the HTTP event loop."""
    return max(1, usable_cores() - 1)


def _config_type_name(data_type: int, config: Any) -> str:
    """``TYPE_FP32`` for a config tensor's ``data_type`` number."""
    return type(config).DESCRIPTOR.fields_by_name["input"].message_type.fields_by_name[
        "data_type"].enum_type.values_by_number[data_type].name


def _dims_agree(a: Sequence[int], b: Sequence[int]) -> bool:
    return len(a) == len(b) and all(x < 0 or y < 0 or x == y for x, y in zip(a, b))


class LoadedModel:
    """One model version, loaded: its runner, protocol view, batching and metadata."""

    def __init__(self, source: ModelSource, options: ModelOptions) -> None:
        self.source = source
        self.name, self.version = source.name, source.version
        self.platform = source.platform
        onnx = self.platform.kind == "onnx"
        self.runner = open_runner(source.path, backend=self.platform.runner,
                                  threads=(options.threads or default_threads()) if onnx else None,
                                  providers=(options.providers or ()) if onnx else None)
        self.runner.activate()
        try:
            self._describe(options)
        except BaseException:
            self.runner.deactivate()
            raise

    def _describe(self, options: ModelOptions) -> None:
        source, cfg, runner = self.source, self.source.config, self.runner
        noun = self.platform.noun
        what = f"model {self.name!r} ({source.path})"
        in_specs: list[TensorSpec] = list(runner.input_specs())
        out_specs: list[TensorSpec] = list(runner.output_specs())
        for kind, specs in (("input", in_specs), ("output", out_specs)):
            for spec in specs:
                if spec.datatype in _UNSERVED_DATATYPES:
                    raise EdgehalError(what, f"{kind} {spec.name!r} has dtype {spec.dtype}, which the "
                                       "protocol codecs do not carry",
                                       "a model with float16 or float32 tensors in its place")
        if cfg is not None:
            mbs = int(cfg.max_batch_size)
            dynamic = cfg.HasField("dynamic_batching")
            delay = cfg.dynamic_batching.max_queue_delay_microseconds / 1e6 if dynamic else 0.0
            qsize = options.max_queue_size
            if dynamic and cfg.dynamic_batching.HasField("default_queue_policy") \
                    and cfg.dynamic_batching.default_queue_policy.max_queue_size > 0:
                qsize = int(cfg.dynamic_batching.default_queue_policy.max_queue_size)
        else:
            mbs, dynamic = options.max_batch_size, options.dynamic_batching
            delay, qsize = options.max_queue_delay_ms / 1000.0, options.max_queue_size
        batchable = all(s.shape and s.shape[0] == -1 for s in in_specs + out_specs)
        if mbs > 0 and not batchable:
            if cfg is not None:
                raise EdgehalError(what, f"config.pbtxt sets max_batch_size {mbs} but {noun}'s first "
                                   "dimension is not dynamic for every input and output",
                                   "max_batch_size: 0, or a model exported with a dynamic batch axis")
            log.info("%s has a fixed first dimension: served without batching", what)
            mbs = 0
        limit = runner.max_batch
        if mbs > 0 and limit is not None and mbs > limit:
            if cfg is not None:
                raise EdgehalError(what, f"config.pbtxt sets max_batch_size {mbs} but {noun}'s profile "
                                   f"takes batches up to {limit}",
                                   f"max_batch_size {limit} or less, or an engine built with "
                                   f"`edgehal build-engine --max-batch {mbs}`")
            log.info("%s takes batches up to %d: served with max_batch_size %d", what, limit, limit)
            mbs = limit

        inputs = [s.without_batch() if mbs else s for s in in_specs]
        outputs = [s.without_batch() if mbs else s for s in out_specs]
        labels: dict[str, tuple[str, ...]] = {}
        metadata: ArtifactMetadata | None = runner.metadata
        if metadata is not None:
            for head in metadata.manifest.heads:
                if head.class_names:
                    labels[head.name] = tuple(head.class_names)
        if cfg is not None:
            self.io_batched = mbs > 0
            outputs = self._check_config(cfg, inputs, outputs, labels, what)
        self.io = ModelIO(self.name, self.version, tuple(inputs), tuple(outputs), mbs, labels)
        self.batching = BatchingConfig(mbs, dynamic and mbs > 1, delay, qsize)
        self.metadata = metadata
        # Everything the artifact records (calibration included), from the one door's writer.
        self.parameters: dict[str, str] = to_properties(metadata) if metadata is not None else {}
        if not self.parameters and cfg is not None:
            # a repository generator may carry the manifest in config.pbtxt parameters only
            self.parameters = {k: v.string_value for k, v in cfg.parameters.items() if k.startswith("edgehal.")}
        self.shape_key = any(d < 0 for t in inputs for d in t.shape)

    def _check_config(self, cfg: Any, inputs: list[TensorSpec], outputs: list[TensorSpec],
                      labels: dict[str, tuple[str, ...]], what: str) -> list[TensorSpec]:
        noun = self.platform.noun
        by_in = {t.name: t for t in inputs}
        for ci in cfg.input:
            t = by_in.get(ci.name)
            if t is None:
                raise EdgehalError(what, f"config.pbtxt lists input {ci.name!r}, which {noun} lacks",
                                   f"inputs {list(by_in)}")
            self._check_tensor(cfg, ci, t, "input", what)
        listed = {ci.name for ci in cfg.input}
        unlisted = [n for n in by_in if n not in listed]
        if listed and unlisted:
            raise EdgehalError(what, f"config.pbtxt does not list input {unlisted[0]!r} of {noun}",
                               f"every input: {list(by_in)}")
        by_out = {t.name: t for t in outputs}
        chosen = []
        for co in cfg.output:
            t = by_out.get(co.name)
            if t is None:
                raise EdgehalError(what, f"config.pbtxt lists output {co.name!r}, which {noun} lacks",
                                   f"outputs {list(by_out)}")
            self._check_tensor(cfg, co, t, "output", what)
            chosen.append(t)
            if co.label_filename and co.name not in labels:
                labels[co.name] = self._read_labels(co.label_filename)
        return chosen or outputs

    def _check_tensor(self, cfg: Any, c: Any, t: TensorSpec, kind: str, what: str) -> None:
        noun = self.platform.noun
        if c.HasField("reshape"):
            raise EdgehalError(what, f"config.pbtxt reshapes {kind} {c.name!r}", "no reshape: it is not supported")
        type_name = _config_type_name(c.data_type, cfg)
        given = dtype_from_triton(type_name, what=f"{what}: config.pbtxt {kind} {c.name!r}") \
            if type_name != "TYPE_INVALID" else None
        if given != t.type:
            raise EdgehalError(what, f"config.pbtxt gives {kind} {c.name!r} type {type_name}",
                               f"{noun}'s {t.type.triton}")
        dims = list(c.dims)
        if dims == [1] and t.shape == () and self.io_batched:
            return  # Triton's way to write a per-sample scalar of a batched model
        if not _dims_agree(dims, t.shape):
            raise EdgehalError(what, f"config.pbtxt gives {kind} {c.name!r} dims {list(c.dims)}",
                               f"{noun}'s {list(t.shape)} (without the batch dimension when "
                               "max_batch_size > 0)")

    def _read_labels(self, filename: str) -> tuple[str, ...]:
        folder = self.source.path.parent.parent.resolve()
        path = (folder / filename).resolve()
        if folder not in path.parents or not path.is_file():
            raise EdgehalError(f"model {self.name!r}", f"label_filename {filename!r} is not a file in {folder}")
        return tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())

    # -- serving -----------------------------------------------------------
    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One run of an already validated batch: every output.

        The protocol decoder checked every request's names, datatypes and shapes
        against this model's inputs, and the batcher only concatenates requests of
        one shape, so the runner's own per-call check would repeat that work on the
        server's hot path.
        """
        return self.runner.infer(feed, check=False)

    def warmup_feeds(self) -> list[dict[str, np.ndarray]]:
        """Batches of zeros at batch 1 and at the maximum (dynamic dims at 1)."""
        sizes = [1]
        if self.batching.max_batch_size > 1:
            sizes.append(self.batching.max_batch_size)
        feeds = []
        for n in sizes:
            feed = {}
            for t in self.io.inputs:
                shape = ([n] if self.io.max_batch_size else []) + [d if d >= 0 else 1 for d in t.shape]
                if t.datatype == "BYTES":
                    feed[t.name] = np.full(shape, "", dtype=object)
                else:
                    feed[t.name] = np.zeros(shape, dtype=t.numpy_dtype)
            feeds.append(feed)
        return feeds

    def config_json(self) -> dict[str, Any]:
        """The model configuration (Triton's ``model_configuration`` extension, JSON form)."""
        def tensor(t: TensorSpec) -> dict[str, Any]:
            return {"name": t.name, "data_type": t.type.triton, "dims": list(t.shape)}
        doc: dict[str, Any] = {"name": self.name, "platform": self.platform.name, "backend": self.platform.backend,
                               "max_batch_size": self.batching.max_batch_size,
                               "input": [tensor(t) for t in self.io.inputs],
                               "output": [tensor(t) for t in self.io.outputs]}
        if self.batching.dynamic:
            doc["dynamic_batching"] = {
                "max_queue_delay_microseconds": int(round(self.batching.max_queue_delay_s * 1e6)),
                "default_queue_policy": {"max_queue_size": self.batching.max_queue_size}}
        return doc

    def close(self) -> None:
        self.runner.deactivate()


def load(sources: Sequence[ModelSource], options: ModelOptions) -> list[LoadedModel]:
    """Load every source; on any failure unload those already loaded."""
    loaded: list[LoadedModel] = []
    try:
        for s in sources:
            loaded.append(LoadedModel(s, options))
            log.info("loaded model %r version %s from %s", s.name, s.version, s.path)
    except BaseException:
        for m in loaded:
            m.close()
        raise
    return loaded
