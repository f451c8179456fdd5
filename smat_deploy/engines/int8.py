"""INT8 in two flavours, both with explicit Q/DQ decided in the ONNX file.

- **TensorRT INT8** (``smat_int8.onnx``): NVIDIA Model Optimizer places symmetric int8 Q/DQ pairs
  (zero point 0, per-channel weights) on the inputs of the weight-bearing MatMul, Gemm and Conv nodes
  only, calibrated on the calibration set. Everything else stays in float32
  (:data:`HIGH_PRECISION_DTYPE`): Model Optimizer's default converts every unquantised op to fp16,
  and that alone put mean |alpha diff| near 2e-2 (measured; see docs), while AutoCast's own op
  exclusions (LayerNorm, Softmax, reductions kept fp32) did not lower it. Activation ranges come from
  ``max`` calibration (:data:`CALIBRATION_METHOD`): entropy calibration clipped the decoder's
  activations and tripled the max |diff|. TensorRT 11 turns exactly these Q/DQ pairs into int8 kernels.
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
from collections import Counter
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
#: Precision of everything Model Optimizer does not quantise (its default, "fp16", costs 10x the error).
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


def qdq_structure(model: onnx.ModelProto) -> dict:
    """Where the Q/DQ nodes sit and how they quantise, for the TensorRT INT8 model's checks.

    Returns counts plus a list of ``problems``: a DequantizeLinear feeding anything but
    MatMul/Gemm/Conv, a non-int8 or non-zero zero point (asymmetric), a QuantizeLinear not followed by
    a DequantizeLinear.
    """
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    constants = {out: node.attribute[0].t for node in graph.node if node.op_type == "Constant" for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    problems: list[str] = []
    quantized_inputs = Counter()
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and any(
            c.op_type != "DequantizeLinear" for c in consumers.get(node.output[0], [])
        ):
            problems.append(f"{node.name}: QuantizeLinear not followed by DequantizeLinear")
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zero_point_name = node.input[2] if len(node.input) > 2 else ""
        if not zero_point_name:
            if node.op_type == "QuantizeLinear":
                problems.append(f"{node.name}: no zero point (defaults to uint8)")
        else:
            tensor = initializers.get(zero_point_name) or constants.get(zero_point_name)
            if tensor is None:
                problems.append(f"{node.name}: zero point {zero_point_name} is not a constant")
            else:
                values = onnx.numpy_helper.to_array(tensor)
                if tensor.data_type != onnx.TensorProto.INT8:
                    problems.append(
                        f"{node.name}: zero point is {onnx.TensorProto.DataType.Name(tensor.data_type)}, not INT8"
                    )
                if np.any(values != 0):
                    problems.append(f"{node.name}: non-zero zero point (asymmetric)")
        if node.op_type == "DequantizeLinear":
            for consumer in consumers.get(node.output[0], []):
                if consumer.op_type not in QUANTIZED_OP_TYPES:
                    problems.append(f"{node.name}: feeds {consumer.op_type} {consumer.name}")
                else:
                    quantized_inputs[consumer.op_type] += 1
    return {
        "quantize_nodes": sum(n.op_type == "QuantizeLinear" for n in graph.node),
        "dequantize_nodes": sum(n.op_type == "DequantizeLinear" for n in graph.node),
        "quantized_inputs_by_op": dict(quantized_inputs),
        "problems": problems,
    }
