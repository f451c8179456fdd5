"""Precision variants of the interactive pair: ``smat_encoder_<suffix>.onnx`` + ``smat_decoder_<suffix>.onnx``.

Each variant pair is made from the float32 pair (``smat-deploy export --interactive``) by the
transformations the whole model's variant of that kind uses (:mod:`smat_deploy.engines.cpu_graph`,
:mod:`~smat_deploy.engines.fp16`, :mod:`~smat_deploy.engines.int8` with the accuracy budget of
:mod:`~smat_deploy.engines.int8_budget`), and is held to the whole model's gate
(:func:`smat_deploy.contract.gate_for`) END TO END: variant encoder -> variant decoder alpha against the
float32 whole model (``smat.onnx``) on the inputs the whole model's variant is measured on.

A half changes only where the change pays:

- ``float32_cpu``: the encoder gets the fused transformer kernels and the decoder its split
  concat-convolutions; each half is timed against its float32 half on ONNX Runtime CPU (interleaved)
  and kept float32 when the rewrite is not faster.
- ``fp16``: both halves through AutoCast (made for TensorRT on a GPU: not timed on the CPU).
- ``int8`` / ``int8_cpu``: the encoder (the backbone: most of the weight FLOPs) is quantised and held
  to the INT8 budget with the float32 decoder behind it. ``int8`` (TensorRT) then runs the decoder in
  float16 (:data:`DECODER_FP16`), ``int8_cpu``'s stays float32 (:data:`DECODER_STAYS_FLOAT`); the pair is
  gated end to end either way. ``int8_cpu``'s encoder is also timed and kept float32 when not faster.

Both files are written under temporary names and replace older ones only when the pair passes its
gate; a failure leaves the previous files in place. The manifests carry the float32 pair's ``pair``
block (partner: the variant partner, same ``weights_sha256``), ``precision`` (the pair's kind) and
``half_precision`` (what this half computes in).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from smat_deploy._files import atomic_output, sha256_of
from smat_deploy._ort import session as ort_session
from smat_deploy.contract import (
    EMBEDDING_NAMES,
    PAIR_ROLES,
    PRECISIONS,
    gate_for,
    manifest_path_for,
    pair_file,
    read_manifest,
)
from smat_deploy.data.calibration import CalibrationSet
from smat_deploy.data.cases import make_case, standard_cases
from smat_deploy.engines import cpu_graph, fp16, int8
from smat_deploy.engines._isolated import run_isolated
from smat_deploy.engines.int8_budget import (
    MIN_CALIBRATION_SAMPLES,
    AlphaScorer,
    Budget,
    BudgetReport,
    fit_budget,
)
from smat_deploy.engines.variants import (
    CPU_ONLY,
    VARIANT_FILES,
    _fp16_calibration,
    compare,
    gate_scorer,
    holdout_samples,
    quantize_all_int8,
)
from smat_deploy.errors import CheckFailed, SmatError
from smat_deploy.export.manifest import MANIFEST_FORMAT, write_manifest
from smat_deploy.export.tensorrt_fusion import check_fusion
from smat_deploy.export.tensorrt_support import check_tensorrt_support

#: The kinds a pair variant is made for (every whole-model variant).
PAIR_VARIANT_KINDS = tuple(VARIANT_FILES)
#: Timing of a half against its float32 half: ONNX Runtime CPU, this many intra-op threads, interleaved rounds.
SPEED_THREADS = 2
SPEED_ROUNDS = 3
#: The photo the halves are timed on (height, width) and its prompt.
SPEED_SIZE = (518, 518)
#: Why the decoder of an INT8 pair stays float32.
#: Why the decoder of the TensorRT INT8 pair is float16.
DECODER_FP16 = (
    "the decoder in float16 outside the FP16 artifact's float32 islands, as smat_int8.onnx runs what it does not "
    "quantise: not quantised (the INT8 recipes are made for the whole model's graph), held to the INT8 budget end "
    "to end with the int8 encoder"
)
#: Why the decoder of the CPU INT8 pair stays float32.
DECODER_STAYS_FLOAT = (
    "the decoder stays float32: the INT8 recipes are made for the whole model's graph (the CPU recipe starts "
    "from the 12-block transformer fusions, the TensorRT recipe calibrates image/prompt/state inputs), and the "
    "backbone in the encoder carries most of the weight FLOPs"
)


@dataclass
class HalfReport:
    """One half of a variant pair: its file, what it computes in, and why."""

    role: str
    path: Path
    #: ``kind`` when the half was transformed, ``float32`` when the float32 half was kept.
    precision: str
    why: str
    size_bytes: int = 0
    #: ONNX Runtime CPU timing against the float32 half (None: not timed).
    speed: dict | None = None
    rewrites: dict | None = None
    #: TensorRT's Q/DQ fusion check (the int8 encoder)
    fusion: dict | None = None
    tensorrt_support: dict | None = None

    def as_dict(self) -> dict:
        return {
            "file": self.path.name,
            "precision": self.precision,
            "why": self.why,
            "size_mb": round(self.size_bytes / 1e6, 1),
            "speed_vs_float32": self.speed,
        }


@dataclass
class PairVariantReport:
    kind: str
    halves: dict[str, HalfReport]
    seconds: float
    #: End to end (variant encoder -> variant decoder) against the float32 whole model.
    accuracy: dict
    measured_on: str
    notes: list[str] = field(default_factory=list)
    budget: BudgetReport | None = None

    @property
    def encoder(self) -> Path:
        return self.halves["encoder"].path

    @property
    def decoder(self) -> Path:
        return self.halves["decoder"].path

    def as_dict(self) -> dict:
        return {
            "precision": self.kind,
            "encoder": str(self.encoder),
            "decoder": str(self.decoder),
            "halves": {role: half.as_dict() for role, half in self.halves.items()},
            "seconds": round(self.seconds, 1),
            "accuracy_vs_float32": self.accuracy,
            "accuracy_measured_on": self.measured_on,
            "notes": self.notes,
            "int8_budget": None if self.budget is None else self.budget.as_dict(),
        }


class PairSession:
    """Encoder then decoder, run like one ``image, prompt, state -> alpha`` session (``run(["alpha"], feed)``)."""

    def __init__(self, encoder: ort.InferenceSession, decoder: ort.InferenceSession) -> None:
        self.encoder, self.decoder = encoder, decoder

    def embed(self, image: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(EMBEDDING_NAMES, self.encoder.run(list(EMBEDDING_NAMES), {"image": image}), strict=True))

    def run(self, names: Sequence[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.decoder.run(list(names), self.embed(feed["image"]) | {k: feed[k] for k in ("prompt", "state")})


class PairScorer(AlphaScorer):
    """:class:`AlphaScorer` for candidate *encoders*: each runs with a fixed decoder behind it, scored on the alpha."""

    def __init__(
        self,
        decoder: ort.InferenceSession,
        feeds: Sequence[tuple[str, dict[str, np.ndarray]]],
        expected: Sequence[np.ndarray],
    ) -> None:
        super().__init__(None, feeds, expected)
        self.decoder = decoder

    def runner(self, model: onnx.ModelProto | ort.InferenceSession) -> PairSession:
        """The candidate encoder followed by the float32 decoder: the budget holds end to end."""
        return PairSession(super().runner(model), self.decoder)


# -- timing ----------------------------------------------------------------------------------------------------
def time_against(
    float32_path: Path,
    variant_path: Path,
    feed: dict[str, np.ndarray],
    *,
    precision: str,
    rounds: int = SPEED_ROUNDS,
    threads: int = SPEED_THREADS,
) -> dict:
    """Seconds per run of both files on ONNX Runtime CPU, interleaved (the order alternates each round) after one
    warm-up run each; ``ratio`` is the median of the per-round ratios variant / float32 (< 1: the variant is faster)."""
    sessions = {
        "float32": ort_session(float32_path, threads=threads),
        "variant": ort_session(variant_path, precision=precision, threads=threads),
    }
    for session in sessions.values():
        session.run(None, feed)
    seconds: dict[str, list[float]] = {"float32": [], "variant": []}
    for index in range(rounds):
        for name in ("float32", "variant") if index % 2 == 0 else ("variant", "float32"):
            start = time.perf_counter()
            sessions[name].run(None, feed)
            seconds[name].append(time.perf_counter() - start)
    ratios = [v / f for v, f in zip(seconds["variant"], seconds["float32"], strict=True)]
    return {
        "float32_s": round(float(np.median(seconds["float32"])), 4),
        "variant_s": round(float(np.median(seconds["variant"])), 4),
        "ratio": round(float(np.median(ratios)), 3),
        "round_ratios": [round(r, 3) for r in ratios],
        "rounds": rounds,
        "threads": threads,
        "input": "x".join(str(s) for s in (feed["image"] if "image" in feed else feed["prompt"]).shape[-2:]),
    }


def pays(speed: dict | None) -> bool:
    """Whether a timed half is faster than its float32 half (median per-round ratio below 1)."""
    return speed is not None and speed["ratio"] < 1.0


def _speed_feeds(encoder32: Path) -> dict[str, dict[str, np.ndarray]]:
    feed = make_case("speed", SPEED_SIZE, ("point",), seed=424_242).feed()
    embedding = PairSession(ort_session(encoder32), None).embed(feed["image"])  # type: ignore[arg-type]
    return {
        "encoder": {"image": feed["image"]},
        "decoder": embedding | {"prompt": feed["prompt"], "state": feed["state"]},
    }


# -- the pair's files --------------------------------------------------------------------------------------------
def _float32_pair(folder: Path) -> tuple[Path, dict[str, Path], dict[str, dict]]:
    """``smat.onnx`` and the float32 pair in ``folder``, checked to come from the same weights."""
    whole = folder / PRECISIONS["float32"].file
    halves = {role: folder / pair_file(role) for role in PAIR_ROLES}
    missing = [p.name for p in (whole, *halves.values()) if not p.is_file()]
    if missing:
        raise SmatError(
            f"{folder} has no {', '.join(missing)}: export the model and its pair first "
            f"(smat-deploy export --interactive -o {folder})"
        )
    manifests = {}
    for role, path in halves.items():
        try:
            manifest = read_manifest(manifest_path_for(path))
        except ValueError as err:
            raise SmatError(f"{manifest_path_for(path)} is not valid JSON: {err}") from None
        if manifest is None or not isinstance(manifest.get("pair"), dict) or manifest["pair"].get("role") != role:
            raise SmatError(f"{path.name} has no pair manifest ({manifest_path_for(path).name}): export it again")
        manifests[role] = manifest
    keys = {role: m["pair"].get("weights_sha256") for role, m in manifests.items()}
    whole_key = ((read_manifest(manifest_path_for(whole)) or {}).get("source") or {}).get("weights_sha256")
    if not keys["encoder"] or keys["encoder"] != keys["decoder"] or (whole_key and whole_key != keys["encoder"]):
        raise SmatError(
            f"{whole.name}, {halves['encoder'].name} and {halves['decoder'].name} in {folder} come from different "
            "weights: export them again together with smat-deploy export --interactive"
        )
    return whole, halves, manifests


def _gate_inputs(
    kind: str,
    calibration: CalibrationSet,
    holdout: int,
    holdout_photos: str | os.PathLike[str] | None,
) -> tuple[list[tuple[str, dict[str, np.ndarray]]], str]:
    """The inputs the whole model's variant of ``kind`` is measured on, named, and what they are."""
    if kind == "float32_cpu":
        calib = [(f"calibration {i}", feed) for i, feed in enumerate(calibration.feeds())]
        return calib + [(case.name, case.feed()) for case in standard_cases()], (
            "calibration set and the export's standard cases"
        )
    if kind == "fp16":
        return [(f"calibration {i}", feed) for i, feed in enumerate(calibration.feeds())], "calibration set"
    samples = holdout_samples(holdout, calibration.size, holdout_photos, calibration)
    return samples, f"{len(samples)} INT8 gate samples: {holdout} held-out composites and the photos' samples"


def _check_gate(kind: str, accuracy: dict, budget: Budget | None) -> None:
    gate = gate_for(kind)
    limits = (
        (budget.mean_abs, budget.max_abs) if kind in ("int8", "int8_cpu") and budget else (gate.mean_abs, gate.max_abs)
    )
    what = f"the {kind} pair ({pair_file('encoder', kind)} -> {pair_file('decoder', kind)})"
    if accuracy["nonfinite"]:
        raise CheckFailed(f"{what} produced {accuracy['nonfinite']} NaN/Inf values; nothing was written")
    if accuracy["mean_abs"] > limits[0] or accuracy["max_abs"] > limits[1]:
        raise CheckFailed(
            f"{what} is off the float32 model by mean {accuracy['mean_abs']:.1e} / max {accuracy['max_abs']:.1e} "
            f"end to end (limits {limits[0]:g} / {limits[1]:g}); nothing was written"
        )


def _quantize_encoder(
    kind: str,
    encoder32: Path,
    dst: Path,
    calibration: CalibrationSet,
    decoder: ort.InferenceSession,
    samples: list[tuple[str, dict[str, np.ndarray]]],
    expected: list[np.ndarray],
    budget: Budget,
    log: Callable[[str], None],
) -> BudgetReport:
    """Quantise the encoder, then return its layer groups to float until ``budget`` holds end to end."""
    tensors = {"image": calibration.image}
    with tempfile.TemporaryDirectory(prefix="smat-pair-int8-") as scratch:
        raw, float_model, float_weights = quantize_all_int8(
            kind, encoder32, Path(scratch), tensors, f"{len(calibration)} images", "INT8 encoder", log
        )
        log(f"accuracy budget end to end (encoder -> float32 decoder) on {len(samples)} gate samples")
        scorer = PairScorer(decoder, samples, expected)
        model, report = fit_budget(
            onnx.load(str(raw)),
            float_model,
            scorer,
            budget,
            {"image": samples[0][1]["image"]},
            float_weights=float_weights,
            progress=lambda message: log(f"  {message}"),
        )
        report.measured_on = (
            f"{len(samples)} gate samples, encoder -> float32 decoder; int8 share of the encoder's FLOPs"
        )
        if not report.passed:
            raise CheckFailed(f"{report.failure(pair_file('encoder', kind))}; nothing was written")
        if kind == "int8":  # as the whole model's TensorRT file: float16 outside the int8 layers, gated end to end
            fitted = Path(scratch) / "fitted.onnx"
            onnx.save(model, str(fitted))
            log("  float16 outside the encoder's int8 layers (the FP16 artifact's AutoCast policy)")
            small = _fp16_calibration(calibration)
            report.conversion = run_isolated(
                "FP16 outside INT8", int8.fp16_outside_int8, fitted, dst, {"image": small["image"]}
            )
            report.float_parts_fp32 = report.final
        else:
            onnx.save(model, str(dst))
    onnx.checker.check_model(str(dst))
    return report


def make_pair_variant(
    kind: str,
    folder: str | os.PathLike[str],
    calibration: CalibrationSet,
    *,
    holdout: int = 5,
    holdout_photos: str | os.PathLike[str] | None = None,
    budget: Budget | None = None,
    only_where_faster: bool = True,
    rounds: int = SPEED_ROUNDS,
    threads: int = SPEED_THREADS,
    log: Callable[[str], None] = lambda message: None,
) -> PairVariantReport:
    """Write, verify and describe the ``kind`` variant of the interactive pair in ``folder`` (beside ``smat.onnx``
    and the float32 pair). See the module docstring for what changes in each half.

    ``only_where_faster``: for the CPU kinds, keep a half float32 when its variant is not faster on ONNX Runtime
    CPU (``threads`` threads, ``rounds`` interleaved rounds); False keeps every transformed half (timings are
    still recorded). Raises :class:`CheckFailed` (nothing written) when the pair misses its gate end to end.
    """
    if kind not in PAIR_VARIANT_KINDS:
        raise SmatError(f"unknown precision {kind!r} (expected one of {', '.join(PAIR_VARIANT_KINDS)})")
    folder = Path(folder)
    whole, float32_halves, float32_manifests = _float32_pair(folder)
    int8_kind = kind in ("int8", "int8_cpu")
    if int8_kind and len(calibration) < MIN_CALIBRATION_SAMPLES:
        raise SmatError(
            f"calibration set {calibration.directory} has {len(calibration)} sample(s); INT8 needs at least "
            f"{MIN_CALIBRATION_SAMPLES} (one per prompt kind): rebuild it with smat-deploy calib-data"
        )
    budget = (budget or Budget()) if int8_kind else None
    samples, measured_on = _gate_inputs(kind, calibration, holdout, holdout_photos)
    if int8_kind:  # the whole model's INT8 gate: its float32 alphas are shared with the whole model's INT8 files
        gate = gate_scorer(whole, calibration, holdout, holdout_photos, log)
        samples, expected = list(zip(gate.names, gate.feeds, strict=True)), list(gate.reference)
    else:
        log(f"{kind} pair: float32 alphas of the whole model on {len(samples)} samples")
        reference = ort_session(whole)
        expected = [reference.run(["alpha"], feed)[0].astype(np.float64) for _, feed in samples]
    targets = {role: folder / pair_file(role, kind) for role in PAIR_ROLES}
    halves: dict[str, HalfReport] = {}
    budget_report = None
    with contextlib.ExitStack() as stack:
        tmp = {role: stack.enter_context(atomic_output(targets[role])) for role in PAIR_ROLES}
        start = time.perf_counter()
        encoder32, decoder32 = float32_halves["encoder"], float32_halves["decoder"]
        if kind == "float32_cpu":
            log("CPU pair: fused transformer kernels in the encoder, split concat-convolutions in the decoder")
            rewrites = run_isolated("CPU graph rewrite", cpu_graph.make_cpu_graph, encoder32, tmp["encoder"])
            halves["encoder"] = HalfReport(
                "encoder", targets["encoder"], kind, "fused transformer kernels", rewrites=rewrites
            )
            model = onnx.load(str(decoder32))
            split = cpu_graph.split_concat_convs(model)
            onnx.checker.check_model(model)
            onnx.save(model, str(tmp["decoder"]))
            halves["decoder"] = HalfReport(
                "decoder", targets["decoder"], kind, "split concat-convolutions", rewrites={"split_convs": split}
            )
        elif kind == "fp16":
            small = _fp16_calibration(calibration)
            embedding = PairSession(ort_session(encoder32), None).embed(small["image"])  # type: ignore[arg-type]
            log("FP16 pair: Model Optimizer AutoCast on each half (the decoder calibrated on float32 embeddings)")
            run_isolated("FP16 conversion", fp16.convert_fp16, encoder32, tmp["encoder"], {"image": small["image"]})
            decoder_calibration = embedding | {"prompt": small["prompt"], "state": small["state"]}
            run_isolated("FP16 conversion", fp16.convert_fp16, decoder32, tmp["decoder"], decoder_calibration)
            for role in PAIR_ROLES:
                halves[role] = HalfReport(role, targets[role], kind, "AutoCast float16 with float32 islands")
        else:
            budget_report = _quantize_encoder(
                kind, encoder32, tmp["encoder"], calibration, ort_session(decoder32), samples, expected, budget, log
            )
            halves["encoder"] = HalfReport("encoder", targets["encoder"], kind, "INT8 within the accuracy budget")
            if kind == "int8":  # for TensorRT: float16 outside the int8 layers, the decoder included
                small = _fp16_calibration(calibration)
                embedding = PairSession(ort_session(encoder32), None).embed(small["image"])  # type: ignore[arg-type]
                log("  the decoder in float16 (AutoCast, calibrated on float32 embeddings), as smat_int8.onnx's")
                decoder_calibration = embedding | {"prompt": small["prompt"], "state": small["state"]}
                run_isolated("FP16 conversion", fp16.convert_fp16, decoder32, tmp["decoder"], decoder_calibration)
                halves["decoder"] = HalfReport("decoder", targets["decoder"], "fp16", DECODER_FP16)
            else:
                shutil.copyfile(decoder32, tmp["decoder"])
                halves["decoder"] = HalfReport("decoder", targets["decoder"], "float32", DECODER_STAYS_FLOAT)
        seconds = time.perf_counter() - start
        notes = []
        if kind in CPU_ONLY:
            feeds = _speed_feeds(encoder32)
            for role in PAIR_ROLES:
                half = halves[role]
                if half.precision == "float32":
                    continue
                log(
                    f"timing {half.path.name} against {float32_halves[role].name} (ONNX Runtime CPU, {threads} threads)"
                )
                half.speed = time_against(
                    float32_halves[role], tmp[role], feeds[role], precision=kind, rounds=rounds, threads=threads
                )
                if only_where_faster and not pays(half.speed):
                    shutil.copyfile(float32_halves[role], tmp[role])
                    half.precision, half.rewrites = "float32", None
                    half.why = f"kept float32: the {kind} {role} was not faster (time ratio {half.speed['ratio']:.2f})"
        else:
            notes.append(
                f"{kind} pair not timed: it is made for TensorRT on a GPU, and ONNX Runtime's CPU kernels for "
                "its graphs say nothing about that"
            )
        log(f"verifying the {kind} pair end to end against {whole.name} on {len(samples)} samples ({measured_on})")
        pair = PairSession(ort_session(tmp["encoder"], precision=kind), ort_session(tmp["decoder"], precision=kind))
        accuracy = compare(None, pair, [feed for _, feed in samples], expected)  # type: ignore[arg-type]
        _check_gate(kind, accuracy, budget)
        for role in PAIR_ROLES:
            half = halves[role]
            half.size_bytes = tmp[role].stat().st_size
            if kind not in CPU_ONLY and half.precision != "float32":
                written = onnx.load(str(tmp[role]))
                if kind == "int8" and role == "encoder":
                    half.fusion = check_fusion(written)
                    if not half.fusion["passed"]:
                        raise CheckFailed(
                            f"{half.path.name} would not fuse into int8 kernels on TensorRT: "
                            f"{half.fusion['problems'][0]}; nothing was written"
                        )
                half.tensorrt_support = check_tensorrt_support(written)
                if not half.tensorrt_support["passed"]:
                    raise CheckFailed(
                        f"{half.path.name} breaks TensorRT's ONNX support matrix: "
                        f"{half.tensorrt_support['problems'][0]}; nothing was written"
                    )
        manifests = {
            role: _manifest(
                kind,
                halves[role],
                tmp[role],
                float32_halves[role],
                float32_manifests[role],
                calibration,
                seconds,
                accuracy,
                measured_on,
                budget_report,
            )
            for role in PAIR_ROLES
        }
    for role in PAIR_ROLES:  # both files are in place; their manifests follow (each written atomically)
        write_manifest(manifest_path_for(targets[role]), manifests[role])
    return PairVariantReport(kind, halves, seconds, accuracy, measured_on, notes, budget_report)


def _manifest(
    kind: str,
    half: HalfReport,
    written: Path,
    source: Path,
    source_manifest: dict,
    calibration: CalibrationSet,
    seconds: float,
    accuracy: dict,
    measured_on: str,
    budget_report: BudgetReport | None,
) -> dict:
    other = next(role for role in PAIR_ROLES if role != half.role)
    return {
        **{
            k: source_manifest.get(k) for k in ("inputs", "outputs", "dimensions", "source", "model_config", "versions")
        },
        "format": MANIFEST_FORMAT,
        "model": half.path.name,
        "role": half.role,
        "sha256": sha256_of(written),
        "size_bytes": written.stat().st_size,
        "precision": kind,
        "half_precision": half.precision,
        "half_decision": half.why,
        "opset": next(
            o.version
            for o in onnx.load(str(written), load_external_data=False).opset_import
            if o.domain in ("", "ai.onnx")
        ),
        "pair": {
            "role": half.role,
            "partner": pair_file(other, kind),
            "weights_sha256": source_manifest["pair"]["weights_sha256"],
        },
        "derived_from": {"model": source.name, "sha256": sha256_of(source)},
        "calibration": {"directory": str(calibration.directory), "samples": len(calibration), "size": calibration.size},
        "conversion_seconds": round(seconds, 1),
        "accuracy_vs_float32": {**accuracy, "end_to_end": True, "reference": PRECISIONS["float32"].file},
        "accuracy_measured_on": measured_on,
        "speed_vs_float32_cpu": half.speed,
        "cpu_rewrites": half.rewrites,
        "tensorrt_fusion": half.fusion,
        "tensorrt_support": half.tensorrt_support,
        "int8_budget": None if budget_report is None or half.role != "encoder" else budget_report.as_dict(),
    }


__all__ = [
    "PAIR_VARIANT_KINDS",
    "HalfReport",
    "PairScorer",
    "PairSession",
    "PairVariantReport",
    "make_pair_variant",
    "pays",
    "time_against",
]
