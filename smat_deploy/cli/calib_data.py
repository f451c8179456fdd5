"""``smat-deploy calib-data``: the deterministic calibration set INT8 and FP16 preparation read."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from smat_deploy.cli._output import print_json
from smat_deploy.cli._shapes import parse_image_size
from smat_deploy.data.calibration import DEFAULT_SIZE, DEFAULT_SYNTHETIC, PROMPT_KINDS, build_calibration_set

EPILOG = """Examples:

  smat-deploy calib-data                        # 1 synthetic composite + 4 built-in photos, x 5 prompt kinds

  smat-deploy calib-data --synthetic 8 --from my_photos/ --seed 1 -o my_calib/ --size 448

  smat-deploy calib-data --synthetic 2 --no-builtin-photos   # composites only

The built-in photos (astronaut, chelsea, coffee, rocket: public domain or CC0) ship inside the \
scikit-image package; nothing is downloaded. Real photos reach activation ranges that synthetic \
composites do not, so INT8 calibrated without them clips on real photos.
"""


def calib_data(
    synthetic: Annotated[
        int | None, typer.Option(help=f"Synthetic composites to generate (default {DEFAULT_SYNTHETIC} without --from).")
    ] = None,
    from_dir: Annotated[Path | None, typer.Option("--from", help="Folder of your own photos to add.")] = None,
    builtin_photos: Annotated[
        bool,
        typer.Option(
            "--builtin-photos/--no-builtin-photos",
            help="Add the 4 real photos bundled with scikit-image (astronaut, chelsea, coffee, rocket).",
        ),
    ] = True,
    output: Annotated[Path, typer.Option("--output", "-o", help="Calibration folder to (re)write.")] = Path(
        "calib_data"
    ),
    seed: Annotated[int, typer.Option(help="Seed of the synthetic composites.")] = 0,
    size: Annotated[str, typer.Option(help="Size of the square calibration images: N (or NxN).")] = str(DEFAULT_SIZE),
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of text.")] = False,
) -> None:
    """Build a calibration set: images x every prompt kind (none, point, box, scribble, mask) + tensors."""
    side = parse_image_size(size, "--size", square=True).width
    count = synthetic if synthetic is not None else (0 if from_dir is not None else DEFAULT_SYNTHETIC)
    calibration = build_calibration_set(
        output,
        synthetic=count,
        from_dir=from_dir,
        seed=seed,
        size=side,
        builtin_photos=builtin_photos,
        progress=lambda items: tqdm(items, desc="calibration images", unit="img", disable=json_output),
    )
    sources = {s["image"]: s["source"] for s in calibration.samples}
    summary = {
        "directory": str(calibration.directory),
        "samples": len(calibration),
        "images": len(sources),
        "synthetic": sum(source == "synthetic" for source in sources.values()),
        "photos": sum(source == "photo" for source in sources.values()),
        "prompt_kinds": list(PROMPT_KINDS),
        "size": calibration.size,
        "tensors": str(calibration.directory / "calib.npz"),
    }
    if json_output:
        print_json("calib-data", summary)
    else:
        typer.echo(
            f"wrote {summary['samples']} samples ({summary['images']} images: {summary['synthetic']} synthetic, "
            f"{summary['photos']} photos; x {len(PROMPT_KINDS)} prompt kinds, {side}x{side}) "
            f"to {calibration.directory}: index.json, images/, alphas/, calib.npz"
        )
