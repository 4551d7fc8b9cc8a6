"""The ``edgehal`` command line: one thin command per verb, calling the library.

A command's docstring is its help; every option's help names its default.
An ``EdgehalError`` is printed as one line and exits 1; anything else is a bug
and keeps its traceback. Heavy libraries are imported inside the commands so
``edgehal --help`` stays fast.
"""

from __future__ import annotations

import sys

import click

from edgehal.errors import EdgehalError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgehalError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"],
                                           "max_content_width": 100})
@click.version_option(package_name="edgehal")
def main() -> None:
    """edgehal: hierarchical-auxiliary-learning models from PyTorch training to the edge."""


def _comma_ints(ctx, param, value):
    if value is None:
        return None
    try:
        return [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None


# ---- foundation: train, eval, quickstart ----------------------------------


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set epochs=1 --set model.widths=[8,16]. Default: none.")
@click.option("--data-dir", default=None, help="Data directory. Default: data.root of the config, else $EDGEHAL_DATA.")
@click.option("--output-dir", default=None, help="Where the checkpoint goes. Default: output_dir of the config, "
              "else runs/<name>.")
@click.option("--resume", default=None, type=click.Path(dir_okay=False),
              help="Continue from this checkpoint's epoch. Default: start fresh.")
def train(config, overrides, data_dir, output_dir, resume):
    """Train a model from a YAML CONFIG (see models/configs/); writes <run_dir>/checkpoint.pt."""
    from edgehal.config import load_config
    from edgehal.train import train as run_training

    extra = list(overrides)
    if data_dir:
        extra.append(f"data.root={data_dir}")
    if output_dir:
        extra.append(f"output_dir={output_dir}")
    cfg = load_config(config, extra)
    run_training(cfg, resume=resume, log=click.echo)


@main.command("eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True,
              help="Which split to evaluate.")
@click.option("--data-dir", default=None, help="Data directory. Default: $EDGEHAL_DATA, else the training one "
              "(for an image_folder checkpoint: the tree it was trained on).")
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False),
              help="Also write the metrics as JSON here. Default: none.")
@click.option("--confusion", default=None, type=click.Path(dir_okay=False),
              help="Write a confusion-matrix PNG of the main head here. Default: none.")
@click.option("--batch-size", default=1000, show_default=True, help="Evaluation batch size.")
def evaluate(checkpoint, split, data_dir, json_out, confusion, batch_size):
    """Error rate of every head (main and each superclass head) on the full SPLIT."""
    from edgehal.evaluate import evaluate_checkpoint

    evaluate_checkpoint(checkpoint, split=split, data_root=data_dir, json_out=json_out,
                        confusion=confusion, batch_size=batch_size, log=click.echo)


@main.command()
@click.option("--data-dir", default=None, help="Train on MNIST from this directory instead of the embedded "
              "8x8 digits. Default: embedded digits (no files needed).")
@click.option("--output-dir", default="quickstart", show_default=True, help="Where everything is written.")
@click.option("--epochs", default=None, type=int, help="Training epochs. Default: 30 on digits, 1 on MNIST.")
@click.option("--zoo", default=None, metavar="NAME",
              help="Skip training: use the shipped models/zoo/NAME/checkpoint.pt (mnist_hal_case1, mnist_baseline; "
                   "MNIST from --data-dir or $EDGEHAL_DATA). Default: train.")
def quickstart(data_dir, output_dir, epochs, zoo):
    """Train a small HAL model (or take a zoo one), evaluate it, export it kept and pruned, and prove parity."""
    from edgehal.quickstart import run_quickstart

    ok = run_quickstart(data_root=data_dir, output_dir=output_dir, epochs=epochs, zoo=zoo, log=click.echo)
    if not ok:
        sys.exit(1)

# ---- export, quantize, parity ---------------------------------------------


@main.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The ONNX file to write.")
@click.option("--aux", type=click.Choice(["keep", "prune"]), default="keep", show_default=True,
              help="Keep the auxiliary heads as outputs, or prune them and every node only they need.")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="Weights and activations (inputs and outputs stay FP32).")
@click.option("--opset", default=18, show_default=True,
              help="ONNX opset (18 is parsed by onnxruntime and TensorRT 10; the dynamo exporter needs >= 18).")
@click.option("--exporter", type=click.Choice(["dynamo", "legacy"]), default="dynamo", show_default=True,
              help="torch's ONNX exporter: dynamo (torch.export-based) or legacy (TorchScript-based; deprecated, "
                   "removed in the next release).")
@click.option("--batch-size", default=None, type=int, help="Fixed batch size. Default: dynamic batch dimension.")
@click.option("--fixed-sequence", is_flag=True, default=False,
              help="Recurrent models: fix the sequence length at the trained one. Default: a dynamic sequence "
                   "dimension (the rows of a row-sequential classifier).")
@click.option("--data-dir", default=None, help="Data for the check on real inputs. Default: $EDGEHAL_DATA, "
              "else the training one (for an image_folder checkpoint: the tree it was trained on).")
@click.option("--check-samples", default=256, show_default=True,
              help="Inputs compared against PyTorch (real ones; random ones with --input-shape).")
@click.option("--atol", default=None, type=float, help="Max |onnxruntime - PyTorch|. Default: 1e-3 fp32, 5e-2 fp16.")
@click.option("--manifest", "manifest_file", default=None, type=click.Path(dir_okay=False),
              help="A model file edgehal did not write: its heads, as YAML or JSON (a HeadManifest, or "
                   "{input_shape: [...], heads: [...]}; optional preprocessing). Default: none (an edgehal "
                   "checkpoint carries its own).")
@click.option("--example-inputs", default=None, type=click.Path(dir_okay=False),
              help="With --manifest: a .npy array [N, *input_shape] of real inputs for the check. Default: none.")
@click.option("--input-shape", default=None, callback=_comma_ints, metavar="C,H,W",
              help="With --manifest, instead of --example-inputs: check on random inputs of this shape. "
                   "Default: none.")
@click.option("--trust-pickle", is_flag=True, default=False,
              help="Load a whole pickled nn.Module (torch.save(model)). Unpickling runs code the file names: only "
                   "for your own files. Default: refused.")
def export_cmd(checkpoint, output, aux, precision, opset, exporter, batch_size, fixed_sequence, data_dir,
               check_samples, atol, manifest_file, example_inputs, input_shape, trust_pickle):
    """Export CHECKPOINT to ONNX with its auxiliary heads kept or pruned, checked before it is written.

    \b
    CHECKPOINT is an edgehal checkpoint, or with --manifest a TorchScript
    archive (torch.jit.save), a torch.export program (.pt2), or with
    --trust-pickle a whole pickled module. A bare state dict holds no
    architecture: export it from Python with edgehal.export(model=...).
    """
    from pathlib import Path

    from edgehal import api
    from edgehal.export.onnx import read_example_inputs
    from edgehal.foreign import read_head_manifest

    if manifest_file is None:
        for flag, value in (("--example-inputs", example_inputs), ("--input-shape", input_shape),
                            ("--trust-pickle", trust_pickle)):
            if value:
                raise EdgehalError(flag, "needs --manifest", "--manifest heads.yaml naming the heads of a model "
                                   "file edgehal did not write; an edgehal checkpoint needs neither")
        manifest = preprocessing = x = None
    else:
        if data_dir is not None:
            raise EdgehalError("--data-dir", "cannot be combined with --manifest",
                               "--example-inputs x.npy: the check's inputs for a model file edgehal did not write")
        manifest, preprocessing = read_head_manifest(manifest_file, input_shape=input_shape,
                                                     model=Path(checkpoint).stem)
        x = read_example_inputs(example_inputs) if example_inputs is not None else None
    api.export(checkpoint, output, example_inputs=x, manifest=manifest, preprocessing=preprocessing,
               input_shape=input_shape if manifest_file is not None else None, aux=aux, precision=precision,
               opset=opset, batch_size=batch_size, fixed_sequence=fixed_sequence, data_dir=data_dir,
               check_samples=check_samples, atol=atol, trust_pickle=trust_pickle, exporter=exporter, log=click.echo)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The INT8 ONNX file to write.")
@click.option("--calib-data", required=True, help="A data directory (the model's data set, training split) "
              "or a .npy array of raw inputs.")
@click.option("--calib-samples", default=512, show_default=True, help="Calibration inputs drawn from it.")
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile", "distribution"]),
              default="minmax", show_default=True, help="How activation ranges are chosen.")
@click.option("--per-channel/--per-tensor", default=True, show_default=True, help="Weight scales per channel.")
def quantize(model, output, calib_data, calib_samples, calib_method, per_channel):
    """INT8 with explicit quantize/dequantize nodes from an FP32 MODEL (what TensorRT consumes too)."""
    from edgehal import api

    api.quantize(model, output, calib_data=calib_data, calib_samples=calib_samples, method=calib_method,
                 per_channel=per_channel, log=click.echo)


@main.command()
@click.argument("paths", nargs=-1, metavar="[CHECKPOINT|REFERENCE] [ARTIFACT]...", type=click.Path(dir_okay=False))
@click.option("--reference", default=None, type=click.Path(file_okay=False),
              help="A reference run saved with --save-run, instead of CHECKPOINT: every ARTIFACT runs its saved "
                   "inputs; needs neither PyTorch nor the data set. Default: run CHECKPOINT here.")
@click.option("--save-run", default=None, type=click.Path(file_okay=False),
              help="Save the PyTorch reference run (outputs, inputs, labels) to this folder, for --reference on "
                   "another machine; with no ARTIFACT it only saves. Default: not saved.")
@click.option("--strict", is_flag=True, default=False,
              help="Fail an artifact exported from another checkpoint than the reference (sha256 of the source). "
                   "Default: a warning.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default=None,
              help="Evaluated in full by PyTorch and every artifact. Default: test (with --reference: the saved "
                   "run's; with --data, a split of its tree).")
@click.option("--data-dir", default=None, help="Data directory. Default: $EDGEHAL_DATA, else the training one "
              "(for an image_folder checkpoint: the tree it was trained on).")
@click.option("--data", default=None, type=click.Path(),
              help="Samples for an ONNX or engine REFERENCE: an ImageFolder tree or split (labels from class "
                   "folder names), or a .npy of raw inputs. Default: none (a CHECKPOINT uses its own data set).")
@click.option("--labels", default=None, type=click.Path(dir_okay=False),
              help="With --data inputs.npy: a .npy of class indices, one per input. Default: none (heads compared by "
                   "agreement and values).")
@click.option("--manifest", "manifest_file", default=None, type=click.Path(dir_okay=False),
              help="A head manifest (YAML or JSON) for a REFERENCE without edgehal metadata. Default: the first "
                   "--head is the main head, the others compared by values only.")
@click.option("--input-size", default=None, metavar="H,W",
              help="Image size for a REFERENCE whose input height and width are dynamic. Default: the size its "
                   "metadata records, else its input shape.")
@click.option("--tolerance", "tolerances", multiple=True, metavar="[HEAD:]KEY=VALUE",
              help="Override a pass criterion (max_error_diff, min_agreement, max_abs_diff, mcnemar_alpha), "
                   "for all heads or one. Default: per precision, see README.")
@click.option("--head", "heads", multiple=True, metavar="HEAD=OUTPUT",
              help="For a plain ONNX file or engine without edgehal metadata: which output is which head (for a "
                   "plain REFERENCE the first is the main head). Default: none.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
              help="Precision of a plain ONNX file. Default: from the artifact's metadata, else fp32.")
@click.option("--report-dir", default="parity-report", show_default=True, help="Markdown and JSON reports.")
@click.option("--batch-size", default=500, show_default=True, help="Inference batch size.")
def parity(paths, reference, save_run, strict, split, data_dir, data, labels, manifest_file, input_size, tolerances,
           heads, precision, report_dir, batch_size):
    """Prove ARTIFACTS make the same mistakes as CHECKPOINT did, per head. Exit 1 on failure.

    \b
    edgehal parity CHECKPOINT ARTIFACT...             PyTorch here, then every artifact
    edgehal parity CHECKPOINT --save-run DIR          only run PyTorch and save the reference
    edgehal parity --reference DIR ARTIFACT...        compare with a saved reference (a target
                                                      with only onnxruntime or TensorRT)
    edgehal parity REFERENCE ARTIFACT... --data DIR   an ONNX file or engine as the reference, on
                                                      your images (or --data inputs.npy)

    An artifact exported from another checkpoint than the reference is
    reported (its recorded source sha256 differs), and fails with --strict.
    """
    from edgehal import api
    from edgehal.artifact import artifact_kind
    from edgehal.parity import write_reports

    usage = ("CHECKPOINT ARTIFACT..., CHECKPOINT --save-run DIR, --reference DIR ARTIFACT..., or REFERENCE "
             "ARTIFACT... --data FOLDER")
    reference_artifact = None
    if reference is not None:
        if save_run is not None:
            raise EdgehalError("--save-run", "cannot be combined with --reference",
                               "save the reference where it runs: edgehal parity CHECKPOINT --save-run DIR")
        if data_dir is not None:
            raise EdgehalError("--data-dir", "cannot be combined with --reference",
                               "the saved run carries its inputs and labels")
        if data is not None:
            raise EdgehalError("--data", "cannot be combined with --reference",
                               "the saved run carries its inputs and labels")
        checkpoint, artifacts = None, list(paths)
        if not artifacts:
            raise EdgehalError("parity --reference", "was given no ARTIFACT", usage)
    else:
        if not paths:
            raise EdgehalError("parity", "was given no CHECKPOINT or REFERENCE", usage)
        checkpoint, artifacts = paths[0], list(paths[1:])
        if artifact_kind(checkpoint) != "checkpoint":
            checkpoint, reference_artifact = None, checkpoint
        elif data is not None:
            raise EdgehalError("--data", "is for an ONNX file or engine as the reference, not a checkpoint",
                               "a CHECKPOINT runs on the data set it was trained on (--split, --data-dir); to "
                               "check it on your own images, export it and give the ONNX file as REFERENCE")
        if not artifacts and save_run is None:
            raise EdgehalError("parity", "was given no ARTIFACT to compare", usage)
    head_map = {}
    for item in heads:
        if "=" not in item:
            raise EdgehalError(f"--head {item!r}", "has no '='", "HEAD=OUTPUT, e.g. logits=output0")
        k, v = item.split("=", 1)
        head_map[k] = v
    size = None
    if input_size is not None:
        parts = input_size.split(",")
        if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
            raise EdgehalError(f"--input-size {input_size!r}", "is not two positive integers", "H,W, e.g. 224,224")
        size = (int(parts[0]), int(parts[1]))
    report = api.parity(reference or reference_artifact or checkpoint, artifacts, data=data, labels=labels,
                        manifest=manifest_file, input_size=size, save_run=save_run, strict=strict, split=split,
                        data_dir=data_dir, batch_size=batch_size, tolerances=tolerances,
                        head_map=head_map or None, precision=precision, log=click.echo)
    if not artifacts:
        click.echo(f"saved: compare on a target with edgehal parity --reference {save_run} ARTIFACT...")
        return
    md, js = write_reports(report, report_dir)
    click.echo(f"{'PASS' if report else 'FAIL'}: reports {md} and {js}")
    if not report:
        sys.exit(1)

# ---- serve -----------------------------------------------------------------

@main.command("serve")
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=True))
@click.option("--host", default="127.0.0.1",
              help="Address to bind. Default: 127.0.0.1 (this machine only).")
@click.option("--port", default=8000, type=click.IntRange(0, 65535),
              help="Port to listen on; 0 picks a free one (logged). Default: 8000.")
@click.option("--grpc-port", default=None, type=click.IntRange(0, 65535),
              help="Port of the gRPC service (inference.GRPCInferenceService, as Triton's) on the same "
                   "host and models; 0 serves HTTP only. Needs the serve extra (tritonclient[grpc]). "
                   "Default: 8001 when the serve extra is installed, else HTTP only (with a note).")
@click.option("--metrics-port", default=0, type=click.IntRange(0, 65535),
              help="Also serve /metrics (Prometheus) on this port of the same host, as Triton's metrics "
                   "port (8002 there), for a scraper kept off the inference routes; /metrics stays on "
                   "--port too. Default: 0 (only on --port).")
@click.option("--max-batch-size", default=64, type=click.IntRange(min=0),
              help="Largest batch per model run, and per request; 0 disables the batch "
                   "dimension. A Triton config.pbtxt overrides it; a TensorRT engine's profile caps it. "
                   "Default: 64.")
@click.option("--max-queue-delay-ms", default=0.0, type=click.FloatRange(min=0),
              help="How long the batcher may hold a request waiting for more to fill a batch; "
                   "0 batches only what is already waiting. Default: 0.")
@click.option("--max-queue-size", default=256, type=click.IntRange(min=1),
              help="Requests that may wait per model; beyond it the server answers 503 at once. "
                   "Default: 256.")
@click.option("--dynamic-batching/--no-dynamic-batching", default=True,
              help="Gather concurrent requests into one model run. Default: on.")
@click.option("--max-request-bytes", default=64 * 1024 * 1024, type=click.IntRange(min=1024),
              help="Largest request body accepted; larger ones get 413. Default: 67108864 (64 MiB).")
@click.option("--max-shared-memory-regions", default=64, type=click.IntRange(min=0),
              help="System shared memory regions clients may register at once (Triton's extension); "
                   "0 turns it off. Default: 64.")
@click.option("--max-shared-memory-bytes", default=1 << 30, type=click.IntRange(min=0),
              help="Bytes the registered regions may cover together. Default: 1073741824 (1 GiB).")
@click.option("--providers", default=None,
              help="Comma-separated onnxruntime execution providers (cpu, cuda, tensorrt) for ONNX "
                   "models. Default: the best available (TensorRT, CUDA, CPU).")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="onnxruntime intra-op threads per model. Default: one less than the cores this "
                   "process may use (at least 1), leaving one to the HTTP event loop.")
@click.option("--log-level", default="info",
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              help="Log level; debug logs one line per request. Default: info.")
def serve_cmd(models, host, port, grpc_port, metrics_port, max_batch_size, max_queue_delay_ms, max_queue_size,
              dynamic_batching, max_request_bytes, max_shared_memory_regions, max_shared_memory_bytes, providers,
              threads, log_level):
    """Serve ONNX models and TensorRT engines over the Open Inference Protocol (KServe v2) with dynamic batching.

    MODELS are .onnx files, TensorRT engines (.plan/.engine with their
    build-engine sidecar), folders of them, or Triton model repositories as
    `edgehal export-triton` writes them (<repo>/<model>/config.pbtxt +
    <repo>/<model>/1/model.onnx or model.plan). Each is served under its name,
    version 1 (or the repository's versions). Stops gracefully on SIGTERM or
    Ctrl-C, finishing queued requests.
    """
    import logging
    import signal
    import threading

    from edgehal import api

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # SIGTERM/SIGINT stop the server gracefully; one that comes while the models load or warm up
    # stops it as soon as it is ready.
    stop_requested = threading.Event()
    running: list[api.Server] = []

    def on_signal(signum, frame):
        stop_requested.set()
        for server in running:
            server.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if grpc_port is None:
            grpc_port = _default_grpc_port()
        server = api.serve(list(models), host=host, port=port, grpc_port=grpc_port, metrics_port=metrics_port,
                           max_batch_size=max_batch_size, dynamic_batching=dynamic_batching,
                           max_queue_delay_ms=max_queue_delay_ms,
                           max_queue_size=max_queue_size, max_request_bytes=max_request_bytes,
                           max_shared_memory_regions=max_shared_memory_regions,
                           max_shared_memory_bytes=max_shared_memory_bytes,
                           providers=[p.strip() for p in providers.split(",") if p.strip()] if providers else None,
                           threads=threads)
        running.append(server)
        if not stop_requested.is_set():
            server.wait()
        server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ---- bench, doctor ---------------------------------------------------------

from edgehal.runtime.loader import BACKENDS as _BENCH_BACKENDS  # noqa: E402 - light module, no heavy imports


def _default_grpc_port() -> int:
    """8001 (Triton's gRPC port) when the serve extra's generated gRPC modules are installed, else 0 (HTTP only)."""
    import importlib.util

    if importlib.util.find_spec("tritonclient") and importlib.util.find_spec("tritonclient.grpc"):
        return 8001
    click.echo("note: gRPC is off: the serve extra is not installed (pip install 'edgehal[serve]'); "
               "serving HTTP only", err=True)
    return 0


def _backend_list(ctx, param, value):
    names = [v.strip() for item in value or () for v in item.split(",") if v.strip()]
    for n in names:
        if n not in _BENCH_BACKENDS:
            raise click.BadParameter(f"{n!r} is not a backend. Choose from: {', '.join(_BENCH_BACKENDS)}")
    return tuple(dict.fromkeys(names)) or None


@main.command()
@click.argument("artifacts", nargs=-1, required=True, metavar="ARTIFACT...")
@click.option("--backend", "backends", multiple=True, callback=_backend_list, metavar="NAME[,NAME]",
              help="Backends to time, repeatable or comma-separated: " + ", ".join(_BENCH_BACKENDS)
              + ". Each artifact runs with those that fit its type. Default: the file type's default "
              "(torch for .pt, ort-cpu for .onnx, tensorrt for .plan).")
@click.option("--batch-sizes", default="1", callback=_comma_ints, metavar="N[,N]",
              help="Comma-separated batch sizes, e.g. 1,8,64. Default: 1.")
@click.option("--threads", type=int, default=None,
              help="Intra-op threads for the backend. Default: the backend's own choice.")
@click.option("--device", default=None,
              help="Device for the torch backends (cpu, cuda, cuda:1). Default: CUDA when present, else CPU.")
@click.option("--warmup-runs", type=int, default=10, help="Warm-up calls, at least. Default: 10.")
@click.option("--warmup-seconds", type=float, default=1.0, help="Warm-up time, at least. Default: 1.0.")
@click.option("--min-runs", type=int, default=100, help="Timed calls, at least. Default: 100.")
@click.option("--min-seconds", type=float, default=3.0, help="Timed seconds, at least. Default: 3.0.")
@click.option("--windows", type=int, default=3,
              help="Windows compared for stability (the timed runs are split among them). Default: 3.")
@click.option("--stability-threshold", type=float, default=0.10,
              help="Largest allowed disagreement between windows (max/min - 1) of median latency and "
                   "throughput; beyond it the result is flagged unstable. Default: 0.10.")
@click.option("--max-windows", type=int, default=10,
              help="Windows to try before giving up on stability. Default: 10.")
@click.option("--max-preemptions", type=float, default=75.0,
              help="Involuntary context switches per second above which other work is competing for the "
                   "cores and the result is flagged unstable; 0 turns the check off. Default: 75.")
@click.option("--power/--no-power", default=None,
              help="Sample power with tegrastats during the timed runs. Default: on when a Jetson with "
                   "tegrastats is detected.")
@click.option("--tegrastats-interval", type=int, default=100,
              help="tegrastats sampling interval in milliseconds. Default: 100.")
@click.option("--note", default="", help="Free text saved with the results and shown on the plots. Default: none.")
@click.option("-o", "--output-dir", type=click.Path(file_okay=False), default="bench-results", show_default=False,
              help="Where bench.json, bench.csv, latency.png and throughput.png go. Default: bench-results.")
def bench(artifacts, backends, batch_sizes, threads, device, warmup_runs, warmup_seconds, min_runs,
          min_seconds, windows, stability_threshold, max_windows, max_preemptions, power, tegrastats_interval, note,
          output_dir):
    """Time checkpoints, ONNX files and engines: latency percentiles, throughput, stability, power.

    Warms up by count and time, then times windows until both --min-runs and
    --min-seconds are reached and the last --windows windows agree within
    --stability-threshold; a result whose windows never agree, or that was
    measured while other work competed for the cores, is flagged unstable.
    Kept and pruned ONNX exports of one checkpoint are compared side by side.
    """
    from edgehal import api
    from edgehal.bench import format_table, write_reports

    report = api.bench(
        list(artifacts), backends=backends, batch_sizes=tuple(batch_sizes or ()), threads=threads, device=device,
        warmup_runs=warmup_runs, warmup_seconds=warmup_seconds, min_runs=min_runs, min_seconds=min_seconds,
        windows=windows, stability_threshold=stability_threshold, max_windows=max_windows,
        max_preemptions_per_s=max_preemptions or None, power=power,
        tegrastats_interval_ms=tegrastats_interval, note=note,
        warn=lambda m: click.echo(f"warning: {m}", err=True))
    click.echo(format_table(report))
    paths = write_reports(report, output_dir)
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON. Default: a text table.")
def doctor(as_json):
    """What this machine can run: Python, torch and CUDA, onnxruntime providers, TensorRT, GPU, Jetson."""
    import json

    from edgehal.doctor import diagnose

    report = diagnose()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        click.echo("\n".join(report.lines()))

# ---- tensorrt: build-engine, inspect, export-triton ------------------------

@main.command("build-engine")
@click.argument("model", type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="Engine file to write (MODEL.plan); its provenance goes to OUTPUT.json. Required.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=False,
              help="Engine precision. Engines are strongly typed: fp16 builds from an FP16 ONNX (an FP32 "
                   "one is converted first, kept as OUTPUT-stem.fp16.onnx); int8 needs an ONNX with "
                   "QuantizeLinear/DequantizeLinear nodes (`edgehal quantize`). Defaults to fp32.")
@click.option("--min-batch", type=click.IntRange(min=1), default=None,
              help="Smallest batch of the optimisation profile. Defaults to 1 (or the ONNX's fixed batch).")
@click.option("--opt-batch", type=click.IntRange(min=1), default=None,
              help="Batch TensorRT tunes for. Defaults to --max-batch.")
@click.option("--max-batch", type=click.IntRange(min=1), default=None,
              help="Largest batch of the optimisation profile. Defaults to 32 (or the ONNX's fixed batch).")
@click.option("--dim", "dims", multiple=True, metavar="NAME=MIN,OPT,MAX",
              help="Profile range of another dynamic dimension, by its name in the ONNX file (rows) or as "
                   "INPUT:AXIS; repeatable. Defaults to 1..trained length (opt: trained) for a recurrent "
                   "model's sequence dimension.")
@click.option("--workspace", type=click.IntRange(min=1), default=None, metavar="MIB",
              help="Workspace memory pool limit in MiB. Defaults to TensorRT's limit (the GPU's memory).")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Timing cache file, read if present and updated after the build. Defaults to none.")
@click.option("--dla-core", type=click.IntRange(min=0), default=None,
              help="Run layers on this DLA core of a Jetson, the rest on the GPU (needs fp16 or int8, and "
                   "TensorRT 10: DLA builds are weakly typed). Defaults to none (GPU only).")
@click.option("--version-compatible", is_flag=True, default=False,
              help="Build an engine that later releases of the same TensorRT major can load. Defaults to off.")
@click.option("--hardware-compatible", is_flag=True, default=False,
              help="Build an engine for any Ampere-or-newer GPU (not Jetson, not DLA). Defaults to off.")
@click.option("--device", type=click.IntRange(min=0), default=0, show_default=False,
              help="CUDA device index to build on. Defaults to 0.")
@click.option("--dry-run", is_flag=True, default=False,
              help="Check the request against the ONNX file and print the build plan as JSON, "
                   "without TensorRT. Defaults to off.")
def build_engine_cmd(model, output, precision, min_batch, opt_batch, max_batch, dims, workspace, timing_cache,
                     dla_core, version_compatible, hardware_compatible, device, dry_run):
    """Compile an ONNX model into a TensorRT engine, with a provenance sidecar beside it.

    Every option is checked against the ONNX file before TensorRT is touched.
    Build on the machine that will run the engine: engines are specific to the
    TensorRT version and GPU.
    """
    import json
    from pathlib import Path

    from edgehal.export.tensorrt.plan import EngineOptions, parse_dim_range, plan_build

    ranges: dict[str, tuple[int, int, int]] = {}
    for text in dims:
        name, rng = parse_dim_range(text)
        if name in ranges:
            raise EdgehalError(f"--dim {name}", "is given twice", "one range per dimension")
        ranges[name] = rng
    options = EngineOptions(precision=precision, min_batch=min_batch, opt_batch=opt_batch,
                            max_batch=max_batch, dims=ranges, workspace_mib=workspace,
                            timing_cache=Path(timing_cache) if timing_cache else None,
                            dla_core=dla_core, version_compatible=version_compatible,
                            hardware_compatible=hardware_compatible)
    plan = plan_build(model, options)
    if dry_run:
        click.echo(json.dumps(plan.to_dict(), indent=2))
        return
    from edgehal.export.tensorrt.build import build_from_plan

    result = build_from_plan(plan, output, device_index=device)
    prov = result.provenance
    batch = prov.batch_range
    span = f"batch {batch[0]}..{batch[1]}, " if batch else ""
    click.echo(f"wrote {result.engine} ({result.engine.stat().st_size / 2**20:.1f} MiB) and "
               f"{result.sidecar.name}: {prov.precision}, {span}built with {prov.built_on.describe()}")
    if result.fp16_onnx is not None:
        click.echo(f"built from {result.fp16_onnx.name}, {Path(model).name} converted to FP16 (kept beside the "
                   "engine and recorded in its sidecar)")


@main.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False, path_type=str))
@click.option("--target", type=click.Choice(["tensorrt"]), default="tensorrt", show_default=False,
              help="Runtime to check the model against. Defaults to tensorrt.")
def inspect_cmd(model, target):
    """List what in an ONNX model the target cannot run; exit 1 if it will not build.

    For TensorRT: operators and data types its ONNX parser does not support
    (from its published operator table), INT64 tensors that will be cast, and
    dynamic dimensions without a profile. Needs no TensorRT and no GPU.
    """
    from edgehal.export.inspect import inspect_tensorrt

    report = inspect_tensorrt(model)
    for line in report.lines():
        click.echo(line)
    if not report.ok:
        sys.exit(1)


@main.command("export-triton")
@click.argument("model", type=click.Path(dir_okay=False, path_type=str))
@click.option("--repository", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Triton model repository to write <name>/config.pbtxt and <name>/1/ into. Required.")
@click.option("--name", default=None, help="Model name in the repository. Defaults to MODEL's file stem.")
@click.option("--max-batch-size", type=click.IntRange(min=0), default=None,
              help="Triton's max_batch_size (0: no batching). Defaults to the engine profile's largest batch "
                   "for a .plan, 8 for an ONNX with a dynamic batch, 0 for a fixed batch.")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=False,
              help="Model instances per device (instance_group count). Defaults to 1.")
@click.option("--kind", type=click.Choice(["KIND_GPU", "KIND_CPU"]), default="KIND_GPU", show_default=False,
              help="Where the instances run. Defaults to KIND_GPU.")
@click.option("--tensorrt-accelerator", is_flag=True, default=False,
              help="Let onnxruntime run the ONNX model through TensorRT (ONNX on GPU only). Defaults to off.")
@click.option("--max-queue-delay-us", type=click.IntRange(min=0), default=100, show_default=False,
              help="Dynamic batching's max_queue_delay_microseconds. Defaults to 100.")
def export_triton_cmd(model, repository, name, max_batch_size, instances, kind, tensorrt_accelerator,
                      max_queue_delay_us):
    """Write an ONNX model or TensorRT engine into a Triton model repository.

    The layout is <repository>/<name>/config.pbtxt plus 1/model.onnx (platform
    onnxruntime_onnx) or 1/model.plan (platform tensorrt_plan); `edgehal serve`
    serves the same layout. Inputs and outputs come from the head manifest.
    """
    from edgehal.export.triton import TritonOptions, export_triton

    options = TritonOptions(name=name, max_batch_size=max_batch_size, instances=instances, kind=kind,
                            tensorrt_accelerator=tensorrt_accelerator, max_queue_delay_us=max_queue_delay_us)
    result = export_triton(model, repository=repository, options=options)
    click.echo(f"wrote {result.config} and {result.model_file} ({result.platform}, "
               f"max_batch_size {result.max_batch_size}, outputs {', '.join(t.name for t in result.outputs)})")



if __name__ == "__main__":  # pragma: no cover
    main()
