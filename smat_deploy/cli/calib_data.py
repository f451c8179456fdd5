"""``smat-deploy calib-data``: the deterministic calibration set INT8 and FP16 preparation read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from smat_deploy.cli.app import app
from smat_deploy.engines.calibration import DEFAULT_SIZE, DEFAULT_SYNTHETIC, PROMPT_KINDS, build_calibration_set

EPILOG = """Examples:

  smat-deploy calib-data                                   # 2 synthetic composites x 5 prompt kinds -> calib_data/

  smat-deploy calib-data --synthetic 8 --from my_photos/ --seed 1
"""


@app.command("calib-data", epilog=EPILOG)
def calib_data(
    synthetic: Annotated[
        int | None, typer.Option(help="Synthetic composites to generate (default 2 without --from).")
    ] = None,
    from_dir: Annotated[Path | None, typer.Option("--from", help="Folder of your own photos to add.")] = None,
    out: Annotated[Path, typer.Option(help="Calibration folder to (re)write.")] = Path("calib_data"),
    seed: Annotated[int, typer.Option(help="Seed of the synthetic composites.")] = 0,
    size: Annotated[int, typer.Option(help="Side of the square calibration images, px.")] = DEFAULT_SIZE,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of text.")] = False,
) -> None:
    """Build a calibration set: images x every prompt kind (none, point, box, scribble, mask) + tensors."""
    count = synthetic if synthetic is not None else (0 if from_dir is not None else DEFAULT_SYNTHETIC)
    calibration = build_calibration_set(
        out,
        synthetic=count,
        from_dir=from_dir,
        seed=seed,
        size=size,
        progress=lambda items: tqdm(items, desc="calibration images", unit="img", disable=json_output),
    )
    summary = {
        "directory": str(calibration.directory),
        "samples": len(calibration),
        "images": len({s["image"] for s in calibration.samples}),
        "prompt_kinds": list(PROMPT_KINDS),
        "size": calibration.size,
        "tensors": str(calibration.directory / "calib.npz"),
    }
    if json_output:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(
            f"wrote {summary['samples']} samples ({summary['images']} images x {len(PROMPT_KINDS)} prompt kinds, "
            f"{size}x{size}) to {calibration.directory}: index.json, images/, alphas/, calib.npz"
        )
