"""INT8 with explicit QuantizeLinear/DequantizeLinear nodes (onnxruntime static quantization).

Calibrated once, here on the CPU, on real training images; the QDQ form is also
what TensorRT consumes for INT8 (explicit quantization), so an engine needs no
calibrator of its own. Weights are per-channel; activations and weights are
symmetric INT8 because TensorRT requires zero points of 0.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from edgehal.artifact import read_artifact, write_onnx_metadata
from edgehal.errors import EdgehalError
from edgehal.export.graph import QDQ_OPS, iter_nodes, run_onnx
from edgehal.fileio import atomic_write_bytes

CALIBRATION_METHODS = ("minmax", "entropy", "percentile", "distribution")


@dataclass(frozen=True)
class QuantizeOptions:
    calib_samples: int = 512
    method: str = "minmax"
    per_channel: bool = True
    batch_size: int = 64
    seed: int = 0

    def validate(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise EdgehalError("--calib-method", f"{self.method!r} is unknown", f"one of {CALIBRATION_METHODS}")
        if self.calib_samples < 1:
            raise EdgehalError("--calib-samples", f"is {self.calib_samples}", "at least 1")
        if self.batch_size < 1:
            raise EdgehalError("--calib-batch-size", f"is {self.batch_size}", "at least 1")


def calibration_inputs(model_path: Path, calib_data: str | Path, *, samples: int, seed: int) -> np.ndarray:
    """Real training inputs: a ``.npy`` array, or the model's data set from a data directory.

    The data set name and input shape come from the ONNX file's edgehal metadata.
    """
    meta = read_artifact(model_path).require_metadata()
    shape = tuple(meta.manifest.input_shape)
    src = Path(calib_data)
    if src.suffix == ".npy":
        if not src.is_file():
            raise EdgehalError(f"calibration data {src}", "file not found")
        x = np.load(src, allow_pickle=False)
        if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
            raise EdgehalError(f"calibration data {src}", f"has shape {tuple(x.shape)}",
                               f"(N, {', '.join(map(str, shape))}) like the model input")
        x = x.astype(np.float32)
    else:
        from edgehal.data import build_dataset

        dataset = meta.preprocessing.dataset if meta.preprocessing else None
        if not dataset:
            raise EdgehalError(f"ONNX model {model_path}", "does not record its data set",
                               "pass --calib-data as a .npy array of inputs")
        transform = meta.preprocessing.details.get("image_transform")
        if transform is not None:
            x = _image_folder_inputs(src, transform)
        else:
            x = build_dataset(dataset, root=src).train.x.float().numpy()
        if tuple(x.shape[1:]) != shape:
            raise EdgehalError(f"calibration data {src}", f"gives inputs of shape {tuple(x.shape[1:])}",
                               f"{shape} like the model input")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(x), size=min(samples, len(x)), replace=False))
    return np.ascontiguousarray(x[idx])


def _image_folder_inputs(src: Path, transform: dict) -> np.ndarray:
    """A user's images (a tree's ``train/``, or a folder of class sub-folders), transformed as at training."""
    from edgehal.data.image_folder import ImageTransform, read_image_folder

    folder = src / "train" if (src / "train").is_dir() else src
    if not folder.is_dir():
        raise EdgehalError(f"calibration data {src}", "is not a folder",
                           "the model's image tree (its train/ split is read), or a .npy array of inputs")
    spec = ImageTransform.from_dict(transform, what=f"calibration data {src}: recorded image transform")
    return read_image_folder(folder, transform=spec).x.float().numpy()


def quantize_int8(model_path: str | Path, output: str | Path, *, calib_data: str | Path,
                  options: QuantizeOptions | None = None, log: Callable[[str], None] = print) -> dict:
    """Write a QDQ INT8 copy of ``model_path`` to ``output``; returns a summary.

    ``options`` defaults to ``QuantizeOptions()`` (512 samples, minmax, per-channel).
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from tqdm.auto import tqdm

    opts = options or QuantizeOptions()
    opts.validate()
    src = Path(model_path)
    meta = read_artifact(src).require_metadata()
    if meta.precision != "fp32":
        raise EdgehalError(f"ONNX model {src}", f"is {meta.precision}", "an FP32 model from `edgehal export`")
    t0 = time.perf_counter()
    x = calibration_inputs(src, calib_data, samples=opts.calib_samples, seed=opts.seed)
    input_name = meta.manifest.input_name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.starts = iter(range(0, len(x), opts.batch_size))
            self.bar = tqdm(total=len(x), desc="calibrating", unit="img", leave=False)

        def get_next(self):
            start = next(self.starts, None)
            if start is None:
                self.bar.close()
                return None
            batch = x[start:start + opts.batch_size]
            self.bar.update(len(batch))
            return {input_name: batch}

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile, "distribution": CalibrationMethod.Distribution}[opts.method]
    with tempfile.TemporaryDirectory(prefix="edgehal-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        q = Path(tmp) / "int8.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(q), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        per_channel=opts.per_channel, calibrate_method=method,
                        # TensorRT's parser refuses INT32 inputs to DequantizeLinear: keep biases FP32
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                       "QuantizeBias": False})
        model = onnx.load(str(q))
    calibration = {"samples": len(x), "method": opts.method, "per_channel": opts.per_channel,
                   "source": str(calib_data), "symmetric": True}
    # The quantizer drops the source's properties: carry them over, with edgehal's at the new precision.
    write_onnx_metadata(model, replace(meta, precision="int8", calibration=calibration),
                        foreign_from=onnx.load(str(src), load_external_data=False))
    onnx.checker.check_model(model, full_check=True)
    qdq = sum(n.op_type in QDQ_OPS for n in iter_nodes(model.graph))
    if not qdq:
        raise EdgehalError(f"quantized model {output}", "has no QuantizeLinear/DequantizeLinear nodes")
    data = model.SerializeToString()
    run_onnx(data, {input_name: x[:2]})  # loads and runs in onnxruntime before it is written
    atomic_write_bytes(output, data)
    summary = {"path": str(output), "qdq_nodes": qdq, "bytes": len(data), "seconds": time.perf_counter() - t0,
               **calibration}
    log(f"wrote {output} ({len(data) / 1024:.0f} KiB, {qdq} Q/DQ nodes; calibrated on {len(x)} training "
        f"inputs, {opts.method}, per-channel={opts.per_channel}) in {summary['seconds']:.1f}s")
    return summary
