"""How much a photo loses when the engine runs it scaled down: the alpha back at full size, three ways.

For every photo, the engine runs (a) at the photo's full size and, at each scale, on the photo scaled down
(what the size policy does to a photo too large for the memory budget); the scaled alpha comes back to the
photo's size by (b) nearest (the official demo's way), (c) bilinear and (d) guided upsampling from the
full-size photo. Each is scored against the ground-truth alpha where the photo has one (SAD, MSE, Grad,
:mod:`smat_deploy.metrics`) and against (a), the full-size run. The resize, prompt scaling and
upsampling are the very functions :class:`~smat_deploy.runtime.sizing.Rescale` runs.

Scales are fractions of the photo's long side, so a small test photo stands for a large one: a 4000x3000
photo run at 1568 px is scale 0.39, an 8000x6000 one 0.196.

:func:`evaluate_oracle` takes the engine out: the ground-truth alpha itself is scaled down with the photo and
brought back, so the scores are the upsampling's alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smat_deploy import images, metrics
from smat_deploy import prompts as P
from smat_deploy.data.cases import central_region, prompt_from_alpha
from smat_deploy.errors import SmatError
from smat_deploy.runtime import Runtime
from smat_deploy.runtime.sizing import shrink_prompt
from smat_deploy.upsample import UPSAMPLING_METHODS, upsample_alpha

#: What each row compares, in the issue's lettering.
FULL = "full size"
METRICS = ("SAD", "MSE", "Grad")


@dataclass(frozen=True)
class Photo:
    path: Path
    alpha: Path | None  # ground truth, when known


@dataclass
class UpsamplingReport:
    """Per photo and prompt kind, every variant's scores; :meth:`table` averages them per variant."""

    engine: str
    photos: list[dict] = field(default_factory=list)
    scales: list[float] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    def table(self) -> list[dict]:
        """One row per (scale, method), plus the full-size row: mean scores over the photos that have them."""
        keys = dict.fromkeys((row["scale"], row["method"]) for row in self.photos)
        rows = []
        for scale, method in keys:
            mine = [row for row in self.photos if row["scale"] == scale and row["method"] == method]
            truth = [row for row in mine if row["vs_truth"] is not None]
            rows.append(
                {
                    "scale": scale,
                    "method": method,
                    "photos_with_truth": len(truth),
                    **{f"{m}_vs_truth": _mean([row["vs_truth"][m] for row in truth]) for m in METRICS},
                    "photos": len(mine),
                    **{f"{m}_vs_full": _mean([row["vs_full"][m] for row in mine if row["vs_full"]]) for m in METRICS},
                }
            )
        return rows

    def as_dict(self) -> dict:
        return {
            "engine": self.engine,
            "scales": self.scales,
            "prompt_kinds": self.kinds,
            "table": self.table(),
            "photos": self.photos,
        }


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _scores(alpha: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {name: metrics.matting_metrics(alpha, truth)[name] for name in METRICS}


def scaled_run(
    runtime: Runtime, photo: np.ndarray, mask: np.ndarray, scale: float
) -> tuple[tuple[int, int], dict[str, np.ndarray]]:
    """Run ``photo`` scaled to ``scale`` of its long side; the alpha back at full size by every method."""
    height, width = photo.shape[:2]
    run_size = images.scaled_size(height, width, max(14, round(max(height, width) * scale)))
    small = images.resize_image(photo, run_size)
    small_mask = shrink_prompt(mask, run_size)
    state = float(mask.any())
    alpha = np.asarray(runtime(small, small_mask, state))
    back = {
        method: upsample_alpha(alpha, (height, width), method, small=small, full=photo) for method in UPSAMPLING_METHODS
    }
    return run_size, back


def evaluate_oracle(photos: Sequence[Photo], scales: Sequence[float], progress: Callable[[], None] = lambda: None):
    """Each photo's ground truth scaled down with the photo (as the engine's input is) and brought back by every
    method, scored against itself: what the upsampling loses when the engine's scaled alpha were perfect."""
    report = UpsamplingReport("ground truth (oracle)", scales=list(scales), kinds=["-"])
    for item in photos:
        if item.alpha is None:
            continue
        photo, truth = images.load_image(item.path), images.load_mask_image(item.alpha)
        height, width = truth.shape
        base = {"photo": item.path.name, "kind": "-", "size": [width, height]}
        for scale in _checked(scales):
            run_size = images.scaled_size(height, width, max(14, round(max(height, width) * scale)))
            small = images.resize_image(photo, run_size)
            small_truth = images.resize_image(np.repeat(truth[..., None], 3, -1), run_size)[..., 0]
            for method in UPSAMPLING_METHODS:
                alpha = upsample_alpha(small_truth, (height, width), method, small=small, full=photo)
                report.photos.append(
                    {
                        **base,
                        "scale": scale,
                        "method": method,
                        "run_size": [run_size[1], run_size[0]],
                        "vs_truth": _scores(alpha, truth),
                        "vs_full": None,
                    }
                )
            progress()
    if not report.photos:
        raise SmatError("the oracle needs photos with a ground-truth alpha")
    return report


def _checked(scales: Sequence[float]) -> Sequence[float]:
    if any(not 0 < scale < 1 for scale in scales):
        raise SmatError(f"--scales must lie strictly between 0 and 1, got {', '.join(map(str, scales))}")
    return scales


def evaluate_upsampling(
    runtime: Runtime,
    photos: Sequence[Photo],
    scales: Sequence[float],
    kinds: Sequence[str] = ("none", "box"),
    progress: Callable[[], None] = lambda: None,
) -> UpsamplingReport:
    """The full-size run and every scale x method on every photo and prompt kind (see the module's text)."""
    if not photos:
        raise SmatError("no photos to evaluate")
    _checked(scales)
    report = UpsamplingReport(str(runtime.backend.source), scales=list(scales), kinds=list(kinds))
    for item in photos:
        photo = images.load_image(item.path)
        truth = None if item.alpha is None else images.load_mask_image(item.alpha)
        for kind in kinds:
            source = truth if truth is not None else central_region(*photo.shape[:2])
            mask = P.rasterize(prompt_from_alpha(source, kind), photo.shape[:2])
            full = np.clip(runtime(photo, mask, float(mask.any())), 0.0, 1.0)  # float32 can end a hair above 1
            progress()
            base = {"photo": item.path.name, "kind": kind, "size": [photo.shape[1], photo.shape[0]]}
            report.photos.append(
                {
                    **base,
                    "scale": 1.0,
                    "method": FULL,
                    "run_size": base["size"],
                    "vs_truth": None if truth is None else _scores(full, truth),
                    "vs_full": None,
                }
            )
            for scale in scales:
                run_size, back = scaled_run(runtime, photo, mask, scale)
                progress()
                for method, alpha in back.items():
                    report.photos.append(
                        {
                            **base,
                            "scale": scale,
                            "method": method,
                            "run_size": [run_size[1], run_size[0]],
                            "vs_truth": None if truth is None else _scores(alpha, truth),
                            "vs_full": _scores(alpha, full),
                        }
                    )
    return report
