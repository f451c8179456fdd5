"""FP16: mixed precision decided in the ONNX file (TensorRT 11 networks are strongly typed).

NVIDIA Model Optimizer's AutoCast runs the float32 model on calibration data and keeps in float32
whatever the data demands: nodes whose activations exceed ``data_max``, initializers beyond the fp16
range, and deep reductions. We additionally pin the ops whose float16 versions are known to break
ViTs (LayerNormalization, Softmax), and every node computed from tensor shapes alone
(:func:`shape_arithmetic`): the position-embedding resize and the decoder's two bilinear resizes work out
source coordinates such as ``(i + 0.5) * 0.875 - 0.5`` for ``i`` up to thousands, where float16's step is
0.25 or more; an interpolation weight is the coordinate's fractional part, so in float16 it is wrong by
up to a whole step (the alpha moved by 3.6e-2 on the fine-tuned weights before these nodes were pinned).
Those nodes work on vectors of one row or column, so float32 costs nothing there. Inputs and outputs
stay float32, so the contract of the float32 model is unchanged.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import onnx

from smat_deploy.errors import SmatError

#: Ops kept in float32 whatever AutoCast's data analysis says (SPEC: FP16 pitfalls in ViTs).
FP32_OP_TYPES = [
    "LayerNormalization",
    "Softmax",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceL2",
    "Range",
    "Floor",
    "Equal",
    "Clip",
    "Div",
]
#: Activations above this magnitude keep their node in float32 (fp16 max is 65504).
DATA_MAX = 512.0


def shape_arithmetic(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes whose every input derives from tensor shapes and constants (at least one from a
    ``Shape`` or ``Size``): coordinates, sizes and interpolation weights, never image data."""
    constants = {init.name for init in model.graph.initializer}
    from_shapes: set[str] = set()
    names = []
    for node in model.graph.node:  # ONNX keeps nodes in topological order
        if node.op_type in ("Shape", "Size"):
            from_shapes.update(node.output)
        elif node.op_type == "Constant":
            constants.update(node.output)
        else:
            inputs = [name for name in node.input if name]
            if (
                inputs
                and any(i in from_shapes for i in inputs)
                and all(i in from_shapes or i in constants for i in inputs)
            ):
                from_shapes.update(node.output)
                names.append(node.name)
    return names


def mixed_precision(src: str | os.PathLike[str], calibration: dict[str, np.ndarray]) -> onnx.ModelProto:
    """AutoCast of ``src`` with this module's policy (float32 I/O; :data:`FP32_OP_TYPES`, the shape arithmetic and
    whatever the data analysis on ``calibration`` demands kept float32). The FP16 artifact is this model; the
    TensorRT INT8 file runs its unquantised part through the same function."""
    import tempfile

    from modelopt.onnx.autocast import convert_to_mixed_precision

    pinned = shape_arithmetic(onnx.load(str(src), load_external_data=False))
    if any(not name for name in pinned):
        raise SmatError(f"{src} has unnamed shape-arithmetic nodes; FP16 conversion needs them named")
    with tempfile.TemporaryDirectory() as scratch:
        calib_path = Path(scratch) / "calib.npz"
        np.savez(calib_path, **calibration)
        try:
            model = convert_to_mixed_precision(
                onnx_path=str(src),
                low_precision_type="fp16",
                op_types_to_exclude=FP32_OP_TYPES,
                nodes_to_exclude=[f"^{re.escape(name)}$" for name in pinned],
                data_max=DATA_MAX,
                keep_io_types=True,
                calibration_data=str(calib_path),
                providers=["cpu"],
            )
        except Exception as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise SmatError(f"FP16 conversion (Model Optimizer AutoCast) failed: {first}") from None
    # AutoCast leaves value_info from before the conversion; stale dtypes there make ONNX Runtime
    # fail or crash (SPEC section 7). Runtimes re-infer what they need.
    del model.graph.value_info[:]
    return model


def convert_fp16(src: str | os.PathLike[str], dst: str | os.PathLike[str], calibration: dict[str, np.ndarray]) -> Path:
    """Write the mixed-precision model of ``src`` to ``dst`` (float32 I/O)."""
    model = mixed_precision(src, calibration)
    onnx.save(model, str(dst))
    onnx.checker.check_model(str(dst))
    return Path(dst)
