"""``smat-deploy precision``: every precision artifact side by side on ONNX Runtime CPU."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from smat_deploy._table import format_table
from smat_deploy.cli._output import print_json
from smat_deploy.cli._shapes import parse_image_size
from smat_deploy.evaluation.precision import benchmark_precisions

EPILOG = """Example (after smat-deploy export --fp16 --int8):

  smat-deploy precision --export-dir export/ --size 518 --iters 5

Columns: file size, preparation time, ONNX Runtime CPU ms/image and speed-up (interleaved rounds), accuracy
against float32 (mean/max |alpha diff|, SAD, Grad) on the held-out set (generated composites + the photos
scikit-image bundles that calibration does not use, every prompt kind), and what each file computes in:
the share of its FLOPs (flops_*) and activation bytes (act_bytes_*) in int8, fp16 and fp32, and the share of
the attention products in fp16. The shares are the file's own types, which TensorRT runs as they are.
"""


def precision(
    export_dir: Annotated[Path, typer.Option(help="Folder holding smat.onnx and its variants.")] = Path("export"),
    size: Annotated[str, typer.Option(help="Image size for timing and accuracy: N (or NxN; square).")] = "518",
    iters: Annotated[int, typer.Option(help="Timed rounds (each runs every model once, interleaved).")] = 5,
    warmup: Annotated[int, typer.Option(help="Untimed rounds first.")] = 1,
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime intra-op threads (default: all cores).")] = None,
    holdout: Annotated[
        int,
        typer.Option(help="Held-out composites for the accuracy columns (beside the 5 bundled held-out photos)."),
    ] = 3,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON rows instead of a table.")] = False,
) -> None:
    """Sizes, preparation times, ms/image and accuracy vs float32 of float32 and its variants (cpu, fp16, int8)."""
    side = parse_image_size(size, "--size", square=True).width
    rows = benchmark_precisions(
        export_dir,
        size=side,
        iters=iters,
        warmup=warmup,
        threads=threads,
        holdout=holdout,
        progress=lambda r: tqdm(r, desc="timing rounds", disable=json_output),
    )
    if json_output:
        print_json("precision", {"size": f"{side}x{side}", "iters": iters, "cores": os.cpu_count(), "rows": rows})
        return
    typer.echo(
        f"ONNX Runtime CPU, {side}x{side}, batch 1, median of {iters} interleaved rounds, {os.cpu_count()} cores"
    )
    typer.echo(format_table(rows))
