"""``smat-deploy build``: a TensorRT engine from an SMat ONNX model (where TensorRT is installed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from smat_deploy.cli.app import app
from smat_deploy.engines.tensorrt_build import Profile, Shape, build_engine

EPILOG = """Examples:

  smat-deploy build --onnx export/smat_fp16.onnx --output engines/smat_fp16.plan

  smat-deploy build --onnx export/smat_int8.onnx --max 4x1024x1024 --timing-cache engines/timing.cache
"""


@app.command(epilog=EPILOG)
def build(
    onnx_path: Annotated[Path, typer.Option("--onnx", help="SMat ONNX model (float32, fp16 or int8 Q/DQ).")],
    output: Annotated[Path | None, typer.Option(help="Engine to write (default engines/<onnx stem>.plan).")] = None,
    min_shape: Annotated[str, typer.Option("--min", help="Smallest BxHxW of the profile.")] = "1x14x14",
    opt_shape: Annotated[str, typer.Option("--opt", help="BxHxW TensorRT tunes for.")] = "1x518x518",
    max_shape: Annotated[str, typer.Option("--max", help="Largest BxHxW of the profile.")] = "4x1568x1568",
    timing_cache: Annotated[Path | None, typer.Option(help="Timing cache to reuse and update.")] = None,
    workspace: Annotated[float | None, typer.Option(help="Workspace memory pool limit, GB.")] = None,
    optimization_level: Annotated[int, typer.Option(help="Builder optimisation level 0..5.")] = 3,
    hardware_compat: Annotated[bool, typer.Option(help="Ampere-and-newer compatible engine.")] = False,
    version_compat: Annotated[bool, typer.Option(help="Version-compatible engine.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of text.")] = False,
) -> None:
    """Build a strongly typed TensorRT engine (precision comes from the ONNX file) plus its sidecar JSON."""
    profile = Profile(
        Shape.parse(min_shape, "--min"), Shape.parse(opt_shape, "--opt"), Shape.parse(max_shape, "--max")
    ).validate()
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
    summary = {"engine": str(result.engine), "manifest": str(result.manifest), "seconds": round(result.seconds, 1)}
    typer.echo(
        json.dumps(summary) if json_output else f"wrote {result.engine} and {result.manifest} in {result.seconds:.0f}s"
    )
