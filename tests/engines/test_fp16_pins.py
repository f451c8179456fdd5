"""Which nodes FP16 conversion keeps in float32 because they compute from shapes alone."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from smat_deploy._ort import session as ort_session
from smat_deploy.engines.fp16 import shape_arithmetic


def _resize_like_graph() -> onnx.ModelProto:
    """x [1,1,H,W] -> a source-coordinate vector from W (shape arithmetic) plus a data path on x."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "three"], ["width"], name="width", axis=0),
        helper.make_node("Cast", ["width"], ["width_f"], name="width_f", to=TensorProto.FLOAT),
        helper.make_node("Range", ["zero", "width_f", "one"], ["positions"], name="positions"),
        helper.make_node("Add", ["positions", "half"], ["centres"], name="centres"),
        helper.make_node("Mul", ["centres", "scale"], ["scaled"], name="scaled"),
        helper.make_node("Sub", ["scaled", "half"], ["coord"], name="coord"),
        helper.make_node("Transpose", ["weight"], ["weight_t"], name="weight_t"),  # constants only
        helper.make_node("Mul", ["x", "weight_t"], ["xw"], name="data_mul"),  # data
        helper.make_node("Add", ["xw", "coord"], ["y"], name="data_plus_coord"),  # data meets shapes
    ]
    inits = [
        numpy_helper.from_array(np.array(3, np.int64), "three"),
        numpy_helper.from_array(np.array(0, np.float32), "zero"),
        numpy_helper.from_array(np.array(1, np.float32), "one"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        numpy_helper.from_array(np.array(0.875, np.float32), "scale"),
        numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "weight"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, "h", "w"])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_only_nodes_computed_from_shapes_are_pinned():
    model = _resize_like_graph()
    onnx.checker.check_model(model)
    assert shape_arithmetic(model) == ["width", "width_f", "positions", "centres", "scaled", "coord"]


def test_the_coordinates_it_pins_are_ones_float16_cannot_hold(tmp_path):
    """Why the pin matters: at 2000 pixels the float32 coordinate's fraction is the interpolation weight;
    rounded to float16 (step 1 above 1024, 2 above 2048) that weight is lost."""
    path = tmp_path / "g.onnx"
    onnx.save(_resize_like_graph(), path)
    x = np.zeros((1, 1, 1, 2000), np.float32)
    coord = ort_session(path).run(["y"], {"x": x})[0][0, 0, 0]
    expected = (np.arange(2000, dtype=np.float32) + 0.5) * np.float32(0.875) - 0.5
    np.testing.assert_array_equal(coord, expected)
    weights = coord - np.floor(coord)
    half = coord.astype(np.float16).astype(np.float32)
    assert np.abs((half - np.floor(half)) - weights).max() >= 0.25
