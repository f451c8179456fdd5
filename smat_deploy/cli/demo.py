"""``smat-deploy demo``: the README's main job, from the reference model to a report folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smat_deploy._files import prepare_folder
from smat_deploy.apps.demo import DemoConfig, parse_precisions, run_demo, summary_text
from smat_deploy.cli._output import print_json
from smat_deploy.cli._progress import progress_bars
from smat_deploy.cli._shapes import parse_image_size
from smat_deploy.contract import PROMPT_KINDS
from smat_deploy.data.cases import standard_cases
from smat_deploy.errors import CheckFailed, SmatError

EPILOG = f"""Examples:

  smat-deploy demo                                   # demo weights; float32 + fp16 + int8; demo_out/report.md

  smat-deploy demo -c smat.pth --precisions none -o report/

  smat-deploy demo --reuse --iters 5                 # keep export/ artifacts made from the same weights

Without --checkpoint the demo uses its demo weights: SMat fine-tuned briefly on synthetic
composites (about a minute on a small CPU, first run only; cached in $SMAT_DEPLOY_CACHE, else
$XDG_CACHE_HOME/smat-deploy, else ~/.cache/smat-deploy). Their mattes find the object, but they are
not a real SMat checkpoint, and the output and report say so.

Stages: export float32 ONNX and the interactive pair (graph checks, parity on {len(standard_cases())} cases)
-> fp16/int8 variants (TensorRT engines where TensorRT and a GPU are present) -> every engine on a demo photo (auto
and click) -> parity of every engine (as smat-deploy parity) -> bench. Takes several minutes on a small
CPU (the INT8 calibration is the longest step). Exit status 1 when an engine fails its parity tolerance (the
report is still written), 2 on bad input.
"""


DemoCheckpointOption = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        "-c",
        help="Official SMat checkpoint, bare state dict, or DINOv2 ViT-S/14 backbone weights. Default: the demo "
        "weights, fine-tuned briefly on synthetic composites on the first run and cached (not a real SMat checkpoint).",
    ),
]


def demo(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Report folder: report.md, report.json and the pictures.")
    ] = Path("demo_out"),
    checkpoint: DemoCheckpointOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the demo photo and of generated composites.")] = 0,
    precisions: Annotated[
        str,
        typer.Option(
            help="Variants besides float32: cpu (ONNX Runtime CPU graph), fp16, int8 (both INT8 files), "
            "comma-separated, or none."
        ),
    ] = "cpu,fp16,int8",
    export_dir: Annotated[Path, typer.Option(help="Where the ONNX files go (as for export).")] = Path("export"),
    engines_dir: Annotated[Path, typer.Option(help="Where TensorRT engines go when TensorRT is present.")] = Path(
        "engines"
    ),
    calib: Annotated[Path, typer.Option(help="Calibration set for fp16/int8; built with defaults if empty.")] = Path(
        "calib_data"
    ),
    size: Annotated[str, typer.Option(help="Image size for bench: N (or NxN; square).")] = "518",
    iters: Annotated[int, typer.Option(help="Timed bench calls per engine.")] = 3,
    reuse: Annotated[
        bool,
        typer.Option(
            "--reuse", help="Keep ONNX files in --export-dir made by this version from the same weights (checked)."
        ),
    ] = False,
    parity_data: Annotated[
        Path | None,
        typer.Option(
            help="Data for the parity stage (as parity --data). Default: the bundled set, scikit-image's held-out "
            "photos and generated composites, the same on every machine (never the calibration set)."
        ),
    ] = None,
    parity_limit: Annotated[
        int,
        typer.Option(
            help=f"Images for the parity stage (x {len(PROMPT_KINDS)} prompt kinds, per engine); with the default "
            "data, photos and composites each."
        ),
    ] = 1,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of text.")] = False,
) -> None:
    """Export, make fp16/int8 variants, compare every engine with the reference, bench, and write a report."""
    side = parse_image_size(size, "--size", square=True).width
    if iters < 1 or parity_limit < 1:
        raise SmatError("--iters and --parity-limit must be at least 1")
    config = DemoConfig(
        out=prepare_folder(output, "output"),
        checkpoint=checkpoint,
        seed=seed,
        export_dir=export_dir,
        engines_dir=engines_dir,
        calib=calib,
        precisions=parse_precisions(precisions),
        bench_size=side,
        iters=iters,
        reuse=reuse,
        parity_data=parity_data,
        parity_limit=parity_limit,
    )
    with progress_bars("bench", "call") as progress:
        report = run_demo(config, log=lambda message: typer.echo(message, err=True), progress=progress)
    if json_output:
        print_json("demo", report.as_dict())
    else:
        typer.echo(f"weights: {report.weights}")
        typer.echo(summary_text(report))
        for note in report.notes:
            typer.echo(note)
        typer.echo(f"report: {report.report_path}")
    if failures := report.parity_failures:
        raise CheckFailed(f"parity failed for {len(failures)} engine(s): {' | '.join(failures)}")
