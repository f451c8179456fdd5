"""The one TensorRT engine builder of the runtime tests, independent of ``smat_deploy.engines.tensorrt_build``.

The runtime tests build their engines with TensorRT's own API, so a bug in the project's builder cannot
hide one in the TensorRT backend. Used where the tensorrt package and a GPU are present.
"""

from __future__ import annotations

import json
from pathlib import Path

#: ``(batch, height, width)`` of an optimisation profile's min, opt and max shapes.
Profile = tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]


def build_tensorrt_plan(onnx_path: Path, plan_path: Path, profile: Profile) -> Path:
    """A strongly typed float32 engine with one profile over batch/height/width (TensorRT 10 or 11)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(onnx_path)), [parser.get_error(i).desc() for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    shapes = builder.create_optimization_profile()
    for name, channels in (("image", 3), ("prompt", 1)):
        shapes.set_shape(name, *[(b, channels, h, w) for b, h, w in profile])
    shapes.set_shape("state", *[(b, 1) for b, _, _ in profile])
    config.add_optimization_profile(shapes)
    serialized = builder.build_serialized_network(network, config)
    assert serialized is not None, "TensorRT build failed"
    plan_path.write_bytes(bytes(serialized))
    plan_path.with_suffix(".json").write_text(json.dumps({"precision": "float32"}))
    return plan_path
