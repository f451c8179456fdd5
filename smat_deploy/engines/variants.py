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
    activation_products,
    fit_budget,
)
from smat_deploy.engines.shares import precision_shares
from smat_deploy.engines.tensorrt_build import build_engine, tensorrt_status
from smat_deploy.errors import CheckFailed, SmatError
from smat_deploy.export.manifest import MANIFEST_FORMAT, write_manifest
from smat_deploy.export.tensorrt_fusion import check_fusion
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
    fusion: dict | None = None  # TensorRT fusion check (int8)
    engine: str | None = None
    notes: list[str] = field(default_factory=list)
    budget: BudgetReport | None = None
    #: seconds per stage (calibration/quantisation, sensitivity, budget, fp16, gate, checks)
    stages: dict = field(default_factory=dict)
    #: FLOP and activation-byte shares per type (:func:`~smat_deploy.engines.shares.precision_shares`)
    shares: dict | None = None


#: Suffix of the gate samples made from calibration photos (scored at their full framing, not held out).
CALIBRATION_PHOTO = "calibration photo"


def holdout_samples(
    count: int = 5,
    size: int = 518,
    photos: str | os.PathLike[str] | None = None,
    calibration: CalibrationSet | None = None,
) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Named feeds for the INT8 gate: ``count`` composites no calibration set contains, then the photos under
    ``photos`` (None: scikit-image's bundled held-out photos, :data:`~smat_deploy.data.calibration.HOLDOUT_PHOTOS`,
    the same on every machine) with every prompt kind (from their ground truth when they have one, else the
    central region), capped to ``size`` on the long side.

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
    from smat_deploy.data.parity_sets import bundled_data, load_photo_folder

    seen = [s["image"] for s in calibration.samples if s.get("source") == "photo"] if calibration else []
    if photos is None:
        data = bundled_data(PROMPT_KINDS, max_size=size, composites=0)
    else:
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


_GATE_CACHE: dict[tuple, AlphaScorer] = {}


def gate_scorer(
    float32_onnx: Path,
    calibration: CalibrationSet,
    holdout: int,
    holdout_photos: str | os.PathLike[str] | None,
    log: Callable[[str], None] = lambda message: None,
) -> AlphaScorer:
    """The INT8 gate's samples with their float32 alphas, computed once per float32 model and gate set: both INT8
    files and the INT8 pairs of one export are scored against the same float32 runs."""
    stat = Path(float32_onnx).stat()
    key = (
        str(Path(float32_onnx).resolve()),
        stat.st_mtime_ns,
        stat.st_size,
        str(calibration.directory),
        calibration.size,
        holdout,
        None if holdout_photos is None else str(Path(holdout_photos).resolve()),
    )
    if key not in _GATE_CACHE:
        feeds = holdout_samples(holdout, calibration.size, holdout_photos, calibration)
        log(f"float32 alphas of the {len(feeds)} INT8 gate samples (once for every INT8 file of this export)")
        _GATE_CACHE.clear()
        _GATE_CACHE[key] = AlphaScorer(ort_session(float32_onnx), feeds)
    return _GATE_CACHE[key]


def accuracy_metrics(accuracy, scorer: AlphaScorer) -> dict:
    """:func:`compare`'s figures (|diff|, SAD, Grad, non-finite) from a scored :class:`Accuracy` (no new run)."""
    sads, grads = [], []
    for got, expected in zip(accuracy.alphas, scorer.reference, strict=True):
        got = np.where(np.isfinite(got), got, 0.0)
        for p, g in zip(np.clip(got, 0, 1), np.clip(expected, 0, 1), strict=True):
            sads.append(sad(p[0], g[0]))
            grads.append(grad(p[0], g[0]))
    return {
        "samples": len(scorer),
        "mean_abs": accuracy.mean_abs,
        "max_abs": accuracy.max_abs,
        "SAD": float(np.mean(sads)),
        "Grad": float(np.mean(grads)),
        "nonfinite": accuracy.nonfinite,
    }


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


def _relabel_float_groups(report: BudgetReport, model: onnx.ModelProto) -> None:
    """After the conversion to float16, the groups and attention products that are not int8 run in the type the
    final file gives their ops (float16, or float32 where an op stayed in a float32 island)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    by_node = {node.name: types.get(node.output[0]) for node in model.graph.node}

    def label(nodes: list[str]) -> str:
        kinds = {by_node.get(name) for name in nodes}
        return "float16" if kinds == {onnx.TensorProto.FLOAT16} else "float32"

    for group in report.groups:
        if group.precision != "int8":
            group.precision = label(group.nodes)
    if report.attention.get("precision") != "int8":
        products = [node.name for node in activation_products(model)]
        report.attention["precision"] = label(products)


def _quantize_within_budget(
    kind: str,
    float32_onnx: Path,
    dst: Path,
    calibration: CalibrationSet,
    budget: Budget,
    holdout: int,
    holdout_photos: str | os.PathLike[str] | None,
    log: Callable[[str], None],
    stages: dict,
) -> tuple[BudgetReport, AlphaScorer]:
    """Quantise all weight layers, then return layer groups to float until ``budget`` holds; write ``dst``.

    The TensorRT file (``int8``) is fitted with its float parts in float32, then gets float16 outside its int8
    layers (:func:`~smat_deploy.engines.int8.fp16_outside_int8`) and the budget is checked again on that final
    file: what is written is what was gated. Returns the report and the gate's scorer; ``stages`` gets the
    seconds of each stage."""
    import tempfile

    tensors = {"image": calibration.image, "prompt": calibration.prompt, "state": calibration.state}
    clock = time.perf_counter()
    scorer = gate_scorer(float32_onnx, calibration, holdout, holdout_photos, log)
    stages["float32_reference"] = time.perf_counter() - clock
    feeds = list(zip(scorer.names, scorer.feeds, strict=True))
    with tempfile.TemporaryDirectory(prefix="smat-int8-budget-") as scratch:
        clock = time.perf_counter()
        raw, float_model, float_weights = quantize_all_int8(
            kind, float32_onnx, Path(scratch), tensors, f"{len(calibration)} samples", "INT8", log
        )
        stages["quantisation"] = time.perf_counter() - clock
        log(
            f"accuracy budget: mean |diff| <= {budget.mean_abs:g}, max <= {budget.max_abs:g} on {len(feeds)} "
            f"gate samples (composites + held-out photos); measuring each layer group's sensitivity"
        )
        model, report = fit_budget(
            onnx.load(str(raw)),
            float_model,
            scorer,
            budget,
            feeds[0][1],
            float_weights=float_weights,
            progress=lambda message: log(f"  {message}"),
        )
        stages.update(report.seconds)
        names = [name for name, _ in feeds]
        if kind == "int8" and report.passed:
            fitted = Path(scratch) / "fitted.onnx"
            onnx.save(model, str(fitted))
            clock = time.perf_counter()
            log("  float16 outside the int8 layers (the FP16 artifact's AutoCast policy), scales folded to float16")
            report.conversion = run_isolated(
                "FP16 outside INT8", int8.fp16_outside_int8, fitted, dst, _fp16_calibration(calibration)
            )
            stages["fp16"] = time.perf_counter() - clock
            clock = time.perf_counter()
            log(f"  the budget again, on the final file ({len(feeds)} gate samples)")
            report.float_parts_fp32 = report.final
            _relabel_float_groups(report, onnx.load(str(dst), load_external_data=False))
            report.final = scorer(ort_session(dst, precision=kind))
            stages["gate"] = time.perf_counter() - clock
        elif report.passed:
            onnx.save(model, str(dst))
    photos = len(names) - holdout
    calibrated = sum(CALIBRATION_PHOTO in name for name in names)
    report.measured_on = (
        f"{len(names)} samples: {holdout} generated composites and {photos} photo samples "
        f"({len(PROMPT_KINDS)} prompt kinds each"
        + (f"; {calibrated} of them from calibration photos, whole)" if calibrated else ")")
        + f"; sensitivities on the {min(SENSITIVITY_SAMPLES, len(names))} with the largest max |diff|"
    )
    report.held_out = _held_out_part(report, names)
    if not report.passed:
        where = " with float16 outside its int8 layers" if report.float_parts_fp32 is not None else ""
        raise CheckFailed(f"{report.failure(VARIANT_FILES[kind] + where)}; nothing was written")
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
    if kind in ("int8", "int8_cpu") and len(calibration) < MIN_CALIBRATION_SAMPLES:
        raise SmatError(
            f"calibration set {calibration.directory} has {len(calibration)} sample(s); INT8 needs at least "
            f"{MIN_CALIBRATION_SAMPLES} (one per prompt kind): rebuild it with smat-deploy calib-data"
        )
    stages: dict[str, float] = {}
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
                kind, float32_onnx, tmp, calibration, budget or Budget(), holdout, holdout_photos, log, stages
            )
        seconds = time.perf_counter() - start
        clock = time.perf_counter()
        if kind == "float32_cpu":
            reference = ort_session(float32_onnx)
            candidate = ort_session(tmp, precision=kind)
            cases = standard_cases()
            log(f"verifying the CPU graph against float32: {len(calibration)} calibration samples, {len(cases)} sizes")
            accuracy = compare(reference, candidate, calibration.feeds() + [case.feed() for case in cases])
            if accuracy["nonfinite"] or accuracy["max_abs"] > EXPORT_GATE.max_abs:
                raise CheckFailed(
                    f"CPU graph is off float32 by max {accuracy['max_abs']:.1e} ({accuracy['nonfinite']} NaN/Inf; "
                    f"limit {EXPORT_GATE.max_abs:g}); nothing was written"
                )
        elif kind == "fp16":
            reference = ort_session(float32_onnx)
            candidate = ort_session(tmp, precision=kind)
            log(f"verifying FP16 against float32 on the {len(calibration)} calibration samples")
            accuracy = compare(reference, candidate, calibration.feeds())
            if accuracy["nonfinite"]:
                raise CheckFailed(f"FP16 model produced {accuracy['nonfinite']} NaN/Inf values; nothing was written")
            if accuracy["mean_abs"] > FP16_GATE.mean_abs or accuracy["max_abs"] > FP16_GATE.max_abs:
                raise CheckFailed(
                    f"FP16 model is off float32 by mean {accuracy['mean_abs']:.1e} / max {accuracy['max_abs']:.1e} "
                    f"(limits {FP16_GATE.mean_abs:g} / {FP16_GATE.max_abs:g}); nothing was written"
                )
        else:  # the written file's accuracy on the gate samples, as the budget scored it (no second run)
            accuracy = accuracy_metrics(budget_report.final, gate)
            accuracy["int8_share_of_weight_flops"] = round(budget_report.int8_share, 4)
        stages["verify"] = time.perf_counter() - clock
        clock = time.perf_counter()
        written = None if kind in CPU_ONLY else onnx.load(str(tmp))  # a file meant for TensorRT
        fusion = check_fusion(written) if kind == "int8" else None
        if fusion is not None and not fusion["passed"]:
            raise CheckFailed(
                f"{VARIANT_FILES[kind]} would not fuse into int8 kernels on TensorRT: {fusion['problems'][0]}; "
                "nothing was written"
            )
        support = None if written is None else check_tensorrt_support(written)
        if support is not None and not support["passed"]:
            raise CheckFailed(
                f"{VARIANT_FILES[kind]} breaks TensorRT's ONNX support matrix: {support['problems'][0]}; "
                "nothing was written"
            )
        stages["checks"] = time.perf_counter() - clock
        clock = time.perf_counter()
        shares = None
        if kind != "float32_cpu":
            log("measuring the FLOP and activation-byte shares per type")
            shares = precision_shares(onnx.load(str(tmp)), calibration.feeds()[0], precision=kind)
            stages["shares"] = time.perf_counter() - clock
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
            "tensorrt_fusion": fusion,
            "tensorrt_support": support,
            "precision_shares": shares,
            "stage_seconds": {k: round(v, 1) for k, v in stages.items()},
            "cpu_rewrites": rewrites,
            "int8_budget": None if budget_report is None else budget_report.as_dict(),
        }
    write_manifest(manifest_path_for(target), manifest)
    report = VariantReport(
        kind, target, seconds, size_bytes, accuracy, fusion, budget=budget_report, stages=stages, shares=shares
    )
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


__all__ = ["CPU_ONLY", "VARIANT_FILES", "VariantReport", "compare", "gate_scorer", "holdout_samples", "make_variant"]
