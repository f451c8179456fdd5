"""``smat-deploy build``: a TensorRT engine from an SMat ONNX model (where TensorRT is installed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smat_deploy.cli._output import print_json
from smat_deploy.cli._shapes import parse_batches, parse_image_size
from smat_deploy.engines.tensorrt_build import Profile, Shape, build_engine, build_pair, find_pair_encoder
from smat_deploy.errors import SmatError
from smat_deploy.pair import pair_role

EPILOG = """Examples:

  smat-deploy build --onnx export/smat_fp16.onnx -o engines/smat_fp16.plan

  smat-deploy build --onnx export/smat_int8.onnx --max 1024 --batch 1,1,4 --timing-cache engines/timing.cache

  smat-deploy build --interactive --onnx export/ -o engines/ --max 1024x768

The optimisation profile: --min, --opt and --max are image sizes WIDTHxHEIGHT (N for NxN), and
--batch gives the batch sizes of the same three points, MIN,OPT,MAX.

The interactive pair (from smat-deploy export --interactive): --onnx is the pair's folder with
--interactive (--precision picks the pair, e.g. fp16 for smat_encoder_fp16.onnx), or its encoder
file; --output is then a folder (default engines/) and receives smat_encoder.plan and
smat_decoder.plan. The profile describes photos; the decoder's profile for every embedding tensor
follows from it (the token grid of every photo in the range, padding included).
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
    interactive: Annotated[
        bool,
        typer.Option(help="Build the interactive pair (encoder + decoder engines with matching profiles)."),
    ] = False,
    precision: Annotated[
        str, typer.Option(help="With --interactive and a folder: which pair (float32, fp16, int8).")
    ] = "float32",
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of text.")] = False,
) -> None:
    """Build a strongly typed TensorRT engine (precision comes from the ONNX file) plus its sidecar JSON."""
    batches = parse_batches(batch, "--batch", count=3)
    sizes = [
        parse_image_size(text, option)
        for text, option in ((min_size, "--min"), (opt_size, "--opt"), (max_size, "--max"))
    ]
    profile = Profile(*(Shape(b, size.height, size.width) for b, size in zip(batches, sizes, strict=True))).validate()
    options = {
        "profile": profile,
        "timing_cache": timing_cache,
        "workspace_gb": workspace,
        "optimization_level": optimization_level,
        "hardware_compatible": hardware_compat,
        "version_compatible": version_compat,
    }
    encoder = _pair_encoder(onnx_path, interactive, precision)
    if encoder is not None:
        _build_pair(encoder, output, options, json_output)
        return
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


def _pair_encoder(onnx_path: Path, interactive: bool, precision: str) -> Path | None:
    """The pair's encoder file when the request is for the interactive pair, else None (one whole-model engine)."""
    if onnx_path.is_dir():
        if not interactive:
            raise SmatError(
                f"--onnx {onnx_path} is a folder: add --interactive to build the pair in it, or give a file"
            )
        return find_pair_encoder(onnx_path, precision)
    role = pair_role(onnx_path)
    if role == "decoder":
        raise SmatError(f"{onnx_path.name} is the pair's decoder: give its encoder or the folder (with --interactive)")
    if role == "encoder":
        return onnx_path
    if interactive:
        raise SmatError(
            f"--interactive needs the pair from smat-deploy export --interactive (its folder or smat_encoder*.onnx); "
            f"{onnx_path} is not part of one"
        )
    return None


def _build_pair(encoder: Path, output: Path | None, options: dict, json_output: bool) -> None:
    output = output or Path("engines")
    if output.suffix.lower() in (".plan", ".engine"):
        raise SmatError(f"the pair's --output is a folder for both engines, not a file: {output}")
    result = build_pair(encoder, output, **options)
    if json_output:
        summary = {
            role: {"engine": r.engine, "manifest": r.manifest, "seconds": round(r.seconds, 1)}
            for role, r in (("encoder", result.encoder), ("decoder", result.decoder))
        }
        print_json("build", {**summary, "seconds": round(result.seconds, 1), "profiles": result.shapes})
        return
    typer.echo(f"wrote {result.encoder.engine} and {result.decoder.engine} (+ sidecar JSON) in {result.seconds:.0f}s")
    for role, shapes in result.shapes.items():
        for name, (low, opt, high) in shapes.items():
            typer.echo(f"  {role} {name}: min {list(low)} opt {list(opt)} max {list(high)}")
