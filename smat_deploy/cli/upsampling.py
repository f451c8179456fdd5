"""``smat-deploy upsampling``: what a photo loses when it runs scaled down, with each way back to full size."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smat_deploy._table import format_table
from smat_deploy.cli._options import (
    BackendOption,
    BackendOptionsOption,
    CheckpointOption,
    DeviceOption,
    EngineOption,
    SeedOption,
    ThreadsOption,
    engine_args,
)
from smat_deploy.cli._output import print_json
from smat_deploy.cli._progress import progress_bars
from smat_deploy.contract import PROMPT_KINDS
from smat_deploy.data.parity_sets import scan_photo_folder
from smat_deploy.errors import SmatError
from smat_deploy.evaluation.upsampling import (
    METRICS,
    Photo,
    UpsamplingReport,
    evaluate_oracle,
    evaluate_upsampling,
)

EPILOG = """Examples:

  smat-deploy upsampling --engine export/smat.onnx --data ../shared/data/matting --scales 0.5,0.4,0.25

  smat-deploy upsampling --engine export/smat.onnx --data photos/ --truth-only --prompts none --json

  smat-deploy upsampling --oracle --data ../shared/data/matting --scales 0.5,0.25

For every photo the engine runs (a) at full size and, at each scale (a fraction of the photo's long side:
a 4000x3000 photo run at 1568 px is 0.39, an 8000x6000 one 0.196), on the photo scaled down; the scaled
alpha comes back to full size by (b) nearest (the official demo's way), (c) bilinear and (d) guided
upsampling. Scores are means over the photos: SAD, MSE and Grad against the ground-truth alpha (photos
named like GT01.png + GT01_truth.png or lemur.png + lemur_alpha.png) and against (a), the full-size run.
Grad uses Gaussian-derivative filters with sigma 1.4 (DIM's definition), SAD and Grad in thousands.

--oracle takes the engine out: each ground-truth alpha is scaled down with its photo and brought back by
each method, so the scores are the upsampling's own loss.
"""


def upsampling_command(
    data: Annotated[
        Path, typer.Option("--data", help="A folder of photos; ground-truth alphas beside them are found by name.")
    ],
    engine: EngineOption = None,
    backend: BackendOption = None,
    backend_option: BackendOptionsOption = None,
    checkpoint: CheckpointOption = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    seed: SeedOption = 0,
    scales: Annotated[
        str, typer.Option(help="Scales to run at, as fractions of the long side, comma-separated.")
    ] = "0.5,0.4,0.25",
    prompts: Annotated[
        str, typer.Option(help=f"Prompt kinds, comma-separated ({', '.join(PROMPT_KINDS)}).")
    ] = "none,box",
    truth_only: Annotated[bool, typer.Option("--truth-only", help="Only photos with a ground-truth alpha.")] = False,
    oracle: Annotated[
        bool,
        typer.Option(
            "--oracle", help="No engine: the ground truth scaled down and brought back (the upsampling alone)."
        ),
    ] = False,
    limit: Annotated[int | None, typer.Option(help="At most this many photos (those with ground truth first).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Quality of alphas from scaled-down runs brought back to full size: nearest, bilinear, guided vs full size."""
    scale_values = _scales(scales)
    kinds = [kind.strip() for kind in prompts.split(",") if kind.strip()]
    if unknown := [kind for kind in kinds if kind not in PROMPT_KINDS]:
        raise SmatError(f"--prompts: unknown kind {', '.join(unknown)} (expected {', '.join(PROMPT_KINDS)})")
    if not kinds:
        raise SmatError("--prompts needs at least one kind")
    if limit is not None and limit < 1:
        raise SmatError(f"--limit must be at least 1, got {limit}")
    if not data.is_dir():
        raise SmatError(f"not a folder: {data}")
    pairs, _ = scan_photo_folder(data)
    truth_only = truth_only or oracle
    photos = [Photo(photo, alpha) for photo, alpha in pairs if alpha is not None or not truth_only][:limit]
    if not photos:
        raise SmatError(f"no photos{' with a ground-truth alpha' if truth_only else ''} in {data}")
    if oracle:
        if engine is not None or checkpoint is not None or backend is not None:
            raise SmatError("--oracle runs no engine: drop --engine, --checkpoint and --backend")
        with progress_bars("upsampling", "photo") as progress:
            report = evaluate_oracle(photos, scale_values, progress(len(photos) * len(scale_values)))
        kinds = report.kinds
    else:
        runtime = engine_args(engine, checkpoint, seed, device, threads, backend, backend_option).runtime()
        with progress_bars("upsampling", "run") as progress:
            tick = progress(len(photos) * len(kinds) * (1 + len(scale_values)))
            report = evaluate_upsampling(runtime, photos, scale_values, kinds, tick)
    if json_output:
        print_json("upsampling", report.as_dict())
        return
    typer.echo(format_upsampling(report, len(photos), sum(photo.alpha is not None for photo in photos)))


def _scales(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SmatError(f"--scales must be numbers separated by commas (e.g. 0.5,0.25), got {text!r}") from None
    if not values:
        raise SmatError("--scales needs at least one scale")
    if any(not 0 < value < 1 for value in values):  # before any photo is read or engine opened
        raise SmatError(f"--scales must lie strictly between 0 and 1, got {text}")
    return list(dict.fromkeys(values))


def format_upsampling(report: UpsamplingReport, photos: int, with_truth: int) -> str:
    rows = [
        {
            "scale": "1 (a)" if row["method"] == "full size" else f"{row['scale']:g}",
            "method": row["method"],
            **{f"{m} vs truth": _number(row[f"{m}_vs_truth"], m) for m in METRICS},
            **{f"{m} vs (a)": _number(row[f"{m}_vs_full"], m) for m in METRICS},
        }
        for row in report.table()
    ]
    filled = [column for column in rows[0] if any(row[column] is not None for row in rows)]
    rows = [{column: row[column] for column in filled} for row in rows]
    return "\n".join(
        [
            f"engine {report.engine}; {photos} photos ({with_truth} with ground truth), prompts "
            f"{', '.join(report.kinds)}; means over photos and prompts (SAD and Grad in thousands)",
            format_table(rows),
        ]
    )


def _number(value: float | None, metric: str) -> str | None:
    if value is None:
        return None
    return f"{value * 1e3:.3f}e-3" if metric == "MSE" else f"{value:.3f}"
