"""``smat-deploy export`` as one library call: the verified float32 export, then each requested precision variant.

:func:`run_export` does the work in the order that fails cheapest first (the INT8 budget, the
hold-out folder and the calibration set are checked before a minute goes into the export), and
:class:`ExportResult` is what a person (:meth:`~ExportResult.summary_text`) or a script
(:meth:`~ExportResult.as_dict`) reads afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from smat_deploy._table import format_table
from smat_deploy.data.calibration import (
    DEFAULT_SYNTHETIC,
    CalibrationSet,
    build_calibration_set,
    load_calibration_set,
)
from smat_deploy.engines.int8_budget import Budget, BudgetReport
from smat_deploy.engines.pair_variants import PairVariantReport, make_pair_variant
from smat_deploy.engines.variants import VariantReport, make_variant
from smat_deploy.errors import SmatError
from smat_deploy.export import DEFAULT_OPSET
from smat_deploy.export.parity import DEFAULT_TOLERANCE, ParityReport
from smat_deploy.export.pipeline import ExportReport, export_float32

Log = Callable[[str], None]

#: The calibration set used when none is named: built with the defaults when it is not there yet.
DEFAULT_CALIBRATION_DIR = Path("calib_data")
#: What each variant's accuracy against float32 was measured on (INT8: held-out composites).
MEASURED_ON = {"float32_cpu": "calibration + sizes", "fp16": "calibration", "int8": "gate set", "int8_cpu": "gate set"}


def variant_kinds(*, cpu: bool = False, fp16: bool = False, int8: bool = False) -> tuple[str, ...]:
    """The variants the export flags ask for, in the order they are made (``--int8``: both INT8 files)."""
    wanted = (("float32_cpu", cpu), ("fp16", fp16), ("int8", int8), ("int8_cpu", int8))
    return tuple(kind for kind, want in wanted if want)


@dataclass(frozen=True)
class ExportJob:
    """Everything ``smat-deploy export`` is asked to do."""

    checkpoint: Path | None = None
    output_dir: Path = Path("export")
    opset: int = DEFAULT_OPSET
    check: bool = True
    tolerance: float = DEFAULT_TOLERANCE
    golden_dir: Path | None = None
    seed: int = 0
    #: Variants besides float32 (:func:`variant_kinds`).
    variants: tuple[str, ...] = ()
    #: Calibration set for the variants; None: ``calib_data/``, built with the defaults when empty.
    calib: Path | None = None
    engines_dir: Path = Path("engines")
    budget: Budget = field(default_factory=Budget)
    #: Held-out photos for the INT8 budget; None: scikit-image's bundled held-out photos (the same everywhere).
    holdout_photos: Path | None = None
    #: Also the interactive pair: smat_encoder.onnx (once per photo) and smat_decoder.onnx (once per prompt).
    interactive: bool = False


@dataclass
class ExportResult:
    export: ExportReport
    variants: list[VariantReport]
    tolerance: float
    #: The interactive pair's variants (``--interactive`` with ``--cpu``/``--fp16``/``--int8``), in the same order.
    pair_variants: list[PairVariantReport] = field(default_factory=list)
    #: Seconds per stage of the whole job: calibration set, float32 export, each variant (and pair variant).
    seconds: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        report = self.export
        return {
            "variants": [
                {
                    "precision": v.kind,
                    "onnx": str(v.path),
                    "seconds": round(v.seconds, 1),
                    "size_mb": round(v.size_bytes / 1e6, 1),
                    "accuracy_vs_float32": v.accuracy,
                    "engine": v.engine,
                    "notes": v.notes,
                    "int8_budget": None if v.budget is None else v.budget.as_dict(),
                    "precision_shares": v.shares,
                    "tensorrt_fusion": v.fusion,
                    "stage_seconds": {k: round(t, 1) for k, t in v.stages.items()},
                }
                for v in self.variants
            ],
            "onnx": str(report.onnx_path),
            "manifest": str(report.manifest_path),
            "export_seconds": round(report.export_seconds, 2),
            "size_mb": round(report.size_bytes / 1e6, 1),
            "graph_checks_passed": all(c["passed"] for c in report.graph_checks),
            "parity": None if report.parity is None else report.parity.as_dict(),
            "golden": None if report.golden is None else [str(p) for p in report.golden],
            "interactive": None if report.pair is None else report.pair.as_dict(),
            "interactive_variants": [v.as_dict() for v in self.pair_variants],
            "stage_seconds": {k: round(t, 1) for k, t in self.seconds.items()},
        }

    def _checked(self, parity: ParityReport | None, what: str) -> str:
        """``; WHAT max |diff| D <= TOL`` after a "wrote" line, or nothing when the check was skipped."""
        return "" if parity is None else f"; {what} max |diff| {parity.max_abs:.1e} <= {self.tolerance:g}"

    def summary_text(self) -> str:
        """The parity table, what was written, and one table of variants with each INT8 file's sensitivity report."""
        report, lines = self.export, []
        if report.parity is not None:
            lines.append(format_table(report.parity.rows))
        lines.append(
            f"wrote {report.onnx_path} ({round(report.size_bytes / 1e6, 1)} MB, exported in "
            f"{report.export_seconds:.1f}s) and {report.manifest_path}; {len(report.graph_checks)} graph checks passed"
            + self._checked(report.parity, "parity")
        )
        if report.golden is not None:
            lines.append(f"golden data: {report.golden[0]} and {report.golden[1]} (Polygraphy JSON)")
        if (pair := report.pair) is not None:
            if pair.parity is not None:
                lines.append(format_table(pair.parity.rows))
            lines.append(
                f"wrote {pair.encoder} and {pair.decoder} ({' + '.join(f'{s / 1e6:.1f}' for s in pair.sizes)} MB, "
                f"exported in {pair.seconds:.1f}s) with their manifests"
                + self._checked(pair.parity, "pair vs whole model")
            )
            if pair.golden is not None:
                lines.append("golden data for the pair: " + ", ".join(str(p[0].parent) for p in pair.golden.values()))
        if self.variants:
            lines.append(format_table([variant_row(v) for v in self.variants]))
            shares = [shares_row(v.path.name, v.shares) for v in self.variants if v.shares is not None]
            if shares:
                lines.append(
                    "\nwhat each file computes in (shares of its FLOPs and activation bytes; TensorRT runs these types)"
                )
                lines.append(format_table(shares))
            for v in self.variants:
                if v.budget is not None:
                    lines.append(f"\n{v.path.name}: sensitivity report ({v.budget.measured_on})")
                    lines.append(format_table(sensitivity_rows(v.budget)))
                    lines.append(budget_summary(v.budget))
                if v.fusion is not None:
                    ops = ", ".join(f"{n} {op}" for op, n in v.fusion["int8_ops"].items())
                    lines.append(f"TensorRT fusion check passed: int8 kernels for {ops}")
                if v.stages:
                    lines.append(f"{v.path.name} made in {v.seconds:.0f}s: " + stages_text(v.stages))
            lines.extend(sorted({note for v in self.variants for note in v.notes}))
        if self.pair_variants:
            lines.append("\ninteractive pair variants (accuracy end to end: encoder -> decoder vs smat.onnx)")
            lines.append(format_table([pair_variant_row(v) for v in self.pair_variants]))
            for v in self.pair_variants:
                if v.budget is not None:
                    lines.append(f"\n{v.encoder.name}: sensitivity report ({v.budget.measured_on})")
                    lines.append(format_table(sensitivity_rows(v.budget)))
                    lines.append(budget_summary(v.budget))
            lines.extend(sorted({note for v in self.pair_variants for note in v.notes}))
        if len(self.seconds) > 1:
            lines.append(f"\nstages: {stages_text(self.seconds)}; total {sum(self.seconds.values()):.0f}s")
        return "\n".join(lines)


def variant_row(v: VariantReport) -> dict:
    return {
        "precision": v.kind,
        "file": v.path.name,
        "size_MB": round(v.size_bytes / 1e6, 1),
        "made_in_s": round(v.seconds, 1),
        "mean_abs": v.accuracy["mean_abs"],
        "max_abs": v.accuracy["max_abs"],
        "SAD": v.accuracy["SAD"],
        "Grad": v.accuracy["Grad"],
        "measured_on": f"{v.accuracy['samples']} {MEASURED_ON.get(v.kind, 'held-out')}",
    }


def shares_row(name: str, shares: dict) -> dict:
    """One file's FLOP and activation-byte shares per type (:func:`~smat_deploy.engines.shares.precision_shares`)."""
    flops, act = shares["flops"], shares["activation_bytes"]
    return {
        "file": name,
        "GFLOP": shares["gflops"],
        "FLOPs int8/fp16/fp32": " / ".join(f"{flops[k]:.1%}" for k in ("int8", "fp16", "fp32")),
        "activation MB": shares["activation_mb"],
        "bytes int8/fp16/fp32": " / ".join(f"{act[k]:.1%}" for k in ("int8", "fp16", "fp32")),
        "attention fp16": f"{shares['attention_products']['fp16']:.0%}",
        "at": shares["measured_at"],
    }


def stages_text(stages: dict) -> str:
    """``stage 12s, stage 3s`` in the order the stages ran."""
    return ", ".join(f"{name.replace('_', ' ')} {seconds:.0f}s" for name, seconds in stages.items())


def pair_variant_row(v: PairVariantReport) -> dict:
    def half(role: str) -> str:
        h = v.halves[role]
        speed = "" if h.speed is None else f", x{h.speed['ratio']:.2f} time"
        return f"{h.path.name} ({h.precision}{speed})"

    return {
        "precision": v.kind,
        "encoder": half("encoder"),
        "decoder": half("decoder"),
        "made_in_s": round(v.seconds, 1),
        "mean_abs": v.accuracy["mean_abs"],
        "max_abs": v.accuracy["max_abs"],
        "SAD": v.accuracy["SAD"],
        "measured_on": f"{v.accuracy['samples']} {MEASURED_ON.get(v.kind, 'held-out')}",
    }


def sensitivity_rows(report: BudgetReport) -> list[dict]:
    """One row per layer group, most sensitive first; the attention products last."""
    base = report.sensitivity_base or report.all_int8
    groups = sorted(report.groups, key=lambda g: g.gain(base, report.budget), reverse=True)
    rows = [
        {
            "group": g.name,
            "GFLOP": round(g.gflops, 2),
            "precision": g.precision,
            "mean_if_float": None if g.alone_in_float is None else g.alone_in_float.mean_abs,
            "max_if_float": None if g.alone_in_float is None else g.alone_in_float.max_abs,
            "sensitivity": round(g.gain(base, report.budget), 4) if g.alone_in_float is not None else None,
            "why": g.why,
        }
        for g in groups
    ]
    attention = report.attention
    rows.append(
        {
            "group": f"attention products ({attention['nodes']} nodes)",
            "GFLOP": attention["gflops"],
            "precision": attention["precision"],
            "why": "activation x activation: not a weight layer",
        }
    )
    return rows


def budget_summary(report: BudgetReport) -> str:
    final, budget = report.final, report.budget
    floated = [step["group"] for step in report.steps]
    return (
        f"all int8: mean {report.all_int8.mean_abs:.2e}, max {report.all_int8.max_abs:.3f}; "
        f"final: mean {final.mean_abs:.2e} <= {budget.mean_abs:g}, max {final.max_abs:.3f} <= {budget.max_abs:g} "
        f"(worst: {final.worst}); returned to float: {', '.join(floated) or 'none'}; "
        f"int8 share of weight FLOPs {report.int8_share:.1%} ({report.weight_gflops:.1f} GFLOP)"
        + (
            ""
            if report.held_out is None
            else f"; held-out samples alone ({report.held_out['samples']}): mean {report.held_out['mean_abs']:.2e}, "
            f"max {report.held_out['max_abs']:.3f}"
        )
    )


def calibration_set(calib: Path | None, log: Log) -> CalibrationSet:
    """The calibration set to use: the one named, or ``calib_data/`` (built with the defaults when empty)."""
    if calib is not None:
        return load_calibration_set(calib)
    if (DEFAULT_CALIBRATION_DIR / "index.json").is_file():
        return load_calibration_set(DEFAULT_CALIBRATION_DIR)
    log(f"no calibration set in {DEFAULT_CALIBRATION_DIR}/: building the default one (smat-deploy calib-data)")
    return build_calibration_set(DEFAULT_CALIBRATION_DIR, synthetic=DEFAULT_SYNTHETIC)


def run_export(job: ExportJob, log: Log = lambda message: None) -> ExportResult:
    """Export float32 (graph checks, parity), then make each variant of ``job.variants`` beside it.

    Bad input raises :class:`SmatError` before the export starts; a variant that misses its
    accuracy gate raises :class:`~smat_deploy.errors.CheckFailed` (and is not written).
    """
    if job.holdout_photos is not None and not job.holdout_photos.is_dir():
        raise SmatError(f"--holdout-photos: no such folder: {job.holdout_photos}")
    photos = job.holdout_photos
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    calibration = calibration_set(job.calib, log) if job.variants else None
    if calibration is not None:
        seconds["calibration_set"] = time.perf_counter() - clock
    clock = time.perf_counter()
    report = export_float32(
        checkpoint=job.checkpoint,
        output_dir=job.output_dir,
        opset=job.opset,
        check=job.check,
        tolerance=job.tolerance,
        golden_dir=job.golden_dir,
        seed=job.seed,
        interactive=job.interactive,
        log=log,
    )
    seconds["float32_export"] = time.perf_counter() - clock
    variants, pair_variants = [], []
    for kind in job.variants:
        clock = time.perf_counter()
        variants.append(
            make_variant(
                kind,
                report.onnx_path,
                calibration,
                engines_dir=job.engines_dir,
                budget=job.budget,
                holdout_photos=photos,
                log=log,
            )
        )
        seconds[kind] = time.perf_counter() - clock
        if job.interactive:
            clock = time.perf_counter()
            pair_variants.append(
                make_pair_variant(
                    kind, report.onnx_path.parent, calibration, budget=job.budget, holdout_photos=photos, log=log
                )
            )
            seconds[f"{kind}_pair"] = time.perf_counter() - clock
    return ExportResult(report, variants, job.tolerance, pair_variants, seconds)
