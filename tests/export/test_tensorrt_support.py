"""TensorRT's ONNX support matrix as a graph check: each rule on a tiny hand-built graph, then the real export."""

import json
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from smat_deploy.export import pipeline, sequence
from smat_deploy.export.tensorrt_support import TENSORRT_OPS, check_tensorrt_support

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, initializers=(), opset=18, functions=()):
    graph = helper.make_graph(nodes, "g", list(inputs), list(outputs), initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, functions=list(functions))


def _io(name, elem=F, dims=(1, 3, 8, 8)):
    return helper.make_tensor_value_info(name, elem, None if dims is None else list(dims))


def _const(name, values, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(values, dtype), name)


def _problems(model):
    result = check_tensorrt_support(model)
    assert result["passed"] == (not result["problems"])
    return result["problems"]


# -- operators, types, attributes ---------------------------------------------------------------------
def _resize(**attrs):
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", **attrs)
    scales = _const("scales", [1, 1, 2, 2])
    return _model([node], [_io("x")], [_io("y", dims=(1, 3, 16, 16))], [scales])


def test_a_supported_resize_passes_and_counts_its_operators():
    result = check_tensorrt_support(_resize(mode="linear", coordinate_transformation_mode="half_pixel", antialias=0))
    assert result["passed"] and result["problems"] == []
    assert result["operators"] == {"Resize": 1} and result["opset"] == 18 and result["untyped_inputs"] == 0
    assert "operators.md" in result["matrix"] and "TensorRT 10" in result["matrix"]


@pytest.mark.parametrize(
    ("attrs", "rule"),
    [
        ({"mode": "linear", "antialias": 1}, "antialias"),
        ({"mode": "cubic"}, "mode 'cubic'"),
        ({"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"}, "coordinate_transformation_mode"),
        (
            {"mode": "nearest", "coordinate_transformation_mode": "tf_half_pixel_for_nn", "nearest_mode": "floor"},
            "round_prefer_floor",
        ),
        ({"mode": "linear", "keep_aspect_ratio_policy": "not_larger"}, "keep_aspect_ratio_policy"),
    ],
)
def test_resize_restrictions_are_flagged_naming_node_op_and_rule(attrs, rule):
    problems = _problems(_resize(**attrs))
    assert len(problems) == 1 and problems[0].startswith("up (Resize): ") and rule in problems[0]


def test_runtime_scales_with_partial_axes_are_flagged():
    shape = helper.make_node("Shape", ["x"], ["s"], start=2)
    cast = helper.make_node("Cast", ["s"], ["sf"], to=F)
    div = helper.make_node("Div", ["two", "sf"], ["scales"])
    resize = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="linear", axes=[2, 3])
    model = _model([shape, cast, div, resize], [_io("x")], [_io("y")], [_const("two", [2.0, 2.0])])
    assert [p for p in _problems(model) if "iota" in p] == [
        "up (Resize): axes must be an iota of length rank(input) when scales is a runtime tensor"
    ]


@pytest.mark.parametrize(
    ("node", "elem", "rule"),
    [
        (helper.make_node("Add", ["x", "x"], ["y"], name="n"), TensorProto.DOUBLE, "x is DOUBLE"),
        (helper.make_node("Relu", ["x"], ["y"], name="n"), TensorProto.INT8, "x is INT8"),
        (helper.make_node("MatMul", ["x", "x"], ["y"], name="n"), TensorProto.INT32, "x is INT32"),
        (helper.make_node("Cast", ["x"], ["y"], name="n", to=TensorProto.DOUBLE), F, "cast to DOUBLE"),
        (helper.make_node("Floor", ["x"], ["y"], name="n"), TensorProto.INT64, "x is INT64"),
    ],
)
def test_types_the_matrix_forbids_are_flagged(node, elem, rule):
    out = helper.make_tensor_value_info("y", TensorProto.UNDEFINED, None)
    problems = _problems(_model([node], [_io("x", elem, (4, 4))], [out]))
    assert any(rule in p and p.startswith(f"n ({node.op_type})") for p in problems), problems


def test_integer_shape_arithmetic_and_bool_logic_pass():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Mod", ["s", "two"], ["m"]),
        helper.make_node("Equal", ["m", "zero"], ["e"]),
        helper.make_node("And", ["e", "e"], ["b"]),
        helper.make_node("Where", ["b", "s", "m"], ["y"]),
    ]
    ints = [_const("two", [2], np.int64), _const("zero", [0], np.int64)]
    assert _problems(_model(nodes, [_io("x")], [_io("y", TensorProto.INT64, (4,))], ints)) == []


def test_contrib_unknown_and_unsupported_ops_are_flagged():
    nodes = [
        helper.make_node("BiasGelu", ["x", "b"], ["g"], name="gelu", domain="com.microsoft"),
        helper.make_node("FancyOp", ["g"], ["f"], name="fancy"),
        helper.make_node("Unique", ["f"], ["y"], name="uniq"),
    ]
    model = _model(nodes, [_io("x", dims=(2, 4))], [_io("y", dims=(None,))], [_const("b", np.zeros(4))])
    result = check_tensorrt_support(model)
    assert not result["passed"]
    assert result["operators"] == {"FancyOp": 1, "Unique": 1, "com.microsoft.BiasGelu": 1}
    problems = result["problems"]
    assert problems[0].startswith("gelu (BiasGelu):") and "com.microsoft" in problems[0]
    assert problems[1] == "fancy (FancyOp): not in TensorRT's support matrix"
    assert problems[2].startswith("uniq (Unique): marked unsupported")


def test_ops_inside_model_local_functions_are_checked():
    body = [helper.make_node("Unique", ["a"], ["b"])]
    function = helper.make_function("local", "Wrapped", ["a"], ["b"], body, [helper.make_opsetid("", 18)])
    call = helper.make_node("Wrapped", ["x"], ["y"], name="call", domain="local")
    model = _model([call], [_io("x", dims=(4,))], [_io("y", dims=(None,))], functions=[function])
    model.opset_import.append(helper.make_opsetid("local", 1))
    result = check_tensorrt_support(model)
    assert result["operators"] == {"Unique": 1} and "marked unsupported" in result["problems"][0]


def test_layer_norm_pad_reduce_and_opset_restrictions():
    ln = helper.make_node("LayerNormalization", ["x", "w", "b"], ["y", "mean"], name="ln", axis=-1)
    pad = helper.make_node("Pad", ["y", "pads", "", "axes"], ["p"], name="pad", mode="wrap")
    reduce = helper.make_node("ReduceSum", ["p", "axes"], ["r"], name="sum")
    inits = [_const("w", np.ones(8)), _const("b", np.zeros(8)), _const("pads", [1, 1], np.int64)]
    outputs = [_io("r", dims=None), _io("mean", dims=None)]
    inputs = [_io("x"), helper.make_tensor_value_info("axes", TensorProto.INT64, [1])]
    problems = _problems(_model([ln, pad, reduce], inputs, outputs, inits))
    assert [p.split(":")[0] for p in problems] == ["ln (LayerNormalization)", "pad (Pad)", "sum (ReduceSum)"]
    assert "only the first output Y" in problems[0] and "axes must be an initializer" in problems[1]
    assert "not a constant" in problems[2]
    old = _resize(mode="linear")
    old.opset_import[0].version = 8
    assert _problems(old) == ["model: default-domain opset 8: TensorRT supports opsets 9 to 24"]


def test_the_table_covers_every_op_of_the_smat_graphs():
    lines = (
        "Add And Cast Clip Concat Conv Div Equal Erf Expand Floor Gather Gemm LayerNormalization MatMul Min Mod Mul",
        "Pad Pow Range Reciprocal ReduceL2 ReduceMax ReduceMin ReduceSum Relu Reshape Resize Shape Sigmoid Slice",
        "Softmax Split Squeeze Sub Transpose Unsqueeze QuantizeLinear DequantizeLinear",
    )
    smat_ops = [op for line in lines for op in line.split()]
    assert all(TENSORRT_OPS[op].supported and TENSORRT_OPS[op].types for op in smat_ops)


# -- explicit quantization ---------------------------------------------------------------------------
def _qdq(zero_point=None, scale=None, weight_axis=1, weight_scales=None, scale_input=False, extra_nodes=()):
    """x -> Q/DQ (per tensor) -> MatMul with a weight through Q/DQ (per channel along ``weight_axis``)."""
    zero_point = _const("zp", 0, np.int8) if zero_point is None else zero_point
    weight = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    channels = weight.shape[weight_axis]
    weight_scales = np.full(channels, 0.02, np.float32) if weight_scales is None else weight_scales
    inits = [
        zero_point,
        _const("w", weight),
        _const("w_scale", weight_scales),
        _const("w_zp", np.zeros(len(weight_scales)), np.int8),
    ]
    if not scale_input:
        inits.append(_const("scale", 0.05 if scale is None else scale))
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", zero_point.name], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "scale", zero_point.name], ["xd"], name="dq"),
        helper.make_node("QuantizeLinear", ["w", "w_scale", "w_zp"], ["wq"], name="wq", axis=weight_axis),
        helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zp"], ["wd"], name="wdq", axis=weight_axis),
        helper.make_node("MatMul", ["xd", "wd"], ["y"], name="mm"),
        *extra_nodes,
    ]
    inputs = [_io("x", dims=(2, 8))] + ([_io("scale", dims=())] if scale_input else [])
    return _model(nodes, inputs, [_io("y", dims=(2, 4))], inits, opset=19)


def test_clean_symmetric_int8_qdq_passes():
    result = check_tensorrt_support(_qdq())
    assert result["passed"], result["problems"]
    assert result["operators"] == {"DequantizeLinear": 2, "MatMul": 1, "QuantizeLinear": 2}


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"zero_point": _const("zp", 3, np.int8)}, "non-zero zero point"),
        ({"zero_point": _const("zp", 0, np.uint8)}, "quantized type UINT8"),
        ({"scale_input": True}, "scale input scale is not a build-time constant"),
        ({"scale": -0.05}, "strictly positive"),
        ({"weight_axis": 0}, "per-channel axis 0 for MatMul mm: its output-channel axis is 1"),
        ({"weight_scales": np.full(3, 0.02, np.float32)}, "3 scales along axis 1 of a [8, 4] tensor"),
    ],
)
def test_qdq_rule_violations_are_flagged(kwargs, rule):
    problems = _problems(_qdq(**kwargs))
    assert any(rule in p for p in problems), problems


def test_qdq_placement_rules():
    # a QuantizeLinear read by a non-DQ op, and per-channel scales on an activation
    leak = helper.make_node("Cast", ["xq"], ["leak"], name="leak", to=F)
    problems = _problems(_qdq(extra_nodes=[leak]))
    assert any(p.startswith("q (QuantizeLinear)") and "feeds Cast" in p for p in problems), problems
    model = _qdq()
    for node in model.graph.node:
        if node.name in ("q", "dq"):
            node.input[1], node.input[2] = "w_scale", "w_zp"
            node.attribute.append(helper.make_attribute("axis", 1))
    model.graph.input[0].CopyFrom(_io("x", dims=(2, 4)))
    problems = _problems(model)
    assert any(p.startswith("q (QuantizeLinear)") and "activation" in p for p in problems), problems
    # no zero point: ONNX quantizes to uint8
    model = _qdq()
    for node in model.graph.node:
        if node.name in ("q", "dq"):
            del node.input[2]
    problems = _problems(model)
    assert any(p.startswith("q (QuantizeLinear)") and "UINT8" in p for p in problems), problems


# -- integration -------------------------------------------------------------------------------------
def test_export_warns_and_records_passed_false_when_the_matrix_fails(monkeypatch, tmp_path):
    """The float32 export still succeeds (ONNX Runtime users) but warns and records the failed check."""

    @dataclass
    class Config:
        depth: int = 1

    class Fake(torch.nn.Module):
        config = Config()

    def fake_export(model, path, opset):
        node = helper.make_node("BiasGelu", ["image", "b"], ["alpha"], name="gelu", domain="com.microsoft")
        graph = helper.make_graph([node], "g", [_io("image")], [_io("alpha")], [_const("b", np.zeros(8))])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
        return SimpleNamespace(seconds=0.1, size_bytes=path.stat().st_size)

    monkeypatch.setattr(pipeline, "load_model", lambda checkpoint, seed=0: Fake())
    monkeypatch.setattr(pipeline, "describe_weights", lambda checkpoint, seed: "fake weights")
    monkeypatch.setattr(pipeline, "export_onnx", fake_export)
    monkeypatch.setattr(sequence, "check_graph", lambda graph, norms, io: [])
    with pytest.warns(UserWarning, match=r"smat.onnx breaks TensorRT's ONNX support matrix in 1 place\(s\)"):
        report = pipeline.export_float32(output_dir=tmp_path / "out", check=False)
    assert report.onnx_path.is_file() and report.tensorrt_support["passed"] is False
    manifest = json.loads(report.manifest_path.read_text())
    assert manifest["tensorrt_support"]["passed"] is False
    assert manifest["tensorrt_support"]["problems"][0].startswith("gelu (BiasGelu)")


@pytest.mark.heavy
def test_the_real_export_passes_and_its_manifest_records_the_check(exported):
    model = onnx.load(exported["dir"] / "smat.onnx")
    result = check_tensorrt_support(model)
    assert result["passed"], result["problems"][:5]
    assert result["untyped_inputs"] == 0
    ops = result["operators"]
    assert ops["LayerNormalization"] == 28 and ops["Resize"] >= 1 and ops["MatMul"] > 0 and ops["Conv"] > 0
    assert not any(op.startswith("com.microsoft") for op in ops)
    manifest = json.loads((exported["dir"] / "smat.json").read_text())
    assert manifest["tensorrt_support"] == result
