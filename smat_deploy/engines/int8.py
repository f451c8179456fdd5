"""INT8 in two flavours, both with explicit Q/DQ decided in the ONNX file.

- **TensorRT INT8** (``smat_int8.onnx``): NVIDIA Model Optimizer places symmetric int8 Q/DQ pairs
  (zero point 0, per-channel weights) on the inputs of the weight-bearing MatMul, Gemm and Conv nodes
  only, calibrated on the calibration set, with its float parts left float32 (:data:`HIGH_PRECISION_DTYPE`)
  while the accuracy budget picks the layer groups. Then :func:`fp16_outside_int8` gives the finished file
  float16 everywhere outside its int8 layers except the FP16 artifact's float32 islands (the same AutoCast
  policy), with int8 weights and float16 scales so that every DequantizeLinear feeds its MatMul/Gemm/Conv
  directly: the layout TensorRT fuses into int8 kernels (:mod:`smat_deploy.export.tensorrt_fusion`), and the
  budget is checked again on that file. Model Optimizer's own float16 step (``high_precision_dtype="fp16"``)
  converts LayerNorm, Softmax and the shape arithmetic as well: mean |alpha diff| near 2e-2 (docs/int8.md).
  Activation ranges come from ``max`` calibration (:data:`CALIBRATION_METHOD`): entropy calibration clipped
  the decoder's activations and tripled the max |diff|.
- **CPU INT8** (``smat_int8_cpu.onnx``): that model barely speeds up ONNX Runtime on CPU, whose
  int8 kernels want a different recipe. The graph is first given ONNX Runtime's fused transformer
  kernels (:func:`smat_deploy.engines.cpu_graph.fuse_transformer_ops`: attention as one float32
  flash-attention MultiHeadAttention, BiasGelu, SkipLayerNormalization). ONNX Runtime's own static
  quantiser then writes QDQ with uint8 activations and per-channel int8 weights (the U8S8 layout its
  kernels run), and quantises only MatMuls with a constant operand and Convs: attention stays
  float32, because ONNX Runtime's quantised softmax is slow and 8-bit attention probabilities cost
  accuracy.

Both keep the convolutions that read the image itself in float32 (:data:`FLOAT_CONV_WEIGHTS`), and
neither quantises a product of two activations (attention, the position-table resize). Which further
layer groups return to float is decided against an accuracy budget by
:mod:`smat_deploy.engines.int8_budget`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx

from smat_deploy.engines.cpu_graph import fuse_transformer_ops
from smat_deploy.engines.int8_budget import activation_products, drop_unused_qdq
from smat_deploy.errors import SmatError

QUANTIZED_OP_TYPES = ("MatMul", "Gemm", "Conv")
#: Convs that read the raw (normalised) image keep float32: the patch embedding and the decoder's
#: ConvStream. They cost about 4 of 165 GFLOP at 518x518, and quantising them was the largest single
#: source of alpha error (mean |diff| against float32 fell from about 0.02-0.04 to below 0.01 when
#: they were excluded, on held-out composites).
FLOAT_CONV_WEIGHTS = ("patch_embed", "convstream")
#: Precision Model Optimizer leaves the unquantised ops in while the budget is fitted (its own "fp16" step costs 10x
#: the error; :func:`fp16_outside_int8` makes them float16 afterwards with the FP16 artifact's float32 islands).
HIGH_PRECISION_DTYPE = "fp32"
#: Activation-range calibration for the TensorRT file ("max" or "entropy", Model Optimizer's two int8 methods).
CALIBRATION_METHOD = "max"


def input_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the Conv nodes that see the image itself (matched by their weights' names)."""
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "Conv" and len(n.input) > 1 and any(key in n.input[1] for key in FLOAT_CONV_WEIGHTS)
    ]


def _feeds(calibration: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    count = len(calibration["image"])
    return [{k: v[i : i + 1] for k, v in calibration.items()} for i in range(count)]


def quantize_int8_tensorrt(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    calibration: dict[str, np.ndarray],
    method: str = CALIBRATION_METHOD,
    high_precision_dtype: str = HIGH_PRECISION_DTYPE,
) -> Path:
    """Model Optimizer INT8 Q/DQ for TensorRT (symmetric, zero point 0, weight-bearing MatMul/Gemm/Conv inputs).

    Model Optimizer rewrites the model it is given in place (and writes helper files beside it), so it
    works on a copy in a scratch folder: ``src`` stays byte-identical to what its manifest describes.
    """
    from modelopt.onnx.quantization import quantize

    source = onnx.load(str(src), load_external_data=False)
    keep_float = [f"^{name}$" for name in input_convs(source) + activation_matmuls(source)]
    _, _, height, width = calibration["image"].shape
    shapes = f"image:1x3x{height}x{width},prompt:1x1x{height}x{width},state:1x1"
    with tempfile.TemporaryDirectory(prefix="smat-int8-") as scratch:
        copy = Path(scratch) / Path(src).name
        shutil.copyfile(src, copy)
        try:
            quantize(
                str(copy),
                quantize_mode="int8",
                calibration_data=calibration,
                calibration_method=method,
                calibration_shapes=shapes,
                calibration_eps=["cpu"],
                op_types_to_quantize=list(QUANTIZED_OP_TYPES),
                nodes_to_exclude=keep_float,
                output_path=str(dst),
                log_level="ERROR",
                high_precision_dtype=high_precision_dtype,
            )
        except Exception as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise SmatError(f"INT8 quantisation (Model Optimizer) failed: {first}") from None
    model = onnx.load(str(dst))
    confine_qdq_to_compute_inputs(model)
    onnx.save(model, str(dst))
    onnx.checker.check_model(str(dst))
    return Path(dst)


def store_int8_weights(model: onnx.ModelProto) -> int:
    """Quantise the weights once, here, in float32: each QuantizeLinear of a weight initializer becomes an int8
    initializer that its DequantizeLinear reads (``round half to even``, ONNX's rule, from the float32 weight and
    scale). Returns how many weights were stored.

    The file then carries int8 weights (a quarter of their float32 bytes), no later precision conversion can
    touch the float weights before they are rounded, and TensorRT reads the int8 values as they are.
    """
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    stored = 0
    for q in [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in initializers]:
        if len(q.input) < 3 or q.input[1] not in initializers or q.input[2] not in initializers:
            continue
        weight = onnx.numpy_helper.to_array(initializers[q.input[0]]).astype(np.float32)
        scale = onnx.numpy_helper.to_array(initializers[q.input[1]]).astype(np.float32)
        zero = onnx.numpy_helper.to_array(initializers[q.input[2]])
        if zero.dtype != np.int8:
            continue
        axis = next((a.i for a in q.attribute if a.name == "axis"), 1)
        shape = [1] * weight.ndim
        if scale.ndim == 1:
            shape[axis % weight.ndim] = scale.size
        values = np.rint(weight / scale.reshape(shape)) + zero.astype(np.float32).reshape(shape if zero.ndim else [])
        name = f"{q.input[0]}_int8"
        graph.initializer.append(onnx.numpy_helper.from_array(np.clip(values, -128, 127).astype(np.int8), name))
        for dq in consumers.get(q.output[0], []):
            for index, value in enumerate(dq.input):
                if value == q.output[0]:
                    dq.input[index] = name
        graph.node.remove(q)
        stored += 1
    drop_unused_qdq(model)
    return stored


def fp16_outside_int8(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], calibration: dict[str, np.ndarray]
) -> dict:
    """The TensorRT INT8 file: int8 where ``src`` has Q/DQ, float16 everywhere else except the FP16 artifact's
    float32 islands, in the layout TensorRT fuses. Returns what was done.

    1. Weights stored as int8 (:func:`store_int8_weights`).
    2. The FP16 artifact's conversion (:func:`smat_deploy.engines.fp16.mixed_precision`: AutoCast with the same
       float32 op list, shape arithmetic and data analysis) on the whole Q/DQ graph.
    3. Model Optimizer's folds of the Casts around Q/DQ into float16 scales (opset 19+):
       ``DequantizeLinear -> Cast(float16)`` becomes a DequantizeLinear with a float16 scale that feeds its
       MatMul/Gemm/Conv directly, and ``Cast(float32) -> QuantizeLinear`` a QuantizeLinear reading float16.
    """
    import tempfile

    from modelopt.onnx.utils import fold_dq_fp32_to_fp16_casts, fold_q_fp16_to_fp32_casts

    from smat_deploy.engines import fp16

    model = onnx.load(str(src))
    stored = store_int8_weights(model)
    with tempfile.TemporaryDirectory(prefix="smat-int8-fp16-") as scratch:
        staged = Path(scratch) / "int8_weights.onnx"
        onnx.save(model, str(staged))
        model = fp16.mixed_precision(staged, calibration)
    casts_before = sum(n.op_type == "Cast" for n in model.graph.node)
    model = fold_q_fp16_to_fp32_casts(fold_dq_fp32_to_fp16_casts(model))
    del model.graph.value_info[:]
    onnx.save(model, str(dst))
    onnx.checker.check_model(str(dst))
    return {
        "int8_weights": stored,
        "casts_folded_into_qdq": casts_before - sum(n.op_type == "Cast" for n in model.graph.node),
    }


def confine_qdq_to_compute_inputs(model: onnx.ModelProto) -> int:
    """Rewire non-compute consumers of a DequantizeLinear to the float tensor that was quantised.

    Model Optimizer shares a Q/DQ pair between a Conv and, say, the Concat or Resize reading the same
    tensor. TensorRT would run those consumers on the dequantised (rounded) values. We want Q/DQ
    exactly on MatMul/Gemm/Conv inputs and every other op on the float tensor, as before
    quantisation. Returns how many inputs were rewired; pairs left unused are removed.
    """
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    rewired = 0
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue  # a weight's DQ: its consumers are the compute nodes themselves
        source = q.input[0]
        for node in graph.node:
            if node.op_type in QUANTIZED_OP_TYPES or node is dq:
                continue
            for i, name in enumerate(node.input):
                if name == dq.output[0]:
                    node.input[i] = source
                    rewired += 1
        for output in graph.output:
            if output.name == dq.output[0]:
                raise SmatError(f"cannot confine Q/DQ: {dq.name} produces a graph output")
    drop_unused_qdq(model)
    return rewired


def activation_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of MatMuls whose operands are both activations (attention products, position matrices)."""
    return [node.name for node in activation_products(model) if node.op_type == "MatMul"]


def quantize_int8_cpu(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    calibration: dict[str, np.ndarray],
    prepared_out: str | os.PathLike[str] | None = None,
) -> Path:
    """ONNX Runtime static QDQ (U8S8, per-channel weights) of the fused graph, for ONNX Runtime's CPU kernels.

    ``prepared_out``: also keep the float graph that was quantised (same node names, float weights),
    which :func:`smat_deploy.engines.int8_budget.fit_budget` returns layer groups to float from.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(_feeds(calibration))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    with tempfile.TemporaryDirectory() as scratch:
        fused = Path(scratch) / "fused.onnx"
        prepared = Path(scratch) / "prepared.onnx"
        fuse_transformer_ops(src, fused)
        try:
            quant_pre_process(str(fused), str(prepared), skip_symbolic_shape=True)
            prepared_model = onnx.load(str(prepared))
            excluded = activation_matmuls(prepared_model) + input_convs(prepared_model)
            quantize_static(
                str(prepared),
                str(dst),
                Reader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OP_TYPES),
                nodes_to_exclude=excluded,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
            if prepared_out is not None:
                shutil.copyfile(prepared, prepared_out)
        except SmatError:
            raise
        except Exception as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise SmatError(f"CPU INT8 quantisation (ONNX Runtime) failed: {first}") from None
    return Path(dst)
