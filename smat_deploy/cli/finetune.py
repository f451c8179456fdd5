"""``smat-deploy finetune``: train SMat on synthetic composites or an image/alpha folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from smat_deploy._files import check_output_path
from smat_deploy.cli._options import CheckpointOption
from smat_deploy.cli._output import print_json
from smat_deploy.cli._shapes import parse_image_size
from smat_deploy.data import open_dataset
from smat_deploy.data.prompt_sampling import parse_kinds
from smat_deploy.errors import SmatError
from smat_deploy.model import load_model
from smat_deploy.train import FinetuneConfig, evaluate_heldout, finetune, read_resume_state

EPILOG = """Examples (two minutes on a laptop CPU; a real dataset; continuing a run):

  smat-deploy finetune --synthetic 64 --steps 120 --size 112 --batch 4 --lr 2e-3 --eval 8 -o ft.pth

  smat-deploy finetune --data mattes/ --steps 2000 -c smat.pth --save-every 100 -o ft.pth

  smat-deploy finetune --data mattes/ --steps 4000 --resume ft.pth -o ft.pth
"""


def finetune_command(
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Checkpoint to write (official format plus optimizer state and step)."),
    ],
    steps: Annotated[int, typer.Option(help="Total training steps; a resumed run continues up to this number.")],
    data: Annotated[
        Path | None, typer.Option(help="Folder with image/ and alpha/ subfolders (files matched by name).")
    ] = None,
    synthetic: Annotated[int | None, typer.Option(help="Train on this many generated composites instead.")] = None,
    batch: Annotated[int, typer.Option(help="Samples per step; each gets its own prompt kind.")] = 2,
    size: Annotated[str, typer.Option(help="Square training crop: N (or NxN), a multiple of 14.")] = "224",
    lr: Annotated[float, typer.Option(help="AdamW learning rate of the prompt attention and decoder.")] = 5e-4,
    backbone_lr_scale: Annotated[float, typer.Option(help="Backbone learning rate = lr x this.")] = 0.1,
    freeze_backbone: Annotated[bool, typer.Option("--freeze-backbone", help="Keep the DINOv2 backbone fixed.")] = False,
    prompts: Annotated[
        str, typer.Option(help="Prompt kinds mixed in each batch, comma-separated.")
    ] = "none,point,box,scribble,mask",
    checkpoint: CheckpointOption = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue a run from its checkpoint (weights, optimizer, step).")
    ] = None,
    save_every: Annotated[int, typer.Option(help="Also write --output every K steps (0: only at the end).")] = 0,
    eval_count: Annotated[
        int, typer.Option("--eval", help="Held-out synthetic composites to score before and after (0: skip).")
    ] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the initial weights, the data order, crops and prompts.")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of text.")] = False,
) -> None:
    """Fine-tune SMat with the paper's objective (separate L1 + Laplacian) and prompt mix; resumable."""
    check_output_path(output)
    side = parse_image_size(size, "--size", square=True).width
    if resume is not None and checkpoint is not None:
        raise SmatError("give --resume (continue a run) or --checkpoint (start from weights), not both")
    if eval_count < 0:
        raise SmatError(f"--eval must not be negative, got {eval_count}")
    config = FinetuneConfig(
        steps=steps,
        batch_size=batch,
        size=side,
        lr=lr,
        backbone_lr_scale=backbone_lr_scale,
        freeze_backbone=freeze_backbone,
        prompt_kinds=tuple(k.value for k in parse_kinds(prompts)),
        seed=seed,
        save_every=save_every,
    )
    config.validate()
    dataset = open_dataset(data, synthetic, side)
    model = load_model(checkpoint, seed=seed)
    resume_state = read_resume_state(resume, model) if resume is not None else None
    before = evaluate_heldout(model, eval_count, side) if eval_count else None

    start = resume_state.iteration if resume_state else 0
    with tqdm(total=steps, initial=start, desc="finetune", unit="step", disable=None) as bar:

        def on_step(step: int, losses: dict[str, float]) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses['loss']:.4f}", l1=f"{losses['separate_l1']:.4f}")

        result = finetune(model, dataset, config, output, resume=resume_state, on_step=on_step)
    after = evaluate_heldout(model, eval_count, side) if eval_count else None

    summary = {
        "output": str(result.out),
        "data": dataset.describe(),
        "weights_from": str(resume or checkpoint or f"seeded random (seed {seed})"),
        "steps": [result.start_step, result.end_step],
        "seconds": round(result.seconds, 1),
        "loss_start": round(result.loss_at_start(), 5),
        "loss_end": round(result.loss_at_end(), 5),
        "skipped": result.skipped,
        "heldout": None
        if before is None
        else {"composites": eval_count, "size": side, "mad_before": before.mad, "mad_after": after.mad},
        "config": config.to_dict(),
    }
    if json_output:
        print_json("finetune", summary)
        return
    typer.echo(f"data: {summary['data']}; weights from {summary['weights_from']}")
    typer.echo(
        f"steps {result.start_step}->{result.end_step} in {result.seconds:.1f}s, "
        f"loss {summary['loss_start']:.4f} -> {summary['loss_end']:.4f} (mean of the first/last 10 steps)"
    )
    if before is not None and after is not None:
        for mode in before.mad:
            where = f"{mode}, {eval_count} composites of {side}px"
            typer.echo(f"held-out MAD ({where}): {before.mad[mode]:.4f} -> {after.mad[mode]:.4f}")
    if summary["skipped"]:
        typer.echo(f"skipped samples: {summary['skipped']}")
    typer.echo(f"checkpoint: {result.out}")
