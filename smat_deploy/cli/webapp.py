"""``smat-deploy app``: a local web page to open a photo, click, box or brush, and see the matte at once."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from smat_deploy.apps.webapp import APP_MAX_SIDE, AppConfig, AppServer, MattingService, serve_until_stopped
from smat_deploy.cli._options import (
    BackendOption,
    BackendOptionsOption,
    CheckpointOption,
    DeviceOption,
    MaxMemoryOption,
    ScaleToOption,
    SeedOption,
    ThreadsOption,
    UpsamplingOption,
    engine_args,
    size_policy,
)
from smat_deploy.contract import MIN_SIDE, PRECISIONS
from smat_deploy.errors import SmatError
from smat_deploy.runtime import Predictor
from smat_deploy.runtime.registry import backend_for
from smat_deploy.runtime.sizing import DEFAULT_SCALE_TO
from smat_deploy.runtime.torch_backend import TORCH_ENGINE

EPILOG = """Examples:

  smat-deploy app                                    # the pair in export/ (smat-deploy export --interactive)

  smat-deploy app --engine export/smat_encoder_cpu.onnx --port 8000

  smat-deploy app --engine torch -c smat.pth --max-side 768

  smat-deploy app --engine export/ --backend openvino          # the same pair on OpenVINO

Open the address it prints in a browser. On the page: open a photo (or drop it on the page), then click
(foreground), draw boxes, scribble or brush; the alpha, the cutout over a checkerboard and over a colour
update after each action. The photo is embedded once; each action sends only the prompts. Download the
alpha, the cutout, and the prompts as a JSON file that `smat-deploy matte --prompt` replays (the page
shows the command).

The server binds to 127.0.0.1: only this machine can open the page. To reach it from elsewhere, forward
the port (ssh -L 7860:127.0.0.1:7860 host) or pass --host 0.0.0.0 on a trusted network (there is no
login). Ctrl+C or SIGTERM stops it.
"""


def _replay_engine(engine: str | None, checkpoint: Path | None, seed: int, predictor: Predictor) -> str:
    """The ``matte`` options that run the same weights as the page, for the page's replay line."""
    if predictor.backend == "torch":
        parts = ["--engine", TORCH_ENGINE]
        if checkpoint is not None:
            parts += ["-c", str(checkpoint)]
        elif engine not in (None, TORCH_ENGINE):
            parts[1] = str(engine)
        elif seed:
            parts += ["--seed", str(seed)]
        return shlex.join(parts)
    source = Path(str(predictor.info["source"]))
    folder = source if source.is_dir() else source.parent
    whole = folder / PRECISIONS[predictor.precision].file  # matte with one prompt file runs the whole model
    target = whole if whole.is_file() else source
    parts = ["--engine", str(target)]
    if target.is_file() and backend_for(target).name != predictor.backend:  # the same runtime as the page
        parts += ["--backend", predictor.backend]
    return shlex.join(parts)


def _size_rule(predictor: Predictor) -> str:
    """One line: how the page sizes photos (the predictor's policy and budget)."""
    assert predictor.sizing is not None
    policy, budget = predictor.sizing.policy, predictor.sizing.budget
    cap = f"scaled to at most {policy.max_side} px" if policy.max_side else "at full size when they fit"
    return (
        f"photos run {cap}, within a {budget.total_mb:,.0f} MB memory budget ({budget.source}); "
        f"alphas come back at full size by {policy.upsampling} upsampling"
    )


def app_command(
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            "-e",
            help="An export folder with the interactive pair (smat-deploy export --interactive), a pair's encoder "
            ".onnx, a whole-model .onnx with its pair beside it (picks that precision), 'torch' or a checkpoint.",
        ),
    ] = "export/",
    checkpoint: CheckpointOption = None,
    backend: BackendOption = None,
    backend_option: BackendOptionsOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 opens the page to other machines.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 7860,
    max_side: Annotated[
        int,
        typer.Option(
            help="Longest side the engine runs at, px, so clicks stay quick: larger photos are scaled down for the "
            "engine and every alpha comes back at the photo's size, as matte --max-side does (0: no cap, only the "
            "memory budget scales)."
        ),
    ] = APP_MAX_SIDE,
    max_memory_mb: MaxMemoryOption = None,
    scale_to: ScaleToOption = DEFAULT_SCALE_TO,
    upsampling: UpsamplingOption = "guided",
    max_upload_mb: Annotated[float, typer.Option(help="Largest photo file accepted, MB.")] = 50.0,
    max_megapixels: Annotated[
        float,
        typer.Option(help="Largest photo accepted, megapixels (refused before decoding: no decompression bombs)."),
    ] = 50.0,
    session_count: Annotated[int, typer.Option(help="Most photos (tabs) kept embedded at once.")] = 8,
    session_memory: Annotated[int, typer.Option(help="Most memory for kept photos and embeddings, MB.")] = 2048,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    seed: SeedOption = 0,
) -> None:
    """Serve a web page to matte photos by clicking: open a photo, click, box or brush, see the alpha and cutout."""
    if 0 < max_side < MIN_SIDE:
        raise SmatError(f"--max-side must be 0 or at least {MIN_SIDE}, got {max_side}")
    policy = size_policy(max_memory_mb, max_side or None, scale_to, upsampling)
    if not 0 <= port <= 65535:
        raise SmatError(f"--port must be between 0 and 65535, got {port}")
    if max_upload_mb <= 0 or max_megapixels <= 0:
        raise SmatError("--max-upload-mb and --max-megapixels must be positive")
    if session_count < 1 or session_memory < 1:
        raise SmatError("--session-count and --session-memory must be at least 1")
    if engine != TORCH_ENGINE and not Path(engine).exists() and not engine.endswith((".pth", ".pt")):
        raise SmatError(
            f"engine not found: {engine} (make the default with: smat-deploy export --interactive, "
            "or pass --engine torch)"
        )
    engines = engine_args(engine, checkpoint, seed, device, threads, backend, backend_option)
    predictor = engines.predictor(policy, reserved_mb=session_memory)
    config = AppConfig(
        max_upload_bytes=round(max_upload_mb * 1e6),
        max_pixels=round(max_megapixels * 1e6),
        session_count=session_count,
        session_bytes=session_memory * 10**6,
        engine=engine if checkpoint is None else f"{engine} -c {checkpoint}",
        replay_engine=_replay_engine(engine, checkpoint, seed, predictor),
    )
    service = MattingService(predictor, config)

    def ready(server: AppServer) -> None:
        info = service.info()
        print(f"serving the matting page on {server.url}/", flush=True)
        print(f"  engine {info['engine']}: {info['backend']} {info['precision']} on {info['device']}", flush=True)
        assert predictor.sizing is not None
        print(f"  {_size_rule(predictor)}", flush=True)
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(f"  listening on {host}: anyone who reaches this port can use the page (there is no login)")
        print("ready (Ctrl+C or SIGTERM stops)", flush=True)

    serve_until_stopped(service, host, port, ready)
    counts = service.counts
    print(f"stopped: {counts['photos']} photos, {counts['clicks']} mattes, {counts['errors']} refused", file=sys.stderr)
