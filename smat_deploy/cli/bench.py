"""``smat-deploy bench``: engines side by side (latency, throughput, memory, accuracy, FLOP rate) and a size sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smat_deploy.cli._options import (
    BackendOptionsOption,
    CheckpointOption,
    DeviceOption,
    SeedOption,
    ThreadsOption,
    parse_backend_options_and_threads,
)
from smat_deploy.cli._output import print_json
from smat_deploy.cli._progress import progress_bars
from smat_deploy.cli._shapes import parse_batches, parse_image_sizes
from smat_deploy.errors import CheckFailed, SmatError
from smat_deploy.evaluation.bench.machine import DEFAULT_MATMUL_SIZE
from smat_deploy.evaluation.bench.report import format_report, write_plot
from smat_deploy.evaluation.bench.runner import BenchConfig, Size, run_bench
from smat_deploy.runtime import BACKENDS

EPILOG = """Examples:

  smat-deploy bench --engine torch --engine export/smat.onnx

  smat-deploy bench --engine export/smat.onnx --sizes 518,1024x768,1560x1040 --plot sweep.png

  smat-deploy bench --engine export/smat.onnx --engine export/smat_int8.onnx --batch 1,4 --json

  smat-deploy bench --engine export/smat.onnx --backend onnxruntime --backend openvino

Exit status: 0 when every engine that is available here ran; 1 when any engine failed while opening
or running (its row says why; the others still ran); 2 on bad input. Engines whose backend is missing
(TensorRT without the tensorrt package or a GPU) are listed as unavailable and do not fail the run.
"""


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
    backend: Annotated[
        list[str] | None,
        typer.Option(
            "--backend",
            help=f"Run every engine with each of these backends that opens it ({', '.join(BACKENDS)}). "
            "Repeatable; default: each engine's own backend by file type.",
        ),
    ] = None,
    backend_option: BackendOptionsOption = None,
    sizes: Annotated[
        str,
        typer.Option(help="Image sizes WIDTHxHEIGHT (N for NxN), comma-separated; two or more make a sweep."),
    ] = "518x518",
    batch: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = "1",
    warmup: Annotated[int, typer.Option(help="Untimed calls before timing, per engine and size.")] = 1,
    iters: Annotated[int, typer.Option(help="Timed calls per engine and size.")] = 5,
    threads: ThreadsOption = None,
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
    options = parse_backend_options_and_threads(threads, backend_option)  # threads also sizes the matmul
    config = BenchConfig(
        engines=engine,
        sizes=[Size(size.width, size.height) for size in parse_image_sizes(sizes, "--sizes")],
        batches=list(dict.fromkeys(parse_batches(batch, "--batch"))),
        warmup=warmup,
        iters=iters,
        threads=threads,
        device=device,
        checkpoint=checkpoint,
        seed=seed,
        matmul_size=matmul_size,
        backends=list(dict.fromkeys(backend)) if backend else None,
        backend_options=options,
    )
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
    if json_output:
        print_json("bench", report.as_dict())
    else:
        typer.echo(format_report(report))
    if failed := report.failed:
        names = ", ".join(sorted({row["engine"] for row in failed}))
        raise CheckFailed(f"{len(failed)} run(s) failed ({names}); see the status column")
