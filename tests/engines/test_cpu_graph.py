"""The ONNX Runtime CPU graph rewrites on small hand-built graphs (the real model: test_precision.py)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from smat_deploy.engines.cpu_graph import fuse_transformer_ops, split_concat_convs, uses_onnxruntime_operators
from smat_deploy.errors import SmatError


def _concat_conv_model(*, group: int = 1, extra_use: bool = False, bias: bool = True) -> onnx.ModelProto:
    """image a [1,3,H,W] and b [1,5,H,W] -> Conv(Concat(a, b)) with a 3x3 kernel, padding 1."""
    rng = np.random.default_rng(0)
    value = helper.make_tensor_value_info
    weight = rng.standard_normal((4, 8 // group, 3, 3)).astype(np.float32)
    inits = [
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
    ]
    conv_inputs = ["cat", "w", "b"] if bias else ["cat", "w"]
    nodes = [
        helper.make_node("Concat", ["a", "x"], ["cat"], axis=1),
        helper.make_node("Conv", conv_inputs, ["y"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3], group=group),
    ]
    outputs = [value("y", TensorProto.FLOAT, [1, 4, "h", "w"])]
    if extra_use:
        nodes.append(helper.make_node("Relu", ["cat"], ["cat_relu"]))
        outputs.append(value("cat_relu", TensorProto.FLOAT, [1, 8, "h", "w"]))
    graph = helper.make_graph(
        nodes,
        "concat_conv",
        [value("a", TensorProto.FLOAT, [1, 3, "h", "w"]), value("x", TensorProto.FLOAT, [1, 5, "h", "w"])],
        outputs,
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, feed: dict) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y"], feed)[0]


@pytest.mark.parametrize("bias", [True, False])
def test_a_concat_conv_becomes_two_convs_and_an_add_with_the_same_result(bias):
    model = _concat_conv_model(bias=bias)
    rng = np.random.default_rng(1)
    feed = {"a": rng.random((1, 3, 9, 11), dtype=np.float32), "x": rng.random((1, 5, 9, 11), dtype=np.float32)}
    expected = _run(model, feed)
    assert split_concat_convs(model) == 1
    onnx.checker.check_model(model)
    ops = sorted(n.op_type for n in model.graph.node)
    assert ops == ["Add", "Conv", "Conv"]
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert "w" not in weights  # the whole weight went; its two slices replaced it
    assert weights["w__part0"].shape == (4, 3, 3, 3) and weights["w__part1"].shape == (4, 5, 3, 3)
    with_bias = [n for n in model.graph.node if n.op_type == "Conv" and len(n.input) == 3]
    assert len(with_bias) == (1 if bias else 0)  # the bias is added once, not per part
    np.testing.assert_allclose(_run(model, feed), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", ["grouped", "concat used elsewhere"])
def test_convs_that_cannot_be_split_exactly_are_left_alone(case):
    model = _concat_conv_model(group=2) if case == "grouped" else _concat_conv_model(extra_use=True)
    before = model.SerializeToString()
    assert split_concat_convs(model) == 0
    assert model.SerializeToString() == before


def test_the_transformer_fusions_refuse_a_graph_that_is_not_smat(tmp_path):
    src = tmp_path / "small.onnx"
    onnx.save(_concat_conv_model(), str(src))
    with pytest.raises(SmatError, match=r"not the SMat graph the CPU fusions expect \(fused attention 0 of 12"):
        fuse_transformer_ops(src, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_onnxruntime_only_operators_are_listed():
    model = _concat_conv_model()
    assert uses_onnxruntime_operators(model) == []
    model.graph.node.append(helper.make_node("BiasGelu", ["y", "b"], ["g"], domain="com.microsoft"))
    assert uses_onnxruntime_operators(model) == ["com.microsoft.BiasGelu"]
