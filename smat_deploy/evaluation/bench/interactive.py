"""``bench --interactive``: what embedding a photo once buys per click, against a whole-model run, per backend.

For every size, one process opens, for each backend asked (default ONNX Runtime), the whole model
(``smat.onnx``, or the precision's file, through :class:`~smat_deploy.Runtime`) and the interactive pair
(``smat_encoder.onnx`` + ``smat_decoder.onnx``, or the precision's pair, through
:class:`~smat_deploy.Predictor`), batch 1, and runs rounds of three calls per backend on the same photo
(:func:`~smat_deploy.evaluation.bench.worker.bench_inputs`): the whole model, ``embed`` and one click
(``predict`` on that round's embedding). The backends take turns within each round (their order rotates
from round to round), so two backends are compared under the same machine load. Each round's click is a
point at a new place, given to the whole model too, so nothing can be reused between rounds and the two
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

from smat_deploy.contract import EXPORT_GATE, FP16_GATE, PRECISIONS, Gate, pair_file
from smat_deploy.errors import SmatError
from smat_deploy.evaluation.bench.machine import machine_description
from smat_deploy.evaluation.bench.runner import Size
from smat_deploy.evaluation.flops import pair_flops

if TYPE_CHECKING:
    from smat_deploy import Predictor, Runtime

#: The clock every call is timed with.
clock = time.perf_counter

#: Per-click speed-up goals (whole-model time / click time, batch 1), by size (a portrait shares its landscape's).
GOALS: dict[Size, float] = {
    Size(518, 518): 2.2,
    Size(1024, 768): 3.0,
    Size(768, 1024): 3.0,
    Size(1560, 1040): 4.0,
}
#: The interactive feel aimed at (median click time in ms, batch 1), by size: reported, not judged (an absolute
#: time depends on the machine; the speed-up goals above are what pass or fail).
CLICK_AIMS: dict[Size, float] = {Size(512, 512): 100.0}
#: The sizes measured by default.
DEFAULT_SIZES: tuple[Size, ...] = (Size(518, 518), Size(1024, 768), Size(1560, 1040))


def engine_files(precision: str = "float32", suffix: str = ".onnx") -> tuple[str, str, str]:
    """The files ``--engine`` (a folder) must hold for ``precision``: the whole model and the pair, as
    exported (``.onnx``) or built (``.plan``, ``smat-deploy build --interactive``)."""
    names = PRECISIONS[precision].file, pair_file("encoder", precision), pair_file("decoder", precision)
    return tuple(str(Path(name).with_suffix(suffix)) for name in names)  # type: ignore[return-value]


@dataclass(frozen=True)
class InteractiveConfig:
    #: The folder holding smat.onnx and the pair; None: ``export``.
    engine: Path | None = None
    sizes: tuple[Size, ...] = DEFAULT_SIZES
    warmup: int = 1
    iters: int = 5
    threads: int | None = None
    seed: int = 0
    #: Backends measured side by side (all opening ``.onnx`` files, or all ``.plan`` files).
    backends: tuple[str, ...] = ("onnxruntime",)
    #: The precision of the whole model and the pair (their files: ``smat_cpu.onnx`` + the ``_cpu`` pair, ...).
    precision: str = "float32"
    #: ``auto`` (the CPU for ``.onnx`` files, CUDA for TensorRT), ``cpu`` or ``cuda[:N]``.
    device: str = "auto"
    #: The files' suffix: ``.onnx`` (ONNX Runtime, OpenVINO) or ``.plan`` (TensorRT).
    suffix: str = ".onnx"
    #: ``--backend-option`` KEY=VALUE pairs, each given to the backends that take it (at least one must).
    backend_options: dict = field(default_factory=dict)


@dataclass
class InteractiveReport:
    engine: str
    machine: dict
    threads: int | None
    warmup: int
    iters: int
    rows: list[dict] = field(default_factory=list)
    backends: tuple[str, ...] = ("onnxruntime",)
    precision: str = "float32"
    device: str = "cpu"
    #: Backends computing below the files' precision, with what they compute in (``{"openvino": "bf16"}``).
    reduced: dict[str, str] = field(default_factory=dict)

    @property
    def missed(self) -> list[dict]:
        """Rows whose goal was not met (rows without a goal are never missed)."""
        return [row for row in self.rows if row["goal"] is not None and not row["goal_met"]]

    @property
    def gate(self) -> Gate:
        return alpha_gate(self.precision, bool(self.reduced))

    @property
    def lossy(self) -> bool:
        """A lossy precision (fp16, int8) or a backend computing below it: clicks are held to a budget against
        the float32 whole model."""
        return self.gate != EXPORT_GATE

    @property
    def pair_matches(self) -> bool:
        """Exact precisions: every click equals the whole model's (the export gate); lossy ones: every click
        is within the precision's budget against float32."""
        if self.lossy:
            return all(row.get("within_budget", False) for row in self.rows)
        return all(row["pair_matches_whole"] for row in self.rows)

    def as_dict(self) -> dict:
        return {
            "engine": self.engine,
            "backends": list(self.backends),
            "device": self.device,
            "precision": self.precision,
            "computes_in": self.reduced,
            "batch": 1,
            "threads": self.threads,
            "warmup": self.warmup,
            "iters": self.iters,
            "machine": self.machine,
            "method": METHOD,
            "gate": (
                {"against": "float32", "max_abs": self.gate.max_abs, "mean_abs": self.gate.mean_abs}
                if self.lossy
                else {"against": "whole", "max_abs": EXPORT_GATE.max_abs}
            ),
            "goals_met": not self.missed,
            "pair_matches_whole": self.pair_matches,
            "rows": self.rows,
        }


METHOD = (
    "per size, one process runs rounds of, for each backend in turn (the order rotating from round to round), "
    "the whole model (Runtime), embed (Predictor.embed) and one click (Predictor.predict on that round's "
    "embedding, a point at a new place each round, the same prompt given to the whole model); the whole model "
    "runs first in even rounds and last in odd ones; times are medians of the timed rounds after the warm-up "
    "rounds; speed-up = whole / click"
)


def resolve_engine_folder(engine: Path | None, precision: str = "float32", suffix: str = ".onnx") -> Path:
    """``--engine`` (default ``export``) as a folder holding the whole model and the pair of ``precision``."""
    folder = Path("export") if engine is None else Path(engine)
    files = engine_files(precision, suffix)
    if folder.is_file():
        raise SmatError(f"bench --interactive takes a folder holding {', '.join(files)}, got the file {folder}")
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        where = "" if engine is None else f" -o {folder}"
        make = f"smat-deploy export --interactive{where}"
        if suffix == ".plan":
            make = f"smat-deploy export --interactive, then smat-deploy build and build --interactive{where}"
        raise SmatError(f"{folder} has no {', '.join(missing)}: make them with {make}")
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
    engines: dict[str, tuple[Runtime, Predictor]],
    size: Size,
    config: InteractiveConfig,
    step: Callable[[], None],
    reference: Runtime | None = None,
) -> list[dict]:
    """The rounds at one size, every backend in turn; returns one report row per backend.

    ``reference`` (the float32 whole model, for a lossy precision) runs untimed on every round's prompt,
    and each click is measured against it with the precision's gate."""
    from smat_deploy.evaluation.bench.worker import bench_inputs

    image, first, _ = bench_inputs(size.height, size.width, 1, config.seed)
    rounds = config.warmup + config.iters
    prompts = click_prompts(size.height, size.width, rounds, first, config.seed + 1)
    state = np.ones((1, 1), np.float32)  # every prompt marks pixels: interactive mode
    names = list(engines)
    times = {name: {"whole": [], "embed": [], "click": []} for name in names}
    worst = dict.fromkeys(names, 0.0)
    nbytes = dict.fromkeys(names, 0)
    lossy = {name: {"max": 0.0, "sum": 0.0, "count": 0} for name in names}
    for index, prompt in enumerate(prompts):
        expected = None if reference is None else np.asarray(reference(image, prompt, state), np.float64)
        order = names[index % len(names) :] + names[: index % len(names)]  # rotate who goes first
        for name in order:
            runtime, predictor = engines[name]
            timed: dict[str, float] = {}
            whole_first = index % 2 == 0
            if whole_first:
                whole = _timed(lambda: runtime(image, prompt, state), timed, "whole", step)  # noqa: B023
            embedding = _timed(lambda: predictor.embed(image), timed, "embed", step)  # noqa: B023
            click = _timed(lambda: predictor.predict(embedding, prompt, state), timed, "click", step)  # noqa: B023
            if not whole_first:
                whole = _timed(lambda: runtime(image, prompt, state), timed, "whole", step)  # noqa: B023
            nbytes[name] = embedding.nbytes  # type: ignore[attr-defined]
            worst[name] = max(worst[name], float(np.abs(np.asarray(click, np.float64) - np.asarray(whole)).max()))
            if expected is not None:
                errors = np.abs(np.asarray(click, np.float64) - expected)
                lossy[name]["max"] = max(lossy[name]["max"], float(errors.max()))
                lossy[name]["sum"] += float(errors.sum())
                lossy[name]["count"] += errors.size
            embedding = None  # one embedding at a time, as a session on one photo holds
            if index >= config.warmup:
                for stage, seconds in timed.items():
                    times[name][stage].append(seconds)
    rows = [_row(name, size, times[name], worst[name], nbytes[name], rounds) for name in names]
    if reference is not None:
        gate = alpha_gate(config.precision, True)
        for row in rows:
            found = lossy[row["backend"]]
            row["max_abs_vs_float32"] = found["max"]
            row["mean_abs_vs_float32"] = found["sum"] / max(1, found["count"])
            row["within_budget"] = (
                row["max_abs_vs_float32"] <= gate.max_abs and row["mean_abs_vs_float32"] <= gate.mean_abs
            )
            row["pair_matches_whole"] = None  # two quantisations of one network: held to the budget instead
    return rows


def _row(backend: str, size: Size, times: dict[str, list[float]], worst: float, nbytes: int, rounds: int) -> dict:
    medians = {name: float(np.median(values)) * 1e3 for name, values in times.items()}
    goal = goal_for(size)
    speedup, met = judge(medians["whole"], medians["click"], goal)
    flops = pair_flops(size.height, size.width)
    return {
        "backend": backend,
        "size": size.label,
        "width": size.width,
        "height": size.height,
        "whole_ms": medians["whole"],
        "embed_ms": medians["embed"],
        "click_ms": medians["click"],
        "click_aim_ms": CLICK_AIMS.get(size),
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


def open_engines(folder: Path, config: InteractiveConfig) -> dict[str, tuple[Runtime, Predictor]]:
    """The whole model and the pair of the config's precision, on each of its backends."""
    from smat_deploy import Predictor, Runtime
    from smat_deploy.runtime.registry import backend_class
    from smat_deploy.runtime.wrapper import engine_options

    whole = folder / engine_files(config.precision, config.suffix)[0]
    engines = {}
    for backend in config.backends:
        cls = backend_class(backend)
        taken = {key: value for key, value in config.backend_options.items() if key in cls.options}
        options = engine_options(cls, taken, threads=config.threads)
        runtime = Runtime.open(whole, backend=backend, device=config.device, **options)
        if runtime.info.precision != config.precision:
            raise SmatError(f"{whole} is {runtime.info.precision}, not {config.precision}")
        predictor = Predictor.open(
            folder / engine_files(config.precision, config.suffix)[1], backend, config.device, **options
        )
        if predictor.precision != config.precision:
            raise SmatError(f"the pair in {folder} is {predictor.precision}, not {config.precision}")
        engines[backend] = (runtime, predictor)
    return engines


def alpha_gate(precision: str, reduced: bool) -> Gate:
    """What a click's alpha is held to: the export gate (against its own whole model) for an exact precision
    computed as written; the precision's gate against float32 for a lossy one; and for an exact file that a
    backend computes in half precision (``reduced``), fp16's gate against float32."""
    gate = PRECISIONS[precision].gate
    if gate == EXPORT_GATE and reduced:
        return FP16_GATE
    return gate


def reduced_precision(engines: dict[str, tuple[Runtime, Predictor]]) -> dict[str, str]:
    """The backends that compute below their files' precision, and what in."""
    found = {}
    for name, (runtime, predictor) in engines.items():
        below = {engine.compute_precision for engine in (runtime.backend, predictor.encoder, predictor.decoder)}
        below.discard(None)
        if below:
            found[name] = ", ".join(sorted(below))  # type: ignore[arg-type]
    return found


def open_reference(folder: Path, config: InteractiveConfig, reduced: bool = False) -> Runtime | None:
    """For a lossy run: the float32 whole model (``smat.onnx`` in the same folder) on ONNX Runtime's CPU, which
    every click is measured against; None for an exact one (clicks equal their own whole model)."""
    if alpha_gate(config.precision, reduced) == EXPORT_GATE:
        return None
    from smat_deploy import Runtime

    path = folder / PRECISIONS["float32"].file
    if not path.is_file():
        raise SmatError(f"{folder} has no {path.name}: a {config.precision} click is measured against float32")
    options = {} if config.threads is None else {"threads": config.threads}
    return Runtime.open(path, backend="onnxruntime", device="cpu", **options)


def run_interactive_bench(
    config: InteractiveConfig, progress: Callable[[int], Callable[[], None]] | None = None
) -> InteractiveReport:
    """Measure every size (see the module's docstring).

    The engines are opened afresh for each size and closed after it, so a runtime's memory arenas
    from one size (two sessions' worth at 1560x1040: several GB) are returned before the next opens.
    """
    if config.warmup < 0 or config.iters < 1:
        raise SmatError("--iters must be at least 1 and --warmup at least 0")
    if not config.backends:
        raise SmatError("bench --interactive needs at least one backend")
    from smat_deploy.runtime.registry import backend_class

    for key in config.backend_options:
        if not any(key in backend_class(name).options for name in config.backends):
            raise SmatError(f"no backend of {', '.join(config.backends)} takes option {key!r}")
    folder = resolve_engine_folder(config.engine, config.precision, config.suffix)
    total = len(config.sizes) * (config.warmup + config.iters) * 3 * len(config.backends)
    step = progress(total) if progress else (lambda: None)
    report = InteractiveReport(
        engine=str(folder),
        machine=machine_description(),
        threads=config.threads,
        warmup=config.warmup,
        iters=config.iters,
        backends=config.backends,
        precision=config.precision,
        device=config.device,
    )
    for size in config.sizes:
        engines = open_engines(folder, config)
        report.reduced = reduced_precision(engines)
        reference = open_reference(folder, config, bool(report.reduced))
        report.device = ", ".join(dict.fromkeys(predictor.device for _, predictor in engines.values()))
        report.rows.extend(measure_size(engines, size, config, step, reference))
        del engines, reference
        gc.collect()
    return report


def _fixed(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def format_interactive(report: InteractiveReport) -> str:
    from smat_deploy._table import format_table

    machine = report.machine
    threads = "the runtimes' default threads" if report.threads is None else f"{report.threads} threads"
    rows = [
        {
            "WxH": row["size"],
            "backend": row["backend"],
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
            **(
                {
                    "max vs float32": f"{row['max_abs_vs_float32']:.1e}",
                    "mean vs float32": f"{row['mean_abs_vs_float32']:.1e}",
                }
                if report.lossy
                else {}
            ),
        }
        for row in report.rows
    ]
    lines = [
        f"interactive bench: {report.engine}, {', '.join(report.backends)} on {report.device}, {report.precision}"
        + "".join(f" ({name} computes in {what})" for name, what in report.reduced.items())
        + ", "
        f"batch 1, {threads}; machine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs",
        f"method: {METHOD}; {report.warmup} warm-up + {report.iters} timed rounds per size",
        "sizes are WIDTHxHEIGHT, as everywhere in smat-deploy (1024x768 is 768 pixels high, 1024 wide); "
        "decoder FLOPs = the prompt-dependent part's share of a whole-model run, ideal = 1 / that share; "
        "embedding MB = what one photo's embedding holds (float32, 10^6 bytes)",
        "",
        format_table(rows),
        "",
    ]
    worst = max((row["max_abs_vs_whole"] for row in report.rows), default=0.0)
    count = sum(row["comparisons"] for row in report.rows)
    verdict = "pass" if report.pair_matches else "FAIL"
    if report.lossy:
        gate = report.gate
        worst32 = max((row["max_abs_vs_float32"] for row in report.rows), default=0.0)
        mean32 = max((row["mean_abs_vs_float32"] for row in report.rows), default=0.0)
        what = report.precision + "".join(f", {name} in {kind}" for name, kind in report.reduced.items())
        lines.append(
            f"{what} clicks vs the float32 whole model: max |alpha diff| {worst32:.1e}, "
            f"mean {mean32:.1e} (worst size) over {count} clicks (budget max {gate.max_abs:g}, "
            f"mean {gate.mean_abs:g}): {verdict}; vs each backend's own whole model: max {worst:.1e}"
        )
    else:
        gate = EXPORT_GATE.max_abs
        lines.append(
            f"pair vs whole model: max |alpha diff| {worst:.1e} over {count} clicks (gate {gate:g}): {verdict}"
        )
    lines += _click_comparison(report)
    lines += _click_aims(report)
    if report.missed:
        missed = ", ".join(
            f"{row['size']} on {row['backend']} ({row['speedup']:.2f}x < {row['goal']:g}x)" for row in report.missed
        )
        lines.append(f"goals: missed at {missed}")
    elif any(row["goal"] is not None for row in report.rows):
        lines.append("goals: every size with a goal met it")
    else:
        goals = ", ".join(f"{size.label}: {goal:g}x" for size, goal in GOALS.items())
        lines.append(f"goals: none at these sizes (goals are set at {goals})")
    return "\n".join(lines)


def _click_comparison(report: InteractiveReport) -> list[str]:
    """With two or more backends: each size's click time per backend against the first backend's."""
    if len(report.backends) < 2:
        return []
    first, lines = report.backends[0], []
    for size in dict.fromkeys(row["size"] for row in report.rows):
        mine = {row["backend"]: row for row in report.rows if row["size"] == size}
        base = mine[first]["click_ms"]
        others = ", ".join(
            f"{name} {row['click_ms']:.1f} ms ({row['click_ms'] / base:.2f}x of {first})"
            for name, row in mine.items()
            if name != first
        )
        lines.append(f"click at {size}: {first} {base:.1f} ms; {others}")
    return lines


def _click_aims(report: InteractiveReport) -> list[str]:
    """Each size with an aim (:data:`CLICK_AIMS`): every backend's click against it."""
    lines = []
    for label, aim in ((size.label, aim) for size, aim in CLICK_AIMS.items()):
        mine = [row for row in report.rows if row["size"] == label]
        if mine:
            each = ", ".join(
                f"{row['backend']} {row['click_ms']:.1f} ms ({'reached' if row['click_ms'] <= aim else 'not reached'})"
                for row in mine
            )
            lines.append(f"click aim at {label}: {aim:g} ms; {each}")
    return lines
