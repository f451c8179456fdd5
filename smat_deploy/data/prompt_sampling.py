"""Training prompts sampled from the ground-truth alpha, following the authors' conventions.

The authors' training pipeline first binarises the alpha (``foreground = alpha > 0.2``) and derives
every prompt from that mask:
- point: 1 to 3 clicks on random foreground pixels, each a ``(2r+1) x (2r+1)`` square, ``r = 20``;
- box: the bounding box of the foreground, filled;
- scribble: a cubic B-spline through 3 or 4 random foreground pixels, kept only if it stays on the
  foreground (a few retries), drawn 5 px wide (their 5x5 dilation);
- none: all zeros, i.e. automatic mode (the target is then the salient object).
Their training set has no mask prompts; here a mask prompt is the foreground itself, grown or shrunk
by a few pixels so that the network cannot copy it as the answer.

When the foreground is empty (a crop that misses the object), every kind falls back to ``none``, as
the authors' generators do by returning an all-zero map. Rasterisation reuses
:mod:`smat_deploy.prompts`, so training and inference draw prompts the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from smat_deploy import prompts as P
from smat_deploy.errors import SmatError
from smat_deploy.prompts import PromptKind

#: ``alpha > FOREGROUND_THRESHOLD`` is the foreground prompts are drawn from (authors' value).
FOREGROUND_THRESHOLD = 0.2
#: Clicks per point prompt during training (authors: ``randint(1, 4)``, i.e. 1-3).
MAX_TRAINING_POINTS = 3
#: Scribble control points (authors: ``randint(3, 4)``) and retries before accepting a stroke that leaves the object.
SCRIBBLE_CONTROL_POINTS = (3, 4)
SCRIBBLE_RETRIES = 20
#: Largest grow/shrink, in pixels, applied to a mask prompt.
MASK_PERTURBATION = 4

ALL_KINDS: tuple[PromptKind, ...] = tuple(PromptKind)


def parse_kinds(text: str) -> tuple[PromptKind, ...]:
    """``"none,point,box"`` -> kinds; an unknown name is a :class:`SmatError` listing the valid ones."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    valid = ", ".join(k.value for k in ALL_KINDS)
    if not names:
        raise SmatError(f"no prompt kinds given (choose from {valid})")
    unknown = [n for n in names if n not in {k.value for k in ALL_KINDS}]
    if unknown:
        raise SmatError(f"unknown prompt kind(s) {', '.join(unknown)} (choose from {valid})")
    return tuple(dict.fromkeys(PromptKind(n) for n in names))


def foreground_mask(alpha: np.ndarray) -> np.ndarray:
    return alpha > FOREGROUND_THRESHOLD


def sample_points(foreground: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.nonzero(foreground)
    count = min(len(ys), int(rng.integers(1, MAX_TRAINING_POINTS + 1)))
    chosen = rng.choice(len(ys), size=count, replace=False)
    return P.rasterize_points([P.Point(float(xs[i]), float(ys[i])) for i in chosen], foreground.shape)


def sample_box(foreground: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(foreground)
    return P.rasterize_box(P.Box(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), foreground.shape)


def bspline(control: np.ndarray, samples_per_span: int = 32) -> np.ndarray:
    """Uniform cubic B-spline through ``control`` (``[N,2]``), end points repeated so the curve starts and ends on them.

    Each span mixes four neighbouring control points with the cubic B-spline basis; tripling the end
    points makes the curve interpolate them, so a stroke runs from the first to the last control point.
    """
    padded = np.concatenate([control[:1], control[:1], control, control[-1:], control[-1:]])
    t = np.linspace(0.0, 1.0, samples_per_span, endpoint=False)[:, None]
    basis = (
        np.concatenate([(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3], axis=1) / 6.0
    )  # [S, 4]
    spans = [basis @ padded[i : i + 4] for i in range(len(padded) - 3)]
    return np.concatenate([*spans, control[-1:]], axis=0)


def sample_scribble(foreground: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.nonzero(foreground)
    height, width = foreground.shape
    curve = np.zeros((0, 2))
    for _ in range(SCRIBBLE_RETRIES):
        count = int(rng.integers(SCRIBBLE_CONTROL_POINTS[0], SCRIBBLE_CONTROL_POINTS[1] + 1))
        chosen = rng.choice(len(ys), size=count)
        curve = bspline(np.stack([xs[chosen], ys[chosen]], axis=1).astype(np.float64))
        cols = np.clip(np.rint(curve[:, 0]).astype(int), 0, width - 1)
        rows = np.clip(np.rint(curve[:, 1]).astype(int), 0, height - 1)
        if foreground[rows, cols].all():
            break
    return P.rasterize_scribble(P.Scribble(tuple(map(tuple, curve))), foreground.shape)


def sample_mask(foreground: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    steps = int(rng.integers(-MASK_PERTURBATION, MASK_PERTURBATION + 1))
    if steps > 0:
        mask = ndimage.binary_dilation(foreground, iterations=steps)
    elif steps < 0:
        mask = ndimage.binary_erosion(foreground, iterations=-steps)
        if not mask.any():  # a thin object vanishes under erosion: keep it as it is
            mask = foreground
    else:
        mask = foreground
    return mask.astype(np.float32)


def sample_prompt(alpha: np.ndarray, kind: PromptKind | str, rng: np.random.Generator) -> np.ndarray:
    """One prompt of ``kind`` drawn from ``alpha`` (``HxW`` in [0, 1]) as a float32 ``HxW`` mask of 0 and 1."""
    kind = PromptKind(kind)
    foreground = foreground_mask(alpha)
    if kind is PromptKind.NONE or not foreground.any():
        return np.zeros(alpha.shape, dtype=np.float32)
    if kind is PromptKind.POINT:
        return sample_points(foreground, rng)
    if kind is PromptKind.BOX:
        return sample_box(foreground)
    if kind is PromptKind.SCRIBBLE:
        return sample_scribble(foreground, rng)
    return sample_mask(foreground, rng)


def sample_kinds(kinds: Sequence[PromptKind], count: int, rng: np.random.Generator) -> list[PromptKind]:
    """``count`` kinds drawn uniformly from ``kinds``: one batch mixes automatic and interactive samples."""
    return [kinds[int(i)] for i in rng.integers(len(kinds), size=count)]
