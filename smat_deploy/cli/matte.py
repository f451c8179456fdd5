"""``smat-deploy matte``: one photo or a folder of photos to alpha mattes, on any engine."""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from smat_deploy import images, prompts
from smat_deploy.apps.photos import list_photos, matte_folder, matte_photo, output_paths, prepare_output_folder
from smat_deploy.cli._options import (
    BackendOption,
    BackendOptionsOption,
    BoxOption,
    CheckpointOption,
    DeviceOption,
    EngineOption,
    MaskOption,
    PointOption,
    PromptFileOption,
    RadiusOption,
    ScribbleOption,
    SeedOption,
    ThreadsOption,
    collect_prompts,
    open_engine,
)
from smat_deploy.cli._output import print_json
from smat_deploy.contract import MIN_SIDE
from smat_deploy.errors import SmatError
from smat_deploy.runtime import Runtime
from smat_deploy.runtime.torch_backend import TORCH_ENGINE

EPILOG = """Examples (automatic; two clicks; a box with real weights; an ONNX engine; a folder):

  smat-deploy matte photo.jpg -o alpha.png --cutout cutout.png

  smat-deploy matte photo.jpg --point 320,240 --point 400,250 -o alpha.png

  smat-deploy matte photo.jpg --box 100,50,420,470 -c smat.pth -o alpha.png

  smat-deploy matte photo.jpg --engine export/smat.onnx -o alpha.png

  smat-deploy matte photo.jpg --engine export/smat.onnx --backend openvino --backend-option hint=latency -o alpha.png

  smat-deploy matte photos/ -o alphas/ --cutout cutouts/ --engine export/smat.onnx

Folder mode: every photo directly in the folder; a photo's prompts come from a prompt file with the
same stem beside it (dog.jpg -> dog.json), else it is matted automatically; alphas are written as
OUT/<stem>.png. Photos that cannot be read or matted are skipped with a warning and the rest finish;
the exit status is then non-zero.
"""


class Mode(StrEnum):
    auto = "auto"
    interactive = "interactive"


def _interactive(state: Mode | None) -> bool | None:
    return None if state is None else state is Mode.interactive


def _weights(runtime: Runtime) -> str:
    """Which weights ran: the torch engine says (checkpoint or built-in); every other engine carries its own."""
    info = runtime.info
    return str(info.details.get("weights", f"inside {info.engine}"))


def _engine_summary(runtime: Runtime) -> dict:
    info = runtime.info
    return {"backend": info.backend, "engine": info.engine, "precision": info.precision, "device": info.device}


def matte(
    image: Annotated[
        Path, typer.Argument(help="Photo (PNG/JPEG; RGBA, grayscale and 16-bit are accepted), or a folder of photos.")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Alpha matte to write (8-bit grayscale); a folder in folder mode.")
    ],
    cutout: Annotated[
        Path | None,
        typer.Option(help="Also write the photo with the alpha as transparency (PNG); a folder in folder mode."),
    ] = None,
    engine: EngineOption = None,
    backend: BackendOption = None,
    backend_option: BackendOptionsOption = None,
    device: DeviceOption = "auto",
    checkpoint: CheckpointOption = None,
    threads: ThreadsOption = None,
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
    """Matte one photo (or a folder): automatic with no prompt, interactive with clicks, boxes, scribbles or masks."""
    if max_side is not None and max_side < MIN_SIDE:
        raise SmatError(f"--max-side must be at least {MIN_SIDE}, got {max_side}")

    def open_runtime() -> Runtime:
        return open_engine(engine, checkpoint, seed, device, threads, backend, backend_option)

    if image.is_dir():
        if any([prompt, point, box, scribble, mask]):
            raise SmatError(
                "prompt options apply to one photo; in folder mode put a prompt file <stem>.json beside each photo"
            )
        _matte_folder(image, output, cutout, open_runtime, state, max_side, json_output)
        return
    images.check_image_output(output)
    if cutout is not None:
        images.check_image_output(cutout, transparency=True)
    photo = images.load_image(image)
    prompt_list = collect_prompts(prompt, point, box, scribble, mask, point_radius)
    if state is Mode.interactive and not prompts.rasterize(prompt_list, photo.shape[:2]).any():
        raise SmatError("--state interactive needs a prompt that marks at least one pixel")
    runtime = open_runtime()
    result = matte_photo(runtime, photo, prompt_list, _interactive(state), max_side)
    images.save_alpha(output, result.alpha)
    if cutout is not None:
        images.save_cutout(cutout, photo, result.alpha)
    info = runtime.info
    summary = {
        "image": str(image),
        "size": [photo.shape[1], photo.shape[0]],
        "mode": "interactive" if result.interactive else "automatic",
        "prompt": str(prompts.prompt_kind(prompt_list)),
        "engine": _engine_summary(runtime),
        "weights": _weights(runtime),
        "alpha": str(output),
        "cutout": str(cutout) if cutout else None,
        "seconds": round(result.seconds, 3),
    }
    if json_output:
        print_json("matte", summary)
        return
    extra = f" and {cutout}" if cutout else ""
    typer.echo(
        f"{image}: {summary['mode']} ({summary['prompt']}) {photo.shape[1]}x{photo.shape[0]} "
        f"in {result.seconds:.2f}s on {info.backend} ({info.device}) -> {output}{extra}"
    )
    _note_untrained(runtime)


def _note_untrained(runtime: Runtime) -> None:
    info = runtime.info
    if info.backend == "torch" and info.engine == TORCH_ENGINE:
        typer.echo(f"note: weights are the {_weights(runtime)}; pass --checkpoint for a real matte", err=True)


def _matte_folder(
    folder: Path,
    output: Path,
    cutout: Path | None,
    open_runtime: Callable[[], Runtime],
    state: Mode | None,
    max_side: int | None,
    json_output: bool,
) -> None:
    photos = list_photos(folder)
    output_paths(photos, output)  # name clashes fail before any folder is created or engine opened
    prepare_output_folder(output, folder, "--output")
    if cutout is not None:
        prepare_output_folder(cutout, folder, "--cutout")
    runtime = open_runtime()

    def warn(photo: Path, reason: str) -> None:
        tqdm.write(f"warning: skipped {photo.name}: {reason}", file=sys.stderr)

    bar = tqdm(photos, desc="matte", unit="photo", file=sys.stderr, dynamic_ncols=True, leave=False)
    try:
        report = matte_folder(
            runtime, bar, output, cutout_dir=cutout, interactive=_interactive(state), max_side=max_side, on_skip=warn
        )
    finally:
        bar.close()
    info = runtime.info
    if json_output:
        summary = {
            "folder": str(folder),
            "engine": _engine_summary(runtime),
            "weights": _weights(runtime),
            "images": report.done,
            "skipped": report.skipped,
        }
        print_json("matte", summary)
    else:
        seconds = sum(row["seconds"] for row in report.done)
        typer.echo(
            f"{folder}: {len(report.done)} of {len(photos)} photos matted on {info.backend} ({info.device}) "
            f"in {seconds:.2f}s of engine time -> {output}" + (f" and {cutout}" if cutout else "")
        )
        _note_untrained(runtime)
    if report.skipped:
        raise SmatError(f"{len(report.skipped)} of {len(photos)} photos were skipped (see the warnings above)")
