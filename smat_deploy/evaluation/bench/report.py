"""How a :class:`~smat_deploy.evaluation.bench.runner.BenchReport` is shown: text tables and the sweep plot.

The ``--json`` output is :meth:`BenchReport.as_dict` with raw numbers; the tables here round them
for reading and move long ``error:`` / ``unavailable:`` reasons under the table, one per line.
"""

from __future__ import annotations

import os
from pathlib import Path

from smat_deploy._files import atomic_output
from smat_deploy._table import format_table
from smat_deploy.evaluation.bench.runner import BenchReport


def _fixed(value: float | None, digits: int = 1, suffix: str = "") -> str | None:
    return None if value is None else f"{value:.{digits}f}{suffix}"


def _percent(value: float | None, signed: bool = False) -> str | None:
    return None if value is None else (f"{value:+.1%}" if signed else f"{value:.0%}")


def _scientific(value: float | None) -> str | None:
    return None if value is None else ("0" if value == 0 else f"{value:.1e}")


def _status(status: str) -> str:
    return status.split(":", 1)[0]


def engine_table(report: BenchReport) -> str:
    rows = [
        {
            "engine": row["engine"],
            "status": _status(row["status"]),
            "precision": row["precision"],
            "MB": _fixed(row["artifact_mb"], 1),
            "WxH": row["size"],
            "ran at": _ran_at(row),
            "batch": row["batch"],
            "p50 ms": _fixed(row["p50_ms"]),
            "p90 ms": _fixed(row["p90_ms"]),
            "p99 ms": _fixed(row["p99_ms"]),
            "img/s": _fixed(row["images_per_s"], 2),
            "speedup": _fixed(row["speedup_vs_first"], 2, "x"),
            "GFLOP/s": _fixed(row["gflops"]),
            "matmul GFLOP/s": _fixed(row["matmul_gflops"]),
            "of matmul": _percent(row["of_matmul"]),
            "pred MB": _fixed(row.get("predicted_mb"), 0),
            "peak MB": _fixed(row["peak_rss_mb"], 0),
            "pred/peak": _fixed(_prediction_ratio(row), 2),
            "base MB": _fixed(row["base_rss_mb"], 0),
            "resize": _percent(row.get("resize_share")),
            "MAD vs ref": _scientific(row["mad_vs_ref"]),
        }
        for row in report.rows
    ]
    return format_table(rows)


def _ran_at(row: dict) -> str | None:
    """The size the engine ran at: ``full``, or the scaled size the size policy chose."""
    if row.get("run_size") is None:
        return None
    return row["run_size"] if row.get("scaled") else "full"


def _prediction_ratio(row: dict) -> float | None:
    """Predicted over measured peak memory (1.00: exact)."""
    predicted, measured = row.get("predicted_mb"), row.get("peak_rss_mb")
    return None if not predicted or not measured else predicted / measured


def overhead_table(report: BenchReport) -> str:
    rows = [
        {
            "engine": row["engine"],
            "WxH": row["size"],
            "batch": row["batch"],
            "pairs": row["pairs"],
            "Runtime p50 ms": _fixed(row["runtime_p50_ms"], 2),
            "session.run p50 ms": _fixed(row["session_run_p50_ms"], 2),
            "added ms": _fixed(row["runtime_p50_ms"] - row["session_run_p50_ms"], 2),
            "overhead": _percent(row["overhead"], signed=True),
            "of minimums": _percent(row.get("overhead_of_minimums"), signed=True),
            "wrapper work ms": _fixed(row.get("wrapper_work_ms"), 2),
        }
        for row in report.overhead
    ]
    return format_table(rows)


def sweep_table(report: BenchReport) -> str:
    rows = [
        {
            "engine": row["engine"],
            "WxH": row["size"],
            "ran at": row["run_size"] if row.get("run_size") != row["size"] else "full",
            "tokens": row["tokens"],
            "GFLOP/img": _fixed(row["gflop_per_image"]),
            "attention": _percent(row["attention_share"]),
            "ms/img": _fixed(row["ms_per_image"]),
            "time x": _fixed(row["time_growth"], 2, "x"),
            "peak MB": _fixed(row["peak_rss_mb"], 0),
            "memory x": _fixed(row["memory_growth"], 2, "x"),
            "activations MB": _fixed(row["activation_mb"], 0),
        }
        for row in report.sweep
    ]
    return format_table(rows)


def attention_note(report: BenchReport) -> str:
    shares = ", ".join(f"{share:.0%} at {size}" for size, share in report.attention["share_by_size"].items())
    side, tokens = report.attention["half_of_flops_from_side"], report.attention["half_of_flops_from_tokens"]
    return (
        f"attention (Q K^T and attn V, quadratic in tokens) as a share of all FLOPs: {shares}; "
        f"it is half of them from about {side}x{side} ({tokens} tokens) up"
    )


def format_report(report: BenchReport) -> str:
    machine = report.machine
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ""
    size = machine["matmul_size"]
    lines = [
        f"machine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs{gpu}",
        f"ceiling: matmul GFLOP/s = float32 torch.mm of two {size}x{size} matrices (best of 3, same threads), "
        "timed in each engine's own process just before the engine opened; of matmul = GFLOP/s / matmul GFLOP/s",
        f"accuracy: MAD vs ref = mean |alpha - reference alpha| on the same inputs; reference: {report.reference}",
        f"memory: {report.memory_method}",
        "sizes: ran at = the size the engine ran at (full, or scaled by the size policy to fit the memory budget, "
        "the alpha brought back to WxH); resize = share of the call spent scaling the photo down and upsampling the "
        "alpha",
        "",
        engine_table(report),
    ]
    reasons = dict.fromkeys((row["engine"], row["status"]) for row in report.rows if row["status"] != "ok")
    lines += [f"  {engine}: {status}" for engine, status in reasons]
    if report.overhead:
        lines += [
            "",
            "wrapper overhead: Runtime(...) vs bare onnxruntime session.run on the same feed and session, "
            "calls interleaved; overhead = ratio of medians - 1 (also of the minimums, less sensitive to a busy "
            "machine); wrapper work = the wrapper's own input/output handling timed alone (median of 20)",
            overhead_table(report),
        ]
    if report.sweep:
        lines += ["", f"resolution sweep (batch {report.sweep[0]['batch']}):", sweep_table(report)]
    lines += ["", attention_note(report)]
    if report.plot:
        lines.append(f"plot: {report.plot}")
    return "\n".join(lines)


def write_plot(report: BenchReport, path: str | os.PathLike[str]) -> Path:
    """Two panels over image size: ms per image (with the matmul ceiling) and peak resident memory."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    time_axes, memory_axes = figure.subplots(1, 2)
    engines = list(dict.fromkeys(row["engine"] for row in report.sweep))
    for engine in engines:
        rows = [row for row in report.sweep if row["engine"] == engine and row["ms_per_image"] is not None]
        if rows:
            time_axes.plot([r["megapixels"] for r in rows], [r["ms_per_image"] for r in rows], marker="o", label=engine)
            memory_axes.plot(
                [r["megapixels"] for r in rows], [r["peak_rss_mb"] for r in rows], marker="o", label=engine
            )
    sizes = list({row["size"]: row for row in report.sweep}.values())
    rates = [row["matmul_gflops"] for row in report.rows if row["matmul_gflops"]]
    if rates:  # the fastest any fp32 engine could go: all FLOPs at the best matmul rate seen in the run
        best = max(rates)
        ceiling = [row["gflop_per_image"] / best * 1e3 for row in sizes]
        label = f"all FLOPs at the fp32 matmul rate ({best:.0f} GFLOP/s)"
        time_axes.plot([r["megapixels"] for r in sizes], ceiling, linestyle="--", color="grey", label=label)
    for axes, label in ((time_axes, "ms per image (p50)"), (memory_axes, "peak resident memory (MB)")):
        axes.set_xticks([r["megapixels"] for r in sizes], [r["size"] for r in sizes], rotation=30)
        axes.set_xlabel("image size (W x H)")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    time_axes.set_title("time per image")
    memory_axes.set_title("peak memory, one process per engine and size")
    with atomic_output(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return Path(path)
