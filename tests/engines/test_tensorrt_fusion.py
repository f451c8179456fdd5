"""TensorRT's Q/DQ fusion rules, int8 weights, and float16 QuantizeLinear as ONNX specifies it, on hand-built graphs.

Each rule of :mod:`smat_deploy.export.tensorrt_fusion` is shown to hold on a layout TensorRT fuses (float16 scales,
each DequantizeLinear feeding its MatMul/Conv) and to catch the placement that breaks it, with its reason.
"""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from smat_deploy._ort import quantize_in_float32
from smat_deploy._ort import session as ort_session
from smat_deploy.engines.int8 import store_int8_weights
from smat_deploy.export.tensorrt_fusion import NotInt8Model, check_fusion

RNG = np.random.default_rng(7)
W = RNG.normal(0, 0.2, (8, 6)).astype(np.float32)  # MatMul weight [K=8, N=6]
CONV_W = RNG.normal(0, 0.2, (5, 6, 3, 3)).astype(np.float32)  # Conv weight [Cout=5, Cin=6, 3, 3]


def _model(
    *,
    dtype=TensorProto.FLOAT16,
    cast_after_dq=False,
    dq_scale=None,
    weight_axis=1,
    conv_axis=0,
    quantise_weight=True,
    opset=19,
):
    """x -> Q/DQ -> MatMul(W, per-channel Q/DQ) -> Q/DQ -> Conv(CONV_W) in ``dtype``; variants break one rule each."""
    np_type = np.float16 if dtype == TensorProto.FLOAT16 else np.float32
    act_scale = np.array(0.02, np_type)
    w_scale = (np.abs(W).max(axis=0) / 127).astype(np_type) if weight_axis == 1 else np.full(8, 0.01, np_type)
    c_scale = (np.abs(CONV_W).reshape(5, -1).max(axis=1) / 127).astype(np_type) if conv_axis == 0 else None
    if conv_axis != 0:
        c_scale = np.full(CONV_W.shape[conv_axis], 0.01, np_type)
    inits = [
        numpy_helper.from_array(act_scale, "s_x"),
        numpy_helper.from_array(np.array(dq_scale if dq_scale is not None else act_scale, np_type), "s_x_dq"),
        numpy_helper.from_array(np.array(0, np.int8), "zp"),
        numpy_helper.from_array(W.astype(np_type), "w"),
        numpy_helper.from_array(w_scale, "s_w"),
        numpy_helper.from_array(np.zeros(w_scale.shape, np.int8), "zp_w"),
        numpy_helper.from_array(np.array(0.05, np_type), "s_y"),
        numpy_helper.from_array(CONV_W.astype(np_type), "cw"),
        numpy_helper.from_array(c_scale, "s_c"),
        numpy_helper.from_array(np.zeros(c_scale.shape, np.int8), "zp_c"),
    ]
    x_dq = "x_dq"
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s_x", "zp"], ["x_q"], name="q_x"),
        helper.make_node("DequantizeLinear", ["x_q", "s_x_dq", "zp"], ["x_dq"], name="dq_x"),
        helper.make_node("QuantizeLinear", ["w", "s_w", "zp_w"], ["w_q"], name="q_w", axis=weight_axis),
        helper.make_node("DequantizeLinear", ["w_q", "s_w", "zp_w"], ["w_dq"], name="dq_w", axis=weight_axis),
    ]
    if cast_after_dq:
        nodes.append(helper.make_node("Cast", ["x_dq"], ["x_dq_cast"], name="cast_after_dq", to=dtype))
        x_dq = "x_dq_cast"
    nodes += [
        helper.make_node("MatMul", [x_dq, "w_dq" if quantise_weight else "w"], ["h"], name="matmul"),
        helper.make_node("Reshape", ["h", "shape"], ["h4"], name="to_image"),
        helper.make_node("QuantizeLinear", ["h4", "s_y", "zp"], ["h_q"], name="q_h"),
        helper.make_node("DequantizeLinear", ["h_q", "s_y", "zp"], ["h_dq"], name="dq_h"),
        helper.make_node("QuantizeLinear", ["cw", "s_c", "zp_c"], ["c_q"], name="q_c", axis=conv_axis),
        helper.make_node("DequantizeLinear", ["c_q", "s_c", "zp_c"], ["c_dq"], name="dq_c", axis=conv_axis),
        helper.make_node("Conv", ["h_dq", "c_dq"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    inits.append(numpy_helper.from_array(np.array([1, 6, 4, 4], np.int64), "shape"))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", dtype, [16, 8])],
        [helper.make_tensor_value_info("y", dtype, [1, 5, 4, 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return model


def test_the_layout_tensorrt_fuses_passes_and_counts_its_int8_kernels():
    model = _model()
    onnx.checker.check_model(model)
    report = check_fusion(model)
    assert report["passed"], report["problems"]
    assert report["int8_ops"] == {"Conv": 1, "MatMul": 1}
    assert report["scale_types"] == {"FLOAT16": 4} and report["quantize_nodes"] == 4


def test_int8_weights_are_onnx_rounding_of_the_float32_weights_and_still_fuse():
    model = _model(dtype=TensorProto.FLOAT)
    x = RNG.normal(0, 0.5, (16, 8)).astype(np.float32)
    before = ReferenceEvaluator(model).run(None, {"x": x})[0]
    assert store_int8_weights(model) == 2
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] in ("w", "cw") for n in model.graph.node)
    stored = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert stored["w_int8"].dtype == np.int8 and "w" not in stored  # the float weight is gone
    expected = np.clip(np.rint(W / (np.abs(W).max(axis=0) / 127)), -128, 127)  # per output channel (axis 1)
    np.testing.assert_array_equal(stored["w_int8"], expected)
    np.testing.assert_array_equal(ReferenceEvaluator(model).run(None, {"x": x})[0], before)
    assert check_fusion(model)["passed"]


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        ({"cast_after_dq": True}, "feeds Cast cast_after_dq: a Cast between a DequantizeLinear and its op"),
        ({"dq_scale": 0.03}, "q_x (QuantizeLinear) and dq_x (DequantizeLinear): the pair's scales differ"),
        (
            {"weight_axis": 0},
            "matmul (MatMul): weight scales along axis 0 (8 values); TensorRT needs the "
            "output-channel axis 1 (6 values)",
        ),
        (
            {"conv_axis": 1},
            "conv (Conv): weight scales along axis 1 (6 values); TensorRT needs the output-channel axis 0 (5 values)",
        ),
        ({"quantise_weight": False}, "matmul (MatMul): its weight input is not quantised"),
        ({"opset": 17}, "float16 scale needs opset 19+"),
    ],
)
def test_each_broken_rule_is_caught_with_its_reason(broken, reason):
    report = check_fusion(_model(**broken))
    assert not report["passed"]
    assert any(reason in problem for problem in report["problems"]), report["problems"]


def test_float32_scales_on_an_op_only_cast_to_float16_are_flagged():
    model = _model(dtype=TensorProto.FLOAT)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    conv.output[0] = "y32"
    model.graph.node.append(helper.make_node("Cast", ["y32"], ["y"], name="to_half", to=TensorProto.FLOAT16))
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    problems = check_fusion(model)["problems"]
    assert any("conv (Conv): float32 scales on an op whose result is only cast to float16" in p for p in problems)


def test_a_model_without_int8_qdq_is_not_checked():
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6])],
        [numpy_helper.from_array(W, "w")],
    )
    with pytest.raises(NotInt8Model, match="not an INT8 Q/DQ model"):
        check_fusion(helper.make_model(graph))


def _half_quantize(x, scale):
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [x.size])],
        [helper.make_tensor_value_info("q", TensorProto.INT8, [x.size])],
        [numpy_helper.from_array(np.array(scale, np.float16), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_cpu_sessions_quantise_float16_as_onnx_specifies():
    """The expectation is ONNX's rule in exact arithmetic: round half to even of x / scale, saturated to int8 (float16
    values and scales are exact in float64). ONNX Runtime's own CPU kernel truncates float16 toward zero."""
    x = np.linspace(-9, 9, 4001).astype(np.float16)
    model = _half_quantize(x, 0.05)
    expected = np.clip(np.rint(x.astype(np.float64) / np.float64(np.float16(0.05))), -128, 127).astype(np.int8)
    got = ort_session(model).run(None, {"x": x})[0]  # the session factory every stage uses
    np.testing.assert_array_equal(got, expected)
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert quantize_in_float32(rewritten) == 1
    assert [n.op_type for n in rewritten.graph.node] == ["Cast", "QuantizeLinear"]
    np.testing.assert_array_equal(ReferenceEvaluator(rewritten).run(None, {"x": x})[0], expected)


def test_the_command_exits_0_1_2_for_a_fused_a_broken_and_a_non_int8_file(run_cli, tmp_path):
    good, broken, plain, junk = (tmp_path / f"{n}.onnx" for n in ("good", "broken", "plain", "junk"))
    onnx.save(_model(), good)
    onnx.save(_model(cast_after_dq=True), broken)
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    onnx.save(helper.make_model(graph), plain)
    junk.write_bytes(b"not a model")
    result = run_cli("fusion-check", good)
    assert result.code == 0 and "int8 kernels for 1 Conv, 1 MatMul" in result.stdout
    result = run_cli("fusion-check", broken, "--json")
    assert result.code == 1 and result.stderr.count("\n") == 1
    assert "2 Q/DQ placement(s) TensorRT would not fuse; first: dq_x (DequantizeLinear) feeds Cast" in result.stderr
    assert '"passed": false' in result.stdout
    for path, message in ((plain, "not an INT8 Q/DQ model"), (junk, "is not a readable ONNX file"), (tmp_path, "no")):
        result = run_cli("fusion-check", path)
        assert result.code == 2 and message in result.stderr and result.stderr.count("\n") == 1, path
