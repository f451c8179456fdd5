"""FP16: mixed precision decided in the ONNX file (TensorRT 11 networks are strongly typed).

NVIDIA Model Optimizer's AutoCast runs the float32 model on calibration data and keeps in float32
whatever the data demands: nodes whose activations exceed ``data_max``, initializers beyond the fp16
range, and deep reductions. We additionally pin the ops whose float16 versions are known to break
ViTs (LayerNormalization, Softmax) and the shape arithmetic of the position-embedding resize
(positions up to 8192 are not exact in fp16). Inputs and outputs stay float32, so the contract of the
float32 model is unchanged.
"""

from __future__ import annotations

import os
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


def convert_fp16(src: str | os.PathLike[str], dst: str | os.PathLike[str], calibration: dict[str, np.ndarray]) -> Path:
    """Write the mixed-precision model of ``src`` to ``dst`` (float32 I/O)."""
    import tempfile

    from modelopt.onnx.autocast import convert_to_mixed_precision

    with tempfile.TemporaryDirectory() as scratch:
        calib_path = Path(scratch) / "calib.npz"
        np.savez(calib_path, **calibration)
        try:
            model = convert_to_mixed_precision(
                onnx_path=str(src),
                low_precision_type="fp16",
                op_types_to_exclude=FP32_OP_TYPES,
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
    onnx.save(model, str(dst))
    onnx.checker.check_model(str(dst))
    return Path(dst)
