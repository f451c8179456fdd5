"""``bench --interactive``: what embedding a photo once buys per click, against a whole-model run.

For every size, one process opens the whole model (``smat.onnx`` through :class:`~smat_deploy.Runtime`)
and the interactive pair (``smat_encoder.onnx`` + ``smat_decoder.onnx`` through
:class:`~smat_deploy.Predictor`) on ONNX Runtime's CPU provider, float32, batch 1, and runs rounds of
three calls on the same photo (:func:`~smat_deploy.evaluation.bench.worker.bench_inputs`): the whole
model, ``embed`` and one click (``predict`` on that round's embedding). Each round's click is a point
at a new place, given to the whole model too, so nothing can be reused between rounds and the two
alphas can be compared. Even rounds run the whole model first, odd rounds last, so machine noise and
cache warmth hit all three alike; the figures are medians over the timed rounds, after untimed
warm-up rounds.

The prompt-dependent part's FLOP share (:func:`~smat_deploy.evaluation.flops.pair_flops`) is printed
beside the measured ratio: ``1 / share`` is the speed-up a click would have if time followed FLOPs.
A size with a goal (:data:`GOALS`) passes when ``whole / click`` (ratio of medians) reaches it; the
pair's alpha must also equal the whole model's within :data:`~smat_deploy.contract.EXPORT_GATE`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from smat_deploy.contract import EXPORT_GATE, PRECISIONS, pair_file
from smat_deploy.errors import SmatError
from smat_deploy.evaluation.bench.machine import machine_description
from smat_deploy.evaluation.bench.runner import Size
from smat_deploy.evaluation.flops import pair_flops

if TYPE_CHECKING:
    from smat_deploy import Predictor, Runtime

#: The clock every call is timed with.
clock = time.perf_counter

#: Per-click speed-up goals (whole-model time / click time, ONNX Runtime CPU float32, batch 1), by size.
GOALS: dict[Size, float] = {Size(518, 518): 2.2, Size(1024, 768): 3.0, Size(1560, 1040): 4.0}
#: The sizes measured by default: those with a goal.
DEFAULT_SIZES: tuple[Size, ...] = tuple(GOALS)
#: The whole float32 model, timed against the pair.
WHOLE_MODEL_FILE = PRECISIONS["float32"].file
#: The files ``--engine`` (a folder) must hold: the whole model and the float32 pair.
ENGINE_FILES = (WHOLE_MODEL_FILE, pair_file("encoder"), pair_file("decoder"))


@dataclass(frozen=True)
class InteractiveConfig:
    #: The folder holding smat.onnx and the pair; None: ``export``.
    engine: Path | None = None
    sizes: tuple[Size, ...] = DEFAULT_SIZES
    warmup: int = 1
    iters: int = 5
    threads: int | None = None
    seed: int = 0


@dataclass
class InteractiveReport:
    engine: str
    machine: dict
    threads: int | None
    warmup: int
    iters: int
    rows: list[dict] = field(default_factory=list)

    @property
    def missed(self) -> list[dict]:
        """Rows whose goal was not met (rows without a goal are never missed)."""
        return [row for row in self.rows if row["goal"] is not None and not row["goal_met"]]

    @property
    def pair_matches(self) -> bool:
        return all(row["pair_matches_whole"] for row in self.rows)

    def as_dict(self) -> dict:
        return {
            "engine": self.engine,
            "backend": "onnxruntime",
            "device": "cpu",
            "precision": "float32",
            "batch": 1,
            "threads": self.threads,
            "warmup": self.warmup,
            "iters": self.iters,
            "machine": self.machine,
            "method": METHOD,
            "gate": {"max_abs": EXPORT_GATE.max_abs},
            "goals_met": not self.missed,
            "pair_matches_whole": self.pair_matches,
            "rows": self.rows,
        }


METHOD = (
    "per size, one process runs rounds of the whole model (Runtime on smat.onnx), embed (Predictor.embed) "
    "and one click (Predictor.predict on that round's embedding, a point at a new place each round, the same "
    "prompt given to the whole model); the whole model runs first in even rounds and last in odd ones; "
    "times are medians of the timed rounds after the warm-up rounds; speed-up = whole / click"
)


def resolve_engine_folder(engine: Path | None) -> Path:
    """``--engine`` (default ``export``) as a folder holding the whole model and the float32 pair."""
    folder = Path("export") if engine is None else Path(engine)
    if folder.is_file():
        raise SmatError(f"bench --interactive takes a folder holding {', '.join(ENGINE_FILES)}, got the file {folder}")
    missing = [name for name in ENGINE_FILES if not (folder / name).is_file()]
    if missing:
        where = "" if engine is None else f" -o {folder}"
        raise SmatError(f"{folder} has no {', '.join(missing)}: make them with smat-deploy export --interactive{where}")
    return folder


def goal_for(size: Size) -> float | None:
    return GOALS.get(size)


def judge(whole_ms: float, click_ms: float, goal: float | None) -> tuple[float, bool | None]:
    """``whole / click`` and whether it meets ``goal`` (None: no goal at this size)."""
    speedup = whole_ms / click_ms
    return speedup, (None if goal is None else speedup >= goal)


def click_prompts(height: int, width: int, count: int, first: np.ndarray, seed: int) -> list[np.ndarray]:
    """``count`` prompts ``[1,1,H,W]``: ``first`` (the bench inputs' click), then points at new places."""
    from smat_deploy import prompts as P

    rng = np.random.default_rng(seed)
    radius = max(1, min(20, min(height, width) // 4))
    prompts, seen = [first], {first.tobytes()}
    while len(prompts) < count:
        point = P.Point(float(rng.integers(0, width)), float(rng.integers(0, height)), radius=radius)
        mask = P.rasterize([point], (height, width))[None, None]
        if mask.tobytes() not in seen or len(seen) >= height * width:  # a tiny image may run out of places
            seen.add(mask.tobytes())
            prompts.append(mask)
    return prompts


def _timed(call: Callable[[], object], times: dict[str, float], name: str, step: Callable[[], None]) -> object:
    start = clock()
    out = call()
    times[name] = clock() - start
    step()
    return out


def measure_size(
    runtime: Runtime, predictor: Predictor, size: Size, config: InteractiveConfig, step: Callable[[], None]
) -> dict:
    """The rounds at one size; returns its report row."""
    from smat_deploy.evaluation.bench.worker import bench_inputs

    image, first, _ = bench_inputs(size.height, size.width, 1, config.seed)
    rounds = config.warmup + config.iters
    prompts = click_prompts(size.height, size.width, rounds, first, config.seed + 1)
    state = np.ones((1, 1), np.float32)  # every prompt marks pixels: interactive mode
    times: dict[str, list[float]] = {"whole": [], "embed": [], "click": []}
    worst, nbytes = 0.0, 0
    for index, prompt in enumerate(prompts):
        timed: dict[str, float] = {}
        whole_first = index % 2 == 0
        if whole_first:
            whole = _timed(lambda: runtime(image, prompt, state), timed, "whole", step)  # noqa: B023
        embedding = _timed(lambda: predictor.embed(image), timed, "embed", step)
        click = _timed(lambda: predictor.predict(embedding, prompt, state), timed, "click", step)  # noqa: B023
        if not whole_first:
            whole = _timed(lambda: runtime(image, prompt, state), timed, "whole", step)  # noqa: B023
        nbytes = embedding.nbytes  # type: ignore[attr-defined]
        worst = max(worst, float(np.abs(np.asarray(click, np.float64) - np.asarray(whole)).max()))
        embedding = None  # one embedding at a time, as a session on one photo holds
        if index >= config.warmup:
            for name, seconds in timed.items():
                times[name].append(seconds)
    medians = {name: float(np.median(values)) * 1e3 for name, values in times.items()}
    goal = goal_for(size)
    speedup, met = judge(medians["whole"], medians["click"], goal)
    flops = pair_flops(size.height, size.width)
    return {
        "size": size.label,
        "width": size.width,
        "height": size.height,
        "whole_ms": medians["whole"],
        "embed_ms": medians["embed"],
        "click_ms": medians["click"],
        "speedup": speedup,
        "goal": goal,
        "goal_met": met,
        "decoder_flop_share": flops.decoder_share,
        "ideal_speedup": flops.ideal_speedup,
        "gflop_whole": flops.whole / 1e9,
        "gflop_encoder": flops.encoder / 1e9,
        "gflop_decoder": flops.decoder / 1e9,
        "embedding_bytes": nbytes,
        "embedding_mb": nbytes / 1e6,
        "max_abs_vs_whole": worst,
        "pair_matches_whole": worst <= EXPORT_GATE.max_abs,
        "comparisons": rounds,
        "whole_ms_all": [t * 1e3 for t in times["whole"]],
        "embed_ms_all": [t * 1e3 for t in times["embed"]],
        "click_ms_all": [t * 1e3 for t in times["click"]],
    }


def open_engines(folder: Path, threads: int | None) -> tuple[Runtime, Predictor]:
    """The whole model and the float32 pair, each on ONNX Runtime's CPU provider."""
    from smat_deploy import Predictor, Runtime

    options = {} if threads is None else {"threads": threads}
    runtime = Runtime.open(folder / WHOLE_MODEL_FILE, backend="onnxruntime", device="cpu", **options)
    if runtime.info.precision != "float32":
        raise SmatError(f"{folder / WHOLE_MODEL_FILE} is {runtime.info.precision}, not float32")
    return runtime, Predictor.open(folder, device="cpu", precision="float32", threads=threads)


def run_interactive_bench(
    config: InteractiveConfig, progress: Callable[[int], Callable[[], None]] | None = None
) -> InteractiveReport:
    """Measure every size (see the module's docstring).

    The engines are opened afresh for each size and closed after it, so ONNX Runtime's memory arenas
    from one size (two sessions' worth at 1560x1040: several GB) are returned before the next opens.
    """
    if config.warmup < 0 or config.iters < 1:
        raise SmatError("--iters must be at least 1 and --warmup at least 0")
    folder = resolve_engine_folder(config.engine)
    total = len(config.sizes) * (config.warmup + config.iters) * 3
    step = progress(total) if progress else (lambda: None)
    report = InteractiveReport(
        engine=str(folder),
        machine=machine_description(),
        threads=config.threads,
        warmup=config.warmup,
        iters=config.iters,
    )
    for size in config.sizes:
        runtime, predictor = open_engines(folder, config.threads)
        report.rows.append(measure_size(runtime, predictor, size, config, step))
        del runtime, predictor
        gc.collect()
    return report


def _fixed(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def format_interactive(report: InteractiveReport) -> str:
    from smat_deploy._table import format_table

    machine = report.machine
    threads = "ONNX Runtime's default threads" if report.threads is None else f"{report.threads} threads"
    rows = [
        {
            "WxH": row["size"],
            "whole ms": _fixed(row["whole_ms"]),
            "embed ms": _fixed(row["embed_ms"]),
            "click ms": _fixed(row["click_ms"]),
            "speed-up": _fixed(row["speedup"], 2, "x"),
            "goal": _fixed(row["goal"], 1, "x"),
            "pass": "-" if row["goal_met"] is None else ("yes" if row["goal_met"] else "NO"),
            "decoder FLOPs": f"{row['decoder_flop_share']:.1%}",
            "ideal": _fixed(row["ideal_speedup"], 2, "x"),
            "embedding MB": _fixed(row["embedding_mb"]),
            "max |pair - whole|": f"{row['max_abs_vs_whole']:.1e}",
        }
        for row in report.rows
    ]
    lines = [
        f"interactive bench: {report.engine}, ONNX Runtime CPU float32, batch 1, {threads}; "
        f"machine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs",
        f"method: {METHOD}; {report.warmup} warm-up + {report.iters} timed rounds per size",
        "sizes are WIDTHxHEIGHT, as everywhere in smat-deploy (1024x768 is 768 pixels high, 1024 wide); "
        "decoder FLOPs = the prompt-dependent part's share of a whole-model run, ideal = 1 / that share; "
        "embedding MB = what one photo's embedding holds (float32, 10^6 bytes)",
        "",
        format_table(rows),
        "",
    ]
    gate = EXPORT_GATE.max_abs
    worst = max((row["max_abs_vs_whole"] for row in report.rows), default=0.0)
    count = sum(row["comparisons"] for row in report.rows)
    verdict = "pass" if report.pair_matches else "FAIL"
    lines.append(f"pair vs whole model: max |alpha diff| {worst:.1e} over {count} clicks (gate {gate:g}): {verdict}")
    if report.missed:
        missed = ", ".join(f"{row['size']} ({row['speedup']:.2f}x < {row['goal']:g}x)" for row in report.missed)
        lines.append(f"goals: missed at {missed}")
    elif any(row["goal"] is not None for row in report.rows):
        lines.append("goals: every size with a goal met it")
    else:
        goals = ", ".join(f"{size.label}: {goal:g}x" for size, goal in GOALS.items())
        lines.append(f"goals: none at these sizes (goals are set at {goals})")
    return "\n".join(lines)
