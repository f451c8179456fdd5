"""Option groups shared by several commands (prompt options, checkpoint, engine and device)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smat_deploy import prompts as P
from smat_deploy.errors import SmatError
from smat_deploy.runtime import Runtime

CheckpointOption = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        "-c",
        help="Official SMat checkpoint, bare state dict, or DINOv2 ViT-S/14 backbone weights. "
        "Default: built-in seeded weights with recalibrated BatchNorm (untrained: not a real matte).",
    ),
]
SeedOption = Annotated[int, typer.Option(help="Seed for randomly initialised weights.")]
DeviceOption = Annotated[
    str,
    typer.Option(help="auto (CUDA when usable, else CPU), cpu, cuda or cuda:N; a GPU that cannot be used is an error."),
]
EngineOption = Annotated[
    str | None,
    typer.Option(
        "--engine",
        "-e",
        help="'torch' (the PyTorch reference with --checkpoint; the default), a .pth/.pt checkpoint, "
        "an .onnx model (ONNX Runtime) or a .plan engine (TensorRT).",
    ),
]
PromptFileOption = Annotated[
    Path | None, typer.Option("--prompt", help='JSON prompt file: a list of {"type": point|box|scribble|mask, ...}.')
]
PointOption = Annotated[list[str] | None, typer.Option("--point", help="Click at X,Y (pixels). Repeatable.")]
BoxOption = Annotated[list[str] | None, typer.Option("--box", help="Box X0,Y0,X1,Y1 (half-open). Repeatable.")]
ScribbleOption = Annotated[
    list[Path] | None,
    typer.Option("--scribble", help='Scribble JSON: \\[[x,y],...] or {"points":...,"width":W}. Repeatable.'),
]
MaskOption = Annotated[
    list[Path] | None, typer.Option("--mask", help="Mask image of the photo's size; non-zero = marked.")
]
RadiusOption = Annotated[int, typer.Option("--point-radius", help="Half side of a click's square, px.")]


def collect_prompts(
    prompt_file: Path | None,
    points: list[str] | None,
    boxes: list[str] | None,
    scribbles: list[Path] | None,
    masks: list[Path] | None,
    point_radius: int = P.DEFAULT_POINT_RADIUS,
) -> list[P.Prompt]:
    """Every prompt given on the command line, in one list (empty: automatic mode)."""
    found: list[P.Prompt] = []
    if prompt_file is not None:
        found.extend(P.load_prompt_file(prompt_file))
    for text in points or []:
        x, y = P.parse_pair(text, 2, "--point")
        found.append(P.Point(x, y, point_radius))
    for text in boxes or []:
        found.append(P.Box(*P.parse_pair(text, 4, "--box")))
    found.extend(P.load_scribble_file(path) for path in scribbles or [])
    found.extend(P.Mask(str(path)) for path in masks or [])
    return found


def open_engine(
    engine: str | None, checkpoint: Path | None, seed: int, device: str, threads: int | None = None
) -> Runtime:
    """``--engine`` with ``--checkpoint``: the checkpoint belongs to the torch engine; other engines carry weights."""
    if engine is None or engine == "torch":
        return Runtime.open(
            checkpoint if checkpoint is not None else "torch", device=device, seed=seed, threads=threads
        )
    if checkpoint is not None:
        raise SmatError(f"--checkpoint is for the torch engine; {engine} carries its own weights")
    return Runtime.open(engine, device=device, threads=threads)
