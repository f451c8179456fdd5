"""``smat-deploy bench``: engines side by side (latency, throughput, memory, accuracy, FLOP rate) and a size sweep;
``--interactive``: embed vs per-click vs whole-model time of the exported pair, judged against the speed-up goals."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smat_deploy.cli._options import (
    BackendOptionsOption,
    CheckpointOption,
    DeviceOption,
    MaxMemoryOption,
    MaxSideOption,
    ScaleToOption,
    SeedOption,
    ThreadsOption,
    UpsamplingOption,
    parse_backend_options,
    parse_backend_options_and_threads,
    size_policy,
)
from smat_deploy.cli._output import print_json
from smat_deploy.cli._progress import progress_bars
from smat_deploy.cli._shapes import parse_batches, parse_image_sizes
from smat_deploy.contract import PRECISIONS, canonical_precision
from smat_deploy.errors import CheckFailed, SmatError
from smat_deploy.evaluation.bench.machine import DEFAULT_MATMUL_SIZE
from smat_deploy.evaluation.bench.report import format_report, write_plot
from smat_deploy.evaluation.bench.runner import BenchConfig, Size, run_bench
from smat_deploy.runtime import BACKENDS, backend_class
from smat_deploy.runtime.sizing import DEFAULT_SCALE_TO

EPILOG = """Examples:

  smat-deploy bench --engine torch --engine export/smat.onnx

  smat-deploy bench --engine export/smat.onnx --sizes 518,1024x768,1560x1040 --plot sweep.png

  smat-deploy bench --engine export/smat.onnx --engine export/smat_int8.onnx --batch 1,4 --json

  smat-deploy bench --engine export/smat.onnx --backend onnxruntime --backend openvino

  smat-deploy bench --engine export/smat.onnx --sizes 1024,2048,4000x3000 --iters 1

Every size runs by the size policy of `smat-deploy matte`: at full size when it fits the memory budget,
else scaled down and the alpha upsampled back ('ran at' says which). Each row gives the predicted and
the measured peak memory of its process, and for scaled rows the share of time spent resizing.

  smat-deploy bench --interactive --engine export/ --iters 5

  smat-deploy bench --interactive --backend onnxruntime --backend openvino --sizes 518x518,768x1024

  smat-deploy bench --interactive --precision cpu --sizes 512

--interactive measures a folder from smat-deploy export --interactive (default: export/): the
whole model (smat.onnx), embed and one click (smat_encoder.onnx + smat_decoder.onnx) in rounds in
one process, batch 1, at 518x518, 1024x768 and 1560x1040 unless --sizes says otherwise, on ONNX
Runtime (or every --backend given, taking turns each round), float32 (or --precision: cpu, fp16,
int8, int8_cpu pick that precision's files), on the CPU (or --device). Its exit status is 1 when a
per-click speed-up goal is missed (2.2x at 518x518, 3x at 1024x768 or 768x1024, 4x at 1560x1040)
or the pair's alpha differs from the whole model's; the table is printed either way.

Exit status: 0 when every engine that is available here ran; 1 when any engine failed while opening
or running (its row says why; the others still ran); 2 on bad input. Engines whose backend is missing
(TensorRT without the tensorrt package or a GPU) are listed as unavailable and do not fail the run.
"""


def bench_command(
    engine: Annotated[
        list[str] | None,
        typer.Option(
            "--engine",
            "-e",
            help="An engine: 'torch' (the reference; see --checkpoint), .pth/.pt, .onnx or .plan. "
            "Repeatable; the first is the baseline of the speedup column. With --interactive: one folder "
            "holding smat.onnx and the pair (default: export).",
        ),
    ] = None,
    interactive: Annotated[
        bool,
        typer.Option(
            "--interactive",
            help="Time embed, one click and the whole model of an interactive export, interleaved, "
            "and judge the per-click speed-up goals.",
        ),
    ] = False,
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
        str | None,
        typer.Option(
            help="Image sizes WIDTHxHEIGHT (N for NxN), comma-separated; two or more make a sweep. "
            "Default: 518x518; with --interactive 518x518,1024x768,1560x1040.",
            show_default=False,
        ),
    ] = None,
    batch: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = "1",
    warmup: Annotated[
        int, typer.Option(help="Untimed calls before timing, per engine and size (--interactive: rounds per size).")
    ] = 1,
    iters: Annotated[
        int,
        typer.Option(
            "--iters",
            "--repeat",
            help="Timed calls per engine and size (--interactive: timed rounds per size, each whole, embed, click).",
        ),
    ] = 5,
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
    max_memory_mb: MaxMemoryOption = None,
    max_side: MaxSideOption = None,
    scale_to: ScaleToOption = DEFAULT_SCALE_TO,
    upsampling: UpsamplingOption = "guided",
    precision: Annotated[
        str,
        typer.Option(
            help="With --interactive: the precision of the whole model and pair (float32, cpu, fp16, int8_cpu)."
        ),
    ] = "float32",
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON (same rows, raw numbers).")
    ] = False,
) -> None:
    """Benchmark engines side by side: latency p50/p90/p99, images/s, peak memory, accuracy vs the reference."""
    policy = size_policy(max_memory_mb, max_side, scale_to, upsampling)
    if interactive:
        others = {
            "--checkpoint": checkpoint,
            "--plot": plot != Path("bench.png") or no_plot,
            "--batch": batch != "1",
            "--matmul-size": matmul_size != DEFAULT_MATMUL_SIZE,
            "--max-memory-mb": max_memory_mb is not None,
            "--max-side": max_side is not None,
            "--scale-to": scale_to != DEFAULT_SCALE_TO,
            "--upsampling": upsampling != "guided",
        }
        if given := [name for name, value in others.items() if value]:
            raise SmatError(f"bench --interactive does not take {', '.join(given)}")
        backends = tuple(dict.fromkeys(backend)) if backend else ("onnxruntime",)
        options = parse_backend_options(backend_option)
        _interactive(engine, sizes, warmup, iters, threads, seed, backends, options, precision, device, json_output)
        return
    if not engine:
        raise SmatError("bench needs at least one --engine (or --interactive with an export folder)")
    options = parse_backend_options_and_threads(threads, backend_option)  # threads also sizes the matmul
    config = BenchConfig(
        engines=engine,
        sizes=[Size(size.width, size.height) for size in parse_image_sizes(sizes or "518x518", "--sizes")],
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
        size_policy=policy,
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


def _interactive(
    engine: list[str] | None,
    sizes: str | None,
    warmup: int,
    iters: int,
    threads: int | None,
    seed: int,
    backends: tuple[str, ...],
    backend_options: dict[str, str],
    precision: str,
    device: str,
    json_output: bool,
) -> None:
    from smat_deploy.evaluation.bench.interactive import (
        DEFAULT_SIZES,
        InteractiveConfig,
        format_interactive,
        run_interactive_bench,
    )

    if engine and len(engine) > 1:
        raise SmatError("bench --interactive takes one --engine: the folder holding smat.onnx and the pair")
    if threads is not None and threads < 1:
        raise SmatError(f"--threads must be at least 1, got {threads}")
    chosen = (
        DEFAULT_SIZES if sizes is None else tuple(Size(s.width, s.height) for s in parse_image_sizes(sizes, "--sizes"))
    )
    precision = canonical_precision(precision)
    if precision not in PRECISIONS:
        raise SmatError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    suffixes = set()
    for name in backends:
        opens = backend_class(name).suffixes  # an unknown name is refused here too
        if not {".onnx", ".plan"} & set(opens):
            raise SmatError(
                f"bench --interactive measures exported .onnx or built .plan files; backend {name} opens neither"
            )
        suffixes.add(".onnx" if ".onnx" in opens else ".plan")
    if len(suffixes) > 1:
        raise SmatError(
            f"bench --interactive compares backends on one folder's files: {', '.join(backends)} "
            "open different kinds (.onnx and .plan)"
        )
    config = InteractiveConfig(
        engine=Path(engine[0]) if engine else None,
        sizes=chosen,
        warmup=warmup,
        iters=iters,
        threads=threads,
        seed=seed,
        backends=backends,
        precision=precision,
        device=device,
        suffix=suffixes.pop(),
        backend_options=backend_options,
    )
    with progress_bars("bench --interactive", "call") as progress:
        report = run_interactive_bench(config, progress)
    if json_output:
        print_json("bench-interactive", report.as_dict())
    else:
        typer.echo(format_interactive(report))
    problems = []
    if report.missed:
        problems.append(
            "per-click speed-up goal missed at "
            + ", ".join(
                f"{row['size']} on {row['backend']} ({row['speedup']:.2f}x < {row['goal']:g}x)" for row in report.missed
            )
        )
    if not report.pair_matches and report.lossy:
        problems.append(f"the {report.precision} pair's alpha is beyond its gate against the float32 whole model")
    elif not report.pair_matches:
        problems.append("the pair's alpha differs from the whole model's beyond the export gate")
    if problems:
        raise CheckFailed("; ".join(problems))
