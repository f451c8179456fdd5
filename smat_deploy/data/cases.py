"""The project's input factory: contract-shaped cases made from synthetic composites, with prompts from alpha.

Every stage that needs inputs without a photo uses these: the export's parity cases (518x518, the
native position grid; sizes that are not multiples of 14; H != W; a size where only one side is a
multiple of 14, the padding quirk; the 14x14 minimum; batch 1 and a batch of 3 mixing automatic and
interactive samples; every prompt kind), calibration, the INT8 gate and the benchmarks. Nothing is
downloaded, and nothing here needs PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smat_deploy import prompts as P
from smat_deploy.data.synthetic import make_composite


def central_region(height: int, width: int) -> np.ndarray:
    """The middle 40 % of each side: where a photo's subject usually is (prompts for photos without an alpha)."""
    region = np.zeros((height, width), np.float32)
    region[round(height * 0.3) : round(height * 0.7), round(width * 0.3) : round(width * 0.7)] = 1
    return region


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
    state = (prompt != 0).reshape(len(kinds), -1).any(axis=1, keepdims=True).astype(np.float32)
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
