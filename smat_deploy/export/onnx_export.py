"""PyTorch SMat -> a plain ONNX model with dynamic batch, height and width.

The exporter is torch's dynamo-based ``torch.onnx.export``. Batch, height and width are symbolic
dimensions; the padding amounts, token grid and position-embedding matrices are computed inside the
graph from the input shape, so no shape-driving scalar input exists and no Loop or If is needed.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from smat_deploy.contract import INPUT_NAMES, MAX_BATCH, MAX_SIDE, MIN_SIDE, OUTPUT_NAMES
from smat_deploy.errors import SmatError
from smat_deploy.export.graph_model import GraphSMat
from smat_deploy.model import SMat

#: Opset 17 is the first with LayerNormalization as one node (FP16 safety, TensorRT's fused kernel).
MIN_OPSET = 17
DEFAULT_OPSET = 18
#: Bounds the exporter records for the symbolic sizes (the graph itself has no upper limit).


@dataclass(frozen=True)
class ExportResult:
    path: Path
    seconds: float
    opset: int
    size_bytes: int


def _example_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Sizes that are not multiples of 14, H != W and batch > 1 keep every dimension symbolic.
    image = torch.rand(2, 3, 100, 130, generator=torch.Generator().manual_seed(0))
    prompt = torch.zeros(2, 1, 100, 130)
    prompt[1, :, 20:60, 30:80] = 1
    return image, prompt, torch.tensor([[0.0], [1.0]])


def name_dims(values, names: dict[str, list[str | int]]) -> None:
    """Declare each listed value's shape with the contract's names (``batch``, ``height``, ``grid_height``, ...).

    The exporter writes derived expressions (``Min(height, ...)`` for the cropped alpha, padding
    formulas for the embedding); the graph guarantees the contract's shapes, which callers read.
    """
    for value in values:
        if value.name not in names:
            continue
        for dim, want in zip(value.type.tensor_type.shape.dim, names[value.name], strict=True):
            if isinstance(want, str):
                dim.Clear()
                dim.dim_param = want


def export_module(
    module: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    output: str | os.PathLike[str],
    *,
    input_names: list[str],
    output_names: list[str],
    dynamic_shapes: dict,
    output_dims: dict[str, list[str | int]],
    doc: str,
    opset: int = DEFAULT_OPSET,
) -> ExportResult:
    """Write ``module`` as ONNX (dynamo exporter, constant-folded) to ``output``; the caller replaces atomically."""
    if opset < MIN_OPSET:
        raise SmatError(f"opset {opset} is too old: SMat needs >= {MIN_OPSET} (LayerNormalization as one node)")
    output = Path(output)
    start = time.perf_counter()
    chatter = io.StringIO()
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(chatter),
            contextlib.redirect_stderr(chatter),
            torch.no_grad(),
        ):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module.eval(),
                example,
                dynamo=True,
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes=dynamic_shapes,
                opset_version=opset,
                optimize=True,
                verbose=False,
            )
            program.save(str(output), external_data=False)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SmatError(f"ONNX export failed at opset {opset}: {first}") from None
    proto = onnx.load(str(output))
    name_dims(proto.graph.output, output_dims)
    proto.doc_string = doc
    onnx.save(proto, str(output))
    onnx.checker.check_model(str(output))
    return ExportResult(output, time.perf_counter() - start, opset, output.stat().st_size)


def dynamic_dims() -> tuple[torch.export.Dim, torch.export.Dim, torch.export.Dim]:
    """The symbolic batch, height and width every exported graph declares."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    height = torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE)
    width = torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE)
    return batch, height, width


def export_onnx(model: SMat, output: str | os.PathLike[str], *, opset: int = DEFAULT_OPSET) -> ExportResult:
    """Write ``model`` as ONNX to ``output`` (the caller handles atomic replacement)."""
    batch, height, width = dynamic_dims()
    return export_module(
        GraphSMat(model),
        _example_inputs(),
        output,
        input_names=list(INPUT_NAMES),
        output_names=list(OUTPUT_NAMES),
        dynamic_shapes={
            "image": {0: batch, 2: height, 3: width},
            "prompt": {0: batch, 2: height, 3: width},
            "state": {0: batch},
        },
        output_dims={"alpha": ["batch", 1, "height", "width"]},
        doc="SMat (automatic + interactive matting): image, prompt, state -> alpha. See the sidecar JSON.",
        opset=opset,
    )
