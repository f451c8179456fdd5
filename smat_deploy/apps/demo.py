"""The ``demo`` job: export, precision variants, engines, parity, bench, and a report folder.

Every stage reuses the package's own pieces (the export pipeline, the precision variants, the
TensorRT builder, ``Runtime``, ``bench``), so the demo shows exactly what the individual commands do.
The report is ``OUT/report.md`` (plus ``report.json``) with the pictures beside it: the input, the
prompt overlay, every engine's alpha, the reference cutouts and each engine's difference heatmap.

Without a checkpoint the demo runs on the demo weights (:mod:`smat_deploy.train.demo_weights`): a brief
fine-tune on synthetic composites, built on the first run and cached, so the mattes have structure.
They are not a real SMat checkpoint, and the first output line and the report say so.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from smat_deploy import __version__, images, prompts
from smat_deploy._files import atomic_output, sha256_of
from smat_deploy._table import format_table, markdown_table
from smat_deploy.apps.figures import save_heatmap, save_overlay
from smat_deploy.contract import PROMPT_KINDS, manifest_path_for, pair_file, read_manifest
from smat_deploy.data.cases import standard_cases
from smat_deploy.data.synthetic import make_composite
from smat_deploy.engines.tensorrt_build import tensorrt_status
from smat_deploy.errors import SmatError
from smat_deploy.model import SMat, describe_weights, load_model
from smat_deploy.runtime.torch_backend import TORCH_ENGINE
from smat_deploy.train.demo_weights import demo_checkpoint, demo_checkpoint_path, describe_demo_weights

#: ``--precisions`` names -> the variants they make (``int8`` makes both INT8 files, like ``export --int8``).
PRECISION_CHOICES = {"cpu": ("float32_cpu",), "fp16": ("fp16",), "int8": ("int8", "int8_cpu")}
SAMPLE_SIZE = (378, 504)  # height, width of the demo photo: not square, not a multiple of 14
MODES = ("auto", "point")
PARITY_COLUMNS = ("prompts", "samples", "max_abs", "mean_abs", "SAD", "MSE", "Grad", "Conn", "pass")
BENCH_COLUMNS = (
    *("engine", "status", "precision", "size", "p50_ms", "p90_ms", "images_per_s", "speedup_vs_first"),
    *("gflops", "of_matmul", "peak_rss_mb", "mad_vs_ref"),
)

Log = Callable[[str], None]


@dataclass
class DemoConfig:
    out: Path = Path("demo_out")
    checkpoint: Path | None = None  # None: the demo weights (fine-tuned on the first run, then cached)
    cache_dir: Path | None = None  # where the demo weights are cached; None: the default cache folder
    seed: int = 0  # the demo photo, prompts and composites
    export_dir: Path = Path("export")
    engines_dir: Path = Path("engines")
    calib: Path = Path("calib_data")
    precisions: tuple[str, ...] = ("cpu", "fp16", "int8")
    bench_size: int = 518
    iters: int = 3
    reuse: bool = False
    parity_data: Path | None = None  # None: the bundled set (scikit-image's held-out photos + composites)
    parity_limit: int = 1


@dataclass
class Engine:
    """One engine the demo compares: the reference, an ONNX file or a TensorRT engine."""

    label: str
    engine: str  # what Runtime.open and bench take
    precision: str
    size_bytes: int | None
    made_in_s: float | None = None
    reused: bool = False
    status: str = "ok"


@dataclass
class DemoReport:
    weights: str
    engines: list[Engine]
    demo_weights: bool = False  # the brief synthetic fine-tune that stands in for a real checkpoint
    stages: list[dict] = field(default_factory=list)
    sample: list[dict] = field(default_factory=list)
    bench: dict | None = None
    parity: list[dict] = field(default_factory=list)  # one ParityResult.as_dict() per engine
    notes: list[str] = field(default_factory=list)
    report_path: Path | None = None

    def summary_rows(self) -> list[dict]:
        bench_rows = {row["engine"]: row for row in (self.bench or {}).get("rows", [])}
        parity = {p["engine"]["engine"]: p for p in self.parity}
        rows = []
        for engine in self.engines:
            mine = [s for s in self.sample if s["engine"] == engine.label]
            bench = bench_rows.get(engine.engine, {})
            check = parity.get(engine.engine)
            rows.append(
                {
                    "engine": engine.label,
                    "precision": engine.precision,
                    "status": engine.status,
                    "MB": None if engine.size_bytes is None else round(engine.size_bytes / 1e6, 1),
                    "made_in_s": None if engine.made_in_s is None else round(engine.made_in_s, 1),
                    "max_abs_vs_ref": max(
                        (s["max_abs_vs_ref"] for s in mine if s["max_abs_vs_ref"] is not None), default=None
                    ),
                    "MAD_vs_truth": float(np.mean([s["mad_vs_truth"] for s in mine])) if mine else None,
                    "parity": None if check is None else _parity_cell(check),
                    "ms_per_image": None if not bench.get("p50_ms") else round(bench["p50_ms"], 1),
                    "speedup_vs_torch": None
                    if not bench.get("speedup_vs_first")
                    else round(bench["speedup_vs_first"], 2),
                }
            )
        return rows

    @property
    def parity_failures(self) -> list[str]:
        return [f"{p['engine']['engine']}: {'; '.join(p['failures'])}" for p in self.parity if not p["passed"]]

    def as_dict(self) -> dict:
        return {
            "weights": self.weights,
            "trained_weights": True,  # a checkpoint, or the demo weights (fine-tuned; see demo_weights)
            "demo_weights": self.demo_weights,
            "summary": self.summary_rows(),
            "engines": [vars(e) for e in self.engines],
            "stages": self.stages,
            "sample": self.sample,
            "parity": self.parity,
            "bench": self.bench,
            "notes": self.notes,
            "report": None if self.report_path is None else str(self.report_path),
        }


def _parity_cell(check: dict) -> str:
    """``pass (max 1.4e-05, mean 1.1e-06)`` or ``FAIL: mean |diff| 3.24e-02 > 0.03`` (the first failing bound)."""
    if not check["passed"]:
        return "FAIL: " + check["failures"][0].split(": ", 1)[-1] if check["failures"] else "FAIL"
    mean = max((row["mean_abs"] for row in check["rows"]), default=float("nan"))
    return f"pass (max {check['max_abs']:.1e}, mean {mean:.1e})"


def parse_precisions(text: str) -> tuple[str, ...]:
    """``"fp16,int8"`` -> the extra precisions; ``""`` or ``"none"`` -> float32 only."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if names in ([], ["none"]):
        return ()
    unknown = [n for n in names if n not in PRECISION_CHOICES]
    if unknown:
        raise SmatError(f"--precisions: unknown {unknown[0]!r} (choose from {', '.join(PRECISION_CHOICES)}, or none)")
    return tuple(dict.fromkeys(names))


def _source(checkpoint: Path | None, seed: int) -> dict:
    return {
        "checkpoint_sha256": sha256_of(checkpoint) if checkpoint else None,
        "weights": describe_weights(checkpoint, seed) if checkpoint is None else None,
    }


def _reusable(path: Path, source: dict, derived_from_sha256: str | None = None) -> dict | None:
    """The manifest of ``path`` when it was made by this version from the same weights (and file)."""
    manifest = read_manifest(manifest_path_for(path)) if path.is_file() else None
    if not manifest or manifest.get("sha256") != sha256_of(path):
        return None
    if (manifest.get("versions") or {}).get("smat_deploy") != __version__:
        return None
    made_from = manifest.get("source") or {}
    if made_from.get("checkpoint_sha256") != source["checkpoint_sha256"]:
        return None
    if source["weights"] is not None and made_from.get("weights") != source["weights"]:
        return None
    if derived_from_sha256 is not None and (manifest.get("derived_from") or {}).get("sha256") != derived_from_sha256:
        return None
    return manifest


class _Stages:
    """Times each stage and records it for the report."""

    def __init__(self, report: DemoReport, log: Log) -> None:
        self.report, self.log = report, log

    def run(self, name: str, work: Callable[[], object]) -> object:
        self.log(f"[{len(self.report.stages) + 1}] {name}")
        start = time.perf_counter()
        result = work()
        self.report.stages.append({"stage": name, "seconds": round(time.perf_counter() - start, 1)})
        return result


def _export(config: DemoConfig, source: dict, log: Log) -> Engine:
    from smat_deploy.export.pipeline import ONNX_NAME, export_float32

    path = config.export_dir / ONNX_NAME
    pair = [config.export_dir / pair_file(role, "float32") for role in ("encoder", "decoder")]
    manifest = _reusable(path, source) if config.reuse else None
    if manifest is not None and all(_reusable(half, source) is not None for half in pair):
        log(f"    reusing {path} and its interactive pair (same weights, smat-deploy {__version__})")
        return Engine("onnx float32", str(path), "float32", path.stat().st_size, manifest.get("export_seconds"), True)
    # The interactive pair too, so that `smat-deploy app` and `matte` with several prompts run on the demo's export.
    result = export_float32(
        checkpoint=config.checkpoint,
        output_dir=config.export_dir,
        seed=config.seed,
        interactive=True,
        log=lambda m: log(f"    {m}"),
    )
    return Engine("onnx float32", str(result.onnx_path), "float32", result.size_bytes, result.export_seconds)


def _calibration(config: DemoConfig, log: Log):
    from smat_deploy.data.calibration import DEFAULT_SYNTHETIC, build_calibration_set, load_calibration_set

    if (config.calib / "index.json").is_file():
        return load_calibration_set(config.calib)
    log(f"    no calibration set in {config.calib}/: building the default one")
    return build_calibration_set(config.calib, synthetic=DEFAULT_SYNTHETIC)


def _variants(config: DemoConfig, float32: Engine, source: dict, log: Log) -> tuple[list[Engine], list[str]]:
    from smat_deploy.engines.variants import VARIANT_FILES, make_variant

    engines, notes = [], []
    kinds = [kind for name in config.precisions for kind in PRECISION_CHOICES[name]]
    calibration = None
    float32_sha256 = sha256_of(float32.engine) if config.reuse and kinds else None  # hashed once, not per variant
    for kind in kinds:
        path = config.export_dir / VARIANT_FILES[kind]
        if config.reuse and (manifest := _reusable(path, source, float32_sha256)) is not None:
            log(f"    reusing {path}")
            engines.append(
                Engine(f"onnx {kind}", str(path), kind, path.stat().st_size, manifest["conversion_seconds"], True)
            )
            continue
        calibration = calibration or _calibration(config, log)
        variant = make_variant(
            kind,
            float32.engine,
            calibration,
            engines_dir=config.engines_dir,
            holdout_photos=_holdout_photos(config),
            log=lambda m: log(f"    {m}"),
        )
        engines.append(Engine(f"onnx {kind}", str(variant.path), kind, variant.size_bytes, variant.seconds))
        if variant.engine:
            plan = Path(variant.engine)
            engines.append(Engine(f"tensorrt {kind}", str(plan), kind, plan.stat().st_size))
        notes += variant.notes
    if not kinds:
        available, reason = tensorrt_status()
        notes.append("no precision variants requested" + ("" if available else f"; TensorRT: {reason}"))
    return engines, sorted(set(notes))


def _holdout_photos(config: DemoConfig) -> Path | None:
    """Photos the INT8 budget is measured on: the parity stage's photo folder (a calibration set is not held out);
    None: the bundled held-out photos, which the parity stage's default set holds too."""
    if config.parity_data is not None and not (config.parity_data / "index.json").is_file():
        return config.parity_data
    return None


def _sample(seed: int):
    composite = make_composite(SAMPLE_SIZE, seed=seed)
    ys, xs = np.nonzero(composite.alpha > 0.99)
    if len(xs) == 0:
        raise SmatError("the demo composite has no opaque pixel to click on (try another --seed)")
    click = prompts.Point(float(np.median(xs)), float(np.median(ys)))
    masks = {"auto": np.zeros(SAMPLE_SIZE, np.float32), "point": prompts.rasterize([click], SAMPLE_SIZE)}
    return composite, masks


def _slug(label: str) -> str:
    return label.replace(" ", "_")


def _matte_sample(config: DemoConfig, engines: list[Engine], reference_model: SMat, log: Log) -> list[dict]:
    """Every engine on the demo photo, automatic and with a click; pictures and differences.

    ``engines[0]`` is the reference; it runs on ``reference_model``, the module already loaded.
    """
    from smat_deploy.runtime import Runtime

    composite, masks = _sample(config.seed)
    out = config.out
    images.save_rgb(out / "input.png", composite.image)
    images.save_alpha(out / "true_alpha.png", composite.alpha)
    save_overlay(out / "prompt_point.png", composite.image, masks["point"])
    reference: dict[str, np.ndarray] = {}
    rows = []
    for engine in engines:
        is_reference = engine is engines[0]
        try:
            runtime = Runtime.open(reference_model if is_reference else engine.engine)
        except SmatError as err:
            engine.status = f"unavailable: {err}"
            log(f"    {engine.label}: {engine.status}")
            continue
        for mode in MODES:
            alpha = np.asarray(runtime(composite.image, masks[mode] if mode == "point" else None), np.float32)
            images.save_alpha(out / f"alpha_{_slug(engine.label)}_{mode}.png", alpha)
            row = {
                "engine": engine.label,
                "mode": mode,
                "mad_vs_truth": float(np.abs(alpha - composite.alpha).mean()),
                "max_abs_vs_ref": None,
                "mean_abs_vs_ref": None,
            }
            if is_reference:
                reference[mode] = alpha
                images.save_cutout(out / f"cutout_{mode}.png", composite.image, alpha)
            else:
                diff = np.abs(alpha - reference[mode])
                row["max_abs_vs_ref"], row["mean_abs_vs_ref"] = float(diff.max()), float(diff.mean())
                save_heatmap(
                    out / f"diff_{_slug(engine.label)}_{mode}.png",
                    diff,
                    f"|{engine.label} - reference|, {mode} (max {diff.max():.1e})",
                )
            rows.append(row)
        log(f"    {engine.label}: " + ", ".join(f"{r['mode']} MAD vs truth {r['mad_vs_truth']:.4f}" for r in rows[-2:]))
    return rows


def _parity(config: DemoConfig, engines: list[Engine], reference_model: SMat, log: Log) -> list[dict]:
    """``parity`` for every engine but the reference, on ``config.parity_limit`` images x every prompt kind."""
    from smat_deploy.evaluation.parity.report import run_parity_check

    results = []
    for engine in engines[1:]:
        if engine.status != "ok":
            continue
        result = run_parity_check(
            engine.engine,
            config.parity_data,
            prompts=PROMPT_KINDS,
            checkpoint=config.checkpoint,
            reference_model=reference_model,
            seed=config.seed,
            limit=config.parity_limit,
            out_dir=config.out / "parity" / _slug(engine.label),
            worst=1,
            on_skip=lambda item, reason: log(f"    skipped {item}: {reason}"),
            use_calibration_set=False,  # by default, images no quantiser was calibrated on
        )
        verdict = "passed" if result.passed else "FAILED: " + "; ".join(result.failures)
        log(
            f"    {engine.label}: {len(result.samples)} samples from {result.data.source}, max |diff| "
            f"{result.max_abs:.1e} (tolerance {result.tolerance:g}): {verdict}"
        )
        results.append(result.as_dict())
    return results


def _bench(config: DemoConfig, engines: list[Engine], log: Log, progress) -> dict:
    from smat_deploy.evaluation.bench.runner import BenchConfig, Size, run_bench

    bench_config = BenchConfig(
        engines=[e.engine for e in engines if e.status == "ok"],
        sizes=[Size(config.bench_size, config.bench_size)],
        iters=config.iters,
        warmup=1,
        checkpoint=config.checkpoint,
        seed=config.seed,
    )
    return run_bench(bench_config, progress).as_dict()


def run_demo(config: DemoConfig, log: Log = lambda message: None, progress=None) -> DemoReport:
    """Run every stage and write ``config.out/report.md``; ``progress`` is bench's progress factory.

    Without ``config.checkpoint`` the first stage makes (or finds in the cache) the demo weights and
    every later stage uses that checkpoint.
    """
    config.out.mkdir(parents=True, exist_ok=True)
    demo_weights = config.checkpoint is None
    if demo_weights:
        weights = f"{describe_demo_weights()} ({demo_checkpoint_path(config.cache_dir)})"
    else:
        weights = describe_weights(config.checkpoint, config.seed)
    report = DemoReport(weights=weights, engines=[], demo_weights=demo_weights)
    stages = _Stages(report, log)
    log(f"weights: {weights}")
    if demo_weights:
        checkpoint = stages.run(
            "demo weights (fine-tuned on the first run, then cached)",
            lambda: demo_checkpoint(config.cache_dir, log=lambda m: log(f"    {m}")),
        )
        config = replace(config, checkpoint=checkpoint)
    source = _source(config.checkpoint, config.seed)
    reference = Engine(
        "torch reference",
        str(config.checkpoint) if config.checkpoint else TORCH_ENGINE,
        "float32",
        None if config.checkpoint is None else config.checkpoint.stat().st_size,
    )
    float32 = stages.run(
        f"export float32 ONNX and the interactive pair (graph checks, parity on {len(standard_cases())} cases)",
        lambda: _export(config, source, log),
    )
    variants, notes = stages.run(
        "precision variants: " + (", ".join(config.precisions) or "none"),
        lambda: _variants(config, float32, source, log),
    )
    report.engines = [reference, float32, *variants]
    report.notes += notes
    reference_model = load_model(config.checkpoint, seed=config.seed)  # shared by the two stages below
    report.sample = stages.run(
        "matte the demo photo with every engine",
        lambda: _matte_sample(config, report.engines, reference_model, log),
    )
    report.parity = stages.run(
        f"parity against the reference ({config.parity_limit} image(s) x {len(PROMPT_KINDS)} prompt kinds per engine)",
        lambda: _parity(config, report.engines, reference_model, log),
    )
    report.bench = stages.run(
        f"bench at {config.bench_size}x{config.bench_size}", lambda: _bench(config, report.engines, log, progress)
    )
    report.report_path = write_report(config, report)
    return report


def _image(name: str, caption: str) -> str:
    return f"![{caption}]({name})"


def write_report(config: DemoConfig, report: DemoReport) -> Path:
    """``report.md`` (and ``report.json``) in ``config.out``, written atomically."""
    lines = ["# smat-deploy demo report", ""]
    lines.append(f"**Weights:** {report.weights}")
    if report.demo_weights:
        lines += [
            "",
            "> These are the demo weights, fine-tuned briefly on synthetic composites, not a real SMat "
            "checkpoint: the mattes find the object but say nothing about SMat's matting quality; what they "
            "show is that every engine reproduces the reference model. Run "
            "`smat-deploy demo --checkpoint smat.pth` with a real checkpoint for real mattes.",
        ]
    lines += ["", f"smat-deploy {__version__}. " + " ".join(report.notes), "", "## Summary", ""]
    lines.append(markdown_table(report.summary_rows()))
    lines += [
        "",
        "`max_abs_vs_ref`: largest |alpha difference| against the PyTorch reference on the demo photo "
        "(both modes); `MAD_vs_truth`: mean |alpha - true alpha| of the synthetic photo; `ms_per_image`, "
        f"`speedup_vs_torch`: `bench` at {config.bench_size}x{config.bench_size}, batch 1, median of "
        f"{config.iters} calls, each engine in its own process.",
        "",
        "## The demo photo",
        "",
        "| input | click prompt | true alpha |",
        "|---|---|---|",
        f"| {_image('input.png', 'input')} | {_image('prompt_point.png', 'point prompt')} | "
        f"{_image('true_alpha.png', 'true alpha')} |",
        "",
        "| mode | reference alpha | reference cutout |",
        "|---|---|---|",
    ]
    for mode in MODES:
        lines.append(
            f"| {mode} | {_image(f'alpha_torch_reference_{mode}.png', 'alpha')} | "
            f"{_image(f'cutout_{mode}.png', 'cutout')} |"
        )
    lines += [
        "",
        "## Every engine against the reference",
        "",
        "| engine | mode | alpha | difference |",
        "|---|---|---|---|",
    ]
    for row in report.sample:
        if row["max_abs_vs_ref"] is None:
            continue
        slug = _slug(row["engine"])
        lines.append(
            f"| {row['engine']} | {row['mode']} | {_image(f'alpha_{slug}_{row["mode"]}.png', 'alpha')} | "
            f"{_image(f'diff_{slug}_{row["mode"]}.png', 'difference')} |"
        )
    if report.parity:
        lines += ["", "## Parity", ""]
        lines.append(
            f"`smat-deploy parity` for each engine on {report.parity[0]['data']['source']}: max and mean |alpha "
            "difference| against the PyTorch reference per prompt kind, with the tolerance of the engine's precision."
        )
        for check in report.parity:
            tolerance = check["tolerance"]
            lines += [
                "",
                f"### {check['engine']['engine']} ({check['engine']['precision']}): "
                + ("pass" if check["passed"] else "**FAIL**: " + "; ".join(check["failures"])),
                "",
                f"Tolerance: max {tolerance['max_abs']:g}, mean {tolerance['mean_abs']:g} ({tolerance['source']}).",
                "",
                markdown_table(check["rows"], PARITY_COLUMNS),
            ]
            for heatmap in check["heatmaps"]:
                lines += ["", _image(Path(heatmap).relative_to(config.out).as_posix(), "worst case")]
    if report.bench:
        lines += ["", "## Bench", "", f"Machine: {json.dumps(report.bench['machine'])}", ""]
        lines.append(markdown_table(report.bench["rows"], BENCH_COLUMNS))
    lines += ["", "## Stages", "", markdown_table(report.stages), ""]
    markdown = "\n".join(lines)
    path = config.out / "report.md"
    with atomic_output(path) as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    with atomic_output(config.out / "report.json") as tmp:
        tmp.write_text(json.dumps(report.as_dict(), indent=2, default=str) + "\n", encoding="utf-8")
    return path


def summary_text(report: DemoReport) -> str:
    return format_table(report.summary_rows())
