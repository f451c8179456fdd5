"""Procedural composites with exact ground-truth alpha.

A foreground (a soft-edged blob with thin hair-like strands) is composited over a textured
background: ``image = alpha * foreground + (1 - alpha) * background``. Everything is generated from a
seed, so the same seed always gives the same sample, with no files and no downloads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from smat_deploy.data.dataset import MattingSample, SkipReport
from smat_deploy.errors import SmatError


@dataclass(frozen=True)
class Composite:
    image: np.ndarray  # float32 HxWx3 in [0, 1]
    alpha: np.ndarray  # float32 HxW in [0, 1]
    foreground: np.ndarray  # float32 HxWx3
    background: np.ndarray  # float32 HxWx3


def _smooth_noise(rng: np.random.Generator, size: tuple[int, int], sigma: float) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(size), sigma)
    return (noise - noise.min()) / (np.ptp(noise) + 1e-12)


def textured_background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Smooth colour fields plus stripes and fine grain: structure at several scales."""
    height, width = size
    base = np.stack([_smooth_noise(rng, size, sigma=rng.uniform(8, 40)) for _ in range(3)], axis=-1)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    angle = rng.uniform(0, np.pi)
    stripes = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * rng.uniform(0.05, 0.3))
    grain = rng.uniform(0, 1, size)
    palette = rng.uniform(0.1, 0.9, (3, 3))
    image = (
        0.6 * base @ palette / palette.sum(0).max() + 0.25 * stripes[..., None] * palette[0] + 0.1 * grain[..., None]
    )
    return np.clip(image, 0, 1).astype(np.float32)


def foreground_alpha(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A blob with a soft (blurred) boundary and a few thin strands reaching out of it."""
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    cy, cx = rng.uniform(0.35, 0.65) * height, rng.uniform(0.35, 0.65) * width
    ry, rx = rng.uniform(0.18, 0.32) * height, rng.uniform(0.18, 0.32) * width
    angle = np.arctan2(yy - cy, xx - cx)
    wobble = 1 + 0.15 * _smooth_noise(rng, (1, 64), 4)[0][((angle + np.pi) / (2 * np.pi) * 63).astype(int)]
    radius = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) / wobble
    alpha = np.clip((1.0 - radius) * rng.uniform(6, 20), 0, 1)
    strands = np.zeros(size)
    for _ in range(int(rng.integers(6, 16))):
        theta = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.15, 0.35) * min(size)
        start = np.array([cy + ry * 0.8 * np.sin(theta), cx + rx * 0.8 * np.cos(theta)])
        curl = rng.uniform(-0.02, 0.02)
        for step in np.linspace(0, length, int(length * 2)):
            theta_s = theta + curl * step
            y, x = (start + step * np.array([np.sin(theta_s), np.cos(theta_s)])).astype(int)
            if 0 <= y < height and 0 <= x < width:
                strands[y, x] = max(strands[y, x], rng.uniform(0.5, 1.0))
    strands = ndimage.gaussian_filter(strands, 0.6) * 2.5
    return np.clip(np.maximum(ndimage.gaussian_filter(alpha, 1.0), strands), 0, 1).astype(np.float32)


def make_composite(size: tuple[int, int] = (448, 448), seed: int = 0) -> Composite:
    """One deterministic composite of ``size`` (height, width)."""
    rng = np.random.default_rng(seed)
    alpha = foreground_alpha(rng, size)
    foreground = textured_background(rng, size) * 0.5 + rng.uniform(0.2, 0.6, 3).astype(np.float32)
    foreground = np.clip(foreground, 0, 1).astype(np.float32)
    background = textured_background(rng, size)
    image = alpha[..., None] * foreground + (1 - alpha[..., None]) * background
    return Composite(image.astype(np.float32), alpha, foreground, background)


#: Held-out composites use seeds from here on; training sets use seeds ``0..N-1``, so they never overlap.
HELDOUT_FIRST_SEED = 1_000_000
_CACHE_BYTES = 256 * 2**20


class SyntheticComposites:
    """``count`` composites of ``size x size`` pixels with seeds ``first_seed .. first_seed + count - 1``.

    A training dataset without files. Composites are generated on first use and kept in memory up to
    about 256 MiB, because generating one costs about as much as a tenth of a training step.
    """

    #: Composites are made at the training size with the object in view: crops only mirror them.
    default_max_zoom = 1.0

    def __init__(self, count: int, size: int, first_seed: int = 0) -> None:
        if count < 1:
            raise SmatError(f"need at least one synthetic composite, got {count}")
        if first_seed < HELDOUT_FIRST_SEED < first_seed + count:
            raise SmatError(f"synthetic training seeds must stay below {HELDOUT_FIRST_SEED} (the held-out composites)")
        self.count, self.size, self.first_seed = count, size, first_seed
        self.skipped = SkipReport()  # generated samples are never bad; kept for the dataset interface
        self._cache: dict[int, MattingSample] = {}
        self._cache_limit = max(1, _CACHE_BYTES // (size * size * 4 * 4))

    def __len__(self) -> int:
        return self.count

    def load(self, index: int) -> MattingSample:
        if not 0 <= index < self.count:
            raise IndexError(f"composite {index} out of range 0..{self.count - 1}")
        if index in self._cache:
            return self._cache[index]
        seed = self.first_seed + index
        composite = make_composite((self.size, self.size), seed=seed)
        sample = MattingSample(composite.image, composite.alpha, f"synthetic-{seed}")
        if len(self._cache) < self._cache_limit:
            self._cache[index] = sample
        return sample

    def describe(self) -> str:
        return f"{self.count} synthetic composites ({self.size}x{self.size}, seeds {self.first_seed}+)"
