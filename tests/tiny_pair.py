"""A tiny interactive pair for fast tests: ``<stem>_encoder.onnx`` / ``<stem>_decoder.onnx`` with the contract's
pair I/O (names, dtypes, symbolic shapes), and manifests naming each other.

The encoder fills every embedding tensor with 0.5 at the shape the padded grid gives (``H // 14 + 1``); the
decoder returns ``prompt * state``. Shared by the TensorRT pair build and the Triton repository tests.

With ``carry=True`` the embedding carries the photo instead: tensor ``k`` of :data:`EMBEDDING` (k = 1..5) holds
``k * mean(image)`` everywhere, and the decoder returns ``prompt * state * mean_k(mean(tensor k) / k)``, which
is ``prompt * state * mean(image)`` only when every tensor reached the decoder under its own name.
"""

from __future__ import annotations

import json

import onnx
from onnx import TensorProto, helper

from smat_deploy.contract import DECODER_INPUTS, EMBEDDING, PATCH_SIZE

#: Grid scale of each spatial embedding tensor.
SCALES = {"features": 1, "image16": 16, "detail2": 4, "fusion0": 2}


def _value(name: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def make_tiny_pair(folder, *, weights=("w" * 64, "w" * 64), stem="smat", decoder_partner=None, batch=None, carry=False):
    """Write the pair into ``folder``; ``weights`` are the two manifests' digests, ``decoder_partner`` overrides the
    decoder's partner, ``batch`` fixes the batch size, ``carry`` makes the embedding carry the photo (see the module's
    text). Returns the encoder's and the decoder's paths."""
    folder.mkdir(parents=True, exist_ok=True)
    b = batch if batch is not None else "batch"

    def shaped(spec):
        return [b if dim == "batch" else dim for dim in spec["shape"]]

    ints = lambda name, values: helper.make_tensor(name, TensorProto.INT64, [len(values)], values)  # noqa: E731
    nodes = [
        helper.make_node("Shape", ["image"], ["shape"]),
        helper.make_node("Slice", ["shape", "i0", "i1"], ["b"]),
        helper.make_node("Slice", ["shape", "i2", "i3"], ["h"]),
        helper.make_node("Slice", ["shape", "i3", "i4"], ["w"]),
        helper.make_node("Div", ["h", "patch"], ["h14"]),
        helper.make_node("Div", ["w", "patch"], ["w14"]),
        helper.make_node("Add", ["h14", "i1"], ["gh"]),
        helper.make_node("Add", ["w14", "i1"], ["gw"]),
    ]
    for name, scale in SCALES.items():
        nodes += [
            helper.make_node("Mul", ["gh", f"s{scale}"], [f"gh_{name}"]),
            helper.make_node("Mul", ["gw", f"s{scale}"], [f"gw_{name}"]),
        ]
    for spec in EMBEDDING:
        name = spec["name"]
        dims = ["b", f"c_{name}", *((f"gh_{name}", f"gw_{name}") if name in SCALES else ())]
        nodes.append(helper.make_node("Concat", dims, [f"{name}_shape"], axis=0))
        value = helper.make_tensor("v", 1, [1], [0.0 if carry else 0.5])
        if carry:
            nodes += [
                helper.make_node("ConstantOfShape", [f"{name}_shape"], [f"{name}_zeros"], value=value),
                helper.make_node("Mul", ["image_mean", f"k_{name}"], [f"{name}_value"]),
                helper.make_node("Add", [f"{name}_zeros", f"{name}_value"], [name]),
            ]
        else:
            nodes.append(helper.make_node("ConstantOfShape", [f"{name}_shape"], [name], value=value))
    if carry:
        nodes.insert(0, helper.make_node("ReduceMean", ["image"], ["image_mean"], keepdims=0))
    constants = [ints(f"i{i}", [i]) for i in range(5)] + [ints("patch", [PATCH_SIZE])]
    weights_k = {spec["name"]: float(k) for k, spec in enumerate(EMBEDDING, start=1)}
    if carry:
        constants += [helper.make_tensor(f"k_{name}", TensorProto.FLOAT, [], [k]) for name, k in weights_k.items()]
    constants += [ints(f"s{s}", [s]) for s in SCALES.values()]
    constants += [ints(f"c_{spec['name']}", [spec["shape"][1]]) for spec in EMBEDDING]
    encoder = helper.make_graph(
        nodes,
        "tiny_encoder",
        [_value("image", [b, 3, "height", "width"])],
        [_value(spec["name"], shaped(spec)) for spec in EMBEDDING],
        initializer=constants,
    )
    decoder_nodes = [
        helper.make_node("Reshape", ["state", "state_shape"], ["state_4d"]),
        helper.make_node("Mul", ["prompt", "state_4d"], ["prompt_state" if carry else "alpha"]),
    ]
    decoder_constants = [ints("state_shape", [-1, 1, 1, 1])]
    if carry:
        for name, k in weights_k.items():
            decoder_nodes += [
                helper.make_node("ReduceMean", [name], [f"{name}_mean"], keepdims=0),
                helper.make_node("Div", [f"{name}_mean", f"k_{name}"], [f"{name}_carried"]),
            ]
            decoder_constants.append(helper.make_tensor(f"k_{name}", TensorProto.FLOAT, [], [k * len(weights_k)]))
        decoder_nodes += [
            helper.make_node("Sum", [f"{name}_carried" for name in weights_k], ["carried"]),
            helper.make_node("Mul", ["prompt_state", "carried"], ["alpha"]),
        ]
    decoder = helper.make_graph(
        decoder_nodes,
        "tiny_decoder",
        [_value(spec["name"], shaped(spec)) for spec in DECODER_INPUTS],
        [_value("alpha", [b, 1, "height", "width"])],
        initializer=decoder_constants,
    )
    paths = {"encoder": folder / f"{stem}_encoder.onnx", "decoder": folder / f"{stem}_decoder.onnx"}
    partners = {"encoder": paths["decoder"].name, "decoder": decoder_partner or paths["encoder"].name}
    for (role, graph), digest in zip((("encoder", encoder), ("decoder", decoder)), weights, strict=True):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        model.ir_version = 9
        onnx.checker.check_model(model)
        onnx.save(model, str(paths[role]))
        manifest = {"precision": "float32", "pair": {"role": role, "partner": partners[role], "weights_sha256": digest}}
        paths[role].with_suffix(".json").write_text(json.dumps(manifest))
    return paths["encoder"], paths["decoder"]
