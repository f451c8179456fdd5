"""What a model computes in: the share of its FLOPs and of its activation bytes in int8, fp16 and fp32.

Measured on one real input (the shapes SMat's dynamic graph takes for it), by running the model with its
intermediate tensors as extra outputs, a few hundred at a time so memory stays bounded:

- **FLOPs**: every MatMul/Gemm/Conv/ConvTranspose (and ONNX Runtime's fused MultiHeadAttention), 2 per
  multiply-add. An op whose two data inputs both come from a DequantizeLinear computes in **int8** (what
  TensorRT fuses; ONNX Runtime's int8 kernels take the same QDQ groups); any other op in the float type of its
  result. The attention products (two activations multiplied) are also reported on their own.
- **Activation bytes**: every tensor a node produces from the inputs (weights, the DequantizeLinear of a
  weight, and shape arithmetic are not activations), at its element size: int8 (quantised tensors), fp16, fp32.

These are properties of the file, not of a runtime: TensorRT runs the types an explicitly quantised, strongly
typed ONNX file names, so they are what TensorRT runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper

from smat_deploy._ort import session as ort_session
from smat_deploy.engines.int8_budget import activation_products, constant_tensors, flops_of

COMPUTE_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose", "MultiHeadAttention")
TYPES = ("int8", "fp16", "fp32")
#: Extra outputs per run (bounds the memory of the measurement).
CHUNK = 300
_BY_DTYPE = {np.dtype(np.int8): "int8", np.dtype(np.uint8): "int8", np.dtype(np.float16): "fp16"}
_BY_DTYPE[np.dtype(np.float32)] = "fp32"


def _shapes_and_types(
    model: onnx.ModelProto, feed: dict[str, np.ndarray], names: Sequence[str], precision: str | None
) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in list(inferred.graph.value_info) + list(inferred.graph.output)
        if v.type.tensor_type.elem_type
    }
    types.update({i.name: i.type.tensor_type.elem_type for i in model.graph.input})
    types.update({i.name: i.data_type for i in model.graph.initializer})
    for node in model.graph.node:  # ops shape inference does not know (ONNX Runtime's contrib kernels)
        known = next((types[i] for i in node.input if i in types), None)
        for out in node.output:
            if out and out not in types and known is not None:
                types[out] = known
    existing = {o.name for o in model.graph.output}
    wanted = [n for n in names if n in types or n in existing]
    found: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        probe.graph.output.extend(
            helper.make_tensor_value_info(name, types[name], None) for name in chunk if name not in existing
        )
        values = ort_session(probe, precision=precision).run(chunk, feed)
        found.update(
            {name: (value.shape, value.dtype) for name, value in zip(chunk, values, strict=True) if value is not None}
        )
    return found


def _shares(totals: dict[str, float]) -> dict[str, float]:
    whole = sum(totals.values())
    return {kind: round(totals[kind] / whole, 4) if whole else 0.0 for kind in TYPES}


def precision_shares(model: onnx.ModelProto, feed: dict[str, np.ndarray], precision: str | None = None) -> dict:
    """FLOP and activation-byte shares of ``model`` per type on ``feed`` (see the module docstring).

    Returns ``{"flops": {"int8", "fp16", "fp32"}, "activation_bytes": {...}, "gflops", "activation_mb",
    "attention_products": {"gflops", "fp16", ...}, "measured_at"}`` (shares in [0, 1]).
    """
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    constants = constant_tensors(model)
    from_inputs = {i.name for i in graph.input}
    for node in graph.node:  # topological order: what derives from the inputs (not weights, not shapes)
        if node.op_type not in ("Shape", "Size") and any(i in from_inputs for i in node.input):
            from_inputs.update(node.output)
    compute = [n for n in graph.node if n.op_type in COMPUTE_OPS]
    activations = [
        out
        for node in graph.node
        for out in node.output
        if out and out in from_inputs and out not in constants and node.op_type not in ("Shape", "Size")
    ]
    operands = [name for node in compute for name in (*node.input[:2], node.output[0])]
    names = list(dict.fromkeys(activations + operands))
    measured = _shapes_and_types(model, feed, [n for n in names if n not in feed], precision)
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    shapes.update({name: value.shape for name, value in feed.items()})
    shapes.update({name: shape for name, (shape, _) in measured.items()})

    def kind_of(node: onnx.NodeProto) -> str:
        sources = [producers.get(name) for name in node.input[:2]]
        if all(s is not None and s.op_type == "DequantizeLinear" for s in sources):
            return "int8"
        dtype = measured.get(node.output[0], (None, np.dtype(np.float32)))[1]
        return _BY_DTYPE.get(np.dtype(dtype), "fp32")

    flops = dict.fromkeys(TYPES, 0.0)
    products = dict.fromkeys(TYPES, 0.0)
    product_names = {n.name for n in activation_products(model)}
    for node in compute:
        if not all(name in shapes for name in (*node.input[:2], node.output[0])):
            continue
        count, kind = flops_of(node, shapes), kind_of(node)
        flops[kind] += count
        if node.name in product_names:
            products[kind] += count
    activation_bytes = dict.fromkeys(TYPES, 0.0)
    for name in activations:
        if name in measured:
            shape, dtype = measured[name]
            kind = _BY_DTYPE.get(np.dtype(dtype))
            if kind is not None:
                activation_bytes[kind] += int(np.prod(shape)) * np.dtype(dtype).itemsize
    image = feed["image"].shape
    return {
        "measured_at": f"{image[-2]}x{image[-1]}",
        "gflops": round(sum(flops.values()) / 1e9, 2),
        "flops": _shares(flops),
        "activation_mb": round(sum(activation_bytes.values()) / 1e6, 1),
        "activation_bytes": _shares(activation_bytes),
        "attention_products": {"gflops": round(sum(products.values()) / 1e9, 2), **_shares(products)},
    }


__all__ = ["COMPUTE_OPS", "TYPES", "precision_shares"]
