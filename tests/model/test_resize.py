"""The image and alpha resizes: the graph form equals PyTorch's ``F.interpolate``, in PyTorch and once exported, where
ONNX's own ``Resize`` does not."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper

from smat_deploy.model.resize import float32_ratio, resize_bilinear_graph

#: Token grids (height, width), from the smallest to a 1568-pixel photo's.
GRIDS = [(1, 1), (3, 5), (14, 21), (38, 38), (113, 85)]
#: (input multiple, output multiple): the image (14h -> 16h) and the alpha (16h -> 14h).
RATIOS = [(14, 16), (16, 14)]
#: float32 rounding of values around 1 (a few ulps after two weighted sums per axis).
ROUNDING = 2e-6


def data(grid: tuple[int, int], multiple: int, seed: int = 0) -> torch.Tensor:
    """Unit-variance data on a ``multiple * grid`` map: steps between neighbours as large as a real image's."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, multiple * grid[0], multiple * grid[1], generator=generator)


def reference(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("ratio", RATIOS)
def test_the_graph_form_is_pytorchs_resize_to_float32_rounding(grid, ratio):
    x = data(grid, ratio[0])
    size = (ratio[1] * grid[0], ratio[1] * grid[1])
    got = resize_bilinear_graph(x, size, ratio)
    assert got.shape == (1, 3, *size)
    assert (got - reference(x, size)).abs().max() <= ROUNDING


def test_the_scale_is_atens_division_rounded_once():
    assert float32_ratio(14, 16) == 0.875
    for grid in (1, 7, 113):  # (float)(16g) / (14g): the same float32 for every grid
        assert float32_ratio(16, 14) == float(np.float32(16 * grid) / np.float32(14 * grid))
    assert float32_ratio(16, 14) != 16 / 14  # float32, not float64


class _Resize(torch.nn.Module):
    def __init__(self, ratio: tuple[int, int]) -> None:
        super().__init__()
        self.ratio = ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = (x.shape[-2] // self.ratio[0], x.shape[-1] // self.ratio[0])
        return resize_bilinear_graph(x, (self.ratio[1] * grid[0], self.ratio[1] * grid[1]), self.ratio)


def onnx_resize() -> ort.InferenceSession:
    """ONNX's ``Resize`` (linear, half-pixel) to the sizes given: what a plain export of ``F.interpolate`` gives."""
    node = helper.make_node(
        "Resize", ["x", "", "", "sizes"], ["y"], mode="linear", coordinate_transformation_mode="half_pixel"
    )
    graph = helper.make_graph(
        [node],
        "resize",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None), helper.make_tensor_value_info("sizes", 7, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module", params=RATIOS, ids=["image", "alpha"])
def exported(request, tmp_path_factory):
    """The graph form exported with symbolic sizes (the export's exporter and settings)."""
    from smat_deploy.export.onnx_export import export_module

    ratio = request.param
    path = tmp_path_factory.mktemp("resize") / "resize.onnx"
    grid_h, grid_w = torch.export.Dim("grid_h", min=1, max=120), torch.export.Dim("grid_w", min=1, max=120)
    export_module(
        _Resize(ratio),
        (data((3, 5), ratio[0]),),
        path,
        input_names=["x"],
        output_names=["y"],
        dynamic_shapes={"x": {2: ratio[0] * grid_h, 3: ratio[0] * grid_w}},
        output_dims={},
        doc="resize",
    )
    onnx.checker.check_model(onnx.load(str(path)))
    return ratio, path


@pytest.mark.parametrize("grid", [(14, 21), (113, 85)])
def test_exported_it_runs_pytorchs_arithmetic_on_onnx_runtime_and_openvino_where_resize_does_not(exported, grid):
    ratio, path = exported
    x = data(grid, ratio[0], seed=1)
    size = (ratio[1] * grid[0], ratio[1] * grid[1])
    expected = reference(x, size).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"x": x.numpy()})[0] - expected).max() <= ROUNDING
    plain = onnx_resize().run(None, {"x": x.numpy(), "sizes": np.array([1, 3, *size], np.int64)})[0]
    assert np.abs(plain - expected).max() > 50 * ROUNDING  # ONNX's Resize: another rounding of the coordinates
    openvino = pytest.importorskip("openvino")
    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert np.abs(compiled({"x": x.numpy()})[compiled.output(0)] - expected).max() <= ROUNDING
