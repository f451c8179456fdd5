"""``smat-deploy parity``: an engine against the PyTorch reference on real data, with a CI-friendly exit status."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from smat_deploy.cli._options import (
    BackendOption,
    BackendOptionsOption,
    CheckpointOption,
    DeviceOption,
    SeedOption,
    backend_options_with_threads,
)
from smat_deploy.cli._output import print_json
from smat_deploy.cli._progress import progress_bars
from smat_deploy.contract import MIN_SIDE
from smat_deploy.data.parity_sets import DEFAULT_MAX_SIZE, PROMPT_KINDS
from smat_deploy.errors import CheckFailed, SmatError
from smat_deploy.evaluation.parity.report import (
    DEFAULT_OUT,
    DEFAULT_WORST,
    TOLERANCES,
    format_parity_report,
    run_parity_check,
)

_DEFAULTS = ", ".join(f"{name} {high:g}/{mean:g}" for name, (high, mean) in TOLERANCES.items())

EPILOG = f"""Examples:

  smat-deploy parity --engine export/smat.onnx

  smat-deploy parity --engine export/smat_fp16.onnx --data calib_data/ --prompts none,point,box

  smat-deploy parity --engine engines/smat_int8.plan --data my_photos/ --max-side 1024 --limit 20 --json

  smat-deploy parity --engine export/smat.onnx --backend openvino -o parity_openvino/

Data: --data is a calibration set (index.json) or a photo folder (image/ + alpha/ with matching stems, \
or photos with their alpha beside them named NAME_alpha / NAME_truth / alpha_NAME). Without --data: \
calib_data/ when built, else the bundled set: the 5 real photos scikit-image ships that calibration \
does not use, and two generated composites (the same on every machine).

Default tolerances (max/mean |diff| against the reference) by the engine's precision: {_DEFAULTS}. \
INT8 defaults are the gate the export checked against float32; an INT8 file exported with another \
budget is held to the one its manifest records (int8_budget).

Exit status: 0 every prompt kind within tolerance; 1 a tolerance was exceeded or the engine returned \
NaN/Inf (one line on stderr says which); 2 bad input (unknown engine type, an engine that breaks the \
SMat contract, an image larger than the engine accepts, a bad option), or some inputs were skipped \
(unreadable photo, alpha of another size, broken prompt file: warned, counted, the rest still ran).
"""


def parity_command(
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            "-e",
            help="The engine to check: .onnx (ONNX Runtime), .plan (TensorRT), a .pth/.pt checkpoint or 'torch'.",
        ),
    ],
    data: Annotated[
        Path | None,
        typer.Option(
            help="Calibration set or photo folder. Default: calib_data/, else the shared photos, else composites."
        ),
    ] = None,
    prompts: Annotated[
        str,
        typer.Option(
            help="Prompt kinds, comma-separated; 'file': a photo's own prompt file (dog.jpg -> dog.json), if any."
        ),
    ] = ",".join(PROMPT_KINDS),
    tolerance: Annotated[
        float | None, typer.Option(help="Max |alpha diff| allowed per prompt kind. Default: by the engine's precision.")
    ] = None,
    mean_tolerance: Annotated[
        float | None, typer.Option(help="Mean |alpha diff| allowed per prompt kind. Default: by precision.")
    ] = None,
    checkpoint: CheckpointOption = None,
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    max_side: Annotated[
        int, typer.Option(help="Scale images down so the long side is at most this; 0 keeps the full size.")
    ] = DEFAULT_MAX_SIZE,
    limit: Annotated[int | None, typer.Option(help="Use at most this many images (those with an alpha first).")] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for the heatmaps and parity.json.")
    ] = DEFAULT_OUT,
    worst: Annotated[int, typer.Option(help="Heatmaps of this many worst samples (largest max |diff|); 0: none.")] = (
        DEFAULT_WORST
    ),
    threads: Annotated[int | None, typer.Option(help="Intra-op threads of both engines.")] = None,
    backend: BackendOption = None,
    backend_option: BackendOptionsOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the full record as JSON.")] = False,
) -> None:
    """Check an engine against the PyTorch reference per prompt kind; non-zero exit when a tolerance is exceeded."""
    if max_side != 0 and max_side < MIN_SIDE:
        raise SmatError(f"--max-side must be 0 (full size) or at least {MIN_SIDE}, got {max_side}")
    if output.exists() and not output.is_dir():
        raise SmatError(f"--output must be a folder, but {output} is a file")
    options = backend_options_with_threads(threads, backend_option)
    options.pop("threads", None)  # run_parity_check gives --threads to both engines itself

    def on_skip(item: str, reason: str) -> None:
        tqdm.write(f"warning: skipped {item}: {reason}", file=sys.stderr)

    with progress_bars("parity", "sample") as progress:
        result = run_parity_check(
            engine,
            data,
            prompts=prompts,
            checkpoint=checkpoint,
            seed=seed,
            device=device,
            threads=threads,
            tolerance=tolerance,
            mean_tolerance=mean_tolerance,
            max_size=max_side or None,
            limit=limit,
            out_dir=output,
            worst=worst,
            progress=progress,
            on_skip=on_skip,
            backend=backend,
            backend_options=options,
        )
    if json_output:
        print_json("parity", result.as_dict())
    else:
        typer.echo(format_parity_report(result))
    if not result.passed:
        raise CheckFailed(f"parity failed ({engine}): {'; '.join(result.failures)}")
    if result.skipped:
        total = result.data.images + len(result.data.skipped)
        raise SmatError(f"{len(result.skipped)} input(s) were skipped (of {total} images; see the warnings above)")
