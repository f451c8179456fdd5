"""Each term of the objective against hand-computed numbers and an independent numpy pyramid."""

import numpy as np
import pytest
import torch

from smat_deploy.errors import SmatError
from smat_deploy.train.losses import (
    laplacian_loss,
    laplacian_pyramid,
    matting_loss,
    separate_l1_loss,
    trimap_from_alpha,
)


def t(array) -> torch.Tensor:
    """``HxW`` (or ``BxHxW``) list/array -> float32 ``[B,1,H,W]``."""
    x = torch.tensor(np.asarray(array, dtype=np.float32))
    return x.reshape(-1, 1, *x.shape[-2:])


PRED = [[0.2, 0.9], [0.5, 0.0]]
GT = [[0.0, 1.0], [0.3, 0.0]]


def test_trimap_from_alpha_follows_the_authors_thresholds():
    alpha = t([[0.0, 0.1, 0.79, 0.8, 1.0]])
    assert trimap_from_alpha(alpha).flatten().tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]


def test_separate_l1_with_the_alpha_derived_trimap():
    # trimap >= 0.5 is alpha > 0: pixels (0,1) and (1,0), errors 0.1 and 0.2 -> mean 0.15.
    # Outside: (0,0) and (1,1), errors 0.2 and 0.0 -> mean 0.1. Sum 0.25.
    loss = separate_l1_loss(t(PRED), t(GT), trimap_from_alpha(t(GT)))
    assert loss.item() == pytest.approx(0.25, abs=1e-6)


def test_separate_l1_thresholds_any_map_at_one_half():
    # Map = the alpha itself: only (0,1) reaches 0.5 -> 0.1; outside (0.2 + 0.2 + 0.0) / 3.
    loss = separate_l1_loss(t(PRED), t(GT), t(GT))
    assert loss.item() == pytest.approx(0.1 + 0.4 / 3, abs=1e-6)


def test_separate_l1_pools_each_region_over_the_batch():
    # Sample 0: one foreground pixel with error 0.4; sample 1: three foreground pixels with error 0.
    # Pooled foreground mean = 0.4 / 4 = 0.1 (a mean of per-sample means would give 0.2).
    # Background: 3 + 1 pixels, all exact -> 0.
    gt = [[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 0.0]]]
    pred = [[[0.6, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 0.0]]]
    assert separate_l1_loss(t(pred), t(gt), t(gt)).item() == pytest.approx(0.1, abs=1e-6)


def test_an_empty_region_contributes_zero_and_keeps_the_gradient():
    pred = t([[0.2, 0.4], [0.1, 0.5]]).requires_grad_()
    loss = separate_l1_loss(pred, torch.zeros_like(pred), trimap_from_alpha(torch.zeros_like(pred)))
    assert loss.item() == pytest.approx(0.3, abs=1e-6)  # background mean only
    loss.backward()
    assert torch.allclose(pred.grad, torch.full_like(pred, 0.25))


def test_separate_l1_refuses_mismatched_shapes():
    with pytest.raises(SmatError, match="differ in shape"):
        separate_l1_loss(t(PRED), t([[0.0, 1.0]]), t(PRED))


def test_laplacian_of_a_single_spike_by_hand():
    # 4x4 image with a 1 in the corner, one level. Everything is separable, so work in 1D with
    # u = [1, 0, 0, 0] and the kernel [1, 4, 6, 4, 1] / 16:
    #   reflect pad 2 -> [0, 0, 1, 0, 0, 0, 0, 0]; blur -> [6, 4, 1, 0] / 16; keep even -> [6, 1] / 16
    #   expand (x2 per axis) -> [12, 0, 2, 0] / 16; reflect pad -> [2, 0, 12, 0, 2, 0, 2, 0] / 16
    #   blur -> w = [4.75, 3.5, 1.625, 1] / 16
    # Level 0 = delta - outer(w, w); its mean |.| = ((1 - w0^2) + (sum(w)^2 - w0^2)) / 16.
    w = np.array([4.75, 3.5, 1.625, 1.0]) / 16
    expected = ((1 - w[0] ** 2) + (w.sum() ** 2 - w[0] ** 2)) / 16  # 0.0803565979...
    spike = torch.zeros(1, 1, 4, 4)
    spike[..., 0, 0] = 1
    assert laplacian_loss(spike, torch.zeros_like(spike), levels=1).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.0803565979, rel=1e-8)


def _numpy_laplacian_loss(pred: np.ndarray, true: np.ndarray, levels: int = 5) -> float:
    """Written from the definition with explicit loops, sharing no code with the package."""
    kernel = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256.0

    def blur(img):
        padded = np.pad(img, 2, mode="reflect")
        out = np.zeros_like(img)
        for dy in range(5):
            for dx in range(5):
                out += kernel[dy, dx] * padded[dy : dy + img.shape[0], dx : dx + img.shape[1]]
        return out

    def pyramid(img):
        levels_out, current = [], img
        for _ in range(levels):
            current = current[: current.shape[0] // 2 * 2, : current.shape[1] // 2 * 2]
            down = blur(current)[::2, ::2]
            up = np.zeros_like(current)
            up[::2, ::2] = 4 * down
            levels_out.append(current - blur(up))
            current = down
        return levels_out

    return float(
        sum(2**k * np.abs(p - q).mean() for k, (p, q) in enumerate(zip(pyramid(pred), pyramid(true), strict=True)))
        / levels
    )


@pytest.mark.parametrize("shape", [(64, 64), (70, 90), (112, 112)])
def test_five_level_laplacian_equals_an_independent_numpy_pyramid(shape):
    rng = np.random.default_rng(sum(shape))
    pred, true = rng.random(shape), (rng.random(shape) > 0.5).astype(np.float64)
    got = laplacian_loss(torch.tensor(pred)[None, None], torch.tensor(true)[None, None]).item()
    assert got == pytest.approx(_numpy_laplacian_loss(pred, true), rel=1e-9)


def test_laplacian_is_blind_to_a_constant_offset_that_separate_l1_sees():
    alpha = torch.rand(2, 1, 64, 64, dtype=torch.float64)
    alpha[..., :32] = 0  # a background region, so both terms of separate L1 see the offset
    assert laplacian_loss(alpha + 0.25, alpha).item() == pytest.approx(0.0, abs=1e-12)
    assert separate_l1_loss(alpha + 0.25, alpha, trimap_from_alpha(alpha)).item() == pytest.approx(0.5)


def test_pyramid_levels_halve_and_crop_odd_sizes():
    shapes = [tuple(level.shape[-2:]) for level in laplacian_pyramid(torch.rand(1, 1, 70, 90))]
    assert shapes == [(70, 90), (34, 44), (16, 22), (8, 10), (4, 4)]


def test_laplacian_refuses_images_too_small_for_five_levels():
    with pytest.raises(SmatError, match="at least 64x64"):
        laplacian_loss(torch.rand(1, 1, 56, 56), torch.rand(1, 1, 56, 56))


def test_matting_loss_is_the_sum_of_its_terms():
    pred, gt = torch.rand(2, 1, 64, 64), (torch.rand(2, 1, 64, 64) > 0.5).float()
    losses = matting_loss(pred, gt)
    assert losses.total.item() == pytest.approx(losses.separate_l1.item() + losses.laplacian.item(), rel=1e-6)
    assert losses.separate_l1.item() == pytest.approx(separate_l1_loss(pred, gt, trimap_from_alpha(gt)).item())
    assert losses.laplacian.item() == pytest.approx(laplacian_loss(pred, gt).item())
