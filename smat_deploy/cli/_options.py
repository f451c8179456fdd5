"""Option groups shared by several commands (prompt options, checkpoint, engine, backend and device).

:func:`open_engine` is the one place the command line opens a :class:`~smat_deploy.runtime.Runtime`.
Nothing here imports PyTorch: the torch engine loads it when it opens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from smat_deploy import prompts as P
from smat_deploy.contract import PRECISIONS, canonical_precision, read_manifest
from smat_deploy.errors import SmatError
from smat_deploy.runtime import BACKENDS, Predictor, Runtime, backend_for
from smat_deploy.runtime.base import file_role
from smat_deploy.runtime.sizing import DEFAULT_SCALE_TO, SizePolicy
from smat_deploy.runtime.torch_backend import TORCH_ENGINE
from smat_deploy.runtime.wrapper import shared_options
from smat_deploy.upsample import UPSAMPLING_METHODS

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
        "an .onnx model (ONNX Runtime, or OpenVINO with --backend openvino) or a .plan engine (TensorRT).",
    ),
]
BackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend",
        help=f"Backend that opens the engine: {', '.join(BACKENDS)} (default: by file type). See smat-deploy backends.",
    ),
]
BackendOptionsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--backend-option",
        metavar="KEY=VALUE",
        help="An option of the engine's backend, e.g. providers=CPUExecutionProvider or hint=latency "
        "(smat-deploy backends lists each backend's options). Repeatable.",
    ),
]
ThreadsOption = Annotated[
    int | None,
    typer.Option(help="Intra-op threads (the backend option threads; default: the backend's own, one per core)."),
]
PromptFileOption = Annotated[
    Path | None, typer.Option("--prompt", help='JSON prompt file: a list of {"type": point|box|scribble|mask, ...}.')
]
PromptFilesOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--prompt",
        help='JSON prompt file: a list of {"type": point|box|scribble|mask, ...}. Repeat it for several prompt '
        "sets: the photo is embedded once and each set gets its own alpha (-o is then a folder).",
    ),
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

# -- photo sizes and memory (smat_deploy.runtime.sizing): the same four options on every command that mattes ----
MaxMemoryOption = Annotated[
    float | None,
    typer.Option(
        "--max-memory-mb",
        help="Memory budget in MB: the process's peak while matting a photo (on a GPU: the engine's GPU memory). "
        "A photo that does not fit runs scaled down. Default: 60%% of the memory available when the engine "
        "opens (80%% of a GPU's free memory).",
        show_default=False,
    ),
]
MaxSideOption = Annotated[
    int | None,
    typer.Option(
        "--max-side",
        help="Run every photo at most this long side, in px (for speed); the alpha comes back at the photo's size. "
        "Default: no cap, only the memory budget scales.",
        show_default=False,
    ),
]
ScaleToOption = Annotated[
    int,
    typer.Option(
        "--scale-to",
        help="Long side, in px, a photo too large for the memory budget runs at, at most (the quality cap).",
    ),
]
UpsamplingOption = Annotated[
    str,
    typer.Option(
        "--upsampling",
        help=f"How an alpha made below the photo's size comes back to it: {', '.join(UPSAMPLING_METHODS)} "
        "(guided follows the full-size photo's edges; nearest is the official demo's).",
    ),
]


def size_policy(
    max_memory_mb: float | None, max_side: int | None, scale_to: int = DEFAULT_SCALE_TO, upsampling: str = "guided"
) -> SizePolicy:
    """The four size options as one :class:`~smat_deploy.runtime.sizing.SizePolicy` (checked: one line when bad)."""
    return SizePolicy(max_memory_mb=max_memory_mb, scale_to=scale_to, max_side=max_side, upsampling=upsampling)


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


def parse_backend_options(texts: list[str] | None) -> dict[str, str]:
    """``["threads=4", "providers=A,B"]`` -> ``{"threads": "4", "providers": "A,B"}``; the backend parses values."""
    options: dict[str, str] = {}
    for text in texts or []:
        key, equals, value = text.partition("=")
        key = key.strip()
        if not equals or not key:
            raise SmatError(f"--backend-option must be KEY=VALUE (e.g. threads=4), got {text!r}")
        if key in options:
            raise SmatError(f"--backend-option {key} is given twice")
        options[key] = value.strip()
    return options


def parse_backend_options_and_threads(threads: int | None, backend_options: list[str] | None) -> dict[str, str]:
    """``--backend-option`` values, checked against ``--threads`` (at least 1, and not given both ways)."""
    if threads is not None and threads < 1:
        raise SmatError("--threads must be at least 1")
    options = parse_backend_options(backend_options)
    if threads is not None and "threads" in options:
        raise SmatError("give --threads or --backend-option threads=N, not both")
    return options


def backend_options_with_threads(threads: int | None, backend_options: list[str] | None) -> dict[str, object]:
    """``--backend-option`` values plus ``--threads`` as the backend option ``threads``."""
    options: dict[str, object] = dict(parse_backend_options_and_threads(threads, backend_options))
    if threads is not None:
        options["threads"] = threads
    return options


@dataclass(frozen=True)
class EngineArgs:
    """A command's engine options (``--engine``, ``--checkpoint``, ``--seed``, ``--device``, ``--threads``,
    ``--backend``, ``--backend-option``) as one group, as Polygraphy's argument groups are: a command makes it
    once and opens what it needs from it, the whole model (:meth:`runtime`) or the pair (:meth:`predictor`)."""

    engine: str | None = None
    checkpoint: Path | None = None
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    backend: str | None = None
    backend_options: tuple[str, ...] = ()

    def runtime(self, policy: SizePolicy | None = None) -> Runtime:
        """The whole model, on the group's backend (:func:`open_engine`)."""
        return open_engine(
            self.engine, self.checkpoint, self.seed, self.device, self.threads, self.backend,
            list(self.backend_options), policy,
        )  # fmt: skip

    def predictor(self, policy: SizePolicy | None = None, reserved_mb: float = 0.0) -> Predictor:
        """The interactive pair, on the group's backend (:func:`open_predictor`)."""
        return open_predictor(
            self.engine, self.checkpoint, self.seed, self.device, self.threads, self.backend,
            list(self.backend_options), policy, reserved_mb,
        )  # fmt: skip


def engine_args(
    engine: str | None,
    checkpoint: Path | None,
    seed: int,
    device: str,
    threads: int | None,
    backend: str | None,
    backend_options: list[str] | None,
) -> EngineArgs:
    """The group from a command's options, its values checked (``--threads``, ``--backend-option``) before any
    engine opens."""
    parse_backend_options_and_threads(threads, backend_options)
    return EngineArgs(engine, checkpoint, seed, device, threads, backend, tuple(backend_options or ()))


def engine_target(engine: str | None, checkpoint: Path | None) -> str:
    """What ``--engine`` and ``--checkpoint`` name together: the checkpoint belongs to the torch engine."""
    if engine is None or engine == TORCH_ENGINE:
        return str(checkpoint) if checkpoint is not None else TORCH_ENGINE
    if checkpoint is not None:
        raise SmatError(f"--checkpoint is for the torch engine; {engine} carries its own weights")
    return engine


def open_engine(
    engine: str | None,
    checkpoint: Path | None,
    seed: int,
    device: str,
    threads: int | None = None,
    backend: str | None = None,
    backend_options: list[str] | None = None,
    policy: SizePolicy | None = None,
) -> Runtime:
    """Open ``--engine`` (with ``--checkpoint``) on ``--backend`` with its ``--backend-option`` values.

    ``--seed`` goes to a backend that declares a ``seed`` option (the torch engine's built-in
    weights) and nowhere else; ``--threads`` is the backend option ``threads``; ``policy`` is the size
    policy for large photos (None: every photo runs at its own size). An unknown backend, one that
    cannot open the engine, an option it does not take or a missing package is one :class:`SmatError` line.
    """
    options = backend_options_with_threads(threads, backend_options)
    target = engine_target(engine, checkpoint)
    chosen = backend_for(target, backend)
    options = {**shared_options(chosen, seed=seed), **options}  # a --backend-option seed wins over --seed
    return Runtime.open(target, backend=chosen.name, device=device, size_policy=policy, **options)


def open_predictor(
    engine: str | None,
    checkpoint: Path | None,
    seed: int,
    device: str,
    threads: int | None = None,
    backend: str | None = None,
    backend_options: list[str] | None = None,
    policy: SizePolicy | None = None,
    reserved_mb: float = 0.0,
) -> Predictor:
    """A :class:`~smat_deploy.Predictor` for ``--engine``: an export folder with the interactive pair (or an engines
    folder with its TensorRT pair), the pair's encoder file, a whole model with the pair beside it (that
    precision's pair), ``torch`` or a checkpoint; on ``--backend`` with its ``--backend-option`` values, as
    :func:`open_engine` opens a whole model. The pair is checked by :func:`smat_deploy.pair.find_pair`."""
    options: dict[str, object] = dict(backend_options_with_threads(threads, backend_options))
    target = engine_target(engine, checkpoint)  # --checkpoint only with the torch engine, as for open_engine
    path = Path(target)
    torch_source = target == TORCH_ENGINE or path.suffix.lower() in (".pth", ".pt")
    if torch_source:
        options = {"seed": seed, **options}  # a --backend-option seed wins over --seed
        return Predictor.open(target, backend, device, size_policy=policy, reserved_mb=reserved_mb, **options)
    source, precision = target, None
    if backend is None and path.suffix.lower() in (".plan", ".engine"):
        backend = "tensorrt"  # a TensorRT whole model: the TensorRT pair beside it
    if path.is_file() and file_role(path) in (None, "whole"):  # a whole model: its precision's pair beside it
        manifest = read_manifest(path.with_suffix(".json")) or {}
        precision = canonical_precision(str(manifest.get("precision") or _precision_by_name(path)))
        source = str(path.parent)
        if precision not in PRECISIONS:
            raise SmatError(f"{path.name} is {precision}: there is no interactive pair of that precision")
    return Predictor.open(
        source, backend, device, precision=precision, size_policy=policy, reserved_mb=reserved_mb, **options
    )


def _precision_by_name(path: Path) -> str:
    """A model file's precision from its name (``smat_cpu.onnx`` -> ``float32_cpu``), for files without a manifest."""
    stem = path.stem
    return next((name for name, p in PRECISIONS.items() if Path(p.file).stem == stem), "float32")
