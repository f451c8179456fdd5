"""``smat-deploy sizes``: how photos of given sizes would run on an engine here, before anything runs."""

from __future__ import annotations

from typing import Annotated

import typer

from smat_deploy._table import format_table
from smat_deploy.cli._options import (
    BackendOption,
    BackendOptionsOption,
    CheckpointOption,
    DeviceOption,
    EngineOption,
    MaxMemoryOption,
    MaxSideOption,
    ScaleToOption,
    SeedOption,
    ThreadsOption,
    UpsamplingOption,
    engine_args,
    size_policy,
)
from smat_deploy.cli._output import print_json
from smat_deploy.cli._shapes import parse_image_sizes
from smat_deploy.contract import padded_grid
from smat_deploy.errors import SmatError
from smat_deploy.runtime.sizing import DEFAULT_SCALE_TO, SizePlan

EPILOG = """Examples:

  smat-deploy sizes --engine export/smat.onnx --sizes 1024,2048,4000x3000,8000x6000

  smat-deploy sizes --engine export/smat_cpu.onnx --sizes 4000x3000 --max-memory-mb 8000 --json

  smat-deploy sizes --engine torch --sizes 6000x4000 --batch 4

Nothing runs: the engine is opened, the memory budget measured, and for each size the size policy's plan
is printed (the size the engine would run at and why, the predicted peak memory against the budget), with
the largest 4:3 photo that runs at full size here. `smat-deploy bench --sizes` runs them and prints the
measured peak beside the prediction.
"""


def sizes_command(
    sizes: Annotated[str, typer.Option(help="Photo sizes WIDTHxHEIGHT (N for NxN), comma-separated.")],
    engine: EngineOption = None,
    backend: BackendOption = None,
    backend_option: BackendOptionsOption = None,
    checkpoint: CheckpointOption = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    seed: SeedOption = 0,
    batch: Annotated[int, typer.Option(help="Photos per call.")] = 1,
    max_memory_mb: MaxMemoryOption = None,
    max_side: MaxSideOption = None,
    scale_to: ScaleToOption = DEFAULT_SCALE_TO,
    upsampling: UpsamplingOption = "guided",
    json_output: Annotated[bool, typer.Option("--json", help="Print the plans as JSON.")] = False,
) -> None:
    """How photos of given sizes run on an engine here: the size it runs at, predicted peak memory, the budget."""
    if batch < 1:
        raise SmatError(f"--batch must be at least 1, got {batch}")
    wanted = parse_image_sizes(sizes, "--sizes")
    policy = size_policy(max_memory_mb, max_side, scale_to, upsampling)
    runtime = engine_args(engine, checkpoint, seed, device, threads, backend, backend_option).runtime(policy)
    sizing = runtime.sizing
    assert sizing is not None
    plans = [sizing.plan(batch, size.height, size.width) for size in wanted]
    info = runtime.info
    full = sizing.largest_full_size()
    summary = {
        "engine": {"backend": info.backend, "engine": info.engine, "precision": info.precision, "device": info.device},
        "memory_profile": runtime.backend.memory_profile.name,
        "budget": sizing.budget.as_dict(),
        "largest_full_size_4x3": list(full),
        "plans": [{**plan.as_dict(), "chunk": sizing.chunk(plan)} for plan in plans],
    }
    if json_output:
        print_json("sizes", summary)
        return
    budget = sizing.budget
    typer.echo(
        f"{info.engine} on {info.backend} ({info.device}, memory profile {runtime.backend.memory_profile.name}); "
        f"budget {budget.total_mb:,.0f} MB ({budget.source}), of which {budget.call_mb:,.0f} MB for a call"
    )
    typer.echo(f"largest 4:3 photo at full size here: {full[0]}x{full[1]}")
    typer.echo(format_table([_row(plan) for plan in plans]))


def _row(plan: SizePlan) -> dict:
    grid = padded_grid(plan.height, plan.width)
    return {
        "WxH": f"{plan.width}x{plan.height}",
        "MP": f"{plan.width * plan.height / 1e6:.1f}",
        "tokens": grid[0] * grid[1],
        "runs at": f"{plan.run_width}x{plan.run_height}" if plan.scaled else "full size",
        "why": plan.reason,
        "engine MB": f"{plan.engine.total_mb:,.0f}",
        "attention MB": f"{plan.engine.attention_mb * plan.batch:,.0f}",
        "host MB": f"{plan.host_mb:,.0f}",
        "peak MB": f"{plan.predicted_peak_mb:,.0f}",
        "upsampling": plan.upsampling if plan.scaled else "-",
    }
