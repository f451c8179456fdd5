"""Each TensorRT-readiness check fails on a graph that breaks its property."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from smat_deploy.export.graph_checks import check_graph

F = TensorProto.FLOAT


def _io(name, dims):
    return helper.make_tensor_value_info(name, F, dims)


GOOD_INPUTS = [
    _io("image", ["batch", 3, "height", "width"]),
    _io("prompt", ["batch", 1, "height", "width"]),
    _io("state", ["batch", 1]),
]
GOOD_OUTPUT = [_io("alpha", ["batch", 1, "height", "width"])]


def _graph(nodes, inputs=GOOD_INPUTS, outputs=GOOD_OUTPUT, initializers=(), opset=18):
    graph = helper.make_graph(nodes, "g", list(inputs), list(outputs), initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _base_nodes():
    scale = numpy_helper.from_array(np.ones(4, np.float32), "ones")
    bias = numpy_helper.from_array(np.zeros(4, np.float32), "zeros")
    return [
        helper.make_node("LayerNormalization", ["image", "ones", "zeros"], ["normed"], axis=-1),
        helper.make_node("Mul", ["prompt", "normed"], ["alpha"]),
    ], [scale, bias]


def _failed(model, **kwargs):
    return {c.name for c in check_graph(model, **kwargs) if not c.passed}


def test_a_clean_graph_passes():
    nodes, inits = _base_nodes()
    assert _failed(_graph(nodes, initializers=inits), expected_layer_norms=1) == set()


def test_old_opset_and_wrong_layer_norm_count():
    nodes, inits = _base_nodes()
    assert _failed(_graph(nodes, initializers=inits, opset=16)) == {"opset"}
    assert _failed(_graph(nodes, initializers=inits), expected_layer_norms=2) == {"layernorm_single_nodes"}
    decomposed = [*nodes, helper.make_node("ReduceMean", ["image"], ["m"])]
    assert "layernorm_single_nodes" in _failed(_graph(decomposed, initializers=inits))


def test_control_flow_antialias_and_resized_position_table():
    nodes, inits = _base_nodes()
    body = helper.make_graph([], "body", [], [])
    loop = helper.make_node("If", ["cond"], [], then_branch=body, else_branch=body)
    assert "no_control_flow" in _failed(_graph([*nodes, loop], initializers=inits))
    resize = helper.make_node("Resize", ["image", "", "scales"], ["r"], mode="linear", antialias=1)
    scales = numpy_helper.from_array(np.ones(4, np.float32), "scales")
    assert "no_antialias_resize" in _failed(_graph([*nodes, resize], initializers=[*inits, scales]))
    table = numpy_helper.from_array(np.zeros((1, 4, 37, 37), np.float32), "model.backbone.pos_embed")
    pos = helper.make_node("Resize", ["model.backbone.pos_embed", "", "scales"], ["p"], mode="cubic")
    assert _failed(_graph([*nodes, pos], initializers=[*inits, scales, table])) == {"pos_embed_not_resized_by_resize"}
    # A Resize on image data is fine even though the network's weights feed it too.
    on_image = helper.make_node("Resize", ["normed", "", "scales"], ["q"], mode="linear")
    assert _failed(_graph([*nodes, on_image], initializers=[*inits, scales])) == set()


@pytest.mark.parametrize(
    ("inputs", "outputs"),
    [
        ([*GOOD_INPUTS, helper.make_tensor_value_info("orig_size", TensorProto.INT64, [2])], GOOD_OUTPUT),
        (GOOD_INPUTS[:2], GOOD_OUTPUT),
        ([_io("image", [1, 3, 518, 518]), *GOOD_INPUTS[1:]], GOOD_OUTPUT),
        (GOOD_INPUTS, [_io("alpha", ["batch", 1, "h2", "width"])]),
    ],
)
def test_io_contract_violations(inputs, outputs):
    nodes, inits = _base_nodes()
    assert "io_contract" in _failed(_graph(nodes, inputs=inputs, outputs=outputs, initializers=inits))


def test_float64_is_flagged():
    nodes, inits = _base_nodes()
    cast = helper.make_node("Cast", ["image"], ["d"], to=TensorProto.DOUBLE)
    assert _failed(_graph([*nodes, cast], initializers=inits)) == {"no_float64"}
