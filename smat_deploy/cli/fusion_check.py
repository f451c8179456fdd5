"""``smat-deploy fusion-check``: would TensorRT fuse an INT8 file's Q/DQ into int8 kernels?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smat_deploy.cli._output import print_json
from smat_deploy.errors import CheckFailed, SmatError

EPILOG = """Examples:

  smat-deploy fusion-check export/smat_int8.onnx

  smat-deploy fusion-check export/smat_encoder_int8.onnx --json

Rules (TensorRT's explicit-quantization documentation): each DequantizeLinear feeds its MatMul/Gemm/Conv
directly (no Cast between), both data inputs of a quantised op are quantised, the Q and DQ of a pair carry
the same scale and zero point, activations are per-tensor and weights per output channel, and scales are in
the consumer's float type (float16 for a float16 op). `export --int8` runs this on every TensorRT-bound INT8
file. Exit 0: every rule holds; 1: a rule is broken (each problem on its own line); 2: the file is not an
INT8 Q/DQ model or cannot be read.
"""


def fusion_check(
    model: Annotated[Path, typer.Argument(help="An INT8 ONNX file with QuantizeLinear/DequantizeLinear.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print the check as JSON.")] = False,
) -> None:
    """Check an INT8 ONNX file against TensorRT's Q/DQ fusion rules (DQ feeds its op directly, fp16 scales)."""
    import onnx

    from smat_deploy.export.tensorrt_fusion import check_fusion

    if not model.is_file():
        raise SmatError(f"no such file: {model}")
    try:
        graph = onnx.load(str(model), load_external_data=False)
    except Exception as err:  # protobuf's own error types for a file that is not ONNX
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SmatError(f"{model} is not a readable ONNX file: {first}") from None
    report = check_fusion(graph)
    if json_output:
        print_json("fusion-check", {"model": str(model), **report})
    else:
        for problem in report["problems"]:
            typer.echo(f"  {problem}")
        ops = ", ".join(f"{count} {op}" for op, count in report["int8_ops"].items()) or "none"
        scales = ", ".join(f"{count} {kind}" for kind, count in report["scale_types"].items())
        typer.echo(f"{model}: int8 kernels for {ops}; {report['dequantize_nodes']} DequantizeLinear ({scales} scales)")
    if not report["passed"]:
        raise CheckFailed(
            f"{model}: {len(report['problems'])} Q/DQ placement(s) TensorRT would not fuse; first: "
            f"{report['problems'][0]}"
        )
