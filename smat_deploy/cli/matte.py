"""``smat-deploy matte``: one photo, one alpha (and optionally a cutout), on the PyTorch reference."""

from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from smat_deploy import images, prompts
from smat_deploy.cli._options import (
    BoxOption,
    CheckpointOption,
    MaskOption,
    PointOption,
    PromptFileOption,
    RadiusOption,
    ScribbleOption,
    SeedOption,
    collect_prompts,
)
from smat_deploy.cli.app import app
from smat_deploy.errors import SmatError
from smat_deploy.matting import predict_alpha
from smat_deploy.model import describe_weights, load_model

MATTE_EPILOG = """Examples (automatic; two clicks; a box with real weights):

  smat-deploy matte photo.jpg -o alpha.png --cutout cutout.png

  smat-deploy matte photo.jpg --point 320,240 --point 400,250 -o alpha.png

  smat-deploy matte photo.jpg --box 100,50,420,470 -c smat.pth -o alpha.png
"""


class Mode(StrEnum):
    auto = "auto"
    interactive = "interactive"


@app.command(epilog=MATTE_EPILOG)
def matte(
    image: Annotated[Path, typer.Argument(help="Photo (PNG/JPEG; RGBA, grayscale and 16-bit are accepted).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Alpha matte to write (8-bit grayscale).")],
    cutout: Annotated[
        Path | None, typer.Option(help="Also write the photo with the alpha as transparency (PNG).")
    ] = None,
    checkpoint: CheckpointOption = None,
    prompt: PromptFileOption = None,
    point: PointOption = None,
    box: BoxOption = None,
    scribble: ScribbleOption = None,
    mask: MaskOption = None,
    point_radius: RadiusOption = prompts.DEFAULT_POINT_RADIUS,
    max_side: Annotated[
        int | None,
        typer.Option(help="Scale the photo down so its long side is at most this (official scripts: 1280-1560)."),
    ] = None,
    state: Annotated[
        Mode | None,
        typer.Option(help="Force the mode; default: interactive when any prompt is given, else automatic."),
    ] = None,
    seed: SeedOption = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of text.")] = False,
) -> None:
    """Matte one photo: automatic with no prompt, interactive with clicks, boxes, scribbles or masks."""
    images.check_image_output(output)
    if cutout is not None:
        images.check_image_output(cutout, transparency=True)
    photo = images.load_image(image)
    working = photo if max_side is None else images.cap_long_side(photo, max_side)
    prompt_list = collect_prompts(prompt, point, box, scribble, mask, point_radius)
    # Prompts are given in the original photo's pixels: rasterise there, then follow any cap.
    mask_full = prompts.rasterize(prompt_list, photo.shape[:2])
    prompt_mask = mask_full if working is photo else images.resize_alpha_nearest(mask_full, working.shape[:2])
    if state is Mode.interactive and not prompt_mask.any():
        raise SmatError("--state interactive needs a prompt that marks at least one pixel")
    state_value = None if state is None else float(state is Mode.interactive)
    model = load_model(checkpoint, seed=seed)
    start = time.perf_counter()
    alpha = predict_alpha(model, working, prompt_mask, state_value)
    seconds = time.perf_counter() - start
    alpha = images.resize_alpha_nearest(alpha, photo.shape[:2])
    images.save_alpha(output, alpha)
    if cutout is not None:
        images.save_cutout(cutout, photo, alpha)
    summary = {
        "image": str(image),
        "size": [photo.shape[1], photo.shape[0]],
        "mode": "interactive" if prompt_mask.any() and state is not Mode.auto else "automatic",
        "prompt": str(prompts.prompt_kind(prompt_list)),
        "weights": describe_weights(checkpoint, seed),
        "alpha": str(output),
        "cutout": str(cutout) if cutout else None,
        "seconds": round(seconds, 3),
    }
    if json_output:
        typer.echo(json.dumps(summary))
    else:
        extra = f" and {cutout}" if cutout else ""
        typer.echo(
            f"{image}: {summary['mode']} ({summary['prompt']}) {photo.shape[1]}x{photo.shape[0]} "
            f"in {seconds:.2f}s -> {output}{extra}"
        )
        if not checkpoint:
            typer.echo(
                f"note: weights are the {describe_weights(None, seed)}; pass --checkpoint for a real matte", err=True
            )
