"""The public Python API: bring a module or a file, get an artifact, a report or a server.

Each function is the library call behind one ``edgehal`` command (the CLI
calls these same functions, so the two cannot drift) with keyword-only,
typed options named like the command's::

    import edgehal

    manifest = edgehal.HeadManifest.classifier(class_names=[...], superclasses={...}, input_shape=(3, 32, 32))
    edgehal.export(module, "model.onnx", example_inputs=x, manifest=manifest)
    edgehal.bench(["model.onnx"], batch_sizes=(1, 8))
    with edgehal.serve(["model.onnx"]) as server:
        ...  # server.url

Heavy libraries (torch, onnx, onnxruntime, aiohttp) are imported inside the
functions, so importing this module stays light. Every user error is an
:class:`~edgehal.errors.EdgehalError`.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from edgehal.errors import EdgehalError
from edgehal.manifest import HeadManifest, Preprocessing

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from edgehal.artifact import Artifact
    from edgehal.bench.results import BenchReport
    from edgehal.export.onnx import ExportReport
    from edgehal.parity import ParityReport, RunResult, ToleranceOverrides
    from edgehal.serve.app import ServerOptions
    from edgehal.serve.dataplane import DataPlane

__all__ = ["QuantizeReport", "Server", "bench", "export", "load", "parity", "quantize", "serve"]

PathLike = str | os.PathLike
Log = Callable[[str], None]


_serve_log = logging.getLogger("edgehal.serve")  # the lines `edgehal serve` logs


def _paths(value: PathLike | Sequence[PathLike], what: str) -> list[str]:
    """One path or a sequence of them, as strings; a bare string is one path, not its characters."""
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    if not isinstance(value, Sequence):
        raise EdgehalError(what, f"is a {type(value).__name__}", "a path or a list of paths")
    return [os.fspath(v) for v in value]


# --------------------------------------------------------------------------
# Export and quantize


def export(model: torch.nn.Module | PathLike, output: PathLike, *,
           example_inputs: np.ndarray | torch.Tensor | None = None, manifest: HeadManifest | None = None,
           aux: str = "keep", precision: str = "fp32", opset: int = 18, batch_size: int | None = None,
           fixed_sequence: bool = False, data_dir: PathLike | None = None, check_samples: int = 256,
           atol: float | None = None, preprocessing: Preprocessing | None = None, trust_pickle: bool = False,
           input_shape: Sequence[int] | None = None, exporter: str = "dynamo", log: Log = print) -> ExportReport:
    """Export a model to ONNX at ``output``, checked against PyTorch before it is written.

    ``model`` is one of:

    * an ``nn.Module``: needs ``example_inputs`` (a batch of real inputs,
      ``[N, *manifest.input_shape]``, also the check's inputs) and ``manifest``
      (see :meth:`HeadManifest.classifier`), unless it is an edgehal model with
      its own ``.manifest``; for a state dict, load it into your module first;
    * the path of an edgehal checkpoint (``edgehal train``): its manifest,
      preprocessing and data come with it, and ``data_dir`` (default
      ``$EDGEHAL_DATA``, else the training one) gives the ``check_samples``
      real inputs of the check;
    * the path of a TorchScript archive, a ``torch.export`` program, or (with
      ``trust_pickle=True``: unpickling runs code the file names) a pickled
      module, loaded by :func:`edgehal.foreign.load_module` and exported like a
      module; ``input_shape`` (C, H, W) may stand in for ``example_inputs``
      there (the check then runs on random inputs, and says so).

    ``aux`` keeps the auxiliary heads as outputs (``keep``) or prunes them and
    every node only they need (``prune``); ``precision`` is ``fp32`` or
    ``fp16``; ``batch_size=None`` gives a dynamic batch dimension; ``atol``
    defaults to 1e-3 (fp32) or 5e-2 (fp16). ``exporter`` is ``dynamo`` (torch's
    torch.export-based exporter, opset >= 18; recurrent layers become native ONNX
    ``RNN``/``LSTM``/``GRU`` nodes) or ``legacy`` (its TorchScript-based one:
    deprecated, removed in the next release). ``preprocessing`` is recorded in
    the ONNX metadata. Returns the :class:`~edgehal.export.onnx.ExportReport`
    (path, outputs, node counts, max differences from PyTorch); nothing is
    written unless every check passed.
    """
    from edgehal.export.onnx import ExportOptions

    options = ExportOptions(aux=aux, opset=opset, batch_size=batch_size, fixed_sequence=fixed_sequence,
                            precision=precision, check_samples=check_samples, atol=atol, exporter=exporter)
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise EdgehalError(f"model {path}", "file not found",
                               "an edgehal checkpoint, a TorchScript or torch.export file, or an nn.Module")
        from edgehal.foreign import identify, not_a_checkpoint

        found = identify(path)
        if found.kind == "edgehal-checkpoint":
            given = [k for k, v in (("example_inputs", example_inputs), ("manifest", manifest),
                                    ("preprocessing", preprocessing), ("input_shape", input_shape))
                     if v is not None]
            if given:
                raise EdgehalError(given[0], f"cannot be given with the edgehal checkpoint {path}",
                                   "a checkpoint brings its own heads, preprocessing and data")
            from edgehal.export.onnx import export_onnx

            return export_onnx(path, output, options=options, data_root=data_dir, log=log)
        if manifest is None:  # what the file is, and what to give for it
            raise not_a_checkpoint(found, what=f"model {path}")
        if data_dir is not None:
            raise EdgehalError("data_dir", f"cannot be given for the model file {path}",
                               "example_inputs: the model's inputs are checked, not a data set's")
        from edgehal.export.onnx import export_file

        # loaded and hashed (its sha256 is the artifact's recorded source) by export_file, which also
        # takes input_shape in place of example_inputs (random inputs, and it says so)
        return export_file(path, output, manifest=manifest, preprocessing=preprocessing,
                           example_inputs=example_inputs, input_shape=input_shape, options=options,
                           trust_pickle=trust_pickle, log=log)
    else:
        import torch

        if not isinstance(model, torch.nn.Module):
            raise EdgehalError("model", f"is a {type(model).__name__}",
                               "a torch.nn.Module or the path of a checkpoint or TorchScript file")
        what = f"model {type(model).__name__}"
    if input_shape is not None:
        raise EdgehalError("input_shape", f"cannot be given for {what}",
                           "example_inputs: a batch of real inputs for the module")
    if data_dir is not None:
        raise EdgehalError("data_dir", f"cannot be given for {what}",
                           "example_inputs: the module's inputs are checked, not a data set's")
    if example_inputs is None:
        raise EdgehalError(what, "was given no example_inputs",
                           "a batch of real inputs (numpy array or tensor), the first axis the batch")
    if manifest is None and not isinstance(getattr(model, "manifest", None), HeadManifest):
        raise EdgehalError(what, "has no head manifest",
                           "manifest=HeadManifest.classifier(class_names=..., superclasses=..., input_shape=...)")
    from edgehal.export.onnx import export_module

    return export_module(model, output, example_inputs=example_inputs, manifest=manifest, options=options,
                         preprocessing=preprocessing, log=log)


@dataclass(frozen=True)
class QuantizeReport:
    """What :func:`quantize` wrote: the INT8 file, its Q/DQ node count and size, and the calibration."""

    path: Path
    qdq_nodes: int
    bytes: int
    seconds: float
    samples: int
    method: str
    per_channel: bool
    source: str


def quantize(model: PathLike, output: PathLike, *, calib_data: PathLike, calib_samples: int = 512,
             method: str = "minmax", per_channel: bool = True, log: Log = print) -> QuantizeReport:
    """Write an INT8 copy of the FP32 ONNX ``model`` to ``output``, with explicit Q/DQ nodes.

    ``calib_data`` is a ``.npy`` array of raw inputs shaped like the model's,
    or a data directory holding the model's data set (its training split);
    ``calib_samples`` of them are drawn. ``method`` is how activation ranges
    are chosen (minmax, entropy, percentile, distribution); weights get one
    scale per channel unless ``per_channel=False``. Returns a
    :class:`QuantizeReport`.
    """
    from edgehal.export.quantize import QuantizeOptions, quantize_int8

    summary = quantize_int8(model, output, calib_data=calib_data, log=log,
                            options=QuantizeOptions(calib_samples=calib_samples, method=method,
                                                    per_channel=per_channel))
    return QuantizeReport(path=Path(summary["path"]), qdq_nodes=int(summary["qdq_nodes"]),
                          bytes=int(summary["bytes"]), seconds=float(summary["seconds"]),
                          samples=int(summary["samples"]), method=str(summary["method"]),
                          per_channel=bool(summary["per_channel"]), source=str(summary["source"]))


# --------------------------------------------------------------------------
# Parity, bench, load


def parity(reference: PathLike | RunResult, artifacts: PathLike | Sequence[PathLike] = (), *,
           split: str | None = None, data_dir: PathLike | None = None, data: PathLike | None = None,
           labels: PathLike | None = None, manifest: PathLike | None = None,
           input_size: tuple[int, int] | None = None, batch_size: int = 500,
           tolerances: Sequence[str] | ToleranceOverrides = (), head_map: Mapping[str, str] | None = None,
           precision: str | None = None, backends: Mapping[str, str] | None = None, limit: int | None = None,
           strict: bool = False, save_run: PathLike | None = None, log: Log = print) -> ParityReport:
    """Compare each of ``artifacts`` with ``reference``, head by head; the report is truthy when all passed.

    ``reference`` is one of:

    * an edgehal checkpoint (``.pt``): run here by PyTorch on ``split``
      (default test) of its data set, from ``data_dir``;
    * an ONNX file or engine, run by its runtime on ``data``: a folder of
      your images (an ImageFolder tree or split, labels from the class folder
      names) or a ``.npy`` of raw inputs with optional ``labels``; its heads
      come from its edgehal metadata, else ``manifest`` (a head manifest file),
      else ``head_map`` (the first head is the main classifier); images are
      resized as its metadata records, else to its input shape, else to
      ``input_size`` (H, W);
    * a reference run saved with ``save_run`` (its folder, or a loaded
      ``RunResult``): the artifacts run its inputs, with neither PyTorch nor
      the data set.

    ``tolerances`` are ``[HEAD:]KEY=VALUE`` overrides of the per-precision
    pass criteria; ``head_map`` names the outputs of plain ONNX files
    (``{head: output}``) and ``precision`` says what they compute in;
    ``backends`` maps an artifact to its backend; ``limit`` takes that many
    samples only; ``strict`` fails an artifact exported from another
    checkpoint. Returns the :class:`~edgehal.parity.ParityReport` (write it
    with :func:`edgehal.parity.write_reports`).
    """
    from edgehal.artifact import SUFFIXES, artifact_kind
    from edgehal.parity import RunResult, run_parity

    common: dict[str, Any] = dict(split=split, data_root=data_dir, data=data, labels=labels, manifest=manifest,
                                  input_size=input_size, batch_size=batch_size, tolerances=tolerances,
                                  head_map=head_map, precision=precision, backends=backends, limit=limit,
                                  strict=strict, save_run=save_run, log=log)
    paths = _paths(artifacts, "artifacts")
    if isinstance(reference, RunResult) or Path(reference).suffix.lower() not in SUFFIXES:
        # a saved run's folder (RunResult.load says what is wrong with any other path); run_parity
        # refuses the options that would give it a second source of samples
        return run_parity(None, paths, reference=reference, **common)
    if artifact_kind(reference) == "checkpoint":
        return run_parity(reference, paths, **common)
    return run_parity(None, paths, reference_artifact=reference, **common)


def bench(artifacts: PathLike | Sequence[PathLike], *, backends: str | Sequence[str] | None = None,
          batch_sizes: Sequence[int] = (1,), threads: int | None = None, device: str | None = None,
          warmup_runs: int = 10, warmup_seconds: float = 1.0, min_runs: int = 100, min_seconds: float = 3.0,
          windows: int = 3, stability_threshold: float = 0.10, max_windows: int = 10,
          max_preemptions_per_s: float | None = 75.0, power: bool | None = None,
          tegrastats_interval_ms: int = 100, seed: int = 0, note: str = "", progress: bool = True,
          warn: Log | None = None) -> BenchReport:
    """Time checkpoints, ONNX files and engines: latency percentiles, throughput, stability, power.

    Each artifact runs with those of ``backends`` that fit its type (default:
    its type's default backend: torch for .pt, ort-cpu for .onnx, tensorrt
    for .plan) at every batch size; the method and every option are
    :mod:`edgehal.bench`'s (``edgehal bench --help``). ``warn`` receives
    warnings as they arise (they are in the report too). Returns the
    :class:`~edgehal.bench.results.BenchReport`; ``edgehal.bench.format_table``
    and ``edgehal.bench.write_reports`` render it.
    """
    from edgehal.bench.options import BenchOptions
    from edgehal.bench.run import run_bench

    if isinstance(backends, str):
        backends = (backends,)
    options = BenchOptions(
        backends=tuple(backends) if backends is not None else None, batch_sizes=tuple(batch_sizes),
        threads=threads, device=device, warmup_runs=warmup_runs, warmup_seconds=warmup_seconds,
        min_runs=min_runs, min_seconds=min_seconds, windows=windows, stability_threshold=stability_threshold,
        max_windows=max_windows, max_preemptions_per_s=max_preemptions_per_s, power=power,
        tegrastats_interval_ms=tegrastats_interval_ms, seed=seed, note=note).validate()
    return run_bench(_paths(artifacts, "artifacts"), options, progress=progress, warn=warn)


def load(path: PathLike) -> Artifact:
    """Read a checkpoint, an ONNX file or a TensorRT engine (with its sidecar) without running it.

    Returns the :class:`~edgehal.artifact.Artifact`: its ``manifest`` (the
    heads it returns), ``full_manifest``, ``preprocessing``, ``precision``,
    ``aux``, ``metrics`` and ``source_sha256``.
    """
    from edgehal.artifact import read_artifact

    return read_artifact(path)


# --------------------------------------------------------------------------
# Serve


class Server:
    """A running Open Inference Protocol server, made by :func:`serve`.

    It listens in this process, on a background thread with its own event
    loop. ``url`` is ``http://HOST:PORT``, ``address`` the ``HOST:PORT`` that
    ``tritonclient.http.InferenceServerClient(url=...)`` takes, ``models`` the
    names served. :meth:`stop` (idempotent; also on leaving a ``with`` block,
    and at interpreter exit) finishes queued requests, frees the port and
    joins the thread.
    """

    def __init__(self, plane: DataPlane, options: ServerOptions, models: tuple[str, ...]) -> None:
        self._plane = plane
        self._options = options
        self.models = models
        self.host = options.host
        self.port = options.port
        self.grpc_port = options.grpc_port  # 0: no gRPC
        self.metrics_port = options.metrics_port  # 0: /metrics on the HTTP port only
        self._loop: Any = None
        self._stop_event: Any = None
        self._stop_requested = False  # a stop() that comes before the loop exists
        self._ready = threading.Event()  # set once serving, or once the thread has ended
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"edgehal-server-{id(self):x}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def grpc_address(self) -> str | None:
        """``HOST:PORT`` of the gRPC service, for ``tritonclient.grpc.InferenceServerClient(url=...)``;
        None when it was not asked for (``grpc_port=0``)."""
        return f"{self.host}:{self.grpc_port}" if self.grpc_port else None

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"Server({self.url}, models={list(self.models)}, {state})"

    # -- lifecycle ---------------------------------------------------------
    def _start(self) -> None:
        """Start the thread; return once every model is warmed up, or raise why it could not start."""
        self._thread.start()
        try:
            self._ready.wait()
        except BaseException:  # Ctrl-C while warming up: do not leave the thread behind
            self.stop()
            raise
        if self._error is not None:
            self._thread.join()
            raise self._error
        atexit.register(self.stop)

    def _run(self) -> None:
        import asyncio

        # The event loop `edgehal serve` runs on (uvloop when installed).
        from edgehal.serve.app import loop_factory

        try:
            with asyncio.Runner(loop_factory=loop_factory()) as runner:
                runner.run(self._serve())
        except BaseException as exc:  # handed to the caller's thread by _start
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        """Serve until :meth:`stop`, as ``edgehal serve`` does (:func:`edgehal.serve.app.serve_until`)."""
        import asyncio

        from edgehal.serve.app import serve_until

        with self._lock:
            self._loop, self._stop_event = asyncio.get_running_loop(), asyncio.Event()
            if self._stop_requested:
                self._stop_event.set()

        def listening(host: str, port: int) -> None:
            self.host, self.port = host, port

        def grpc_listening(port: int) -> None:
            self.grpc_port = port

        await serve_until(self._plane, self._options, self._stop_event, on_listening=listening,
                          on_ready=self._ready.set, on_grpc_listening=grpc_listening)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped (by :meth:`stop` from another thread or a signal
        handler); True when it has, False when ``timeout`` seconds passed first."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self) -> None:
        """Stop serving: finish the queued requests, close the port, join the thread. Idempotent."""
        with self._lock:
            self._stop_requested = True
            loop, event = self._loop, self._stop_event
        if loop is not None and self._thread.is_alive():
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop closed meanwhile: the thread is ending on its own
                pass
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join()
        atexit.unregister(self.stop)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(models: PathLike | Sequence[PathLike], *, host: str = "127.0.0.1", port: int = 0,
          max_batch_size: int = 64, dynamic_batching: bool = True, max_queue_delay_ms: float = 0.0,
          max_queue_size: int = 256, max_request_bytes: int = 64 * 1024 * 1024,
          providers: Sequence[str] | None = None, threads: int | None = None,
          shutdown_timeout: float = 30.0, grpc_port: int = 0, metrics_port: int = 0,
          max_shared_memory_regions: int = 64, max_shared_memory_bytes: int = 1 << 30) -> Server:
    """Serve ONNX models and TensorRT engines over the Open Inference Protocol (KServe v2), in this process.

    ``models`` are .onnx files, engines, folders of them or Triton model
    repositories, as for ``edgehal serve``; each is served under its name.
    ``port=0`` picks a free port (``Server.port``). ``grpc_port`` also serves
    the protocol's gRPC service (``inference.GRPCInferenceService``) on that
    port of the same host (``Server.grpc_address``); 0, the default here, serves
    HTTP only, so that a server in a test or a notebook does not take port
    8001 unasked (``edgehal serve`` listens there by default). ``metrics_port``
    also serves ``/metrics`` on that port of the same host (``Server.metrics_port``;
    it stays on the HTTP port too); 0, the default, adds none. ``max_shared_memory_regions``
    and ``max_shared_memory_bytes`` bound the system shared memory clients may register
    (regions at once, bytes they cover together; 0 regions turns the extension off). The other options are
    ``edgehal serve``'s (``--help``). The models are loaded here, so a bad
    model raises :class:`EdgehalError` in this thread and starts nothing.
    Returns a running :class:`Server` once every model is warmed up and
    ready; stop it with ``server.stop()`` or use it as a context manager.
    """
    import edgehal
    from edgehal.serve.app import EXTENSIONS, SERVER_NAME, ServerOptions
    from edgehal.serve.dataplane import DataPlane
    from edgehal.serve.repository import ModelOptions, discover
    from edgehal.serve.repository import load as load_models

    model_options = ModelOptions(
        max_batch_size=max_batch_size, dynamic_batching=dynamic_batching, max_queue_delay_ms=max_queue_delay_ms,
        max_queue_size=max_queue_size, providers=tuple(providers) if providers is not None else None,
        threads=threads)
    server_options = ServerOptions(host=host, port=port, grpc_port=grpc_port, max_request_bytes=max_request_bytes,
                                   shutdown_timeout=shutdown_timeout, metrics_port=metrics_port,
                                   max_shared_memory_regions=max_shared_memory_regions,
                                   max_shared_memory_bytes=max_shared_memory_bytes)
    loaded = load_models(discover(_paths(models, "models")), model_options)
    try:
        plane = DataPlane(loaded, server_name=SERVER_NAME, server_version=edgehal.__version__,
                          extensions=EXTENSIONS)
        for d in plane.describe():
            _serve_log.info("serving %(name)r version %(version)s: max_batch_size %(max_batch_size)d, dynamic batching "
                     "%(dynamic_batching)s, max queue delay %(max_queue_delay_ms).3g ms, queue %(max_queue_size)d",
                     d)
        server = Server(plane, server_options, tuple(dict.fromkeys(m.name for m in loaded)))
    except BaseException:
        for m in loaded:
            m.close()
        raise
    server._start()  # on failure the thread has closed the models (plane.close)
    return server
