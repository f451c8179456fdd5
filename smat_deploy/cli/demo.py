"""``smat-deploy demo``: the README's main job on built-in defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from smat_deploy import images, prompts
from smat_deploy.cli._options import CheckpointOption, SeedOption
from smat_deploy.cli.app import app
from smat_deploy.data.synthetic import make_composite
from smat_deploy.matting import predict_alpha
from smat_deploy.model import describe_weights, load_model


@app.command(epilog="Example:  smat-deploy demo --out demo_out/")
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the sample, its alphas and cutouts.")] = Path("demo_out"),
    checkpoint: CheckpointOption = None,
    seed: SeedOption = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of text.")] = False,
) -> None:
    """Matte a generated sample photo automatically and with a click; write alphas and cutouts."""
    out.mkdir(parents=True, exist_ok=True)
    sample = make_composite((378, 504), seed=seed)
    images.save_rgb(out / "sample.png", sample.image)
    images.save_alpha(out / "sample_true_alpha.png", sample.alpha)
    ys, xs = np.nonzero(sample.alpha > 0.99)
    click = prompts.Point(float(np.median(xs)), float(np.median(ys)))
    model = load_model(checkpoint, seed=seed)
    rows = []
    for name, prompt_list in (("auto", []), ("point", [click])):
        prompt_mask = prompts.rasterize(prompt_list, sample.image.shape[:2])
        alpha = predict_alpha(model, sample.image, prompt_mask)
        alpha_path = images.save_alpha(out / f"alpha_{name}.png", alpha)
        cutout_path = images.save_cutout(out / f"cutout_{name}.png", sample.image, alpha)
        mad = float(np.abs(alpha - sample.alpha).mean())
        rows.append({"mode": name, "alpha": str(alpha_path), "cutout": str(cutout_path), "mad_vs_truth": round(mad, 4)})
    weights = describe_weights(checkpoint, seed)
    if json_output:
        typer.echo(json.dumps({"weights": weights, "results": rows}))
        return
    typer.echo(f"weights: {weights}")
    for row in rows:
        typer.echo(f"  {row['mode']:<6} MAD vs true alpha {row['mad_vs_truth']:.4f}  {row['alpha']}  {row['cutout']}")
