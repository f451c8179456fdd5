"""Exported graph against the PyTorch reference: the standard parity cases and their report.

The cases cover what the export must get right: 518x518 (the native position grid), sizes that are
not multiples of 14, H != W (tall and wide), a size where only one side is a multiple of 14 (the
padding quirk), the 14x14 minimum, batch 1 and a batch of 3 mixing automatic and interactive
samples, and every prompt kind. Images are synthetic composites, so nothing is downloaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from smat_deploy import prompts as P
from smat_deploy.data.synthetic import make_composite
from smat_deploy.model import SMat, state_from_prompt

#: The export's parity bound (max absolute alpha difference).
DEFAULT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ParityCase:
    name: str
    image: np.ndarray  # float32 [B,3,H,W]
    prompt: np.ndarray  # float32 [B,1,H,W]
    state: np.ndarray  # float32 [B,1]
    kinds: tuple[str, ...]

    def feed(self) -> dict[str, np.ndarray]:
        return {"image": self.image, "prompt": self.prompt, "state": self.state}


def prompt_from_alpha(alpha: np.ndarray, kind: str) -> list[P.Prompt]:
    """A deterministic prompt of ``kind`` that marks the composite's foreground."""
    solid = alpha > 0.5
    ys, xs = np.nonzero(solid if solid.any() else alpha > 0)
    if kind == "none" or ys.size == 0:
        return []
    centre = (float(np.median(xs)), float(np.median(ys)))
    if kind == "point":
        radius = max(1, min(20, min(alpha.shape) // 4))
        return [P.Point(*centre, radius=radius)]
    if kind == "box":
        return [P.Box(float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1)]
    if kind == "scribble":
        order = np.argsort(xs)
        picks = order[[len(order) // 5, len(order) // 2, (4 * len(order)) // 5]]
        return [P.Scribble(tuple((float(xs[i]), float(ys[i])) for i in picks), width=5)]
    if kind == "mask":
        return [P.Mask(solid.astype(np.float32))]
    raise ValueError(f"unknown prompt kind {kind!r}")


def make_case(name: str, size: tuple[int, int], kinds: tuple[str, ...], seed: int) -> ParityCase:
    """A batch of composites of ``size`` (height, width), one per prompt kind."""
    images, masks = [], []
    for index, kind in enumerate(kinds):
        sample = make_composite(size, seed=seed + index)
        images.append(sample.image.transpose(2, 0, 1))
        masks.append(P.rasterize(prompt_from_alpha(sample.alpha, kind), size)[None])
    prompt = np.stack(masks).astype(np.float32)
    state = state_from_prompt(torch.from_numpy(prompt)).numpy()
    return ParityCase(name, np.stack(images).astype(np.float32), prompt, state, kinds)


def standard_cases() -> list[ParityCase]:
    """Eight cases, seven sizes, every prompt kind, batch 1 and a mixed batch of 3."""
    specs = [
        ("518x518 native grid", (518, 518), ("point",)),
        ("100x130 wide, unaligned", (100, 130), ("none",)),
        ("301x117 tall", (301, 117), ("box",)),
        ("97x403 very wide", (97, 403), ("scribble",)),
        ("280x210 multiples of 14", (280, 210), ("mask",)),
        ("28x45 one side aligned", (28, 45), ("point",)),
        ("14x14 minimum", (14, 14), ("none",)),
        ("150x190 batch 3 mixed", (150, 190), ("none", "point", "box")),
    ]
    return [make_case(name, size, kinds, seed=100 * i) for i, (name, size, kinds) in enumerate(specs)]


@dataclass
class ParityReport:
    tolerance: float
    rows: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(row["pass"] for row in self.rows)

    @property
    def max_abs(self) -> float:
        return max((row["max_abs"] for row in self.rows), default=float("nan"))

    def as_dict(self) -> dict:
        return {"tolerance": self.tolerance, "passed": self.passed, "max_abs": self.max_abs, "cases": self.rows}


def onnx_session(path: str | os.PathLike[str], threads: int | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_parity(
    onnx_path: str | os.PathLike[str] | Path,
    model: SMat,
    cases: list[ParityCase] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ParityReport:
    """Run every case through ONNX Runtime (CPU) and the reference; compare the alphas."""
    session = onnx_session(onnx_path)
    report = ParityReport(tolerance)
    for case in cases if cases is not None else standard_cases():
        exported = session.run(["alpha"], case.feed())[0]
        with torch.inference_mode():
            reference = model(*(torch.from_numpy(a) for a in (case.image, case.prompt, case.state))).numpy()
        diff = np.abs(exported.astype(np.float64) - reference)
        batch, _, height, width = case.image.shape
        report.rows.append(
            {
                "case": case.name,
                "batch": batch,
                "size": f"{height}x{width}",
                "prompts": ",".join(case.kinds),
                "max_abs": float(diff.max()),
                "mean_abs": float(diff.mean()),
                "alpha_std": float(reference.std()),
                "pass": bool(diff.max() <= tolerance and exported.shape == reference.shape),
            }
        )
    return report
