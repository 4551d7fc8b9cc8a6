"""TensorRT's ONNX parser support table, as data.

Transcribed from ``docs/operators.md`` of the onnx/onnx-tensorrt repository
for TensorRT 10.15 ("supports operators in the inclusive range of opset 9 to
opset 24"). :mod:`edgehal.export.inspect` checks a graph against it without
TensorRT, so ``edgehal inspect --target tensorrt`` runs anywhere.

``OPERATORS[op]`` is the tuple of data types TensorRT supports for the
operator's data input; an empty tuple means the parser has no importer for it
(a ``N`` row). An operator missing from the table is not an ONNX operator the
parser knows at all. ``RESTRICTIONS`` holds the table's restriction text for
the operators whose restrictions :mod:`edgehal.export.inspect` checks.

When the table changes, update ``TABLE_TENSORRT_VERSION`` with it.
"""

from __future__ import annotations

TABLE_TENSORRT_VERSION = "10.15"
MIN_OPSET = 9
MAX_OPSET = 24

# ONNX TensorProto.DataType numbers -> the names the table uses.
ONNX_TYPE_NAMES: dict[int, str] = {
    1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64",
    8: "STRING", 9: "BOOL", 10: "FP16", 11: "DOUBLE", 12: "UINT32", 13: "UINT64",
    14: "COMPLEX64", 15: "COMPLEX128", 16: "BF16", 17: "FP8", 18: "FLOAT8E4M3FNUZ",
    19: "FLOAT8E5M2", 20: "FLOAT8E5M2FNUZ", 21: "UINT4", 22: "INT4", 23: "FP4",
}

# "TensorRT supports the following ONNX data types: DOUBLE, FLOAT32, FLOAT16,
# BFLOAT16, FP8, FP4, INT32, INT64, INT8, INT4, UINT8, and BOOL". FP8 is
# FLOAT8E4M3FN, FP4 is FLOAT4E2M1.
SUPPORTED_TYPES = frozenset({"DOUBLE", "FP32", "FP16", "BF16", "FP8", "FP4",
                             "INT32", "INT64", "INT8", "INT4", "UINT8", "BOOL"})
# "INT8, INT4, FP8 and FP4 are treated as Quantized Types in TensorRT, where
# support is available only through quantization from a floating-point type".
QUANTIZED_TYPES = frozenset({"INT8", "INT4", "FP8", "FP4"})

_F = ("FP32", "FP16", "BF16")
_FI = _F + ("INT32", "INT64")
_FIB = _FI + ("BOOL",)

OPERATORS: dict[str, tuple[str, ...]] = {
    "Abs": _FI, "Acos": _F, "Acosh": _F, "Add": _FI, "AffineGrid": (), "And": ("BOOL",),
    "ArgMax": _FI, "ArgMin": _FI, "Asin": _F, "Asinh": _F, "Atan": _F, "Atanh": _F,
    "Attention": _F + ("INT8", "FP8"), "AveragePool": _F, "BatchNormalization": _F,
    "Bernoulli": (), "BitShift": (), "BitwiseAnd": (), "BitwiseNot": (), "BitwiseOr": (),
    "BitwiseXor": (), "BlackmanWindow": ("FP32", "FP16"),
    "Cast": _FI + ("UINT8", "BOOL"), "CastLike": _FI + ("UINT8", "BOOL"), "Ceil": _F,
    "Col2Im": (), "Celu": _F, "CenterCropPad": (), "Clip": _F, "Compress": (),
    "Concat": _FIB, "ConcatFromSequence": (),
    "Constant": _F + ("FP8", "FP4", "INT4", "INT32", "INT64", "BOOL"),
    "ConstantOfShape": _F + ("FP8", "FP4", "INT4", "INT32", "INT64", "BOOL"),
    "Conv": _F, "ConvInteger": (), "ConvTranspose": _F, "Cos": _F, "Cosh": _F, "CumSum": _F,
    "DFT": (), "DeformConv": ("FP32", "FP16"), "DepthToSpace": _FI,
    "DequantizeLinear": ("INT8", "FP8", "FP4", "INT4"), "Det": (), "Div": _FI, "Dropout": _F,
    "DynamicQuantizeLinear": (), "Einsum": _F, "Elu": _F, "Equal": _FI, "Erf": _F, "Exp": _F,
    "Expand": _FIB, "EyeLike": _FIB, "Flatten": _FIB, "Floor": _F,
    "Gather": _FIB, "GatherElements": _FIB, "GatherND": _FIB,
    "Gelu": _F + ("INT8", "INT32", "INT64"), "Gemm": _F, "GlobalAveragePool": _F,
    "GlobalLpPool": _F, "GlobalMaxPool": _F, "Greater": _FI, "GreaterOrEqual": _FI,
    "GridSample": ("FP32", "FP16"), "GroupNormalization": _F, "GRU": _F,
    "HammingWindow": ("FP32", "FP16"), "HannWindow": ("FP32", "FP16"), "HardSigmoid": _F,
    "HardSwish": _F, "Hardmax": _F, "Identity": _FIB, "If": _FIB, "ImageScaler": _F,
    "ImageDecoder": (), "InstanceNormalization": _F, "IsInf": _F, "IsNaN": _FI,
    "LayerNormalization": _F, "LeakyRelu": _F, "Less": _FI, "LessOrEqual": _FI, "Log": _F,
    "LogSoftmax": _F, "Loop": _FIB, "LRN": _F, "LSTM": _F, "LpNormalization": _F, "LpPool": _F,
    "MatMul": _F, "MatMulInteger": (), "Max": _FI, "MaxPool": _F, "MaxRoiPool": (),
    "MaxUnpool": (), "Mean": _F + ("FP8", "INT32", "INT64"), "MeanVarianceNormalization": _F,
    "MelWeightMatrix": (), "Min": _FI, "Mish": ("FP32", "FP16"), "Mod": _FI, "Mul": _FI,
    "Multinomial": (), "Neg": _FI, "NegativeLogLikelihoodLoss": (),
    "NonMaxSuppression": ("FP32", "FP16"), "NonZero": ("FP32", "FP16"), "Not": ("BOOL",),
    "OneHot": _FIB, "Optional": (), "OptionalGetElement": (), "OptionalHasElement": (),
    "Or": ("BOOL",), "Pad": _FI, "ParametricSoftplus": _F, "Pow": _FI, "PRelu": _F,
    "QLinearConv": (), "QLinearMatMul": (), "QuantizeLinear": _F,
    "RandomNormal": _F, "RandomNormalLike": _F, "RandomUniform": _F, "RandomUniformLike": _F,
    "Range": _FI, "Reciprocal": _F,
    "ReduceL1": _FI, "ReduceL2": _FI, "ReduceLogSum": _FI, "ReduceLogSumExp": _FI,
    "ReduceMax": _FI, "ReduceMean": _FI, "ReduceMin": _FI, "ReduceProd": _FI,
    "ReduceSum": _FI, "ReduceSumSquare": _FI, "RegexFullMatch": (), "Relu": _FI,
    "Reshape": _FIB, "Resize": _F, "ReverseSequence": _FIB, "RMSNormalization": _F,
    "RNN": _F, "RoiAlign": ("FP32", "FP16"), "RotaryEmbedding": _F, "Round": _F,
    "STFT": ("FP32",), "ScaledTanh": _F, "Scan": _F, "Scatter": _FI, "ScatterElements": _FI,
    "ScatterND": _FI, "Selu": _F, "SequenceAt": (), "SequenceConstruct": (),
    "SequenceEmpty": (), "SequenceErase": (), "SequenceInsert": (), "SequenceLength": (),
    "SequenceMap": (), "Shape": _FIB, "Shrink": _FI, "Sigmoid": _F, "Sign": _FI, "Sin": _F,
    "Sinh": _F, "Size": _FIB, "Slice": _FIB, "Softmax": _F, "SoftmaxCrossEntropyLoss": (),
    "Softplus": _F, "Softsign": _F, "SpaceToDepth": _FI, "Split": _FIB, "SplitToSequence": (),
    "Sqrt": _F, "Squeeze": _FIB, "StringConcat": (), "StringNormalizer": (), "StringSplit": (),
    "Sub": _FI, "Sum": _FI, "Tan": _F, "Tanh": _F, "TensorScatter": _F + ("INT32",),
    "TfIdfVectorizer": (), "ThresholdedRelu": _F, "Tile": _FIB, "TopK": _FI,
    "Transpose": _FIB, "Trilu": _FIB, "Unique": (), "Unsqueeze": _FIB, "Upsample": _F,
    "Where": _FIB, "Xor": ("BOOL",),
}

RESTRICTIONS: dict[str, str] = {
    "AveragePool": "2D or 3D Pooling only. `dilations` must be empty or all ones",
    "MaxPool": "2D or 3D pooling only. `Indices` output tensor unsupported. "
               "`dilations` must be empty or all ones",
    "LpPool": "`dilations` must be empty or all ones",
    "DequantizeLinear": "`x_zero_point` must be zero",
    "QuantizeLinear": "`y_zero_point` must be 0",
    "Dropout": "`is_training` must be an initializer and evaluate to False",
    "LayerNormalization": "Only the first output `Y` is supported",
    "TopK": "`sorted` must be 1. `K` input must be less than 3840",
    "ScatterND": "`reduction` other than `none` is not supported",
    "CumSum": "`axis` must be a build-time constant",
    "Squeeze": "`axes` must be resolvable to a constant",
    "Unsqueeze": "`axes` must be resolvable to a constant",
    "Resize": "modes `nearest` and `linear`; transformation modes `half_pixel`, "
              "`pytorch_half_pixel`, `tf_half_pixel_for_nn`, `asymmetric`, `align_corners`; "
              "antialiasing is not supported",
    "LSTM": "`input_forget` attribute must be 0. `layout` attribute must be 0",
    "Constant": "`sparse_value`, `value_string`, and `value_strings` attributes are unsupported",
    **{op: "`axes` must be an initializer" for op in (
        "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
        "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare")},
}

RESIZE_MODES = frozenset({"nearest", "linear"})
RESIZE_TRANSFORMS = frozenset({"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn",
                               "asymmetric", "align_corners"})
RESIZE_NEAREST_MODES = frozenset({"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"})
