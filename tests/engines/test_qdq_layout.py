"""The rewiring that confines Q/DQ to compute inputs and the weight/activation split, on hand-built graphs."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from smat_deploy.engines.int8 import activation_matmuls, confine_qdq_to_compute_inputs


def _graph(extra_consumer=None):
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "scale"),
        numpy_helper.from_array(np.array(0, np.int8), "zp"),
        numpy_helper.from_array(np.ones((4, 4), np.float32), "w"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "scale", "zp"], ["xdq"], name="dq"),
        helper.make_node("MatMul", ["xdq", "w"], ["y"], name="mm"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])]
    if extra_consumer:
        nodes.append(helper.make_node(extra_consumer, ["xdq", "x"], ["z"], name="other"))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 4]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])], outputs, inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_dq_feeding_a_non_compute_op_is_confined_to_the_compute_inputs():
    model = _graph(extra_consumer="Add")
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert confine_qdq_to_compute_inputs(model) == 1
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    assert adds[0].input[0] == "x"  # the Add now reads the float tensor
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert np.array_equal(before[0], after[0])  # the MatMul still sees the quantised input
    assert np.array_equal(after[1], x + x)  # the Add now sees the float tensor, not the rounded one
    assert not np.array_equal(before[1], after[1])


def test_activation_matmuls_are_those_without_a_weight_operand():
    inits = [numpy_helper.from_array(np.ones((4, 4), np.float32), "w")]
    nodes = [
        helper.make_node("Transpose", ["w"], ["wt"]),
        helper.make_node("MatMul", ["x", "wt"], ["a"], name="linear"),
        helper.make_node("MatMul", ["a", "x"], ["b"], name="attention"),
    ]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes, "g", [value("x", TensorProto.FLOAT, [4, 4])], [value("b", TensorProto.FLOAT, [4, 4])], inits
    )
    assert activation_matmuls(helper.make_model(graph)) == ["attention"]
    onnx.checker.check_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]))


def test_a_dequantised_weight_still_counts_as_a_weight():
    inits = [
        numpy_helper.from_array(np.ones((4, 4), np.int8), "w_q"),
        numpy_helper.from_array(np.array(0.1, np.float32), "s"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "s"], ["w"]),
        helper.make_node("MatMul", ["x", "w"], ["a"], name="linear"),
        helper.make_node("MatMul", ["a", "a"], ["b"], name="attention"),
    ]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes, "g", [value("x", TensorProto.FLOAT, [4, 4])], [value("b", TensorProto.FLOAT, [4, 4])], inits
    )
    assert activation_matmuls(helper.make_model(graph)) == ["attention"]
