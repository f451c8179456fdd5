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
from smat_deploy.apps.photos import (
    list_photos,
    matte_folder,
    matte_photo,
    matte_prompt_sets,
    output_paths,
    prepare_output_folder,
)
from smat_deploy.cli._options import (
    BackendOption,
    BackendOptionsOption,
    BoxOption,
    CheckpointOption,
    DeviceOption,
    EngineArgs,
    EngineOption,
    MaskOption,
    MaxMemoryOption,
    MaxSideOption,
    PointOption,
    PromptFilesOption,
    RadiusOption,
    ScaleToOption,
    ScribbleOption,
    SeedOption,
    ThreadsOption,
    UpsamplingOption,
    collect_prompts,
    engine_args,
    size_policy,
)
from smat_deploy.cli._output import print_json
from smat_deploy.errors import SmatError
from smat_deploy.runtime import Runtime
from smat_deploy.runtime.memory import peak_resident_mb
from smat_deploy.runtime.sizing import DEFAULT_SCALE_TO, SizePlan, SizePolicy
from smat_deploy.runtime.torch_backend import TORCH_ENGINE

EPILOG = """Examples (automatic; two clicks; a box with real weights; an ONNX engine; a folder):

  smat-deploy matte photo.jpg -o alpha.png --cutout cutout.png

  smat-deploy matte photo.jpg --point 320,240 --point 400,250 -o alpha.png

  smat-deploy matte photo.jpg --box 100,50,420,470 -c smat.pth -o alpha.png

  smat-deploy matte photo.jpg --engine export/smat.onnx -o alpha.png

  smat-deploy matte photo.jpg --engine export/smat.onnx --backend openvino --backend-option hint=latency -o alpha.png

  smat-deploy matte photos/ -o alphas/ --cutout cutouts/ --engine export/smat.onnx

  smat-deploy matte photo.jpg --prompt a.json --prompt b.json -o alphas/ --engine export/   # embeds once

Several --prompt files: the photo is embedded once (the interactive pair from `smat-deploy export
--interactive`, or the PyTorch reference) and each prompt set is one decoder run; alphas are written
as OUT/<prompt stem>.png (cutouts likewise).

Photos of any size: a photo runs at its full size when it fits the memory budget (--max-memory-mb,
default 60% of the memory available), and otherwise scaled down to fit, never above --scale-to
(1568 px); the alpha is always written at the photo's full size, brought back by guided upsampling
from the full-size photo. --max-side caps every photo (for speed). See docs/photo-sizes.md.

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
    prompt: PromptFilesOption = None,
    point: PointOption = None,
    box: BoxOption = None,
    scribble: ScribbleOption = None,
    mask: MaskOption = None,
    point_radius: RadiusOption = prompts.DEFAULT_POINT_RADIUS,
    max_memory_mb: MaxMemoryOption = None,
    max_side: MaxSideOption = None,
    scale_to: ScaleToOption = DEFAULT_SCALE_TO,
    upsampling: UpsamplingOption = "guided",
    state: Annotated[
        Mode | None,
        typer.Option(help="Force the mode; default: interactive when any prompt is given, else automatic."),
    ] = None,
    seed: SeedOption = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of text.")] = False,
) -> None:
    """Matte one photo (or a folder): automatic with no prompt, interactive with clicks, boxes, scribbles or masks."""
    policy = size_policy(max_memory_mb, max_side, scale_to, upsampling)
    engines = engine_args(engine, checkpoint, seed, device, threads, backend, backend_option)

    def open_runtime() -> Runtime:
        return engines.runtime(policy)

    if image.is_dir():
        if any([prompt, point, box, scribble, mask]):
            raise SmatError(
                "prompt options apply to one photo; in folder mode put a prompt file <stem>.json beside each photo"
            )
        _matte_folder(image, output, cutout, open_runtime, state, json_output)
        return
    if prompt is not None and len(prompt) > 1:
        if any([point, box, scribble, mask]):
            raise SmatError("with several --prompt files, put every prompt into the files (no --point/--box/...)")
        _matte_prompt_sets(image, prompt, output, cutout, engines, state, policy, json_output)
        return
    images.check_image_output(output)
    if cutout is not None:
        images.check_image_output(cutout, transparency=True)
    photo = images.load_image(image)
    prompt_list = collect_prompts(prompt[0] if prompt else None, point, box, scribble, mask, point_radius)
    if state is Mode.interactive and not prompts.rasterize(prompt_list, photo.shape[:2]).any():
        raise SmatError("--state interactive needs a prompt that marks at least one pixel")
    runtime = open_runtime()
    result = matte_photo(runtime, photo, prompt_list, _interactive(state))
    images.save_alpha(output, result.alpha)
    if cutout is not None:
        images.save_cutout(cutout, photo, result.alpha)
    info = runtime.info
    assert result.report is not None and result.plan is not None  # matte always runs with a size policy
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
        "stages": result.report.as_dict()["stages"],
        "plan": result.plan.as_dict(),
        "peak_memory_mb": round(peak_resident_mb()),
    }
    if json_output:
        print_json("matte", summary)
        return
    extra = f" and {cutout}" if cutout else ""
    typer.echo(
        f"{image}: {summary['mode']} ({summary['prompt']}) {photo.shape[1]}x{photo.shape[0]} "
        f"in {result.seconds:.2f}s on {info.backend} ({info.device}) -> {output}{extra}"
    )
    typer.echo(f"  {_size_line(result.plan, result.report.stages)}")
    _note_untrained(runtime)


def _size_line(plan: SizePlan, stages: dict[str, float]) -> str:
    """``ran at 1568x1176 (scaled to fit the budget; guided upsampling 0.61s); peak 6,120 MB, budget 14,100 MB``."""
    if plan.scaled:
        how = f"ran at {plan.run_width}x{plan.run_height} ({plan.reason}; {plan.upsampling} upsampling"
        how += f" {stages.get('upsample', 0.0):.2f}s)"
    else:
        how = "ran at full size"
    return (
        f"{how}; peak memory {peak_resident_mb():,.0f} MB (predicted {plan.predicted_peak_mb:,.0f} MB, "
        f"budget {plan.budget.total_mb:,.0f} MB)"
    )


def _matte_prompt_sets(
    image: Path,
    prompt_files: list[Path],
    output: Path,
    cutout: Path | None,
    engines: EngineArgs,
    state: Mode | None,
    policy: SizePolicy,
    json_output: bool,
) -> None:
    """One photo, several prompt files: one embedding, one alpha per file (OUT/<prompt stem>.png)."""
    stems = [path.stem for path in prompt_files]
    if len(set(stems)) != len(stems):
        twice = sorted({stem for stem in stems if stems.count(stem) > 1})
        raise SmatError(f"prompt files must have different names (each gives OUT/<stem>.png): {', '.join(twice)}")
    prompt_sets = [prompts.load_prompt_file(path) for path in prompt_files]
    photo = images.load_image(image)
    folders = [(output, "--output"), *([] if cutout is None else [(cutout, "--cutout")])]
    for folder, what in folders:
        if folder.exists() and not folder.is_dir():
            raise SmatError(f"{what} must be a folder with several --prompt files, but {folder} is a file")
        if folder.resolve() == image.parent.resolve():
            raise SmatError(f"{what} must differ from the photo's folder {image.parent}: an alpha could replace a file")
    predictor = engines.predictor(policy)  # before any folder is made
    for folder, what in folders:
        prepare_output_folder(folder, image.parent, what)
    result = matte_prompt_sets(predictor, photo, prompt_sets, _interactive(state))
    rows = []
    for stem, prompt_list, matte_result in zip(stems, prompt_sets, result.mattes, strict=True):
        alpha_path = images.save_alpha(output / f"{stem}.png", matte_result.alpha)
        cutout_path = None
        if cutout is not None:
            cutout_path = images.save_cutout(cutout / f"{stem}.png", photo, matte_result.alpha)
        rows.append(
            {
                "prompt_file": str(prompt_files[stems.index(stem)]),
                "mode": "interactive" if matte_result.interactive else "automatic",
                "prompt": str(prompts.prompt_kind(prompt_list)),
                "alpha": str(alpha_path),
                "cutout": None if cutout_path is None else str(cutout_path),
                "seconds": round(matte_result.seconds, 3),
            }
        )
    info = predictor.info
    summary = {
        "image": str(image),
        "size": [photo.shape[1], photo.shape[0]],
        "engine": {k: info[k] for k in ("backend", "source", "precision", "device")},
        "embedded_once": True,
        "embed_seconds": round(result.embed_seconds, 3),
        "embedding_mb": round(result.embedding_bytes / 1e6, 1),
        "run_size": [result.embedding.run_size[1], result.embedding.run_size[0]],
        "prompt_sets": rows,
        "peak_memory_mb": round(peak_resident_mb()),
    }
    if json_output:
        print_json("matte", summary)
        return
    run_height, run_width = result.embedding.run_size
    scaled = "" if result.embedding.rescale is None else f" at {run_width}x{run_height}"
    typer.echo(
        f"{image}: {photo.shape[1]}x{photo.shape[0]} embedded once{scaled} in {result.embed_seconds:.2f}s "
        f"({summary['embedding_mb']} MB) on {info['backend']} ({info['device']}); {len(rows)} prompt sets:"
    )
    for row in rows:
        typer.echo(
            f"  {row['prompt_file']}: {row['mode']} ({row['prompt']}) in {row['seconds']:.2f}s -> {row['alpha']}"
        )


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
        report = matte_folder(runtime, bar, output, cutout_dir=cutout, interactive=_interactive(state), on_skip=warn)
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
            "peak_memory_mb": round(peak_resident_mb()),
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
