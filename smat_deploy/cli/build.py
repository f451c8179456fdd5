"""``smat-deploy build``: a TensorRT engine from an SMat ONNX model (where TensorRT is installed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smat_deploy.cli._output import print_json
from smat_deploy.cli._shapes import parse_batches, parse_image_size
from smat_deploy.engines.tensorrt_build import Profile, Shape, build_engine

EPILOG = """Examples:

  smat-deploy build --onnx export/smat_fp16.onnx -o engines/smat_fp16.plan

  smat-deploy build --onnx export/smat_int8.onnx --max 1024 --batch 1,1,4 --timing-cache engines/timing.cache

The optimisation profile: --min, --opt and --max are image sizes WIDTHxHEIGHT (N for NxN), and
--batch gives the batch sizes of the same three points, MIN,OPT,MAX.
"""


def build(
    onnx_path: Annotated[Path, typer.Option("--onnx", help="SMat ONNX model (float32, fp16 or int8 Q/DQ).")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Engine to write (default engines/<onnx stem>.plan).")
    ] = None,
    min_size: Annotated[
        str, typer.Option("--min", help="Smallest image size of the profile, WIDTHxHEIGHT (N for NxN).")
    ] = "14x14",
    opt_size: Annotated[str, typer.Option("--opt", help="Image size TensorRT tunes for, WIDTHxHEIGHT.")] = "518x518",
    max_size: Annotated[str, typer.Option("--max", help="Largest image size of the profile, WIDTHxHEIGHT.")] = (
        "1568x1568"
    ),
    batch: Annotated[
        str, typer.Option(help="Batch sizes of the profile's --min, --opt and --max, as MIN,OPT,MAX.")
    ] = "1,1,4",
    timing_cache: Annotated[Path | None, typer.Option(help="Timing cache to reuse and update.")] = None,
    workspace: Annotated[float | None, typer.Option(help="Workspace memory pool limit, GB.")] = None,
    optimization_level: Annotated[int, typer.Option(help="Builder optimisation level 0..5.")] = 3,
    hardware_compat: Annotated[bool, typer.Option(help="Ampere-and-newer compatible engine.")] = False,
    version_compat: Annotated[bool, typer.Option(help="Version-compatible engine.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of text.")] = False,
) -> None:
    """Build a strongly typed TensorRT engine (precision comes from the ONNX file) plus its sidecar JSON."""
    batches = parse_batches(batch, "--batch", count=3)
    sizes = [
        parse_image_size(text, option)
        for text, option in ((min_size, "--min"), (opt_size, "--opt"), (max_size, "--max"))
    ]
    profile = Profile(*(Shape(b, size.height, size.width) for b, size in zip(batches, sizes, strict=True))).validate()
    output = output or Path("engines") / f"{onnx_path.stem}.plan"
    result = build_engine(
        onnx_path,
        output,
        profile=profile,
        timing_cache=timing_cache,
        workspace_gb=workspace,
        optimization_level=optimization_level,
        hardware_compatible=hardware_compat,
        version_compatible=version_compat,
    )
    if json_output:
        summary = {"engine": result.engine, "manifest": result.manifest, "seconds": round(result.seconds, 1)}
        print_json("build", summary)
    else:
        typer.echo(f"wrote {result.engine} and {result.manifest} in {result.seconds:.0f}s")
