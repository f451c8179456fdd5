"""CPU, FP16 and INT8 artifacts: make them from the float32 export, verify them, describe them.

Each variant is written to a temporary file, verified on ONNX Runtime CPU, and only then moved into
place with its sidecar manifest, so a failed check (NaN, accuracy) leaves nothing half-made behind.
Accuracy is measured against the float32 ONNX model and held to the variant's gate
(:data:`smat_deploy.contract.PRECISIONS`): the ONNX Runtime CPU graph on the calibration set and the
export's standard cases (:func:`~smat_deploy.data.cases.standard_cases`; the export's own 1e-4), FP16 on the calibration
set, INT8 on held-out composites and photos that the quantiser never saw.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from smat_deploy._files import atomic_output, sha256_of
from smat_deploy._ort import session as ort_session
from smat_deploy.contract import EXPORT_GATE, FP16_GATE, PRECISIONS, PROMPT_KINDS, manifest_path_for, read_manifest
from smat_deploy.data.calibration import CalibrationSet
from smat_deploy.data.cases import make_case, standard_cases
from smat_deploy.engines import cpu_graph, fp16, int8
from smat_deploy.engines._isolated import run_isolated
from smat_deploy.engines.int8_budget import (
    MIN_CALIBRATION_SAMPLES,
    SENSITIVITY_SAMPLES,
    AlphaScorer,
    Budget,
    BudgetReport,
    fit_budget,
)
from smat_deploy.engines.tensorrt_build import build_engine, tensorrt_status
from smat_deploy.errors import CheckFailed, SmatError
from smat_deploy.export.manifest import MANIFEST_FORMAT, write_manifest
from smat_deploy.export.tensorrt_support import check_tensorrt_support
from smat_deploy.metrics import grad, sad

#: Each variant's file, beside the float32 export (from the contract).
VARIANT_FILES = {name: p.file for name, p in PRECISIONS.items() if name != "float32"}
#: Variants that use ONNX Runtime's own operators or kernels: no TensorRT engine is built from them.
CPU_ONLY = tuple(name for name, p in PRECISIONS.items() if p.cpu_only)
#: Images the quantisers never see: seeds far from the calibration set's.
HOLDOUT_SEED = 900_000


@dataclass
class VariantReport:
    kind: str
    path: Path
    seconds: float
    size_bytes: int
    accuracy: dict
    structure: dict | None = None
    engine: str | None = None
    notes: list[str] = field(default_factory=list)
    budget: BudgetReport | None = None


def holdout_feeds(count: int = 5, size: int = 518) -> list[dict[str, np.ndarray]]:
    """``count`` composites (one per prompt kind, cycling) that no calibration set contains."""
    return [feed for _, feed in holdout_samples(count, size)]


#: Suffix of the gate samples made from calibration photos (scored at their full framing, not held out).
CALIBRATION_PHOTO = "calibration photo"


def holdout_samples(
    count: int = 5,
    size: int = 518,
    photos: str | os.PathLike[str] | None = None,
    calibration: CalibrationSet | None = None,
) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Named feeds for the INT8 gate: ``count`` composites no calibration set contains, then the photos under
    ``photos`` with every prompt kind (from their ground truth when they have one, else the central region),
    capped to ``size`` on the long side.

    A photo that the calibration set also holds (matched by name) is still scored, whole rather than
    centre-cropped, and its sample names end in ``(calibration photo)``: the gate then covers
    everything ``parity`` would run on that folder, and the held-out part is reported on its own.
    """
    samples = [
        (
            f"composite {i} ({PROMPT_KINDS[i % len(PROMPT_KINDS)]})",
            make_case(
                f"holdout {i}", (size, size), (PROMPT_KINDS[i % len(PROMPT_KINDS)],), HOLDOUT_SEED + 100 * i
            ).feed(),
        )
        for i in range(count)
    ]
    if photos is None:
        return samples
    from smat_deploy.data.parity_sets import load_photo_folder

    seen = [s["image"] for s in calibration.samples if s.get("source") == "photo"] if calibration else []
    data = load_photo_folder(photos, PROMPT_KINDS, max_size=size)
    for sample in data.samples:
        stem = Path(sample.name).stem
        calibrated = any(Path(image).stem.endswith(stem) for image in seen)
        feed = {
            "image": np.ascontiguousarray(sample.image.transpose(2, 0, 1)[None], np.float32),
            "prompt": sample.prompt[None, None].astype(np.float32),
            "state": np.array([[sample.state]], np.float32),
        }
        samples.append((f"{sample.name} ({sample.kind}{', ' + CALIBRATION_PHOTO if calibrated else ''})", feed))
    return samples


def _held_out_part(report: BudgetReport, names: list[str]) -> dict:
    """Accuracy of the final model on the samples the quantiser never saw (composites, held-out photos)."""
    keep = [i for i, name in enumerate(names) if CALIBRATION_PHOTO not in name]
    final = report.final
    return {
        "samples": len(keep),
        "mean_abs": float(np.mean([final.per_sample_mean[i] for i in keep])),
        "max_abs": float(np.max([final.per_sample_max[i] for i in keep])),
    }


def compare(
    reference: ort.InferenceSession | None,
    candidate: ort.InferenceSession,
    feeds: list[dict],
    expected_alphas: Sequence[np.ndarray] | None = None,
) -> dict:
    """Accuracy of ``candidate`` against ``reference``: abs differences, SAD, Grad, non-finite count.

    ``expected_alphas``: the reference's alphas for ``feeds`` when already computed (then ``reference``
    is not run)."""
    mean_abs, max_abs, sads, grads, nonfinite = [], [], [], [], 0
    for index, feed in enumerate(feeds):
        if expected_alphas is not None:
            expected = np.asarray(expected_alphas[index], np.float64)
        else:
            expected = reference.run(["alpha"], feed)[0].astype(np.float64)
        got = candidate.run(["alpha"], feed)[0].astype(np.float64)
        bad = ~np.isfinite(got)
        nonfinite += int(bad.sum())
        got = np.where(bad, 0.0, got)
        diff = np.abs(got - expected)
        mean_abs.append(diff.mean())
        max_abs.append(diff.max())
        for p, g in zip(np.clip(got, 0, 1), np.clip(expected, 0, 1), strict=True):  # float error can pass 1 by ~1e-7
            sads.append(sad(p[0], g[0]))
            grads.append(grad(p[0], g[0]))
    return {
        "samples": len(feeds),
        "mean_abs": float(np.mean(mean_abs)),
        "max_abs": float(np.max(max_abs)),
        "SAD": float(np.mean(sads)),
        "Grad": float(np.mean(grads)),
        "nonfinite": nonfinite,
    }


def _fp16_calibration(calibration: CalibrationSet, size: int = 224) -> dict[str, np.ndarray]:
    """Two samples scaled down for AutoCast's range analysis.

    AutoCast keeps every intermediate tensor of every calibration sample in memory (about 5 GB per
    518x518 sample); value ranges barely depend on resolution, so two small samples suffice.
    """
    import torch
    import torch.nn.functional as F

    picks = [i for i, s in enumerate(calibration.samples) if s["prompt_kind"] in ("none", "mask")][:2] or [0]
    image = F.interpolate(torch.from_numpy(calibration.image[picks]), size=(size, size), mode="bilinear")
    prompt = F.interpolate(torch.from_numpy(calibration.prompt[picks]), size=(size, size), mode="nearest")
    return {"image": image.numpy(), "prompt": prompt.numpy(), "state": calibration.state[picks]}


def quantize_all_int8(
    kind: str,
    float32_onnx: Path,
    scratch: Path,
    tensors: dict[str, np.ndarray],
    calibrating_on: str,
    label: str,
    log: Callable[[str], None],
) -> tuple[Path, onnx.ModelProto, dict | None]:
    """Every weight layer of ``float32_onnx`` in int8 (``kind`` ``int8``: TensorRT Q/DQ; ``int8_cpu``: ONNX Runtime
    static QDQ), written to ``scratch/all_int8.onnx``; returns it with the float model the budget returns layer
    groups to (and, for the CPU recipe, its float weights by name)."""
    raw = scratch / "all_int8.onnx"
    if kind == "int8":
        log(f"{label} (TensorRT Q/DQ): Model Optimizer, calibrating on {calibrating_on}")
        run_isolated("INT8 quantisation", int8.quantize_int8_tensorrt, float32_onnx, raw, tensors)
        return raw, onnx.load(str(float32_onnx)), None
    log(f"{label} (ONNX Runtime CPU): static QDQ U8S8, calibrating on {calibrating_on}")
    prepared = scratch / "prepared.onnx"
    run_isolated("CPU INT8 quantisation", int8.quantize_int8_cpu, float32_onnx, raw, tensors, prepared)
    float_model = onnx.load(str(prepared))
    return raw, float_model, {init.name: init for init in float_model.graph.initializer}


def _quantize_within_budget(
    kind: str,
    float32_onnx: Path,
    dst: Path,
    calibration: CalibrationSet,
    reference: ort.InferenceSession,
    budget: Budget,
    holdout: int,
    holdout_photos: str | os.PathLike[str] | None,
    log: Callable[[str], None],
) -> tuple[BudgetReport, AlphaScorer]:
    """Quantise all weight layers, then return layer groups to float until ``budget`` holds; write ``dst``.

    Returns the report and the scorer of the gate samples (their float32 alphas are computed once)."""
    import tempfile

    tensors = {"image": calibration.image, "prompt": calibration.prompt, "state": calibration.state}
    feeds = holdout_samples(holdout, calibration.size, holdout_photos, calibration)
    with tempfile.TemporaryDirectory(prefix="smat-int8-budget-") as scratch:
        raw, float_model, float_weights = quantize_all_int8(
            kind, float32_onnx, Path(scratch), tensors, f"{len(calibration)} samples", "INT8", log
        )
        log(
            f"accuracy budget: mean |diff| <= {budget.mean_abs:g}, max <= {budget.max_abs:g} on {len(feeds)} "
            f"gate samples (composites + photos); measuring each layer group's sensitivity"
        )
        scorer = AlphaScorer(reference, feeds)
        model, report = fit_budget(
            onnx.load(str(raw)),
            float_model,
            scorer,
            budget,
            feeds[0][1],
            float_weights=float_weights,
            progress=lambda message: log(f"  {message}"),
        )
    names = [name for name, _ in feeds]
    calibrated = sum(CALIBRATION_PHOTO in name for name in names)
    photos = len(names) - holdout
    report.measured_on = (
        f"{len(names)} samples: {holdout} generated composites and {photos} photo samples "
        f"({len(PROMPT_KINDS)} prompt kinds each"
        + (f"; {calibrated} of them from calibration photos, whole)" if calibrated else ")")
        + f"; sensitivities on the {min(SENSITIVITY_SAMPLES, len(names))} with the largest max |diff|"
    )
    report.held_out = _held_out_part(report, names)
    if not report.passed:
        raise CheckFailed(f"{report.failure(VARIANT_FILES[kind])}; nothing was written")
    onnx.save(model, str(dst))
    onnx.checker.check_model(str(dst))
    return report, scorer


def make_variant(
    kind: str,
    float32_onnx: str | os.PathLike[str],
    calibration: CalibrationSet,
    *,
    build: bool = True,
    engines_dir: str | os.PathLike[str] = "engines",
    holdout: int = 5,
    holdout_photos: str | os.PathLike[str] | None = None,
    budget: Budget | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> VariantReport:
    """Write, verify and describe one variant (``float32_cpu``, ``fp16``, ``int8`` or ``int8_cpu``) next to
    ``float32_onnx``.

    INT8 variants are held to ``budget`` (default :class:`~smat_deploy.engines.int8_budget.Budget`:
    mean |diff| 5e-3, max 0.05 against float32, >= 90 % of weight FLOPs in int8) on ``holdout``
    generated composites plus the photos under ``holdout_photos``; layer groups return to float,
    most sensitive first, until it holds, and a file that cannot meet it is not written."""
    if kind not in VARIANT_FILES:
        raise SmatError(f"unknown precision {kind!r} (expected one of {', '.join(VARIANT_FILES)})")
    float32_onnx = Path(float32_onnx)
    target = float32_onnx.parent / VARIANT_FILES[kind]
    reference = ort_session(float32_onnx)
    if kind in ("int8", "int8_cpu") and len(calibration) < MIN_CALIBRATION_SAMPLES:
        raise SmatError(
            f"calibration set {calibration.directory} has {len(calibration)} sample(s); INT8 needs at least "
            f"{MIN_CALIBRATION_SAMPLES} (one per prompt kind): rebuild it with smat-deploy calib-data"
        )
    with atomic_output(target) as tmp:
        start = time.perf_counter()
        rewrites = budget_report = gate = None
        if kind == "float32_cpu":
            log("float32 for ONNX Runtime CPU: fused attention, GELU and LayerNorm kernels; split concat convolutions")
            rewrites = run_isolated("CPU graph rewrite", cpu_graph.make_cpu_graph, float32_onnx, tmp)
        elif kind == "fp16":
            log("FP16: Model Optimizer AutoCast (float32 I/O; LayerNorm, Softmax, reductions, shape math in float32)")
            run_isolated("FP16 conversion", fp16.convert_fp16, float32_onnx, tmp, _fp16_calibration(calibration))
        else:
            budget_report, gate = _quantize_within_budget(
                kind, float32_onnx, tmp, calibration, reference, budget or Budget(), holdout, holdout_photos, log
            )
        seconds = time.perf_counter() - start
        candidate = ort_session(tmp, precision=kind)
        if kind == "float32_cpu":
            cases = standard_cases()
            log(f"verifying the CPU graph against float32: {len(calibration)} calibration samples, {len(cases)} sizes")
            accuracy = compare(reference, candidate, calibration.feeds() + [case.feed() for case in cases])
            if accuracy["nonfinite"] or accuracy["max_abs"] > EXPORT_GATE.max_abs:
                raise CheckFailed(
                    f"CPU graph is off float32 by max {accuracy['max_abs']:.1e} ({accuracy['nonfinite']} NaN/Inf; "
                    f"limit {EXPORT_GATE.max_abs:g}); nothing was written"
                )
        elif kind == "fp16":
            log(f"verifying FP16 against float32 on the {len(calibration)} calibration samples")
            accuracy = compare(reference, candidate, calibration.feeds())
            if accuracy["nonfinite"]:
                raise CheckFailed(f"FP16 model produced {accuracy['nonfinite']} NaN/Inf values; nothing was written")
            if accuracy["mean_abs"] > FP16_GATE.mean_abs or accuracy["max_abs"] > FP16_GATE.max_abs:
                raise CheckFailed(
                    f"FP16 model is off float32 by mean {accuracy['mean_abs']:.1e} / max {accuracy['max_abs']:.1e} "
                    f"(limits {FP16_GATE.mean_abs:g} / {FP16_GATE.max_abs:g}); nothing was written"
                )
        else:
            accuracy = compare(None, candidate, gate.feeds, gate.reference)  # the written file, on the gate samples
            accuracy["int8_share_of_weight_flops"] = round(budget_report.int8_share, 4)
        written = None if kind in CPU_ONLY else onnx.load(str(tmp))  # a file meant for TensorRT
        structure = int8.qdq_structure(written) if kind == "int8" else None
        if structure is not None and structure["problems"]:
            raise SmatError(f"INT8 Q/DQ placement is wrong: {structure['problems'][0]}")
        support = None if written is None else check_tensorrt_support(written)
        if support is not None and not support["passed"]:
            raise SmatError(
                f"{VARIANT_FILES[kind]} breaks TensorRT's ONNX support matrix: {support['problems'][0]}; "
                "nothing was written"
            )
        size_bytes = tmp.stat().st_size
        source = read_manifest(manifest_path_for(float32_onnx)) or {}
        manifest = {
            **{k: source.get(k) for k in ("inputs", "outputs", "dimensions", "source", "model_config", "versions")},
            "format": MANIFEST_FORMAT,
            "model": target.name,
            "role": "whole",
            "sha256": sha256_of(tmp),
            "size_bytes": size_bytes,
            "precision": kind,
            "opset": next(
                o.version
                for o in onnx.load(str(tmp), load_external_data=False).opset_import
                if o.domain in ("", "ai.onnx")
            ),
            "derived_from": {"model": float32_onnx.name, "sha256": sha256_of(float32_onnx)},
            "calibration": {
                "directory": str(calibration.directory),
                "samples": len(calibration),
                "size": calibration.size,
            },
            "conversion_seconds": round(seconds, 1),
            "accuracy_vs_float32": accuracy,
            "accuracy_measured_on": {
                "float32_cpu": "calibration set and the export's standard cases",
                "fp16": "calibration set",
            }.get(kind, None if budget_report is None else budget_report.measured_on),
            "qdq_structure": structure,
            "tensorrt_support": support,
            "cpu_rewrites": rewrites,
            "int8_budget": None if budget_report is None else budget_report.as_dict(),
        }
    write_manifest(manifest_path_for(target), manifest)
    report = VariantReport(kind, target, seconds, size_bytes, accuracy, structure, budget=budget_report)
    if build and kind not in CPU_ONLY:
        available, reason = tensorrt_status()
        if available:
            engine = Path(engines_dir) / f"smat_{kind}.plan"
            log(f"building TensorRT engine {engine}")
            build_engine(target, engine)
            report.engine = str(engine)
        else:
            report.notes.append(f"TensorRT engine step skipped: {reason}")
    return report


__all__ = ["CPU_ONLY", "VARIANT_FILES", "VariantReport", "compare", "holdout_feeds", "holdout_samples", "make_variant"]
