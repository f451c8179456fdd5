"""The SMat training objective: foreground/background-separated L1 plus a 5-level Laplacian loss.

``loss = separate_l1 + laplacian`` (the seed's eq. 4; the authors' criterion lists
``unknown_l1_loss``, ``known_l1_loss`` and ``loss_pha_laplacian`` with weight 1 each).

Separate L1. The authors build a binary ``sample_map = trimap >= 0.5`` and take one masked L1 inside
it and one outside it, each rescaled by ``batch * 200704 / pixel count``. Their L1 is a mean over
every pixel of the batch, so each term is the mean of ``|pred - gt|`` over the region's pixels times
``200704 / (H * W)``; 200704 is 448 x 448, their crop, where the factor is exactly 1. Here each term is
the plain masked mean, pooled over the batch, which is the same number at 448 px and does not change
scale with the crop size. An empty region contributes 0 (the authors do that for the outer region).

Which map. Without annotated trimaps the authors derive one from the alpha (:func:`trimap_from_alpha`:
0 where alpha is 0, 1 where alpha >= 0.8, 0.5 in between), so ``trimap >= 0.5`` is every pixel with
any foreground (``alpha > 0``): the first term covers the object and its whole soft boundary, the second
the pure background. :func:`separate_l1_loss` takes any map and thresholds it at 0.5, so passing the alpha
itself gives the "alpha >= 0.5" split instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from smat_deploy.errors import SmatError

#: Levels of the Laplacian pyramid (official value).
LAPLACIAN_LEVELS = 5
#: Above this alpha the authors' derived trimap marks definite foreground.
TRIMAP_FOREGROUND = 0.8
_BINOMIAL = (1.0, 4.0, 6.0, 4.0, 1.0)


@dataclass(frozen=True)
class MattingLosses:
    """The objective and its parts (scalars); ``total`` carries the gradient."""

    total: torch.Tensor
    separate_l1: torch.Tensor
    laplacian: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {
            "loss": float(self.total.detach()),
            "separate_l1": float(self.separate_l1.detach()),
            "laplacian": float(self.laplacian.detach()),
        }


def trimap_from_alpha(alpha: torch.Tensor) -> torch.Tensor:
    """The authors' alpha-derived trimap: 0 background (alpha <= 0), 1 where alpha >= 0.8, 0.5 elsewhere."""
    trimap = torch.full_like(alpha, 0.5)
    trimap[alpha >= TRIMAP_FOREGROUND] = 1.0
    trimap[alpha <= 0] = 0.0
    return trimap


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    count = mask.sum()
    if count == 0:
        return values.sum() * 0.0  # keeps the graph (and dtype/device) with a zero contribution
    return (values * mask).sum() / count


def separate_l1_loss(pred: torch.Tensor, target: torch.Tensor, region_map: torch.Tensor) -> torch.Tensor:
    """Mean ``|pred - target|`` where ``region_map >= 0.5`` plus the mean where it is below, pooled over the batch."""
    if pred.shape != target.shape or region_map.shape != target.shape:
        raise SmatError(
            f"loss inputs differ in shape: pred {list(pred.shape)}, target {list(target.shape)}, "
            f"region map {list(region_map.shape)}"
        )
    error = (pred - target).abs()
    inside = (region_map >= 0.5).to(error.dtype)
    return _masked_mean(error, inside) + _masked_mean(error, 1.0 - inside)


def gaussian_kernel(dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
    """``[1,1,5,5]`` kernel ``[1,4,6,4,1]^T [1,4,6,4,1] / 256``."""
    row = torch.tensor(_BINOMIAL, dtype=dtype, device=device)
    return (torch.outer(row, row) / 256.0)[None, None]


def _blur(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    batch, channels, height, width = image.shape
    flat = F.pad(image.reshape(batch * channels, 1, height, width), (2, 2, 2, 2), mode="reflect")
    return F.conv2d(flat, kernel).reshape(batch, channels, height, width)


def laplacian_pyramid(image: torch.Tensor, levels: int = LAPLACIAN_LEVELS) -> list[torch.Tensor]:
    """Band-pass levels, finest first: crop to even size, blur + take every 2nd pixel, expand back, subtract.

    Expanding puts the coarse pixels (times 4, to keep the mean) on the even positions of a zero image
    and blurs it with the same kernel.
    """
    kernel = gaussian_kernel(image.dtype, image.device)
    pyramid = []
    current = image
    for level in range(levels):
        height, width = current.shape[-2:]
        current = current[..., : height - height % 2, : width - width % 2]
        if min(current.shape[-2:]) < 4:
            raise SmatError(
                f"the {levels}-level Laplacian loss needs at least 64x64 pixels; level {level} of "
                f"{image.shape[-2]}x{image.shape[-1]} is only {current.shape[-2]}x{current.shape[-1]}"
            )
        down = _blur(current, kernel)[..., ::2, ::2]
        up = torch.zeros_like(current)
        up[..., ::2, ::2] = down * 4.0
        pyramid.append(current - _blur(up, kernel))
        current = down
    return pyramid


def laplacian_loss(pred: torch.Tensor, target: torch.Tensor, levels: int = LAPLACIAN_LEVELS) -> torch.Tensor:
    """``mean over levels k of 2^k * mean |L_k(pred) - L_k(target)|``, ``k = 0`` the finest level."""
    pred_levels = laplacian_pyramid(pred, levels)
    target_levels = laplacian_pyramid(target, levels)
    total = sum(
        (2.0**k) * (p - t).abs().mean() for k, (p, t) in enumerate(zip(pred_levels, target_levels, strict=True))
    )
    return total / levels


def matting_loss(pred: torch.Tensor, target: torch.Tensor, region_map: torch.Tensor | None = None) -> MattingLosses:
    """The full objective; ``region_map`` defaults to the authors' alpha-derived trimap."""
    if region_map is None:
        region_map = trimap_from_alpha(target)
    separate = separate_l1_loss(pred, target, region_map)
    laplacian = laplacian_loss(pred, target)
    return MattingLosses(separate + laplacian, separate, laplacian)
