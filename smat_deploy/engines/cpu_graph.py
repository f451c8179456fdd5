"""ONNX Runtime CPU graph (``smat_cpu.onnx``): the float32 export rewritten for ORT's CPU kernels.

The arithmetic stays float32 and the same up to summation order (|diff| about 1e-6 against
``smat.onnx``); only the graph changes, so ONNX Runtime runs fewer, larger kernels:

1. **Transformer fusions** from onnxscript's ONNX Runtime rewriter (Microsoft's; the rules ORT's own
   tooling uses for exported transformers). Each DINOv2 block's attention becomes one
   ``com.microsoft.MultiHeadAttention``, whose CPU kernel is a flash attention (no 6 x N x N score
   tensor in memory, no separate Softmax and head transposes); GELU plus its bias becomes
   ``BiasGelu``; residual add plus LayerNorm becomes ``SkipLayerNormalization``. ONNX Runtime's
   in-session optimiser does not find these patterns in the graph ``torch.export`` produces.
2. **Channel-concat convolutions split** (:func:`split_concat_convs`): the decoder's fusion blocks
   convolve concatenated feature maps (67, 176, 352 and 577 channels). Each concatenation is a copy
   of a large map, and 67 and 577 channels do not fit ORT's blocked NCHWc kernels, which then take a
   slower path. ``Conv(Concat(a, b), W) = Conv(a, W_a) + Conv(b, W_b)`` exactly, and the parts run
   in the fast kernels without the copy.

The result needs ONNX Runtime (``com.microsoft`` operators), so TensorRT engines are built from
``smat.onnx`` and its fp16/int8 variants instead. The CPU INT8 model is quantised from the graph of
step 1 (not 2: quantising the split parts separately rounds each partial sum and doubled the alpha
error in our measurements).
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

from smat_deploy.errors import SmatError

#: Fusions that must happen on an SMat export (12 DINOv2 blocks); fewer means the rewriter no longer
#: recognises the graph and the "optimised" model would be the plain one under another name.
EXPECTED_FUSIONS = {"attention": 12, "bias_gelu": 12}


def _fused(src: str | os.PathLike[str]) -> tuple[onnx.ModelProto, dict[str, int]]:
    """Step 1 in memory: the fused model and how many of each fusion onnxscript made."""
    import onnx_ir as ir
    import onnx_ir.passes.common as common_passes

    try:
        # ``optimize_for_ort`` (the public entry) also applies FusedMatMul rules whose transposed-batch
        # rewrite produces a MatMul ONNX Runtime rejects on this graph; the transformer fusions alone
        # are what we want, and ONNX Runtime makes its own FusedMatMuls at session creation.
        from onnxscript.rewriter.ort_fusions._core import fuse_xformers
    except ImportError as err:
        raise SmatError(
            f"this onnxscript has no ONNX Runtime transformer fusions ({err}); install onnxscript 0.7"
        ) from None
    model = ir.load(str(src))
    model, counts = fuse_xformers(model)
    common_passes.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1)(model)
    common_passes.RemoveInitializersFromInputsPass()(model)
    fused = {
        "attention": counts.get("sdpa_via_mha", 0) + counts.get("mha1", 0) + counts.get("mha2", 0),
        "bias_gelu": counts.get("bias_gelu", 0),
        "skip_layer_norm": counts.get("skip_layer_normalization", 0),
    }
    missing = [f"{k} {fused[k]} of {n}" for k, n in EXPECTED_FUSIONS.items() if fused[k] < n]
    if missing:
        raise SmatError(f"{src} is not the SMat graph the CPU fusions expect (fused {', '.join(missing)})")
    return ir.to_proto(model), fused


def fuse_transformer_ops(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> dict[str, int]:
    """Step 1: onnxscript's transformer fusions for ONNX Runtime; returns how many of each it made."""
    model, counts = _fused(src)
    onnx.save(model, str(dst))
    return counts


def _channels(model: onnx.ModelProto) -> dict[str, int]:
    """Static channel count (dim 1) of every 4-D tensor, from ONNX shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    channels = {}
    for info in [*graph.value_info, *graph.input, *graph.output]:
        dims = info.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[1].HasField("dim_value"):
            channels[info.name] = dims[1].dim_value
    return channels


def split_concat_convs(model: onnx.ModelProto) -> int:
    """Step 2, in place: ``Conv(Concat(x_1..x_n, axis=1), W, b)`` -> ``sum_i Conv(x_i, W_i)`` (+ b once).

    Only where the Concat feeds nothing else, the Conv is ungrouped with a constant weight, and every
    part's channel count is known. Returns how many convolutions were split.
    """
    graph = model.graph
    channels = _channels(model)
    producer = {out: node for node in graph.node for out in node.output}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    initializers = {init.name: init for init in graph.initializer}
    split = 0
    for conv in [n for n in graph.node if n.op_type == "Conv" and n.domain in ("", "ai.onnx")]:
        concat = producer.get(conv.input[0])
        if concat is None or concat.op_type != "Concat" or uses.get(concat.output[0]) != 1:
            continue
        axis = next((a.i for a in concat.attribute if a.name == "axis"), None)
        group = next((a.i for a in conv.attribute if a.name == "group"), 1)
        if axis not in (1, -3) or group != 1 or conv.input[1] not in initializers:
            continue
        parts = [channels.get(name) for name in concat.input]
        weight = numpy_helper.to_array(initializers[conv.input[1]])
        if None in parts or sum(parts) != weight.shape[1]:
            continue
        new_nodes, partial, offset = [], [], 0
        for i, (name, count) in enumerate(zip(concat.input, parts, strict=True)):
            weight_name = f"{conv.input[1]}__part{i}"
            graph.initializer.append(
                numpy_helper.from_array(np.ascontiguousarray(weight[:, offset : offset + count]), weight_name)
            )
            offset += count
            inputs = [name, weight_name] + ([conv.input[2]] if i == 0 and len(conv.input) > 2 else [])
            part = helper.make_node("Conv", inputs, [f"{conv.output[0]}__part{i}"], name=f"{conv.name}__part{i}")
            part.attribute.extend(conv.attribute)
            part.metadata_props.extend(conv.metadata_props)  # the layer it came from (INT8 layer groups)
            new_nodes.append(part)
            partial.append(part.output[0])
        total = partial[0]
        for i, part in enumerate(partial[1:], start=1):
            out = conv.output[0] if i == len(partial) - 1 else f"{conv.output[0]}__sum{i}"
            new_nodes.append(helper.make_node("Add", [total, part], [out], name=f"{conv.name}__sum{i}"))
            total = out
        position = list(graph.node).index(concat)  # the parts' inputs all exist before the Concat
        graph.node.remove(conv)
        graph.node.remove(concat)
        for k, node in enumerate(new_nodes):
            graph.node.insert(position + k, node)
        if not any(conv.input[1] in node.input for node in graph.node):
            graph.initializer.remove(initializers.pop(conv.input[1]))
        split += 1
    return split


def make_cpu_graph(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, split_convs: bool = True
) -> dict[str, int]:
    """``src`` (the float32 export) -> ``dst`` rewritten for ONNX Runtime CPU; returns what was rewritten."""
    model, counts = _fused(src)
    if split_convs:
        counts["split_convs"] = split_concat_convs(model)
        onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return counts


def uses_onnxruntime_operators(model: onnx.ModelProto) -> list[str]:
    """Operators outside the standard ONNX domain (``com.microsoft`` contrib ops), as ``domain.Op``."""
    return sorted({f"{n.domain}.{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})


__all__ = ["fuse_transformer_ops", "make_cpu_graph", "split_concat_convs", "uses_onnxruntime_operators"]
