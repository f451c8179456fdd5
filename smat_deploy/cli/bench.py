"""``smat-deploy bench``: engines side by side (latency, throughput, memory, accuracy, FLOP rate) and a size sweep."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from smat_deploy.cli._options import CheckpointOption, DeviceOption, SeedOption
from smat_deploy.cli._progress import progress_bars
from smat_deploy.cli.app import app
from smat_deploy.errors import SmatError
from smat_deploy.evaluation.bench import BenchConfig, parse_batches, parse_sizes, run_bench
from smat_deploy.evaluation.bench_report import format_report, write_plot
from smat_deploy.evaluation.machine import DEFAULT_MATMUL_SIZE

BENCH_EPILOG = """Examples:

  smat-deploy bench --engine torch --engine export/smat.onnx

  smat-deploy bench --engine export/smat.onnx --sizes 518x518,1024x768,1560x1040 --plot sweep.png

  smat-deploy bench --engine export/smat.onnx --engine export/smat_int8.onnx --batch 1,4 --json

Exit status: 0 when every engine that is available here ran; 1 when any engine failed while opening
or running (its row says why; the others still ran). Engines whose backend is missing (TensorRT
without the tensorrt package or a GPU) are listed as unavailable and do not fail the run.
"""


@app.command("bench", epilog=BENCH_EPILOG)
def bench_command(
    engine: Annotated[
        list[str],
        typer.Option(
            "--engine",
            "-e",
            help="An engine: 'torch' (the reference; see --checkpoint), .pth/.pt, .onnx or .plan. "
            "Repeatable; the first is the baseline of the speedup column.",
        ),
    ],
    sizes: Annotated[
        str, typer.Option(help="Image sizes WIDTHxHEIGHT, comma-separated; two or more make a sweep.")
    ] = "518x518",
    batch: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = "1",
    warmup: Annotated[int, typer.Option(help="Untimed calls before timing, per engine and size.")] = 1,
    iters: Annotated[int, typer.Option(help="Timed calls per engine and size.")] = 5,
    threads: Annotated[
        int | None,
        typer.Option(
            help="Intra-op threads for every engine and for the matmul ceiling "
            "(default: the libraries' own, one per core)."
        ),
    ] = None,
    device: DeviceOption = "auto",
    checkpoint: CheckpointOption = None,
    seed: SeedOption = 0,
    plot: Annotated[
        Path, typer.Option(help="Where the sweep plot (PNG) goes; written when --sizes has two or more sizes.")
    ] = Path("bench.png"),
    no_plot: Annotated[bool, typer.Option("--no-plot", help="Do not write the sweep plot.")] = False,
    matmul_size: Annotated[
        int, typer.Option(help="Side of the float32 matrices whose product sets the GFLOP/s ceiling.")
    ] = DEFAULT_MATMUL_SIZE,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON (same rows, raw numbers).")
    ] = False,
) -> None:
    """Benchmark engines side by side: latency p50/p90/p99, images/s, peak memory, accuracy vs the reference."""
    config = BenchConfig(
        engines=engine,
        sizes=parse_sizes(sizes),
        batches=parse_batches(batch),
        warmup=warmup,
        iters=iters,
        threads=threads,
        device=device,
        checkpoint=checkpoint,
        seed=seed,
        matmul_size=matmul_size,
    )
    if threads is not None and threads < 1:
        raise SmatError("--threads must be at least 1")
    if matmul_size < 64:
        raise SmatError("--matmul-size must be at least 64")
    sweep = len(config.sizes) > 1 and not no_plot
    if sweep:
        from smat_deploy._files import check_output_path

        check_output_path(plot)  # fail before minutes of measuring, not after
    with progress_bars("bench", "call") as progress:
        report = run_bench(config, progress)
    if sweep:
        report.plot = str(write_plot(report, plot))
    typer.echo(json.dumps(report.as_dict(), indent=2) if json_output else format_report(report))
    if failed := report.failed:
        names = ", ".join(sorted({row["engine"] for row in failed}))
        typer.echo(f"error: {len(failed)} run(s) failed ({names}); see the status column", err=True)
        raise typer.Exit(1)
