"""``smat-deploy export``: the reference model as a verified ONNX file plus its manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from smat_deploy._table import format_table
from smat_deploy.cli._options import CheckpointOption, SeedOption
from smat_deploy.cli.app import app
from smat_deploy.export import DEFAULT_OPSET
from smat_deploy.export.parity import DEFAULT_TOLERANCE
from smat_deploy.export.pipeline import export_float32

EXPORT_EPILOG = """Examples:

  smat-deploy export                                  # export/smat.onnx + export/smat.json, parity-checked

  smat-deploy export -c smat.pth --save-golden golden/ --json
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
    seed: SeedOption = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of text.")] = False,
) -> None:
    """Export SMat to ONNX with dynamic batch, height, width; prompt and state are inputs."""
    log = (lambda message: None) if json_output else (lambda message: typer.echo(message, err=True))
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
    summary = {
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
