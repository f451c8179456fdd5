"""``smat-deploy export``: the reference model as a verified ONNX file plus its manifest."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from smat_deploy.apps.export_job import ExportJob, run_export, variant_kinds
from smat_deploy.cli._options import CheckpointOption, SeedOption
from smat_deploy.cli._output import print_json
from smat_deploy.engines.int8_budget import DEFAULT_MAX_ABS, DEFAULT_MEAN_ABS, MIN_INT8_SHARE, Budget
from smat_deploy.export import DEFAULT_OPSET
from smat_deploy.export.parity import DEFAULT_TOLERANCE

EPILOG = """Examples:

  smat-deploy export                                  # export/smat.onnx + export/smat.json, parity-checked

  smat-deploy export -c smat.pth -o out/ --save-golden golden/ --json

  smat-deploy export --cpu                            # also smat_cpu.onnx: fastest float32 on ONNX Runtime CPU

  smat-deploy export --interactive         # also smat_encoder.onnx + smat_decoder.onnx: embed once, click often

  smat-deploy export --fp16 --int8 --calib calib_data/      # also smat_fp16.onnx, smat_int8.onnx, smat_int8_cpu.onnx

  smat-deploy export --int8 --max-mean-diff 3e-3 --holdout-photos my_photos/   # a tighter INT8 budget

INT8 files are held to an accuracy budget against float32 (default mean |alpha diff| <= 5e-3 and
max <= 0.05) on held-out images the quantiser never saw: generated composites plus --holdout-photos
(default: the real photos scikit-image bundles that calibration does not use, the same on every
machine). Each layer group's sensitivity is measured, and the
most sensitive groups return to float until the budget holds; at least --min-int8-share of the weight
FLOPs must stay int8. A file that cannot meet its budget is not written (exit 1; any older file is kept).
"""


def export_command(
    checkpoint: CheckpointOption = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for smat.onnx, smat.json and the variants.")
    ] = Path("export"),
    opset: Annotated[int, typer.Option(help="ONNX opset (>= 17: LayerNormalization as one node).")] = DEFAULT_OPSET,
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="Verify ONNX Runtime against PyTorch on 8 standard cases.")
    ] = True,
    tolerance: Annotated[float, typer.Option(help="Max |alpha difference| allowed by --check.")] = DEFAULT_TOLERANCE,
    save_golden: Annotated[
        Path | None,
        typer.Option("--save-golden", help="Also write inputs/outputs in Polygraphy JSON for engine checks."),
    ] = None,
    cpu: Annotated[
        bool,
        typer.Option(
            "--cpu", help="Also write smat_cpu.onnx: float32 with ONNX Runtime's fused CPU kernels, verified."
        ),
    ] = False,
    fp16: Annotated[
        bool, typer.Option("--fp16", help="Also write smat_fp16.onnx (AutoCast), verified on CPU.")
    ] = False,
    int8: Annotated[
        bool, typer.Option("--int8", help="Also write smat_int8.onnx (TensorRT Q/DQ) and smat_int8_cpu.onnx (ORT CPU).")
    ] = False,
    calib: Annotated[
        Path | None, typer.Option(help="Calibration set (smat-deploy calib-data). Default calib_data/, built if empty.")
    ] = None,
    engines_dir: Annotated[Path, typer.Option(help="Where engines go when TensorRT and a GPU are present.")] = Path(
        "engines"
    ),
    max_mean_diff: Annotated[
        float, typer.Option(help="INT8 budget: mean |alpha diff| against float32 on held-out images.")
    ] = DEFAULT_MEAN_ABS,
    max_diff: Annotated[
        float, typer.Option(help="INT8 budget: max |alpha diff| against float32 on held-out images.")
    ] = DEFAULT_MAX_ABS,
    min_int8_share: Annotated[
        float,
        typer.Option(help="Least share of weight MatMul/Gemm/Conv FLOPs an INT8 file must run in int8 (0 to 1)."),
    ] = MIN_INT8_SHARE,
    holdout_photos: Annotated[
        Path | None,
        typer.Option(
            help="Held-out photos (with or without alpha) the INT8 budget is also measured on. "
            "Default: the real photos scikit-image bundles that no default calibration set holds (camera, retina, "
            "hubble_deep_field, immunohistochemistry, coins)."
        ),
    ] = None,
    interactive: Annotated[
        bool,
        typer.Option(
            "--interactive",
            help="Also write smat_encoder.onnx (once per photo) and smat_decoder.onnx (once per prompt), "
            "verified against the whole model.",
        ),
    ] = False,
    seed: SeedOption = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of text.")] = False,
) -> None:
    """Export SMat to ONNX with dynamic batch, height, width; prompt and state are inputs."""
    job = ExportJob(
        checkpoint=checkpoint,
        output_dir=output,
        opset=opset,
        check=check,
        tolerance=tolerance,
        golden_dir=save_golden,
        seed=seed,
        variants=variant_kinds(cpu=cpu, fp16=fp16, int8=int8),
        calib=calib,
        engines_dir=engines_dir,
        budget=Budget(max_mean_diff, max_diff, min_int8_share),  # a bad budget fails before any work
        holdout_photos=holdout_photos,
        interactive=interactive,
    )
    start = time.perf_counter()

    def log(message: str) -> None:  # each step with the time since the start: where the minutes go
        if not json_output:
            typer.echo(f"[{time.perf_counter() - start:6.1f}s] {message}", err=True)

    result = run_export(job, log=log)
    if json_output:
        print_json("export", result.as_dict())
    else:
        typer.echo(result.summary_text())
