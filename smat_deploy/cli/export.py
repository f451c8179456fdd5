"""``smat-deploy export``: the reference model as a verified ONNX file plus its manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from smat_deploy._table import format_table
from smat_deploy.cli._options import CheckpointOption, SeedOption
from smat_deploy.cli.app import app
from smat_deploy.engines.calibration import DEFAULT_SYNTHETIC, build_calibration_set, load_calibration_set
from smat_deploy.engines.int8_budget import DEFAULT_MAX_ABS, DEFAULT_MEAN_ABS, MIN_INT8_SHARE, Budget, BudgetReport
from smat_deploy.errors import SmatError
from smat_deploy.evaluation.parity_data import shared_photos_dir
from smat_deploy.evaluation.precision import make_variant
from smat_deploy.export import DEFAULT_OPSET
from smat_deploy.export.parity import DEFAULT_TOLERANCE
from smat_deploy.export.pipeline import export_float32

#: What each variant's accuracy against float32 was measured on (INT8: held-out composites).
MEASURED_ON = {"float32_cpu": "calibration + sizes", "fp16": "calibration", "int8": "gate set", "int8_cpu": "gate set"}

EXPORT_EPILOG = """Examples:

  smat-deploy export                                  # export/smat.onnx + export/smat.json, parity-checked

  smat-deploy export -c smat.pth --save-golden golden/ --json

  smat-deploy export --cpu                            # also smat_cpu.onnx: fastest float32 on ONNX Runtime CPU

  smat-deploy export --fp16 --int8 --calib calib_data/      # also smat_fp16.onnx, smat_int8.onnx, smat_int8_cpu.onnx

  smat-deploy export --int8 --max-mean-diff 3e-3 --holdout-photos my_photos/   # a tighter INT8 budget

INT8 files are held to an accuracy budget against float32 (default mean |alpha diff| <= 5e-3 and
max <= 0.05) on held-out images the quantiser never saw: generated composites plus --holdout-photos
(default: ../shared/data/matting when present). Each layer group's sensitivity is measured, and the
most sensitive groups return to float until the budget holds; at least --min-int8-share of the weight
FLOPs must stay int8. A file that cannot meet its budget is not written (exit 1; any older file is kept).
"""


@app.command("export", epilog=EXPORT_EPILOG)
def export_command(
    checkpoint: CheckpointOption = None,
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Folder for smat.onnx and smat.json.")] = Path(
        "export"
    ),
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
            "Default: ../shared/data/matting when present, else generated composites only."
        ),
    ] = None,
    seed: SeedOption = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of text.")] = False,
) -> None:
    """Export SMat to ONNX with dynamic batch, height, width; prompt and state are inputs."""
    log = (lambda message: None) if json_output else (lambda message: typer.echo(message, err=True))
    wanted = (("float32_cpu", cpu), ("fp16", fp16), ("int8", int8), ("int8_cpu", int8))
    kinds = [kind for kind, want in wanted if want]
    budget = Budget(max_mean_diff, max_diff, min_int8_share)  # a bad budget fails before any work
    if holdout_photos is not None and not holdout_photos.is_dir():
        raise SmatError(f"--holdout-photos: no such folder: {holdout_photos}")
    photos = holdout_photos if holdout_photos is not None else shared_photos_dir()
    # fail on a bad calibration set before spending a minute on the export
    calibration = _calibration(calib, log=log) if kinds else None
    report = export_float32(
        checkpoint=checkpoint,
        output_dir=output_dir,
        opset=opset,
        check=check,
        tolerance=tolerance,
        golden_dir=save_golden,
        seed=seed,
        log=log,
    )
    variants = []
    for kind in kinds:
        variants.append(
            make_variant(
                kind,
                report.onnx_path,
                calibration,
                engines_dir=engines_dir,
                budget=budget,
                holdout_photos=photos,
                log=log,
            )
        )
    summary = {
        "variants": [
            {
                "precision": v.kind,
                "onnx": str(v.path),
                "seconds": round(v.seconds, 1),
                "size_mb": round(v.size_bytes / 1e6, 1),
                "accuracy_vs_float32": v.accuracy,
                "engine": v.engine,
                "notes": v.notes,
                "int8_budget": None if v.budget is None else v.budget.as_dict(),
            }
            for v in variants
        ],
        "onnx": str(report.onnx_path),
        "manifest": str(report.manifest_path),
        "export_seconds": round(report.export_seconds, 2),
        "size_mb": round(report.size_bytes / 1e6, 1),
        "graph_checks_passed": all(c["passed"] for c in report.graph_checks),
        "parity": None if report.parity is None else report.parity.as_dict(),
        "golden": None if report.golden is None else [str(p) for p in report.golden],
    }
    if json_output:
        typer.echo(json.dumps(summary))
        return
    if report.parity is not None:
        typer.echo(format_table(report.parity.rows))
    typer.echo(
        f"wrote {report.onnx_path} ({summary['size_mb']} MB, exported in {report.export_seconds:.1f}s) "
        f"and {report.manifest_path}; {len(report.graph_checks)} graph checks passed"
        + ("" if report.parity is None else f"; parity max |diff| {report.parity.max_abs:.1e} <= {tolerance:g}")
    )
    if report.golden is not None:
        typer.echo(f"golden data: {report.golden[0]} and {report.golden[1]} (Polygraphy JSON)")
    if variants:
        rows = [
            {
                "precision": v.kind,
                "file": v.path.name,
                "size_MB": round(v.size_bytes / 1e6, 1),
                "made_in_s": round(v.seconds, 1),
                "mean_abs": v.accuracy["mean_abs"],
                "max_abs": v.accuracy["max_abs"],
                "SAD": v.accuracy["SAD"],
                "Grad": v.accuracy["Grad"],
                "measured_on": f"{v.accuracy['samples']} {MEASURED_ON.get(v.kind, 'held-out')}",
            }
            for v in variants
        ]
        typer.echo(format_table(rows))
        for v in variants:
            if v.budget is not None:
                typer.echo(f"\n{v.path.name}: sensitivity report ({v.budget.measured_on})")
                typer.echo(format_table(sensitivity_rows(v.budget)))
                typer.echo(budget_summary(v.budget))
        for note in sorted({n for v in variants for n in v.notes}):
            typer.echo(note)


def sensitivity_rows(report: BudgetReport) -> list[dict]:
    """One row per layer group, most sensitive first; the attention products last."""
    base = report.sensitivity_base or report.all_int8
    groups = sorted(report.groups, key=lambda g: g.gain(base, report.budget), reverse=True)
    rows = [
        {
            "group": g.name,
            "GFLOP": round(g.gflops, 2),
            "precision": g.precision,
            "mean_if_float": None if g.alone_in_float is None else g.alone_in_float.mean_abs,
            "max_if_float": None if g.alone_in_float is None else g.alone_in_float.max_abs,
            "sensitivity": round(g.gain(base, report.budget), 4) if g.alone_in_float is not None else None,
            "why": g.why,
        }
        for g in groups
    ]
    attention = report.attention
    rows.append(
        {
            "group": f"attention products ({attention['nodes']} nodes)",
            "GFLOP": attention["gflops"],
            "precision": attention["precision"],
            "why": "activation x activation: not a weight layer",
        }
    )
    return rows


def budget_summary(report: BudgetReport) -> str:
    final, budget = report.final, report.budget
    floated = [step["group"] for step in report.steps]
    return (
        f"all int8: mean {report.all_int8.mean_abs:.2e}, max {report.all_int8.max_abs:.3f}; "
        f"final: mean {final.mean_abs:.2e} <= {budget.mean_abs:g}, max {final.max_abs:.3f} <= {budget.max_abs:g} "
        f"(worst: {final.worst}); returned to float: {', '.join(floated) or 'none'}; "
        f"int8 share of weight FLOPs {report.int8_share:.1%} ({report.weight_gflops:.1f} GFLOP)"
        + (
            ""
            if report.held_out is None
            else f"; held-out samples alone ({report.held_out['samples']}): mean {report.held_out['mean_abs']:.2e}, "
            f"max {report.held_out['max_abs']:.3f}"
        )
    )


def _calibration(calib: Path | None, log):
    """The calibration set to use: the one given, or calib_data/ (built with defaults when empty)."""
    if calib is not None:
        return load_calibration_set(calib)
    default = Path("calib_data")
    if (default / "index.json").is_file():
        return load_calibration_set(default)
    log("no calibration set in calib_data/: building the default one (smat-deploy calib-data)")
    return build_calibration_set(default, synthetic=DEFAULT_SYNTHETIC)
