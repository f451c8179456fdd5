"""``smat-deploy triton``: a Triton model repository for an ONNX model or a TensorRT engine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smat_deploy._table import format_table
from smat_deploy.cli._output import print_json
from smat_deploy.errors import SmatError
from smat_deploy.serve.model_repository import engine_io, triton_model, write_model_repository

EPILOG = """Examples:

  smat-deploy triton --engine export/smat.onnx

  smat-deploy triton --engine engines/smat_fp16.plan -o model_repository/ --name smat --max-batch 4 --instances 2

  tritonserver --model-repository model_repository/

Writes OUTPUT/NAME/config.pbtxt and OUTPUT/NAME/1/model.onnx (platform onnxruntime_onnx) or
OUTPUT/NAME/1/model.plan (tensorrt_plan), plus the engine's sidecar JSON as 1/model.json. Inputs and
outputs come from the engine itself; dynamic sizes are -1. Triton's dynamic batcher groups requests
of the same size, up to --max-batch images. --instances is per GPU for KIND_GPU.
"""


def triton_command(
    engine: Annotated[Path, typer.Option("--engine", "-e", help="An .onnx model or a .plan TensorRT engine.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The model repository folder (created when missing).")
    ] = Path("model_repository"),
    name: Annotated[str, typer.Option(help="Model name: the folder and what clients address.")] = "smat",
    max_batch: Annotated[int, typer.Option("--max-batch", help="Triton max_batch_size (dynamic batching).")] = 8,
    instances: Annotated[int, typer.Option(help="Model instances (instance_group count).")] = 1,
    kind: Annotated[
        str,
        typer.Option(help="Instance kind: auto (TensorRT: GPU; ONNX: GPU when Triton has one), gpu or cpu."),
    ] = "auto",
    max_queue_delay_ms: Annotated[
        float, typer.Option("--max-queue-delay-ms", help="Longest a request waits for a batch to fill, milliseconds.")
    ] = 1.0,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Write a Triton Inference Server model repository (config.pbtxt + model file) for an SMat engine."""
    if output.exists() and not output.is_dir():
        raise SmatError(f"--output must be a folder, but {output} is a file")
    if not max_queue_delay_ms >= 0:
        raise SmatError(f"--max-queue-delay-ms cannot be negative, got {max_queue_delay_ms}")
    io = engine_io(engine)
    model = triton_model(  # Triton's config counts microseconds
        io,
        name,
        max_batch=max_batch,
        instances=instances,
        kind=kind,
        max_queue_delay_us=round(max_queue_delay_ms * 1000),
    )
    written = write_model_repository(io, model, output)
    summary = {
        "output": str(output),
        "name": model.name,
        "platform": model.platform,
        "engine": str(engine),
        "precision": io.precision,
        "io_from": io.source,
        "max_batch_size": model.max_batch_size,
        "dynamic_batching": model.dynamic_batching,
        "max_queue_delay_ms": model.max_queue_delay_us / 1000 if model.dynamic_batching else None,
        "instance_group": {"count": model.instance_count, "kind": model.instance_kind},
        "inputs": model.inputs,
        "outputs": model.outputs,
        "notes": model.notes,
        **written,
    }
    if json_output:
        print_json("triton", summary)
        return
    rows = [
        {"role": role, "name": item["name"], "data_type": item["data_type"], "dims": str(item["dims"])}
        for role, items in (("input", model.inputs), ("output", model.outputs))
        for item in items
    ]
    typer.echo(f"wrote {written['config']} and {written['model']} ({model.platform}, {io.precision})")
    typer.echo(f"inputs and outputs from the {io.source}:")
    typer.echo(format_table(rows))
    batching = (
        f"dynamic batching up to {model.max_batch_size}, queue delay {model.max_queue_delay_us / 1000:g} ms"
        if model.dynamic_batching
        else "no batching (max_batch_size 0)"
    )
    typer.echo(f"{batching}; {model.instance_count} instance(s) {model.instance_kind}")
    for note in model.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"run: tritonserver --model-repository {output}")
