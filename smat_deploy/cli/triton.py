"""``smat-deploy triton``: a Triton model repository for an ONNX model or a TensorRT engine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smat_deploy._table import format_table
from smat_deploy.cli._output import print_json
from smat_deploy.errors import SmatError
from smat_deploy.pair import pair_role
from smat_deploy.serve.model_repository import (
    EngineIO,
    TritonModel,
    engine_io,
    pair_io,
    pair_models,
    triton_model,
    write_model_repository,
    write_pair_repository,
)

EPILOG = """Examples:

  smat-deploy triton --engine export/smat.onnx

  smat-deploy triton --engine engines/smat_fp16.plan -o model_repository/ --name smat --max-batch 4 --instances 2

  smat-deploy triton --engine export/ --interactive -o model_repository/

  tritonserver --model-repository model_repository/

Writes OUTPUT/NAME/config.pbtxt and OUTPUT/NAME/1/model.onnx (platform onnxruntime_onnx) or
OUTPUT/NAME/1/model.plan (tensorrt_plan), plus the engine's sidecar JSON as 1/model.json. Inputs and
outputs come from the engine itself; dynamic sizes are -1. Triton's dynamic batcher groups requests
of the same size, up to --max-batch images. --instances is per GPU for KIND_GPU.

The interactive pair (smat-deploy export --interactive, or smat-deploy build --interactive): give
its folder (--precision picks the pair, e.g. fp16), or its encoder file, and two models are written:
NAME_encoder (image -> features, class_token, image16, detail2, fusion0) and NAME_decoder (those
five, prompt, state -> alpha). A client sends each photo to NAME_encoder once, keeps the five
outputs, and sends them with every prompt to NAME_decoder.
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
    interactive: Annotated[
        bool,
        typer.Option(help="Write the interactive pair as two models, NAME_encoder and NAME_decoder."),
    ] = False,
    precision: Annotated[
        str, typer.Option(help="With a folder holding the pair: which pair (float32, fp16, int8, cpu, ...).")
    ] = "float32",
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Write a Triton Inference Server model repository (config.pbtxt + model file) for an SMat engine."""
    if output.exists() and not output.is_dir():
        raise SmatError(f"--output must be a folder, but {output} is a file")
    if not max_queue_delay_ms >= 0:
        raise SmatError(f"--max-queue-delay-ms cannot be negative, got {max_queue_delay_ms}")
    options = {  # Triton's config counts microseconds
        "max_batch": max_batch,
        "instances": instances,
        "kind": kind,
        "max_queue_delay_us": round(max_queue_delay_ms * 1000),
    }
    if interactive or engine.is_dir() or pair_role(engine) is not None:
        _pair_repository(engine, output, name, precision, options, json_output)
        return
    io = engine_io(engine)
    model = triton_model(io, name, **options)  # type: ignore[arg-type]
    written = write_model_repository(io, model, output)
    summary = _summary(io, model, engine, output, written)
    if json_output:
        print_json("triton", summary)
        return
    _print_model(io, model, written)
    typer.echo(f"run: tritonserver --model-repository {output}")


def _summary(io: EngineIO, model: TritonModel, engine: Path, output: Path, written: dict) -> dict:
    return {
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


def _pair_repository(engine: Path, output: Path, name: str, precision: str, options: dict, json_output: bool) -> None:
    io = pair_io(engine, precision)
    models = pair_models(io, name, **options)
    written = write_pair_repository(io, models, output)
    if json_output:
        halves = {role: _summary(half, models[role], half.engine, output, written[role]) for role, half in io.items()}
        print_json(
            "triton", {"output": str(output), "interactive": True, "weights_sha256": io.weights_sha256, **halves}
        )
        return
    for role, half in io.items():
        typer.echo(f"{role}:")
        _print_model(half, models[role], written[role])
    typer.echo(
        f"clients: send each photo to {models['encoder'].name} once, keep its five outputs, and send them with "
        f"every prompt and state to {models['decoder'].name}"
    )
    typer.echo(f"run: tritonserver --model-repository {output}")


def _print_model(io: EngineIO, model: TritonModel, written: dict) -> None:
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
