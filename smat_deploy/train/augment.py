"""Bringing a sample of any size to the square training size: random crop, zoom and flip.

The crop is taken in source pixels and then resized, so a large photo is never resized as a whole.
Image and alpha go through the same crop, resize (bilinear, antialiased when shrinking) and flip, so
they stay aligned; a sample that already has the training size and no zoom keeps its exact alpha.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from smat_deploy.data.dataset import MattingSample


def _resize(array: np.ndarray, size: int) -> np.ndarray:
    """``HxWxC`` float32 -> ``size x size x C``."""
    if array.shape[:2] == (size, size):
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None]
    shrinking = min(array.shape[:2]) > size
    resized = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)
    return resized[0].permute(1, 2, 0).numpy()


def random_square_crop(
    sample: MattingSample, size: int, rng: np.random.Generator, max_zoom: float = 1.5
) -> tuple[np.ndarray, np.ndarray]:
    """A random ``size x size`` view of the sample: ``(image HxWx3, alpha HxW)``, float32.

    The view's side in source pixels is the short side divided by a zoom drawn from ``[1, max_zoom]``,
    so with ``max_zoom = 1`` it spans the whole short side (the object stays in view, which automatic
    mode needs), and larger zooms show details at a higher resolution. Half of the views are mirrored.
    """
    height, width = sample.alpha.shape
    zoom = float(rng.uniform(1.0, max_zoom)) if max_zoom > 1.0 else 1.0
    side = max(1, min(height, width, round(min(height, width) / zoom)))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    stacked = np.concatenate([sample.image, sample.alpha[..., None]], axis=-1)[top : top + side, left : left + side]
    stacked = _resize(stacked.astype(np.float32), size)
    if rng.random() < 0.5:
        stacked = stacked[:, ::-1]
    stacked = np.clip(stacked, 0.0, 1.0)
    return np.ascontiguousarray(stacked[..., :3]), np.ascontiguousarray(stacked[..., 3])
