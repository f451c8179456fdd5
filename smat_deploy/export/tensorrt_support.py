"""TensorRT's ONNX operator support as a graph check, run on every artifact meant for TensorRT.

TensorRT parses ONNX with its ONNX parser (onnx-tensorrt). Its published support matrix says, per
operator, whether there is an importer, which data types it takes and which attributes or inputs it
restricts. :func:`check_tensorrt_support` walks a model against that matrix (written out below as
Python data) and against TensorRT's explicit-quantization rules for QuantizeLinear/DequantizeLinear,
so a graph that TensorRT would refuse is caught where no TensorRT is installed.

Sources of the table:

- onnx-tensorrt ``docs/operators.md`` for TensorRT 10.15 (opset 9 to 24), the list TensorRT 11's
  "ONNX Opset Guide" names as its operator support list: supported flag, types, restrictions.
- Where that list is terse, the parser's own static checks and importers (onnx-tensorrt 10.1
  ``onnxOpCheckers.cpp`` / ``onnxOpImporters.cpp``): Resize ``tf_half_pixel_for_nn`` needs
  ``round_prefer_floor``; Pad modes constant/reflect/edge/wrap with constant ``axes``; Conv and
  ConvTranspose on 1D to 3D inputs; MaxPool without the indices output; Einsum lower-case labels.
- NVIDIA's TensorRT documentation on explicit quantization and the Quantize/Dequantize operators:
  symmetric quantization only (zero point all zeros, of the quantized type), scales that are
  build-time constants with strictly positive values, per-tensor (scalar) scales for activations and
  per-channel (1-D) scales only for weights, along their output-channel axis; block (same-rank) scales
  only for 4-bit types; every QuantizeLinear consumed by DequantizeLinear nodes.

The parser itself is more lenient in places (its Resize importer also has a cubic path); the check
follows the published matrix, which is the contract TensorRT releases are tested against.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from smat_deploy.contract import DTYPES

MATRIX = "onnx-tensorrt docs/operators.md, TensorRT 10.15 (opset 9-24; the list TensorRT 11.x refers to)"
MIN_OPSET, MAX_OPSET = 9, 24
DEFAULT_DOMAINS = ("", "ai.onnx")

# Type names as the matrix writes them, by ONNX type number (the contract's one dtype table).
_TYPE_NAMES = {int(names["onnx"]): str(names["support_matrix"]) for names in DTYPES.values()}  # type: ignore[arg-type]

F = ("FP32", "FP16", "BF16")
FI = (*F, "INT32", "INT64")
FIB = (*FI, "BOOL")
QUANTIZED = ("INT8", "FP8", "FP4", "INT4")
ALL = None  # check every input's type


@dataclass(frozen=True)
class Support:
    """One row of the matrix: ``types`` apply to the inputs listed in ``inputs`` (``None``: all of them;
    ``"output"``: the node's output type, for ops that make tensors from attributes)."""

    supported: bool
    types: tuple[str, ...] = ()
    inputs: tuple[int, ...] | str | None = (0,)
    restrictions: str = ""


def _y(types: tuple[str, ...], inputs: tuple[int, ...] | str | None = (0,), restrictions: str = "") -> Support:
    return Support(True, types, inputs, restrictions)


def _n(restrictions: str = "") -> Support:
    return Support(False, restrictions=restrictions)


_AXES_CONST = "`axes` must be an initializer"
_POOL = "2D or 3D pooling only; `dilations` empty or all ones"

#: The support matrix (TensorRT 10.15 / 11.x). ``inputs`` names the data inputs whose types the
#: "Supported Types" column governs (shape, index and axes inputs are integer by definition).
TENSORRT_OPS: dict[str, Support] = {
    "Abs": _y(FI),
    "Acos": _y(F),
    "Acosh": _y(F),
    "Add": _y(FI, ALL),
    "AffineGrid": _n(),
    "And": _y(("BOOL",), ALL),
    "ArgMax": _y(FI),
    "ArgMin": _y(FI),
    "Asin": _y(F),
    "Asinh": _y(F),
    "Atan": _y(F),
    "Atanh": _y(F),
    "Attention": _y(
        (*F, "INT8", "FP8"),
        (0, 1, 2),
        "`past_key`, `past_value`, `nonpad_kv_seqlen` inputs, `present_key`, `present_value`, `qk_matmul_output` "
        "outputs, `qk_matmul_output_mode` and `softcap` attributes unsupported",
    ),
    "AveragePool": _y(F, (0,), _POOL),
    "BatchNormalization": _y(F, ALL, "`training_mode` must be 0"),
    "Bernoulli": _n(),
    "BitShift": _n(),
    "BitwiseAnd": _n(),
    "BitwiseNot": _n(),
    "BitwiseOr": _n(),
    "BitwiseXor": _n(),
    "BlackmanWindow": _y(("FP32", "FP16"), "output"),
    "Cast": _y((*FIB, "UINT8"), (0,), "target type `to` must be one of the supported types"),
    "CastLike": _y((*FIB, "UINT8"), ALL),
    "Ceil": _y(F),
    "Celu": _y(F),
    "CenterCropPad": _n(),
    "Clip": _y(F, ALL),
    "Col2Im": _n(),
    "Compress": _n(),
    "Concat": _y(FIB, ALL),
    "ConcatFromSequence": _n(),
    # INT8 beyond the list: pre-quantized weights and zero points, which DequantizeLinear reads (explicit quantization)
    "Constant": _y(
        (*FIB, "INT8", "FP8", "FP4", "INT4"), "output", "`sparse_value`, `value_string`, `value_strings` unsupported"
    ),
    "ConstantOfShape": _y((*FIB, "FP8", "FP4", "INT4"), "output"),
    "Conv": _y(F, ALL, "1D, 2D or 3D convolution (input rank 3 to 5)"),
    "ConvInteger": _n(),
    "ConvTranspose": _y(F, ALL, "1D, 2D or 3D deconvolution (input rank 3 to 5)"),
    "Cos": _y(F),
    "Cosh": _y(F),
    "CumSum": _y(F, (0,), "`axis` must be a build-time constant"),
    "DFT": _n(),
    "DeformConv": _y(("FP32", "FP16"), (0, 1)),
    "DepthToSpace": _y(FI),
    "DequantizeLinear": _y(QUANTIZED, (0,), "`x_zero_point` must be zero; explicit-quantization rules"),
    "Det": _n(),
    "Div": _y(FI, ALL),
    "Dropout": _y(F, (0,), "`is_training` must be an initializer and evaluate to False"),
    "DynamicQuantizeLinear": _n("compose IDynamicQuantize from a model-local function instead"),
    "Einsum": _y(F, ALL, "labels must be lower-case letters"),
    "Elu": _y(F),
    "Equal": _y(FI, ALL),
    "Erf": _y(F),
    "Exp": _y(F),
    "Expand": _y(FIB),
    "EyeLike": _y(FIB, (0,), "`input` must have static dimensions"),
    "Flatten": _y(FIB),
    "Floor": _y(F),
    "Gather": _y(FIB),
    "GatherElements": _y(FIB),
    "GatherND": _y(FIB),
    "Gelu": _y((*F, "INT8", "INT32", "INT64")),
    "Gemm": _y(F, ALL),
    "GlobalAveragePool": _y(F),
    "GlobalLpPool": _y(F),
    "GlobalMaxPool": _y(F),
    "Greater": _y(FI, ALL),
    "GreaterOrEqual": _y(FI, ALL),
    "GridSample": _y(("FP32", "FP16"), (0, 1), "input must be 4D"),
    "GroupNormalization": _y(F, ALL),
    "GRU": _y(F, (0, 1, 2), "bidirectional: same activations both ways"),
    "HammingWindow": _y(("FP32", "FP16"), "output"),
    "HannWindow": _y(("FP32", "FP16"), "output"),
    "HardSigmoid": _y(F),
    "HardSwish": _y(F),
    "Hardmax": _y(F, (0,), "`axis` dimension must be a build-time constant"),
    "Identity": _y(FIB),
    "If": _y(FIB, (), "branch outputs: same rank, different names"),
    "ImageDecoder": _n(),
    "ImageScaler": _y(F),
    "InstanceNormalization": _y(F, ALL),
    "IsInf": _y(F),
    "IsNaN": _y(FI),
    "LayerNormalization": _y(F, ALL, "only the first output `Y` is supported"),
    "LeakyRelu": _y(F),
    "Less": _y(FI, ALL),
    "LessOrEqual": _y(FI, ALL),
    "Log": _y(F),
    "LogSoftmax": _y(F),
    "Loop": _y(FIB, (), "scan outputs of static length; loop-carried shapes constant across iterations"),
    "LRN": _y(F),
    "LSTM": _y(F, (0, 1, 2), "`input_forget` must be 0; `layout` must be 0"),
    "LpNormalization": _y(F, (0,), "`p` must be 1 or 2"),
    "LpPool": _y(F, (0,), "`dilations` empty or all ones; `p` 1 or 2"),
    "MatMul": _y(F, ALL),
    "MatMulInteger": _n(),
    "Max": _y(FI, ALL),
    "MaxPool": _y(F, (0,), _POOL + "; `Indices` output unsupported"),
    "MaxRoiPool": _n(),
    "MaxUnpool": _n(),
    "Mean": _y((*FI, "FP8"), ALL),
    "MeanVarianceNormalization": _y(F),
    "MelWeightMatrix": _n(),
    "Min": _y(FI, ALL),
    "Mish": _y(("FP32", "FP16")),
    "Mod": _y(FI, ALL),
    "Mul": _y(FI, ALL),
    "Multinomial": _n(),
    "Neg": _y(FI),
    "NegativeLogLikelihoodLoss": _n(),
    "NonMaxSuppression": _y(("FP32", "FP16"), (0, 1)),
    "NonZero": _y(("FP32", "FP16")),
    "Not": _y(("BOOL",)),
    "OneHot": _y(FIB, (2,), "`depth` must be a build-time constant"),
    "Optional": _n(),
    "OptionalGetElement": _n(),
    "OptionalHasElement": _n(),
    "Or": _y(("BOOL",), ALL),
    "Pad": _y(FI, (0,), "modes constant/reflect/edge/wrap; `axes` must be an initializer"),
    "ParametricSoftplus": _y(F),
    "Pow": _y(FI, (0,)),
    "PRelu": _y(F, ALL),
    "QLinearConv": _n(),
    "QLinearMatMul": _n(),
    "QuantizeLinear": _y(F, (0,), "`y_zero_point` must be 0; explicit-quantization rules"),
    "RandomNormal": _y(("FP32", "FP16"), "output", "`seed` is ignored"),
    "RandomNormalLike": _y(("FP32", "FP16"), "output", "`seed` is ignored"),
    "RandomUniform": _y(("FP32", "FP16"), "output", "`seed` is ignored"),
    "RandomUniformLike": _y(("FP32", "FP16"), "output", "`seed` is ignored"),
    "Range": _y(FI, ALL),
    "Reciprocal": _y(F),
    **{
        op: _y(FI, (0,), _AXES_CONST)
        for op in (
            "ReduceL1",
            "ReduceL2",
            "ReduceLogSum",
            "ReduceLogSumExp",
            "ReduceMax",
            "ReduceMean",
            "ReduceMin",
            "ReduceProd",
            "ReduceSum",
            "ReduceSumSquare",
        )
    },
    "RegexFullMatch": _n(),
    "Relu": _y(FI),
    "Reshape": _y(FIB),
    "Resize": _y(
        F,
        (0,),
        "modes nearest/linear; coordinate_transformation_mode half_pixel/pytorch_half_pixel/tf_half_pixel_for_nn/"
        "asymmetric/align_corners; nearest_mode floor/ceil/round_prefer_floor/round_prefer_ceil; "
        "keep_aspect_ratio_policy stretch; `axes` an iota of length rank when `scales` is a tensor; no antialias",
    ),
    "ReverseSequence": _y(FIB),
    "RMSNormalization": _y(F, ALL),
    "RNN": _y(F, (0, 1, 2), "bidirectional: same activations both ways"),
    "RoiAlign": _y(("FP32", "FP16"), (0, 1)),
    "RotaryEmbedding": _y(F, (0, 1, 2), "`position_ids` must be INT64"),
    "Round": _y(F),
    "STFT": _y(("FP32",), (0,), "`frame_step` and `window` must be initializers; real-valued input"),
    "ScaledTanh": _y(F),
    "Scan": _y(F, ()),
    "Scatter": _y(FI, (0, 2)),
    "ScatterElements": _y(FI, (0, 2)),
    "ScatterND": _y(FI, (0, 2), "`reduction` other than none unsupported"),
    "Selu": _y(F),
    "SequenceAt": _n(),
    "SequenceConstruct": _n(),
    "SequenceEmpty": _n(),
    "SequenceErase": _n(),
    "SequenceInsert": _n(),
    "SequenceLength": _n(),
    "SequenceMap": _n(),
    "Shape": _y(FIB),
    "Shrink": _y(FI),
    "Sigmoid": _y(F),
    "Sign": _y(FI),
    "Sin": _y(F),
    "Sinh": _y(F),
    "Size": _y(FIB),
    "Slice": _y(FIB),
    "Softmax": _y(F),
    "SoftmaxCrossEntropyLoss": _n(),
    "Softplus": _y(F),
    "Softsign": _y(F),
    "SpaceToDepth": _y(FI),
    "Split": _y(FIB),
    "SplitToSequence": _n(),
    "Sqrt": _y(F),
    "Squeeze": _y(FIB, (0,), "`axes` must be resolvable to a constant"),
    "StringConcat": _n(),
    "StringNormalizer": _n(),
    "StringSplit": _n(),
    "Sub": _y(FI, ALL),
    "Sum": _y(FI, ALL),
    "Tan": _y(F),
    "Tanh": _y(F),
    "TensorScatter": _y((*F, "INT32"), (0, 1), "`past_cache` and `update` 4D; `axis` must be -2"),
    "TfIdfVectorizer": _n(),
    "ThresholdedRelu": _y(F),
    "Tile": _y(FIB),
    "TopK": _y(FI, (0,), "`sorted` must be 1; `K` below 3840"),
    "Transpose": _y(FIB),
    "Trilu": _y(FIB),
    "Unique": _n(),
    "Unsqueeze": _y(FIB, (0,), "`axes` must be resolvable to a constant"),
    "Upsample": _y(F, (0,), "modes nearest/linear/bilinear"),
    "Where": _y(FIB, (1, 2)),
    "Xor": _y(("BOOL",), ALL),
}

RESIZE_MODES = ("nearest", "linear")
RESIZE_COORDINATES = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners")
RESIZE_NEAREST = ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil")
PAD_MODES = ("constant", "reflect", "edge", "wrap")
#: Quantized types TensorRT takes from a zero point (UINT8 is read as INT8, with a warning: a different range).
_ZERO_POINT_TYPES = {TensorProto.INT8, TensorProto.FLOAT8E4M3FN, TensorProto.INT4}
_BLOCK_TYPES = {TensorProto.INT4, *([TensorProto.FLOAT4E2M1] if hasattr(TensorProto, "FLOAT4E2M1") else [])}


def _type_name(elem_type: int) -> str:
    return _TYPE_NAMES.get(elem_type, TensorProto.DataType.Name(elem_type) if elem_type else "UNDEFINED")


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Graph:
    """Type, shape and constant information for one model, gathered once."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.types: dict[str, int] = {}
        self.ranks: dict[str, int] = {}
        self.dims: dict[str, tuple] = {}
        self.constants: dict[str, onnx.TensorProto | None] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        self.producers: dict[str, onnx.NodeProto] = {}
        self.outputs: set[str] = set()
        self.untyped = 0
        inferred = _inferred(model)
        for graph in _graphs(inferred.graph):
            for value in (*graph.input, *graph.output, *graph.value_info):
                self._value(value)
        for graph in _graphs(model.graph):
            self.outputs.update(o.name for o in graph.output)
            for init in graph.initializer:
                self._constant(init.name, init)
            self._nodes(graph.node)
        for function in model.functions:  # bodies of model-local functions: no types, but wiring and constants
            self._nodes(function.node)

    def _nodes(self, nodes) -> None:
        for node in nodes:
            for name in node.output:
                self.producers[name] = node
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
            if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS and node.output:
                self._constant(node.output[0], _constant_tensor(node))
            elif node.op_type == "Identity" and node.input and node.input[0] in self.constants:
                self.constants[node.output[0]] = self.constants[node.input[0]]

    def _constant(self, name: str, tensor: onnx.TensorProto | None) -> None:
        self.constants[name] = tensor
        if tensor is not None:
            self.types[name] = tensor.data_type
            self.dims[name] = tuple(tensor.dims)
            self.ranks[name] = len(tensor.dims)

    def _value(self, value: onnx.ValueInfoProto) -> None:
        tensor = value.type.tensor_type
        if tensor.elem_type:
            self.types[value.name] = tensor.elem_type
        if tensor.HasField("shape"):
            dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
            self.dims[value.name] = dims
            self.ranks[value.name] = len(dims)

    def is_constant(self, name: str) -> bool:
        return name in self.constants

    def value(self, name: str) -> np.ndarray | None:
        """The constant's values; None when unknown (not a constant, or its data was not loaded)."""
        tensor = self.constants.get(name)
        try:
            return None if tensor is None else numpy_helper.to_array(tensor)
        except Exception:  # external data left on disk
            return None


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with fresh shape/type inference; stale value_info (seen after AutoCast) is dropped first."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.value_info[:]
    try:
        return onnx.shape_inference.infer_shapes(copy, check_type=False, strict_mode=False, data_prop=False)
    except Exception:  # inference is best effort: unknown types are counted as untyped, never guessed
        return copy


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _graphs(sub)


def _constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto | None:
    for attr in node.attribute:
        if attr.name == "value":
            return attr.t
        if attr.name in ("value_float", "value_floats"):
            values = [attr.f] if attr.name == "value_float" else list(attr.floats)
            return numpy_helper.from_array(np.array(values if attr.name.endswith("s") else values[0], np.float32))
        if attr.name in ("value_int", "value_ints"):
            values = [attr.i] if attr.name == "value_int" else list(attr.ints)
            return numpy_helper.from_array(np.array(values if attr.name.endswith("s") else values[0], np.int64))
    return None


def _nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    """Every node TensorRT imports: the main graph, subgraphs, and bodies of model-local functions."""
    functions = {(f.domain, f.name): f for f in model.functions}

    def walk(nodes, depth: int = 0) -> Iterator[onnx.NodeProto]:
        for node in nodes:
            function = functions.get((node.domain, node.op_type))
            if function is not None and depth < 8:
                yield from walk(function.node, depth + 1)
                continue
            yield node
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    yield from walk(attr.g.node, depth)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        yield from walk(sub.node, depth)

    yield from walk(model.graph.node)


def _label(node: onnx.NodeProto) -> str:
    name = node.name or (node.output[0] if node.output else "(unnamed)")
    return f"{name} ({node.op_type})"


# -- restrictions ------------------------------------------------------------------------------------
def _resize(node, attrs, g: _Graph) -> list[str]:
    problems = []
    if attrs.get("antialias", 0):
        problems.append("antialias=1: antialiasing is not supported")
    mode = _text(attrs.get("mode", "nearest"))
    if mode not in RESIZE_MODES:
        problems.append(f"mode {mode!r}: supported modes are {', '.join(RESIZE_MODES)}")
    coordinates = _text(attrs.get("coordinate_transformation_mode", "half_pixel"))
    nearest = _text(attrs.get("nearest_mode", "round_prefer_floor"))
    if coordinates not in RESIZE_COORDINATES:
        problems.append(f"coordinate_transformation_mode {coordinates!r} is not supported")
    if nearest not in RESIZE_NEAREST:
        problems.append(f"nearest_mode {nearest!r} is not supported")
    if coordinates == "tf_half_pixel_for_nn" and nearest != "round_prefer_floor":
        problems.append("tf_half_pixel_for_nn needs nearest_mode round_prefer_floor")
    policy = _text(attrs.get("keep_aspect_ratio_policy", "stretch"))
    if policy != "stretch":
        problems.append(f"keep_aspect_ratio_policy {policy!r}: only 'stretch' is supported")
    axes = list(attrs.get("axes", []))
    if len(set(axes)) != len(axes):
        problems.append("axes must be unique")
    scales = node.input[2] if len(node.input) > 2 else ""
    sizes = node.input[3] if len(node.input) > 3 else ""
    if axes and scales and not sizes and not g.is_constant(scales):
        rank = g.ranks.get(node.input[0])
        if axes != list(range(len(axes))) or (rank is not None and len(axes) != rank):
            problems.append("axes must be an iota of length rank(input) when scales is a runtime tensor")
    return problems


def _pad(node, attrs, g: _Graph) -> list[str]:
    problems = []
    mode = _text(attrs.get("mode", "constant"))
    if mode not in PAD_MODES:
        problems.append(f"mode {mode!r}: supported modes are {', '.join(PAD_MODES)}")
    if len(node.input) > 3 and node.input[3] and not g.is_constant(node.input[3]):
        problems.append("axes must be an initializer")
    return problems


def _conv(node, attrs, g: _Graph) -> list[str]:
    rank = g.ranks.get(node.input[0]) or g.ranks.get(node.input[1] if len(node.input) > 1 else "")
    if rank is not None and not 3 <= rank <= 5:
        return [f"rank-{rank} input: only 1D, 2D or 3D convolutions (rank 3 to 5)"]
    return []


def _pool(node, attrs, g: _Graph) -> list[str]:
    problems = []
    if any(d != 1 for d in attrs.get("dilations", [])):
        problems.append("dilations other than 1 are not supported")
    kernel = attrs.get("kernel_shape")
    if node.op_type in ("AveragePool", "MaxPool") and kernel is not None and len(kernel) not in (2, 3):
        problems.append(f"{len(kernel)}D pooling: only 2D or 3D")
    if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
        problems.append("the Indices output is not supported")
    if node.op_type == "LpPool" and attrs.get("p", 2) not in (1, 2):
        problems.append("p must be 1 or 2")
    return problems


def _layer_norm(node, attrs, g: _Graph) -> list[str]:
    extra = [name for name in node.output[1:] if name]
    return [f"outputs Mean/InvStdDev used ({', '.join(extra)}): only the first output Y is supported"] if extra else []


def _axes_input(index: int, what: str = "axes") -> Callable:
    def check(node, attrs, g: _Graph) -> list[str]:
        if len(node.input) > index and node.input[index] and not g.is_constant(node.input[index]):
            return [f"{what} input {node.input[index]} is not a constant (initializer)"]
        return []

    return check


def _cast(node, attrs, g: _Graph) -> list[str]:
    target = attrs.get("to")
    allowed = TENSORRT_OPS["Cast"].types
    if target is not None and _type_name(target) not in allowed:
        return [f"cast to {_type_name(target)}: TensorRT casts only to {', '.join(allowed)}"]
    return []


def _constant(node, attrs, g: _Graph) -> list[str]:
    bad = [name for name in ("sparse_value", "value_string", "value_strings") if name in attrs]
    return [f"attribute {bad[0]} is not supported"] if bad else []


def _dropout(node, attrs, g: _Graph) -> list[str]:
    if attrs.get("is_test", 1) == 0:
        return ["training mode (is_test=0) is not supported"]
    if len(node.input) > 2 and node.input[2]:
        value = g.value(node.input[2])
        if value is None or bool(np.asarray(value).any()):
            return ["is_training must be an initializer that evaluates to False"]
    return []


def _topk(node, attrs, g: _Graph) -> list[str]:
    problems = [] if attrs.get("sorted", 1) == 1 else ["sorted must be 1"]
    k = g.value(node.input[1]) if len(node.input) > 1 else None
    if k is not None and int(np.asarray(k).reshape(-1)[0]) >= 3840:
        problems.append("K must be below 3840")
    return problems


def _scatter_nd(node, attrs, g: _Graph) -> list[str]:
    reduction = _text(attrs.get("reduction", "none"))
    return [] if reduction == "none" else [f"reduction {reduction!r} is not supported"]


def _lstm(node, attrs, g: _Graph) -> list[str]:
    problems = []
    if attrs.get("input_forget", 0):
        problems.append("input_forget must be 0")
    if attrs.get("layout", 0):
        problems.append("layout must be 0")
    return problems


def _einsum(node, attrs, g: _Graph) -> list[str]:
    equation = _text(attrs.get("equation", ""))
    bad = sorted({c for c in equation if not ("a" <= c <= "z" or c in "->., ")})
    return [f"equation {equation!r} has characters TensorRT rejects: {''.join(bad)}"] if bad else []


def _attention(node, attrs, g: _Graph) -> list[str]:
    problems = [f"input {i} ({n}) is not supported" for i, n in enumerate(node.input) if i > 3 and n]
    problems += [f"output {i} ({n}) is not supported" for i, n in enumerate(node.output) if i > 0 and n]
    problems += [f"attribute {a} is not supported" for a in ("qk_matmul_output_mode", "softcap") if attrs.get(a)]
    return problems


def _lp_normalization(node, attrs, g: _Graph) -> list[str]:
    return [] if attrs.get("p", 2) in (1, 2) else ["p must be 1 or 2"]


def _upsample(node, attrs, g: _Graph) -> list[str]:
    mode = _text(attrs.get("mode", "nearest"))
    return [] if mode in ("nearest", "linear", "bilinear") else [f"mode {mode!r} is not supported"]


def _batch_norm(node, attrs, g: _Graph) -> list[str]:
    return ["training_mode=1 is not supported"] if attrs.get("training_mode", 0) else []


def _grid_sample(node, attrs, g: _Graph) -> list[str]:
    rank = g.ranks.get(node.input[0])
    return [f"rank-{rank} input: input must be 4D"] if rank is not None and rank != 4 else []


def _random(node, attrs, g: _Graph) -> list[str]:
    dtype = attrs.get("dtype")
    if dtype is not None and dtype not in (TensorProto.FLOAT, TensorProto.FLOAT16):
        return [f"dtype {_type_name(dtype)}: only FP32 or FP16"]
    return []


def _rotary(node, attrs, g: _Graph) -> list[str]:
    if len(node.input) > 3 and node.input[3]:
        elem = g.types.get(node.input[3])
        if elem and elem != TensorProto.INT64:
            return [f"position_ids is {_type_name(elem)}: must be INT64"]
    return []


_RESTRICTIONS: dict[str, Callable[[onnx.NodeProto, dict, _Graph], list[str]]] = {
    "Resize": _resize,
    "Pad": _pad,
    "Conv": _conv,
    "ConvTranspose": _conv,
    "AveragePool": _pool,
    "MaxPool": _pool,
    "LpPool": _pool,
    "LayerNormalization": _layer_norm,
    "Cast": _cast,
    "Constant": _constant,
    "CumSum": _axes_input(1, "axis"),
    "Dropout": _dropout,
    "TopK": _topk,
    "ScatterND": _scatter_nd,
    "LSTM": _lstm,
    "Einsum": _einsum,
    "Attention": _attention,
    "LpNormalization": _lp_normalization,
    "Upsample": _upsample,
    "BatchNormalization": _batch_norm,
    "GridSample": _grid_sample,
    "OneHot": _axes_input(1, "depth"),
    "Squeeze": _axes_input(1),
    "Unsqueeze": _axes_input(1),
    "RandomNormal": _random,
    "RandomUniform": _random,
    "RandomNormalLike": _random,
    "RandomUniformLike": _random,
    "RotaryEmbedding": _rotary,
    **{op: _axes_input(1) for op in TENSORRT_OPS if op.startswith("Reduce")},
}


# -- explicit quantization ---------------------------------------------------------------------------
def _weight_axis(consumer: onnx.NodeProto, index: int, rank: int | None) -> int | None:
    """The output-channel axis of a weight fed to ``consumer`` at input ``index`` (None: not a weight slot)."""
    if consumer.op_type == "Conv" and index == 1:
        return 0
    if consumer.op_type == "ConvTranspose" and index == 1:
        return 1
    if consumer.op_type == "MatMul" and index == 1 and rank:
        return rank - 1
    if consumer.op_type == "Gemm" and index == 1:
        return 0 if _attrs(consumer).get("transB", 0) else 1
    return None


def _quantize_rules(node: onnx.NodeProto, attrs: dict, g: _Graph) -> list[str]:
    problems = []
    data = node.input[0]
    scale = node.input[1] if len(node.input) > 1 else ""
    zero_point = node.input[2] if len(node.input) > 2 else ""
    is_q = node.op_type == "QuantizeLinear"

    # the quantized type: zero point's type, else output_dtype (Q, opset 21), else the DQ input's type
    if zero_point:
        qtype = g.types.get(zero_point)
    elif is_q:
        qtype = attrs.get("output_dtype") or TensorProto.UINT8
    else:
        qtype = g.types.get(data)
    if is_q and not zero_point and not attrs.get("output_dtype"):
        problems.append("no zero point and no output_dtype: ONNX quantizes to UINT8 (TensorRT needs INT8)")
    elif (is_q or zero_point) and qtype and qtype not in _ZERO_POINT_TYPES:
        problems.append(f"quantized type {_type_name(qtype)}: TensorRT quantizes to INT8 (or FP8/INT4), symmetric")
    if zero_point:
        values = g.value(zero_point)
        if not g.is_constant(zero_point):
            problems.append(f"zero point {zero_point} is not a constant")
        elif values is not None and np.any(values.astype(np.float64) != 0):
            problems.append("non-zero zero point: TensorRT supports symmetric quantization only")

    if not scale or not g.is_constant(scale):
        problems.append(f"scale input {scale or '(missing)'} is not a build-time constant (initializer or Constant)")
        return problems
    scale_type = g.types.get(scale)
    if scale_type and _type_name(scale_type) not in F:
        problems.append(f"scale is {_type_name(scale_type)}: must be FP32, FP16 or BF16")
    values = g.value(scale)
    if values is not None:
        if values.size == 0 or not np.all(values.astype(np.float64) > 0):
            problems.append("scale coefficients must all be strictly positive")
        data_rank = g.ranks.get(data)
        if values.size > 1:
            if values.ndim == 1:
                problems += _per_channel(node, attrs, g, int(values.size), data_rank)
            elif data_rank is not None and values.ndim == data_rank:
                if qtype not in _BLOCK_TYPES:
                    problems.append("block quantization (same-rank scale) is supported for 4-bit types only")
            else:
                problems.append(f"rank-{values.ndim} scale: must be a scalar (per-tensor) or 1-D (per-channel)")

    consumers = g.consumers.get(node.output[0], [])
    if is_q:
        if node.output[0] in g.outputs:
            problems.append("quantized tensor is a graph output: QuantizeLinear must feed DequantizeLinear")
        others = sorted({c.op_type for c in consumers if c.op_type != "DequantizeLinear"})
        if others:
            problems.append(f"QuantizeLinear feeds {', '.join(others)}: it must be followed by DequantizeLinear")
    else:
        producer = g.producers.get(data)
        if not g.is_constant(data) and (producer is None or producer.op_type != "QuantizeLinear"):
            problems.append(f"DequantizeLinear of {data}, which is neither a QuantizeLinear output nor a weight")
    return problems


def _per_channel(node: onnx.NodeProto, attrs: dict, g: _Graph, count: int, data_rank: int | None) -> list[str]:
    """Per-channel scales: weights only, along the consumer's output-channel axis, one scale per channel."""
    weight = node.input[0]
    if node.op_type == "DequantizeLinear":
        producer = g.producers.get(weight)
        if producer is not None and producer.op_type == "QuantizeLinear":
            weight = producer.input[0]
    if not g.is_constant(weight):
        return ["per-channel scale on an activation: activations take per-tensor (scalar) scales only"]
    axis = attrs.get("axis", 1)
    if data_rank:
        axis = axis % data_rank
    dims = g.dims.get(node.input[0])
    problems = []
    if dims is not None and data_rank and dims[axis] not in (None, count):
        problems.append(f"{count} scales along axis {axis} of a {list(dims)} tensor")
    # The DQ (or the Q, then its DQ) feeds the compute op whose output channels the scales must follow.
    outputs = [node.output[0]]
    if node.op_type == "QuantizeLinear":
        outputs = [c.output[0] for c in g.consumers.get(node.output[0], []) if c.op_type == "DequantizeLinear"]
    for name in outputs:
        for consumer in g.consumers.get(name, []):
            for index, inp in enumerate(consumer.input):
                if inp != name:
                    continue
                expected = _weight_axis(consumer, index, data_rank)
                if expected is not None and axis != expected:
                    problems.append(
                        f"per-channel axis {axis} for {consumer.op_type} {consumer.name}: "
                        f"its output-channel axis is {expected}"
                    )
    return problems


# -- the check ---------------------------------------------------------------------------------------
def _type_problems(node: onnx.NodeProto, support: Support, g: _Graph) -> list[str]:
    if support.inputs == "output":
        names = [n for n in node.output[:1] if n]
    elif support.inputs is ALL:
        names = [n for n in node.input if n]
    else:
        names = [node.input[i] for i in support.inputs if i < len(node.input) and node.input[i]]
    problems = []
    for name in names:
        elem = g.types.get(name)
        if not elem:
            g.untyped += 1
            continue
        if _type_name(elem) not in support.types:
            problems.append(f"{name} is {_type_name(elem)}; supported types: {', '.join(support.types)}")
    return problems


def check_tensorrt_support(model: onnx.ModelProto) -> dict:
    """Check ``model`` against TensorRT's ONNX support matrix and explicit-quantization rules.

    Returns ``{"matrix", "opset", "operators": {op: count}, "problems": [one line each], "passed",
    "untyped_inputs"}``. A problem names the node, its op and the rule it breaks. Ops of other domains
    (``com.microsoft``: ONNX Runtime's contrib kernels) and ops missing from the matrix are problems too:
    TensorRT has no importer for them (only a plugin registered under that name could take them).
    ``untyped_inputs`` counts inputs whose type shape inference could not tell (not checked).
    """
    g = _Graph(model)
    problems: list[str] = []
    opset = next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), None)
    if opset is None or not MIN_OPSET <= opset <= MAX_OPSET:
        problems.append(f"model: default-domain opset {opset}: TensorRT supports opsets {MIN_OPSET} to {MAX_OPSET}")
    for value in model.graph.input:
        elem = value.type.tensor_type.elem_type
        if _type_name(elem) not in (*FIB, "UINT8"):
            problems.append(f"graph input {value.name} is {_type_name(elem)}: not a TensorRT network input type")

    counts: Counter[str] = Counter()
    for node in _nodes(model):
        domain = node.domain if node.domain not in DEFAULT_DOMAINS else ""
        op = node.op_type if not domain else f"{domain}.{node.op_type}"
        counts[op] += 1
        where = _label(node)
        if domain == "com.microsoft":
            problems.append(f"{where}: ONNX Runtime contrib operator (domain com.microsoft), unsupported by TensorRT")
            continue
        if domain:
            problems.append(f"{where}: custom domain {domain!r}, not in TensorRT's support matrix (needs a plugin)")
            continue
        support = TENSORRT_OPS.get(node.op_type)
        if support is None:
            problems.append(f"{where}: not in TensorRT's support matrix")
            continue
        if not support.supported:
            note = f" ({support.restrictions})" if support.restrictions else ""
            problems.append(f"{where}: marked unsupported in TensorRT's support matrix{note}")
            continue
        attrs = _attrs(node)
        found = _type_problems(node, support, g)
        if node.op_type in _RESTRICTIONS:
            found += _RESTRICTIONS[node.op_type](node, attrs, g)
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            found += _quantize_rules(node, attrs, g)
        problems += [f"{where}: {problem}" for problem in found]
    return {
        "matrix": MATRIX,
        "opset": opset,
        "operators": dict(sorted(counts.items())),
        "problems": problems,
        "passed": not problems,
        "untyped_inputs": g.untyped,
    }


__all__ = ["MATRIX", "TENSORRT_OPS", "Support", "check_tensorrt_support"]
