"""An engine against the PyTorch reference on real data: the check behind ``smat-deploy parity``.

:func:`run_parity_check` opens the engine and the reference (the weights the engine was exported
from, as its manifest records them, or ``checkpoint``), runs both on every sample of a data source
(:mod:`smat_deploy.data.parity_sets`), and reports per prompt kind the max and mean absolute
alpha difference and SAD, MSE, MAD, Grad and Conn (:mod:`smat_deploy.metrics`) against
the reference and, where a ground-truth alpha is known, against it (engine and reference side by
side). The worst samples get PNG heatmaps. ``result.passed`` is False when a kind's max or mean
difference exceeds its tolerance or the engine returned NaN/Inf.

Default tolerances come from the engine's precision (its sidecar manifest): :data:`TOLERANCES`. An
INT8 engine's are the gate its export had to meet (:mod:`smat_deploy.engines.int8_budget`: mean
|diff| 5e-3, max 0.05), measured there against float32 on held-out images; when the export recorded
another budget in the ONNX file's manifest (``int8_budget``), that one applies. Parity compares with
the PyTorch reference, so float32's own error (below 1e-4) adds to what the gate bounds.
"""

from __future__ import annotations

import heapq
import json
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smat_deploy._files import atomic_output, sha256_of
from smat_deploy._table import format_table
from smat_deploy.contract import PRECISIONS, canonical_precision, manifest_path_for, read_manifest
from smat_deploy.data.parity_sets import (
    DEFAULT_MAX_SIZE,
    PROMPT_KINDS,
    ParityData,
    ParitySample,
    load_parity_data,
    parse_prompt_kinds,
)
from smat_deploy.engines.int8_budget import Budget
from smat_deploy.errors import SmatError
from smat_deploy.metrics import METRIC_NAMES, matting_metrics, mean_metrics
from smat_deploy.model import SMat, describe_weights
from smat_deploy.runtime import Runtime, backend_for
from smat_deploy.runtime.torch_backend import TORCH_ENGINE
from smat_deploy.runtime.wrapper import engine_options

#: (max |diff|, mean |diff|) allowed against the reference, by the engine's precision: each precision's
#: gate (:data:`smat_deploy.contract.PRECISIONS`). float32 is the export's own bound; fp16 the FP16 gate
#: of ``export --fp16``; INT8 the gate every INT8 file meets against float32 at export (on held-out
#: images), unless the export recorded another budget.
TOLERANCES: dict[str, tuple[float, float]] = {name: (p.gate.max_abs, p.gate.mean_abs) for name, p in PRECISIONS.items()}
#: Precisions whose tolerances an ``int8_budget`` recorded in the manifest replaces.
INT8_PRECISIONS = tuple(name for name in PRECISIONS if name.startswith("int8"))
#: Heatmaps written by default: the samples with the largest max |diff|.
DEFAULT_WORST = 3
#: Where the heatmaps and parity.json go by default.
DEFAULT_OUT = Path("parity_out")


def default_tolerances(precision: str, manifest: str | os.PathLike[str] | None = None) -> tuple[float, float, str]:
    """``(max, mean, why)`` for an engine of ``precision`` (unknown precisions get float32's bounds).

    ``manifest``: the engine's sidecar manifest. For an INT8 engine, the budget its export recorded
    there (or, for a TensorRT engine, in its source ONNX's manifest) replaces the default.
    """
    precision = canonical_precision(precision)
    if precision in INT8_PRECISIONS and manifest is not None:
        recorded = recorded_int8_budget(manifest)
        if recorded is not None:
            budget, path = recorded
            return budget.max_abs, budget.mean_abs, f"INT8 budget recorded in {path}"
    if precision in TOLERANCES:
        return (*TOLERANCES[precision], f"default for {precision}")
    return (*TOLERANCES["float32"], f"float32 default: precision {precision!r} is not recorded")


def _read(path: Path) -> dict | None:
    try:
        manifest = read_manifest(path)
    except (OSError, ValueError) as err:
        raise SmatError(f"cannot read the manifest {path}: {err}".splitlines()[0]) from None
    return manifest if isinstance(manifest, dict) else None


def _recorded(manifest_path: str | os.PathLike[str], key: str) -> tuple[object, Path | None]:
    """``(value, manifest path)`` of ``key`` in a sidecar manifest, or in the manifest of the ONNX file a
    TensorRT engine's manifest names as its source; ``(None, None)`` when neither records it."""
    path = Path(manifest_path)
    manifest = _read(path)
    if manifest is not None and key not in manifest and manifest.get("source_onnx"):
        onnx_path = Path(manifest["source_onnx"])
        if not onnx_path.is_file():
            onnx_path = path.parent / onnx_path.name
        path = manifest_path_for(onnx_path)
        manifest = _read(path)
    if manifest is None or manifest.get(key) is None:
        return None, None
    return manifest[key], path


def recorded_int8_budget(manifest: str | os.PathLike[str]) -> tuple[Budget, Path] | None:
    """``(budget, manifest path)``: the INT8 budget an export recorded (``int8_budget.budget``), if any.

    ``manifest`` is an ONNX file's sidecar, or a TensorRT engine's, which leads to its source ONNX's.
    """
    record, path = _recorded(manifest, "int8_budget")
    if record is None:
        return None
    budget = record.get("budget") if isinstance(record, dict) else None
    if not isinstance(budget, dict):
        raise SmatError(f"{path} records an int8_budget without its budget (mean_abs, max_abs)")
    try:
        return Budget(mean_abs=budget["mean_abs"], max_abs=budget["max_abs"]), path
    except KeyError as err:
        raise SmatError(f"{path} records an INT8 budget without {err.args[0]}") from None
    except SmatError as err:
        raise SmatError(f"{path}: {err}") from None


# -- the reference's weights ------------------------------------------------------------------------------
def engine_source(engine: str | os.PathLike[str] | SMat) -> tuple[dict | None, Path | None]:
    """``(manifest "source" record, manifest path)``: which weights an engine was exported from, when recorded.

    An ONNX file's sidecar has it; a TensorRT engine's sidecar names its source ONNX, whose sidecar has it.
    """
    if not isinstance(engine, str | os.PathLike) or engine == TORCH_ENGINE:
        return None, None  # the torch engine or an SMat module: no manifest
    if Path(engine).suffix.lower() in (".pth", ".pt"):
        return None, None
    source, path = _recorded(manifest_path_for(engine), "source")
    if not isinstance(source, dict):
        return None, None
    return source, path


@dataclass(frozen=True)
class Reference:
    engine: str  # what Runtime.open gets: a checkpoint path or "torch"
    weights: str  # one line: which weights
    real_weights: bool  # a checkpoint, not the untrained built-in default
    chosen_by: str
    warnings: tuple[str, ...] = ()


def resolve_reference(
    engine: str | os.PathLike[str], checkpoint: str | os.PathLike[str] | None, seed: int
) -> Reference:
    """The reference weights: ``checkpoint``, else the checkpoint the engine's manifest records, else built-in.

    A mismatch between the weights used and the weights recorded is a warning (the differences would
    then measure the weights, not the engine); a recorded checkpoint that is missing is an error.
    """
    source, manifest = engine_source(engine)
    notes: list[str] = []
    recorded = None if source is None else source.get("checkpoint")
    recorded_sha = None if source is None else source.get("checkpoint_sha256")
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise SmatError(f"checkpoint not found: {checkpoint}")
        if source is not None:
            if recorded is None:
                notes.append(
                    f"{manifest} says the engine holds the built-in default weights, not {checkpoint}: "
                    "differences will include the weights"
                )
            elif recorded_sha and sha256_of(checkpoint) != recorded_sha:
                notes.append(
                    f"{checkpoint} is not the checkpoint the engine was exported from ({recorded}, per {manifest}): "
                    "differences will include the weights"
                )
        return Reference(str(checkpoint), str(checkpoint), True, "--checkpoint", tuple(notes))
    if recorded:
        candidates = [Path(recorded)]
        if manifest is not None and not Path(recorded).is_absolute():
            candidates.append(manifest.parent / Path(recorded).name)
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise SmatError(
                f"the engine was exported from {recorded} (per {manifest}), which is not here; "
                "pass --checkpoint with those weights"
            )
        if recorded_sha and sha256_of(found) != recorded_sha:
            notes.append(f"{found} has changed since the export (sha256 differs from {manifest}); using it anyway")
        return Reference(str(found), str(found), True, f"recorded in {manifest}", tuple(notes))
    weights = describe_weights(None, seed)
    if source is None:
        why = (
            "the torch engine"
            if isinstance(engine, SMat) or engine == TORCH_ENGINE
            else "no manifest records the engine's weights"
        )
        return Reference(TORCH_ENGINE, weights, False, f"default ({why})")
    if source.get("weights") and source["weights"] != weights:
        notes.append(f"{manifest} records the weights as {source['weights']!r}; the reference uses {weights!r}")
    return Reference(TORCH_ENGINE, weights, False, f"recorded in {manifest}", tuple(notes))


# -- the check ---------------------------------------------------------------------------------------------
@dataclass
class ParityResult:
    engine: dict  # runtime.info.as_dict() of the engine
    reference: Reference
    data: ParityData
    kinds: tuple[str, ...]
    tolerance: float
    mean_tolerance: float
    tolerance_source: str
    samples: list[dict] = field(default_factory=list)  # one per image x prompt kind
    rows: list[dict] = field(default_factory=list)  # per prompt kind, against the reference
    gt_rows: list[dict] = field(default_factory=list)  # per prompt kind and model, against ground truth
    heatmaps: list[str] = field(default_factory=list)
    report_path: str | None = None
    skipped: list[dict] = field(default_factory=list)  # data that could not be read or run

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(row["pass"] for row in self.rows)

    @property
    def failures(self) -> list[str]:
        """One phrase per failing prompt kind: what exceeded which bound."""
        found = []
        for row in self.rows:
            if row["pass"]:
                continue
            what = []
            if row["nonfinite"]:
                what.append(f"{row['nonfinite']} NaN/Inf values")
            if row["max_abs"] > self.tolerance:
                what.append(f"max |diff| {row['max_abs']:.2e} > {self.tolerance:g}")
            if row["mean_abs"] > self.mean_tolerance:
                what.append(f"mean |diff| {row['mean_abs']:.2e} > {self.mean_tolerance:g}")
            found.append(f"{row['prompts']}: {', '.join(what)}")
        return found

    @property
    def max_abs(self) -> float:
        return max((row["max_abs"] for row in self.rows), default=float("nan"))

    def as_dict(self) -> dict:
        return {
            "passed": self.passed,
            "engine": self.engine,
            "reference": {
                "engine": self.reference.engine,
                "weights": self.reference.weights,
                "real_weights": self.reference.real_weights,
                "chosen_by": self.reference.chosen_by,
                "warnings": list(self.reference.warnings),
            },
            "data": {
                "source": self.data.source,
                "kind": self.data.kind,
                "images": self.data.images,
                "samples": len(self.samples),
                "prompt_kinds": list(self.kinds),
            },
            "tolerance": {"max_abs": self.tolerance, "mean_abs": self.mean_tolerance, "source": self.tolerance_source},
            "max_abs": self.max_abs,
            "failures": self.failures,
            "rows": self.rows,
            "ground_truth_rows": self.gt_rows,
            "samples": self.samples,
            "heatmaps": self.heatmaps,
            "report": self.report_path,
            "skipped": self.skipped,
        }


def _as_alpha(array: object) -> np.ndarray:
    return np.asarray(array, dtype=np.float64)[0, 0]


def _compare(sample: ParitySample, engine_alpha: np.ndarray, reference_alpha: np.ndarray) -> dict:
    bad = ~np.isfinite(engine_alpha)
    nonfinite = int(bad.sum())
    diff = np.abs(engine_alpha - reference_alpha)
    diff[bad] = 1.0  # NaN/Inf counts as the whole alpha range (and fails the kind on its own)
    finite_engine = np.clip(np.nan_to_num(engine_alpha, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    reference = np.clip(reference_alpha, 0.0, 1.0)
    record = {
        "image": sample.name,
        "prompts": sample.kind,
        "size": sample.size,
        "state": sample.state,
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "nonfinite": nonfinite,
        "vs_reference": matting_metrics(finite_engine, reference),
        "alpha_std": float(reference.std()),
        "ground_truth": sample.alpha_source,
    }
    if sample.alpha is not None:
        record["engine_vs_gt"] = matting_metrics(finite_engine, sample.alpha)
        record["reference_vs_gt"] = matting_metrics(reference, sample.alpha)
    return record


def _summarise(result: ParityResult) -> None:
    for kind in result.kinds:
        records = [r for r in result.samples if r["prompts"] == kind]
        if not records:
            continue
        max_abs = max(r["max_abs"] for r in records)
        mean_abs = float(np.mean([r["mean_abs"] for r in records]))
        nonfinite = sum(r["nonfinite"] for r in records)
        result.rows.append(
            {
                "prompts": kind,
                "samples": len(records),
                "max_abs": max_abs,
                "mean_abs": mean_abs,
                **mean_metrics(r["vs_reference"] for r in records),
                "nonfinite": nonfinite,
                "pass": bool(nonfinite == 0 and max_abs <= result.tolerance and mean_abs <= result.mean_tolerance),
            }
        )
        with_gt = [r for r in records if "engine_vs_gt" in r]
        for model, key in (("engine", "engine_vs_gt"), ("reference", "reference_vs_gt")):
            if with_gt:
                result.gt_rows.append(
                    {"prompts": kind, "model": model, "samples": len(with_gt), **mean_metrics(r[key] for r in with_gt)}
                )


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "sample"


def write_heatmap(
    path: Path, sample: ParitySample, reference: np.ndarray, engine: np.ndarray, title: str, engine_name: str
) -> Path:
    """image | reference alpha | engine alpha | |diff| heatmap with a colorbar, one PNG, written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    diff = np.abs(np.nan_to_num(engine, nan=1.0) - reference)
    figure = Figure(figsize=(16, 4.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 4)
    axes[0].imshow(sample.image)
    if sample.prompt.any():
        axes[0].contour(sample.prompt, levels=[0.5], colors="red", linewidths=1.2)
    axes[0].set_title(f"image ({sample.kind} prompt in red)" if sample.prompt.any() else "image (automatic)")
    axes[1].imshow(reference, cmap="gray", vmin=0, vmax=1)
    axes[1].set_title("reference alpha (PyTorch)")
    axes[2].imshow(np.clip(np.nan_to_num(engine), 0, 1), cmap="gray", vmin=0, vmax=1)
    axes[2].set_title(f"engine alpha ({engine_name})")
    shown = axes[3].imshow(diff, cmap="inferno", vmin=0, vmax=max(float(diff.max()), 1e-12))
    axes[3].set_title("|engine - reference|")
    figure.colorbar(shown, ax=axes[3], fraction=0.046, pad=0.04)
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(title)
    with atomic_output(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def run_parity_check(
    engine: str | os.PathLike[str] | SMat,
    data: str | os.PathLike[str] | None = None,
    *,
    prompts: str | Sequence[str] = PROMPT_KINDS,
    checkpoint: str | os.PathLike[str] | None = None,
    reference_model: SMat | None = None,
    seed: int = 0,
    device: str = "auto",
    threads: int | None = None,
    tolerance: float | None = None,
    mean_tolerance: float | None = None,
    max_size: int | None = DEFAULT_MAX_SIZE,
    limit: int | None = None,
    out_dir: str | os.PathLike[str] | None = DEFAULT_OUT,
    worst: int = DEFAULT_WORST,
    progress: Callable[[int], Callable[[], None]] | None = None,
    on_skip: Callable[[str, str], None] | None = None,
    log: Callable[[str], None] = lambda message: None,
    use_calibration_set: bool = True,
    backend: str | None = None,
    backend_options: dict | None = None,
) -> ParityResult:
    """Compare ``engine`` with the PyTorch reference on ``data``; see the module docstring.

    ``data``: a calibration set or photo folder; None picks a default (``calib_data/``, then the
    shared photos, then generated composites). ``prompts``: kinds to run
    (``none,point,box,scribble,mask,file``). ``checkpoint``: the reference's weights (default: what
    the engine's manifest records, else the built-in ones with ``seed``). ``reference_model``: an SMat
    module already holding those weights, to save loading them again (which weights they are is then
    the caller's word). ``tolerance``/``mean_tolerance``: bounds on max/mean |diff| per prompt kind
    (default: by the engine's precision, :data:`TOLERANCES`, or the INT8 budget its export recorded).
    ``max_size``: cap on the long side (None: full size). ``limit``: at most this many images.
    ``backend``/``backend_options``: how the engine under test is run (default: its file type's backend).
    ``out_dir``: heatmaps of the ``worst`` samples and ``parity.json`` (None: write nothing).
    ``progress(total)`` returns a callable ticked after each sample; ``on_skip(item, reason)`` hears
    about data that was skipped (default: a warning). Bad input raises :class:`SmatError`; a
    tolerance exceeded is ``result.passed == False``.
    """
    kinds = parse_prompt_kinds(prompts)
    if worst < 0:
        raise SmatError(f"--worst must be 0 or more, got {worst}")
    for name, value in (("--tolerance", tolerance), ("--mean-tolerance", mean_tolerance)):
        if value is not None and not value >= 0:
            raise SmatError(f"{name} must be a number >= 0, got {value}")
    if on_skip is None:

        def on_skip(item: str, reason: str) -> None:
            warnings.warn(f"skipped {item}: {reason}", stacklevel=3)

    out = None if out_dir is None else Path(out_dir)
    if out is not None and out.exists() and not out.is_dir():
        raise SmatError(f"--output must be a folder, but {out} is a file")
    chosen = backend_for(engine, backend)  # the engine's file type, or the backend asked for
    runtime = Runtime.open(  # the contract checks
        engine,
        backend=chosen.name,
        device=device,
        **engine_options(chosen, backend_options or {}, threads=threads, seed=seed),
    )
    info = runtime.info
    found = load_parity_data(
        data, kinds, max_size=max_size, limit=limit, on_skip=on_skip, use_calibration_set=use_calibration_set
    )
    limits = runtime.backend.limits
    for sample in found.samples:  # an image the engine cannot take fails the run before anything runs
        height, width = sample.prompt.shape
        try:
            limits.check(1, height, width, source=info.engine)
        except SmatError as err:
            at = f"at --max-side {max_size}" if max_size else "at full size"
            raise SmatError(f"{sample.name} is {width}x{height} {at}: {err}; lower --max-side") from None
    reference = resolve_reference(engine, checkpoint, seed)
    for note in reference.warnings:
        warnings.warn(note, stacklevel=2)
    log(f"reference: {reference.weights}")
    reference_runtime = Runtime.open(
        reference.engine if reference_model is None else reference_model,
        backend="torch",
        device=device,
        threads=threads,
        seed=seed,
    )
    max_tol, mean_tol, why = default_tolerances(info.precision, info.details.get("manifest"))
    result = ParityResult(
        engine=info.as_dict(),
        reference=reference,
        data=found,
        kinds=kinds,
        tolerance=max_tol if tolerance is None else tolerance,
        mean_tolerance=mean_tol if mean_tolerance is None else mean_tolerance,
        tolerance_source=why if tolerance is None and mean_tolerance is None else "given",
        skipped=list(found.skipped),
    )
    tick = progress(len(found.samples)) if progress is not None else (lambda: None)
    worst_cases: list[tuple[float, int, ParitySample, np.ndarray, np.ndarray]] = []
    for index, sample in enumerate(found.samples):
        image = np.ascontiguousarray(sample.image.transpose(2, 0, 1)[None])
        prompt, state = sample.prompt[None, None], np.array([[sample.state]], np.float32)
        try:
            engine_alpha = _as_alpha(runtime(image, prompt, state))
            reference_alpha = _as_alpha(reference_runtime(image, prompt, state))
        except SmatError as err:
            item = f"{sample.name} ({sample.kind})"
            result.skipped.append({"item": item, "reason": str(err)})
            on_skip(item, str(err))
            tick()
            continue
        record = _compare(sample, engine_alpha, reference_alpha)
        result.samples.append(record)
        if worst:
            entry = (record["max_abs"], -index, sample, reference_alpha, engine_alpha)
            (heapq.heappush if len(worst_cases) < worst else heapq.heappushpop)(worst_cases, entry)
        tick()
    if not result.samples:
        raise SmatError(f"no sample could be compared ({len(result.skipped)} skipped; see the warnings)")
    _summarise(result)
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise SmatError(f"cannot create --output folder {out}: {err.strerror}") from None
        for rank, (_, _, sample, reference_alpha, engine_alpha) in enumerate(sorted(worst_cases, reverse=True), 1):
            record = next(r for r in result.samples if r["image"] == sample.name and r["prompts"] == sample.kind)
            path = out / f"worst{rank}_{_safe(Path(sample.name).stem)}_{sample.kind}.png"
            title = (
                f"#{rank} {sample.name}, {sample.kind}, {sample.size}: max |diff| {record['max_abs']:.3g}, "
                f"mean {record['mean_abs']:.3g} (tolerance {result.tolerance:g} / {result.mean_tolerance:g})"
            )
            write_heatmap(path, sample, reference_alpha, engine_alpha, title, f"{info.backend}, {info.precision}")
            record["heatmap"] = str(path)
            result.heatmaps.append(str(path))
        result.report_path = str(out / "parity.json")
        with atomic_output(out / "parity.json") as tmp:
            tmp.write_text(json.dumps(result.as_dict(), indent=2) + "\n", encoding="utf-8")
    return result


# -- text ----------------------------------------------------------------------------------------------------
def format_parity_report(result: ParityResult) -> str:
    """The human report: what ran against what, the two tables, heatmaps, and the verdict."""
    engine = result.engine
    ref = result.reference
    lines = [
        f"engine:    {engine['engine']} ({engine['backend']}, {engine['precision']}, {engine['device']})",
        f"reference: PyTorch, {ref.weights} [{ref.chosen_by}]"
        + (
            "" if ref.real_weights else " -- untrained: engine differences are meaningful, ground-truth metrics are not"
        ),
        f"data:      {result.data.source}; {result.data.images} images, {len(result.samples)} samples",
        f"tolerance: max |diff| <= {result.tolerance:g}, mean |diff| <= {result.mean_tolerance:g} "
        f"({result.tolerance_source})",
        "",
        "engine vs reference (SAD/Grad/Conn: sums / 1000; MSE/MAD: means; per-sample values averaged)",
        format_table(result.rows, ["prompts", "samples", "max_abs", "mean_abs", *METRIC_NAMES, "nonfinite", "pass"]),
    ]
    if result.gt_rows:
        with_gt = max(row["samples"] for row in result.gt_rows)
        lines += [
            "",
            f"against ground-truth alpha ({with_gt} image(s) with a known alpha)",
            format_table(result.gt_rows, ["prompts", "model", "samples", *METRIC_NAMES]),
        ]
    else:
        lines += ["", "no ground-truth alpha in this data: only the comparison with the reference"]
    if result.heatmaps:
        lines += ["", f"heatmaps of the {len(result.heatmaps)} worst sample(s):", *(f"  {p}" for p in result.heatmaps)]
    if result.report_path:
        lines.append(f"full record: {result.report_path}")
    if result.skipped:
        lines.append(f"skipped {len(result.skipped)}: " + "; ".join(s["item"] for s in result.skipped[:5]))
    verdict = "PASS" if result.passed else "FAIL: " + "; ".join(result.failures)
    lines += ["", f"parity {verdict} (max |diff| {result.max_abs:.2e} over {len(result.samples)} samples)"]
    return "\n".join(lines)
