"""``bench``: every engine side by side on identical inputs, each measurement in its own process.

For every engine x size x batch a fresh worker process (:mod:`smat_deploy.evaluation.bench.worker`)
opens the engine, warms up and times ``Runtime`` calls, so its peak resident memory is that engine's
alone. The parent compares every engine's alpha with the PyTorch reference on the same inputs,
and turns latencies into throughput, achieved GFLOP/s (:mod:`.flops`), the share of
the matmul rate, the ratio to the first engine and, for ONNX Runtime engines, the wrapper's overhead
over a bare ``session.run``.

The float32 matmul ceiling (:mod:`smat_deploy.evaluation.bench.machine`) is timed inside every worker,
just before its engine opens, so on a shared machine each engine is compared with the rate the
machine gave at that moment.

Bad requests (a size that does not parse, an unknown engine type, a model that breaks the I/O
contract) fail before anything runs. An engine whose backend is missing here gets the row status
``unavailable: <reason>``; one that fails while opening or running gets ``error: <reason>``; the
other engines still run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from smat_deploy.errors import SmatError
from smat_deploy.evaluation.bench.machine import DEFAULT_MATMUL_SIZE, machine_description
from smat_deploy.evaluation.bench.worker import run_in_worker
from smat_deploy.evaluation.flops import attention_half_side, smat_flops
from smat_deploy.model import SMat, describe_weights
from smat_deploy.runtime import backend_class, backend_for
from smat_deploy.runtime.sizing import SizePolicy
from smat_deploy.runtime.torch_backend import TORCH_ENGINE
from smat_deploy.runtime.wrapper import engine_options

MEMORY_METHOD = (
    "every engine x size x batch ran in its own fresh process: peak_rss_mb is that process's peak resident "
    "memory (getrusage ru_maxrss), base_rss_mb its resident memory before the engine was opened "
    "(interpreter, torch, onnxruntime); predicted_mb is the size policy's prediction of that peak, made before "
    "the first call (resident memory once the engine was open + the call's predicted working memory)"
)


@dataclass(frozen=True)
class Size:
    width: int
    height: int

    @property
    def label(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass(frozen=True)
class EngineChoice:
    """One ``--engine`` as resolved before anything runs."""

    label: str
    engine: str  # what the worker opens: "torch", a checkpoint or a model file
    backend: str
    artifact_bytes: int | None
    unavailable: str | None = None


def _parameter_bytes() -> int:
    with torch.device("meta"):
        model = SMat()
    return sum(p.numel() * p.element_size() for p in model.parameters())


def resolve_engine(text: str, checkpoint: Path | None = None, backend: str | None = None) -> EngineChoice:
    """Check one ``--engine`` (file type, existence, I/O contract) and say whether its backend can run here.

    ``backend``: the backend to run it with (default: the first registered one that opens it); the
    label names the backend when one was asked for, so one file can be measured on several.
    """
    engine = str(checkpoint) if text == TORCH_ENGINE and checkpoint is not None else text
    chosen = backend_for(TORCH_ENGINE if text == TORCH_ENGINE else Path(text), backend)
    label = text if backend is None else f"{text} ({chosen.name})"
    if text == TORCH_ENGINE:
        size = checkpoint.stat().st_size if checkpoint is not None else _parameter_bytes()
        return EngineChoice(label, engine, chosen.name, size, chosen.unavailable_reason())
    path = Path(text)
    if not path.is_file():
        raise SmatError(f"engine not found: {text}")
    chosen.check_file(path)
    return EngineChoice(label, str(path), chosen.name, path.stat().st_size, chosen.unavailable_reason())


def resolve_engines(engines: list[str], backends: list[str] | None, checkpoint: Path | None) -> list[EngineChoice]:
    """Every engine with every ``backends`` entry that opens it (all engines with their default backend when None).

    An engine that none of the named backends opens is an error: it would silently not be measured.
    """
    if not backends:
        return [resolve_engine(text, checkpoint) for text in engines]
    choices = []
    for text in engines:
        target = TORCH_ENGINE if text == TORCH_ENGINE else Path(text)
        mine = [name for name in backends if backend_class(name).accepts(target)]  # an unknown name raises
        if not mine:
            raise SmatError(f"none of --backend {', '.join(backends)} opens {text}")
        choices.extend(resolve_engine(text, checkpoint, name) for name in mine)
    return choices


@dataclass(frozen=True)
class BenchConfig:
    engines: list[str]
    sizes: list[Size] = field(default_factory=lambda: [Size(518, 518)])
    batches: list[int] = field(default_factory=lambda: [1])
    warmup: int = 1
    iters: int = 5
    threads: int | None = None
    device: str = "auto"
    checkpoint: Path | None = None
    seed: int = 0
    matmul_size: int = DEFAULT_MATMUL_SIZE
    #: Backends to run every engine with (those that open it); None: each engine's default backend.
    backends: list[str] | None = None
    #: ``--backend-option`` values, checked against each chosen backend's declared options.
    backend_options: dict = field(default_factory=dict)
    #: How sizes too large for the memory budget run (the same rule as ``matte``); every job and the reference.
    size_policy: SizePolicy = field(default_factory=SizePolicy)


@dataclass
class BenchReport:
    machine: dict
    reference: str
    rows: list[dict]
    overhead: list[dict]
    sweep: list[dict]
    attention: dict
    memory_method: str = MEMORY_METHOD
    plot: str | None = None

    @property
    def failed(self) -> list[dict]:
        return [row for row in self.rows if str(row["status"]).startswith("error")]

    def as_dict(self) -> dict:
        return {
            "machine": self.machine,
            "reference": self.reference,
            "memory_method": self.memory_method,
            "rows": self.rows,
            "overhead": self.overhead,
            "sweep": self.sweep,
            "attention": self.attention,
            "plot": self.plot,
        }


def _is_reference(choice: EngineChoice, checkpoint: Path | None) -> bool:
    if choice.backend != "torch":
        return False
    if checkpoint is None:
        return choice.engine == TORCH_ENGINE
    return choice.engine != TORCH_ENGINE and Path(choice.engine).resolve() == checkpoint.resolve()


def _percentiles(latencies: list[float]) -> dict:
    if not latencies:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None}
    p50, p90, p99 = np.percentile(np.asarray(latencies) * 1e3, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99)}


def _row(choice: EngineChoice, size: Size, batch: int, result: dict) -> dict:
    matmul = result.get("matmul") or {}
    row = {
        "engine": choice.label,
        "backend": choice.backend,
        "status": result.get("status", "ok"),
        "precision": result.get("precision"),
        "artifact_mb": None if choice.artifact_bytes is None else choice.artifact_bytes / 1e6,
        "size": size.label,
        "batch": batch,
        **_percentiles(result.get("latencies", [])),
        "iters": len(result.get("latencies", [])),
        "images_per_s": None,
        "speedup_vs_first": None,
        "gflops": None,
        "matmul_gflops": matmul.get("gflops"),
        "of_matmul": None,
        "peak_rss_mb": result.get("peak_rss_mb"),
        "base_rss_mb": result.get("base_rss_mb"),
        "loaded_rss_mb": result.get("loaded_rss_mb"),
        "torch_cuda_peak_mb": result.get("torch_cuda_peak_mb"),
        "mad_vs_ref": None,
        "max_abs_vs_ref": None,
        "open_s": result.get("open_seconds"),
        "device": result.get("device"),
        "providers": result.get("providers"),
        "threads": result.get("threads"),
        "pid": result.get("pid"),
        **_size_columns(result),
    }
    if row["p50_ms"]:
        seconds = row["p50_ms"] / 1e3
        row["images_per_s"] = batch / seconds
        width, height = (result.get("plan") or {}).get("run_size") or (size.width, size.height)  # what ran
        row["gflops"] = smat_flops(height, width, batch).total / seconds / 1e9
        row["of_matmul"] = _ratio(row["gflops"], row["matmul_gflops"])
    return row


def _size_columns(result: dict) -> dict:
    """Where the size policy ran the job, what it predicted, and the share of time spent scaling and upsampling."""
    plan = result.get("plan") or {}
    stages = result.get("stages") or []
    share = None
    if stages and plan.get("scaled"):
        totals = [sum(stage.values()) for stage in stages]
        resizing = [stage.get("scale", 0.0) + stage.get("upsample", 0.0) for stage in stages]
        share = float(np.median(resizing)) / float(np.median(totals))
    return {
        "run_size": "x".join(map(str, plan["run_size"])) if plan else None,
        "scaled": plan.get("scaled"),
        "predicted_mb": plan.get("predicted_peak_mb"),
        "resize_share": share,
        "upsample_ms": 1e3 * float(np.median([stage.get("upsample", 0.0) for stage in stages]))
        if stages and plan.get("scaled")
        else None,
    }


def _overhead_row(choice: EngineChoice, size: Size, batch: int, result: dict) -> dict | None:
    wrapped, bare = result.get("latencies") or [], result.get("bare_latencies") or []
    if not wrapped or not bare:
        return None
    runtime_ms, bare_ms = float(np.median(wrapped)) * 1e3, float(np.median(bare)) * 1e3
    return {
        "engine": choice.label,
        "size": size.label,
        "batch": batch,
        "pairs": len(bare),
        "runtime_p50_ms": runtime_ms,
        "session_run_p50_ms": bare_ms,
        "overhead": runtime_ms / bare_ms - 1.0,
        "overhead_of_minimums": min(wrapped) / min(bare) - 1.0,
        "wrapper_work_ms": result.get("wrapper_work_ms"),
    }


def _sweep(rows: list[dict], sizes: list[Size], batch: int) -> list[dict]:
    """Per engine, how time and memory grow from the smallest size (at the first batch)."""
    sweep = []
    smallest = min(sizes, key=lambda s: s.width * s.height)
    for engine in dict.fromkeys(row["engine"] for row in rows if row["p50_ms"]):
        mine = {row["size"]: row for row in rows if row["engine"] == engine and row["batch"] == batch}
        base = mine.get(smallest.label, {})
        for size in sorted(sizes, key=lambda s: s.width * s.height):
            row = mine.get(size.label, {})
            run = row.get("run_size") or size.label  # the size the engine ran at, where the policy scaled it
            run_width, run_height = (int(side) for side in run.split("x"))
            flops = smat_flops(run_height, run_width)
            ms = None if not row.get("p50_ms") else row["p50_ms"] / batch
            sweep.append(
                {
                    "engine": engine,
                    "size": size.label,
                    "batch": batch,
                    "megapixels": size.width * size.height / 1e6,
                    "run_size": run,
                    "tokens": flops.tokens,
                    "gflop_per_image": flops.total / 1e9,
                    "attention_share": flops.attention_share,
                    "ms_per_image": ms,
                    "time_growth": _ratio(row.get("p50_ms"), base.get("p50_ms")),
                    "peak_rss_mb": row.get("peak_rss_mb"),
                    "memory_growth": _ratio(row.get("peak_rss_mb"), base.get("peak_rss_mb")),
                    "activation_mb": _difference(row.get("peak_rss_mb"), row.get("loaded_rss_mb")),
                }
            )
    return sweep


def _ratio(value: float | None, base: float | None) -> float | None:
    return None if not value or not base else value / base


def _difference(value: float | None, base: float | None) -> float | None:
    return None if value is None or base is None else value - base


def _measure_job(name: str, choice: EngineChoice, size: Size, batch: int, config: BenchConfig, first: bool) -> dict:
    return {
        "name": name,
        "engine": choice.engine,
        "backend": choice.backend,
        "options": job_options(choice.backend, config),
        "device": config.device,
        "threads": config.threads,
        "seed": config.seed,
        "height": size.height,
        "width": size.width,
        "batch": batch,
        "warmup": config.warmup,
        "iters": config.iters,
        "overhead": first,
        "matmul_size": config.matmul_size,
        "size_policy": _policy_fields(config.size_policy),
    }


def _policy_fields(policy: SizePolicy) -> dict:
    return {
        "max_memory_mb": policy.max_memory_mb,
        "scale_to": policy.scale_to,
        "max_side": policy.max_side,
        "upsampling": policy.upsampling,
    }


def job_options(backend: str, config: BenchConfig) -> dict:
    """What the worker opens an engine with: ``--threads`` and ``--seed`` for the backends that take them,
    plus every ``--backend-option`` (which the backend must take)."""
    return engine_options(backend_class(backend), config.backend_options, threads=config.threads, seed=config.seed)


def _steps(job: dict) -> int:
    """Progress steps a job reports: the open, then one per call."""
    return 1 + (len(job["cases"]) if "cases" in job else job["warmup"] + job["iters"])


def run_bench(config: BenchConfig, progress: Callable[[int], Callable[[], None]] | None = None) -> BenchReport:
    """Measure every engine; ``progress(total_steps)`` returns the callback each finished call reports to.

    Without a reference engine among them (``torch`` with the same weights), one extra worker runs
    the reference on every size and batch for the accuracy columns; it is not timed, so it needs no
    process of its own per size. An engine that fails to open is not retried at its other sizes.
    """
    if config.warmup < 0 or config.iters < 1:
        raise SmatError("--iters must be at least 1 and --warmup at least 0")
    choices = resolve_engines(config.engines, config.backends, config.checkpoint)
    reference = next((c for c in choices if _is_reference(c, config.checkpoint)), None)
    measured = []
    for choice in choices:
        for size in config.sizes:
            for batch in config.batches:
                first = size == config.sizes[0] and batch == config.batches[0]
                job = _measure_job(f"job{len(measured)}", choice, size, batch, config, first)
                measured.append((choice, size, batch, job))
    reference_job = None
    if reference is None:
        cases = [
            {"height": size.height, "width": size.width, "batch": batch, "alpha_path": f"reference_{i}.npy"}
            for i, (size, batch) in enumerate((s, b) for s in config.sizes for b in config.batches)
        ]
        engine = str(config.checkpoint) if config.checkpoint is not None else TORCH_ENGINE
        reference_job = {"name": "reference", "engine": engine, "backend": "torch", "device": config.device}
        reference_job["size_policy"] = _policy_fields(config.size_policy)
        reference_job.update(
            seed=config.seed, options=job_options("torch", replace(config, backend_options={})), cases=cases
        )
    runnable = [job for choice, _, _, job in measured if choice.unavailable is None]
    total = sum(_steps(job) for job in [*runnable, *([reference_job] if reference_job else [])])
    step = progress(total) if progress else (lambda: None)

    results: dict[str, dict] = {}
    alphas: dict[tuple[str, str, int], np.ndarray] = {}  # (engine label, size, batch) -> alpha
    reference_runs: dict[tuple[str, str, int], str | None] = {}  # where the reference ran
    reference_label = reference.label if reference is not None else "reference"
    with tempfile.TemporaryDirectory(prefix="smat-bench-") as tmp:
        workdir = Path(tmp)
        failed_to_open: dict[str, str] = {}
        for choice, size, batch, job in measured:
            if choice.unavailable is not None:
                results[job["name"]] = {"status": f"unavailable: {choice.unavailable}"}
            elif choice.label in failed_to_open:
                results[job["name"]] = {"status": failed_to_open[choice.label]}
                for _ in range(_steps(job)):
                    step()
            else:
                job["alpha_path"] = str(workdir / f"{job['name']}.npy")
                results[job["name"]] = result = run_in_worker(job, workdir, step, _steps(job))
                if result.get("stage") == "open":
                    failed_to_open[choice.label] = result["status"]
                elif result.get("status") == "ok":
                    alphas[(choice.label, size.label, batch)] = np.load(job["alpha_path"])
        if reference_job is not None:
            for case in reference_job["cases"]:
                case["alpha_path"] = str(workdir / case["alpha_path"])
            result = run_in_worker(reference_job, workdir, step, _steps(reference_job))
            cases = reference_job["cases"] if result.get("status") == "ok" else []
            for case, run_size in zip(cases, result.get("run_sizes", []), strict=False):
                key = (reference_label, Size(case["width"], case["height"]).label, case["batch"])
                alphas[key] = np.load(case["alpha_path"])
                reference_runs[key] = "x".join(map(str, run_size)) if run_size else None

    rows, overhead = [], []
    first_p50: dict[tuple[str, int], float | None] = {}
    for choice, size, batch, job in measured:
        result = results[job["name"]]
        row = _row(choice, size, batch, result)
        first_p50.setdefault((size.label, batch), row["p50_ms"])
        row["speedup_vs_first"] = _ratio(first_p50[(size.label, batch)], row["p50_ms"])
        rows.append(row)
        if reference is not None and choice.label == reference.label:
            reference_runs[(reference_label, size.label, batch)] = row["run_size"]
        if (extra := _overhead_row(choice, size, batch, result)) is not None:
            overhead.append(extra)
    for (choice, size, batch, _), row in zip(measured, rows, strict=True):
        key = (size.label, batch)
        mine, truth = alphas.get((choice.label, *key)), alphas.get((reference_label, *key))
        same_size = reference_runs.get((reference_label, *key)) == row["run_size"]  # compared at one run size only
        if mine is not None and truth is not None and same_size:
            diff = np.abs(mine.astype(np.float64) - truth)
            row["mad_vs_ref"], row["max_abs_vs_ref"] = float(diff.mean()), float(diff.max())

    attention = {size.label: smat_flops(size.height, size.width).attention_share for size in config.sizes}
    half_side = attention_half_side()
    return BenchReport(
        machine={**machine_description(), "matmul_size": config.matmul_size},
        reference=f"PyTorch reference, {describe_weights(config.checkpoint, config.seed)}",
        rows=rows,
        overhead=overhead,
        sweep=_sweep(rows, config.sizes, config.batches[0]) if len(config.sizes) > 1 else [],
        attention={
            "share_by_size": attention,
            "half_of_flops_from_side": half_side,
            "half_of_flops_from_tokens": smat_flops(half_side, half_side).tokens,
        },
    )
