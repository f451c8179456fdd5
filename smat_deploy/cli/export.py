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
from smat_deploy.evaluation.precision import make_variant
from smat_deploy.export import DEFAULT_OPSET
from smat_deploy.export.parity import DEFAULT_TOLERANCE
from smat_deploy.export.pipeline import export_float32

#: What each variant's accuracy against float32 was measured on (INT8: held-out composites).
MEASURED_ON = {"float32_cpu": "calibration + sizes", "fp16": "calibration"}

EXPORT_EPILOG = """Examples:

  smat-deploy export                                  # export/smat.onnx + export/smat.json, parity-checked

  smat-deploy export -c smat.pth --save-golden golden/ --json

  smat-deploy export --cpu                            # also smat_cpu.onnx: fastest float32 on ONNX Runtime CPU

  smat-deploy export --fp16 --int8 --calib calib_data/      # also smat_fp16.onnx, smat_int8.onnx, smat_int8_cpu.onnx
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
    seed: SeedOption = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of text.")] = False,
) -> None:
    """Export SMat to ONNX with dynamic batch, height, width; prompt and state are inputs."""
    log = (lambda message: None) if json_output else (lambda message: typer.echo(message, err=True))
    wanted = (("float32_cpu", cpu), ("fp16", fp16), ("int8", int8), ("int8_cpu", int8))
    kinds = [kind for kind, want in wanted if want]
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
        variants.append(make_variant(kind, report.onnx_path, calibration, engines_dir=engines_dir, log=log))
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
        for note in sorted({n for v in variants for n in v.notes}):
            typer.echo(note)


def _calibration(calib: Path | None, log):
    """The calibration set to use: the one given, or calib_data/ (built with defaults when empty)."""
    if calib is not None:
        return load_calibration_set(calib)
    default = Path("calib_data")
    if (default / "index.json").is_file():
        return load_calibration_set(default)
    log("no calibration set in calib_data/: building the default one (smat-deploy calib-data)")
    return build_calibration_set(default, synthetic=DEFAULT_SYNTHETIC)
