"""The INT8 accuracy budget on hand-built graphs: returning groups to float, FLOP counts, the greedy fit."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from smat_deploy.engines import int8_budget as B
from smat_deploy.errors import SmatError

RNG = np.random.default_rng(0)
W1 = RNG.normal(size=(8, 16)).astype(np.float32)
W2 = RNG.normal(size=(16, 4)).astype(np.float32)


def _scoped(node: onnx.NodeProto, module: str) -> onnx.NodeProto:
    """Record the module a node came from, as torch.onnx does."""
    prop = node.metadata_props.add()
    prop.key = "pkg.torch.onnx.name_scopes"
    prop.value = repr(["", "model.decoder", f"model.{module}", "linear"])
    return node


def _float_model() -> onnx.ModelProto:
    """image [1,8] -> MatMul W1 (group decoder.fusion_blks.0) -> Relu -> MatMul W2 (decoder.matting_head) -> alpha."""
    nodes = [
        _scoped(helper.make_node("MatMul", ["image", "w1"], ["h"], name="first"), "decoder.fusion_blks.0.conv"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        _scoped(helper.make_node("MatMul", ["r", "w2"], ["alpha"], name="second"), "decoder.matting_head.x"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("alpha", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(W1, "w1"), numpy_helper.from_array(W2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    return model


def _qdq(name: str, scale: float, out: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    inits = [
        numpy_helper.from_array(np.array(scale, np.float32), f"{out}_s"),
        numpy_helper.from_array(np.array(0, np.int8), f"{out}_z"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", [name, f"{out}_s", f"{out}_z"], [f"{out}_q"]),
        helper.make_node("DequantizeLinear", [f"{out}_q", f"{out}_s", f"{out}_z"], [out]),
    ]
    return nodes, inits


def _modelopt_layout(scales: dict[str, float]) -> onnx.ModelProto:
    """Model Optimizer's layout: weights and activations both pass through Q -> DQ before the MatMul."""
    model = _float_model()
    graph = model.graph
    new_nodes, new_inits = [], []
    for node in list(graph.node):
        if node.op_type == "MatMul":
            for index, name in enumerate(list(node.input)):
                nodes, inits = _qdq(name, scales[f"{node.name}:{index}"], f"{node.name}_in{index}")
                new_nodes += nodes
                new_inits += inits
                node.input[index] = f"{node.name}_in{index}"
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(new_inits)
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["alpha"], {"image": x})[0]


X = RNG.normal(size=(1, 8)).astype(np.float32)
FINE = {"first:0": 0.05, "first:1": 0.03, "second:0": 0.1, "second:1": 0.03}


def test_returning_every_node_to_float_gives_the_float_model_exactly():
    quantized = _modelopt_layout(FINE)
    assert B.quantized_nodes(quantized) == {"first", "second"}
    assert not np.array_equal(_run(quantized, X), _run(_float_model(), X))
    assert B.return_to_float(quantized, {"first", "second"}) == 4
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in quantized.graph.node)
    onnx.checker.check_model(quantized)
    np.testing.assert_array_equal(_run(quantized, X), _run(_float_model(), X))


def test_returning_one_node_leaves_the_other_quantised():
    quantized = _modelopt_layout(FINE)
    B.return_to_float(quantized, {"second"})
    assert B.quantized_nodes(quantized) == {"first"}

    # independent expectation: numpy with the first MatMul's inputs rounded as Q/DQ does
    def fake_quant(values, scale):
        return np.clip(np.round(values / scale), -128, 127) * scale

    hidden = np.maximum(fake_quant(X, 0.05) @ fake_quant(W1, 0.03), 0)
    np.testing.assert_allclose(_run(quantized, X), hidden @ W2, rtol=1e-5, atol=1e-5)


def _onnxruntime_layout() -> onnx.ModelProto:
    """ONNX Runtime's QDQ layout: int8 weight initializers ``<w>_quantized`` + DQ, and the MatMul's output
    quantised too (Q -> DQ), read by a float Relu."""
    model = _float_model()
    graph = model.graph
    w1_scale = np.float32(0.03)
    nodes, inits = _qdq("image", 0.05, "first_in0")
    inits += [
        numpy_helper.from_array(np.clip(np.round(W1 / w1_scale), -127, 127).astype(np.int8), "w1_quantized"),
        numpy_helper.from_array(np.array(w1_scale), "w1_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "w1_zero"),
    ]
    nodes.append(helper.make_node("DequantizeLinear", ["w1_quantized", "w1_scale", "w1_zero"], ["w1_dq"]))
    first = graph.node[0]
    first.input[:] = ["first_in0", "w1_dq"]
    first.output[:] = ["h_raw"]
    out_nodes, out_inits = _qdq("h_raw", 0.2, "h")
    del graph.node[0]
    for k, node in enumerate([*nodes, first, *out_nodes]):
        graph.node.insert(k, node)
    graph.initializer.extend(inits + out_inits)
    graph.initializer.remove(next(i for i in graph.initializer if i.name == "w1"))
    onnx.checker.check_model(model)
    return model


def test_onnxruntime_layout_returns_to_float_weights_and_unrounded_outputs():
    quantized = _onnxruntime_layout()
    float_weights = {"w1": numpy_helper.from_array(W1, "w1")}
    with pytest.raises(SmatError, match="no float source"):
        B.return_to_float(_onnxruntime_layout(), {"first"})  # without the float weights
    B.return_to_float(quantized, {"first"}, float_weights)
    assert B.quantized_nodes(quantized) == set()
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in quantized.graph.node)
    np.testing.assert_array_equal(_run(quantized, X), _run(_float_model(), X))


def test_node_flops_from_real_shapes():
    model = _float_model()
    flops = B.node_flops(model, {"image": X}, ["first", "second"])
    assert flops == {"first": 2 * 1 * 16 * 8, "second": 2 * 1 * 4 * 16}


def test_conv_flops_count_input_channels_and_kernel():
    weight = numpy_helper.from_array(np.ones((6, 3, 3, 3), np.float32), "w")
    node = helper.make_node("Conv", ["image", "w"], ["alpha"], name="conv", pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 10, 12])],
        [helper.make_tensor_value_info("alpha", TensorProto.FLOAT, None)],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    flops = B.node_flops(model, {"image": np.zeros((1, 3, 10, 12), np.float32)}, ["conv"])
    assert flops == {"conv": 2 * (6 * 10 * 12) * (3 * 3 * 3)}


def test_groups_come_from_the_module_names_and_activation_products_apart():
    model = _float_model()
    assert B.layer_groups(model) == {"decoder.fusion_blks.0": ["first"], "decoder.matting_head": ["second"]}
    assert B.activation_products(model) == []


@pytest.mark.parametrize("bad", [0.0, -1e-3, float("nan"), float("inf")])
def test_budget_must_be_positive_and_finite(bad):
    with pytest.raises(SmatError, match="positive number"):
        B.Budget(mean_abs=bad)
    with pytest.raises(SmatError, match="positive number"):
        B.Budget(max_abs=bad)


def _scorer(count: int = 6) -> B.AlphaScorer:
    rng = np.random.default_rng(1)
    feeds = [(f"s{i}", {"image": rng.normal(size=(1, 8)).astype(np.float32)}) for i in range(count)]
    session = ort.InferenceSession(_float_model().SerializeToString(), providers=["CPUExecutionProvider"])
    return B.AlphaScorer(session, feeds)


def test_fit_returns_the_most_sensitive_group_to_float_until_the_budget_holds():
    # the second layer's activations are rounded to steps of 1.0: far coarser than the first layer's
    coarse = {**FINE, "second:0": 1.0}
    quantized = _modelopt_layout(coarse)
    score = _scorer()
    all_int8 = score(quantized)
    budget = B.Budget(mean_abs=all_int8.mean_abs / 4, max_abs=10.0, min_int8_share=0.0)
    model, report = B.fit_budget(quantized, _float_model(), score, budget, score.feeds[0], sensitivity_samples=None)
    assert report.all_int8 == all_int8
    assert [step["group"] for step in report.steps] == ["decoder.matting_head"]
    assert report.passed and budget.holds(report.final)
    assert B.quantized_nodes(model) == {"first"}
    sensitive = report.most_sensitive(1)[0]
    assert sensitive.name == "decoder.matting_head"
    assert report.int8_share == pytest.approx(256 / (256 + 128))
    assert B.quantized_nodes(quantized) == {"first", "second"}  # the input model is left as it was
    as_json = report.as_dict()
    assert as_json["returned_to_float"] == ["decoder.matting_head"] and as_json["passed"] is True


def test_fit_refuses_to_make_a_mostly_float_int8_model():
    coarse = {**FINE, "first:0": 1.0, "second:0": 1.0}
    quantized = _modelopt_layout(coarse)
    score = _scorer()
    budget = B.Budget(mean_abs=1e-6, max_abs=1e-6, min_int8_share=0.9)
    _, report = B.fit_budget(quantized, _float_model(), score, budget, score.feeds[0])
    assert not report.passed
    assert report.steps == []  # either group alone is more than 10 % of the weight FLOPs
    message = report.failure("smat_int8.onnx")
    assert message.startswith("smat_int8.onnx misses its budget: mean |diff|")
    assert "most sensitive groups: decoder." in message and "\n" not in message


def test_sensitivities_are_scored_on_the_worst_samples():
    quantized = _modelopt_layout({**FINE, "second:0": 1.0})
    score = _scorer(6)
    _, report = B.fit_budget(quantized, _float_model(), score, B.Budget(), score.feeds[0], sensitivity_samples=2)
    worst_two = sorted(np.argsort(report.all_int8.per_sample_max)[::-1][:2])
    assert report.sensitivity_base == score.subset(worst_two)(quantized)
    assert "6 held-out samples" in report.measured_on and "the 2 with the largest" in report.measured_on
