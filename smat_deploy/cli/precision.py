"""``smat-deploy precision``: every precision artifact side by side on ONNX Runtime CPU."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from smat_deploy._table import format_table
from smat_deploy.cli.app import app
from smat_deploy.evaluation.precision import benchmark_precisions

EPILOG = """Example (after smat-deploy export --fp16 --int8):

  smat-deploy precision --export-dir export/ --size 518 --iters 5
"""


@app.command(epilog=EPILOG)
def precision(
    export_dir: Annotated[Path, typer.Option(help="Folder holding smat.onnx and its variants.")] = Path("export"),
    size: Annotated[int, typer.Option(help="Square image side for timing and accuracy, px.")] = 518,
    iters: Annotated[int, typer.Option(help="Timed rounds (each runs every model once, interleaved).")] = 5,
    warmup: Annotated[int, typer.Option(help="Untimed rounds first.")] = 1,
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime intra-op threads (default: all cores).")] = None,
    holdout: Annotated[int, typer.Option(help="Held-out composites for the accuracy columns.")] = 3,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON rows instead of a table.")] = False,
) -> None:
    """Sizes, preparation times, ms/image and accuracy vs float32 of float32 and its variants (cpu, fp16, int8)."""
    rows = benchmark_precisions(
        export_dir,
        size=size,
        iters=iters,
        warmup=warmup,
        threads=threads,
        holdout=holdout,
        progress=lambda r: tqdm(r, desc="timing rounds", disable=json_output),
    )
    if json_output:
        typer.echo(json.dumps({"size": size, "iters": iters, "cores": os.cpu_count(), "rows": rows}))
        return
    typer.echo(
        f"ONNX Runtime CPU, {size}x{size}, batch 1, median of {iters} interleaved rounds, {os.cpu_count()} cores"
    )
    typer.echo(format_table(rows))
