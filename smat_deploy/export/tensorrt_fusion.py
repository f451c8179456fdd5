"""Will TensorRT fuse this INT8 file's Q/DQ into int8 kernels? A graph check, run on every TensorRT-bound INT8 file.

TensorRT builds an ONNX file with QuantizeLinear/DequantizeLinear as an explicitly quantised, strongly typed
network: the types in the file are the types it runs. Its documentation on explicit quantization ("Q/DQ layer
placement", "Q/DQ fusion") says what makes a quantised layer one int8 kernel, and
:func:`check_fusion` walks a model against those rules:

1. **A DequantizeLinear feeds the quantisable op directly.** TensorRT propagates DQ forward and fuses it into
   the MatMul/Gemm/Conv/ConvTranspose it meets; anything in between (a Cast, most often, left by a precision
   conversion) ends the fusion and the op runs in float on dequantised values.
2. **Both data inputs are quantised.** A MatMul/Gemm/Conv runs in int8 only when its activation and its
   weight both come from a DequantizeLinear; with one of them float it runs in float.
3. **A Q/DQ pair agrees.** The QuantizeLinear and the DequantizeLinear of an activation carry the same scale
   (value and type) and zero point; otherwise the pair is not a round trip and TensorRT cannot fold it.
4. **Per-tensor activations, per-channel weights along the output channels**: a weight's scale is a scalar or
   one value per output channel (Conv/ConvTranspose: weight axis 0 / 1; MatMul ``[K, N]``: the last axis;
   Gemm: axis 0 with ``transB``, else 1); an activation's scale is a scalar.
5. **Scales in the consumer's float type.** The DQ scales of one op and its bias share one float type (float16
   where the op computes in float16; opset 19 or later allows float16 scales); an op whose DQ scales are float32
   while its result is only cast to float16 computes in float32 for nothing.

The operator-level rules (symmetric zero points, positive constant scales, supported types) are the support
check's (:mod:`smat_deploy.export.tensorrt_support`); both run on each INT8 file at export.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from smat_deploy.errors import SmatError

#: Ops TensorRT fuses a DequantizeLinear into (their first two inputs: data and weight).
FUSING_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose")
#: The first opset whose QuantizeLinear/DequantizeLinear take float16 scales.
FP16_SCALE_OPSET = 19


class NotInt8Model(SmatError):
    """The file has no int8 Q/DQ at all: there is nothing to fuse (the CLI exits 2)."""


def _constant_values(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    values = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute:
            values[node.output[0]] = node.attribute[0].t
    return values


def _weight_axis(op: onnx.NodeProto, rank: int) -> int:
    """The output-channel axis of the weight (second input) of ``op``."""
    if op.op_type == "Conv":
        return 0
    if op.op_type == "ConvTranspose":
        return 1
    if op.op_type == "Gemm":
        return 0 if next((a.i for a in op.attribute if a.name == "transB"), 0) else 1
    return rank - 1  # MatMul [.., K, N]


def check_fusion(model: onnx.ModelProto) -> dict:
    """Check ``model`` against TensorRT's Q/DQ fusion rules (module docstring). Raises :class:`NotInt8Model` when
    the model has no int8 DequantizeLinear.

    Returns ``{"passed", "problems": [one line each], "int8_ops": {op: count}, "quantize_nodes",
    "dequantize_nodes", "scale_types": {type: count}}``; ``int8_ops`` counts the ops TensorRT can run as one int8
    kernel (both inputs straight from a DequantizeLinear that passes every rule).
    """
    graph = model.graph
    constants = _constant_values(model)
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    dqs = [n for n in graph.node if n.op_type == "DequantizeLinear"]

    def quantized_type(dq: onnx.NodeProto) -> int | None:
        if len(dq.input) > 2 and dq.input[2] in constants:
            return constants[dq.input[2]].data_type
        source = constants.get(dq.input[0])
        return source.data_type if source is not None else None

    if not any(quantized_type(dq) in (TensorProto.INT8, TensorProto.UINT8) for dq in dqs):
        raise NotInt8Model("not an INT8 Q/DQ model: it has no DequantizeLinear of int8 values")

    def scale_type(node: onnx.NodeProto) -> int | None:
        tensor = constants.get(node.input[1]) if len(node.input) > 1 else None
        return tensor.data_type if tensor is not None else None

    def label(node: onnx.NodeProto) -> str:
        return f"{node.name or node.output[0]} ({node.op_type})"

    problems: list[str] = []
    dq_problems: dict[str, int] = Counter()
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    scale_types: Counter[str] = Counter()
    for dq in dqs:
        kind = scale_type(dq)
        if kind is not None:
            scale_types[TensorProto.DataType.Name(kind)] += 1
        if kind == TensorProto.FLOAT16 and opset < FP16_SCALE_OPSET:
            problems.append(f"{label(dq)}: float16 scale needs opset {FP16_SCALE_OPSET}+, the model has {opset}")
        for consumer in consumers.get(dq.output[0], []):
            if consumer.op_type in FUSING_OPS and dq.output[0] in consumer.input[:2]:
                continue
            dq_problems[dq.name] += 1
            if consumer.op_type == "Cast":
                problems.append(
                    f"{label(dq)} feeds Cast {consumer.name}: a Cast between a DequantizeLinear and its op stops "
                    "TensorRT fusing them (fold it into a scale of the consumer's type)"
                )
            else:
                problems.append(
                    f"{label(dq)} feeds {label(consumer)}: TensorRT fuses a DequantizeLinear only into "
                    f"{'/'.join(FUSING_OPS)} (data or weight input)"
                )

    # rule 3: activation pairs agree
    for q in (n for n in graph.node if n.op_type == "QuantizeLinear"):
        for dq in consumers.get(q.output[0], []):
            if dq.op_type != "DequantizeLinear":
                continue  # the support check reports a Q that feeds anything else
            for index, what in ((1, "scale"), (2, "zero point")):
                a = constants.get(q.input[index]) if len(q.input) > index else None
                b = constants.get(dq.input[index]) if len(dq.input) > index else None
                if a is None or b is None:
                    if (a is None) != (b is None):
                        problems.append(f"{label(q)} and {label(dq)}: only one of the pair has a {what}")
                    continue
                if a.data_type != b.data_type:
                    problems.append(
                        f"{label(q)} and {label(dq)}: {what} types differ ({TensorProto.DataType.Name(a.data_type)} "
                        f"vs {TensorProto.DataType.Name(b.data_type)})"
                    )
                elif not np.array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b)):
                    problems.append(f"{label(q)} and {label(dq)}: the pair's {what}s differ, so it is no round trip")

    # rules 2, 4, 5 per quantised op
    int8_ops: Counter[str] = Counter()
    for op in (n for n in graph.node if n.op_type in FUSING_OPS):
        sources = [producers.get(name) for name in op.input[:2]]
        from_dq = [s is not None and s.op_type == "DequantizeLinear" for s in sources]
        if not any(from_dq):
            continue
        if not all(from_dq):
            which = "weight" if from_dq[0] else "data"
            problems.append(f"{label(op)}: its {which} input is not quantised, so TensorRT runs it in float")
            continue
        clean = True
        data_dq, weight_dq = sources
        weight = constants.get(weight_dq.input[0])
        if weight is None:  # a weight quantised through QuantizeLinear: its float source is the initializer
            q = producers.get(weight_dq.input[0])
            weight = constants.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
        for role, dq in (("data", data_dq), ("weight", weight_dq)):
            scale = constants.get(dq.input[1]) if len(dq.input) > 1 else None
            size = 1 if scale is None else int(np.prod(scale.dims)) if scale.dims else 1
            if role == "data" and size != 1 and op.op_type != "MatMul":
                problems.append(f"{label(op)}: its data input has {size} scales; activations are per-tensor")
                clean = False
            if role == "weight" and size != 1 and weight is not None:
                axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) % len(weight.dims)
                expected = _weight_axis(op, len(weight.dims))
                if axis != expected or size != weight.dims[expected]:
                    problems.append(
                        f"{label(op)}: weight scales along axis {axis} ({size} values); TensorRT needs the "
                        f"output-channel axis {expected} ({weight.dims[expected]} values)"
                    )
                    clean = False
        kinds = {scale_type(data_dq), scale_type(weight_dq)}
        bias = constants.get(op.input[2]) if len(op.input) > 2 and op.input[2] else None
        if bias is not None and bias.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16):
            kinds.add(bias.data_type)
        if len(kinds) > 1:
            names = ", ".join(sorted(TensorProto.DataType.Name(k) for k in kinds if k is not None))
            problems.append(f"{label(op)}: its scales and bias mix float types ({names})")
            clean = False
        readers = consumers.get(op.output[0], [])
        to_fp16 = [
            r
            for r in readers
            if r.op_type == "Cast" and next((a.i for a in r.attribute if a.name == "to"), None) == TensorProto.FLOAT16
        ]
        if readers and len(to_fp16) == len(readers) and TensorProto.FLOAT in kinds:
            problems.append(
                f"{label(op)}: float32 scales on an op whose result is only cast to float16; give its "
                "DequantizeLinears float16 scales"
            )
            clean = False
        if clean and not any(dq_problems.get(dq.name) for dq in (data_dq, weight_dq)):
            int8_ops[op.op_type] += 1
    return {
        "passed": not problems,
        "problems": problems,
        "int8_ops": dict(sorted(int8_ops.items())),
        "quantize_nodes": sum(n.op_type == "QuantizeLinear" for n in graph.node),
        "dequantize_nodes": len(dqs),
        "scale_types": dict(sorted(scale_types.items())),
    }


__all__ = ["FUSING_OPS", "NotInt8Model", "check_fusion"]
