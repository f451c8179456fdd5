"""Guided upsampling and the resizes it rests on, against independent references: PyTorch's interpolation,
window means and a guided filter computed pixel by pixel, and the ground-truth alphas of real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from smat_deploy import images, metrics
from smat_deploy.data.synthetic import make_composite
from smat_deploy.errors import SmatError
from smat_deploy.upsample import GuidedUpsampler, _box_mean, resize_bilinear, resize_nearest, upsample_alpha

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("source, target", [((7, 9), (20, 31)), ((30, 40), (13, 17)), ((5, 5), (5, 12))])
def test_bilinear_is_pytorchs_bilinear_with_pixel_centres_aligned(source, target):
    values = RNG.random((*source, 3), dtype=np.float32)
    expected = F.interpolate(
        torch.from_numpy(values).permute(2, 0, 1)[None], size=target, mode="bilinear", align_corners=False
    )[0].permute(1, 2, 0)
    np.testing.assert_allclose(resize_bilinear(values, target), expected.numpy(), atol=1e-5)  # float32 weights
    np.testing.assert_allclose(resize_bilinear(values[..., 0], target), expected.numpy()[..., 0], atol=1e-5)


@pytest.mark.parametrize("source, target", [((7, 9), (20, 31)), ((30, 40), (13, 17))])
def test_nearest_is_pytorchs_nearest(source, target):
    values = RNG.random(source, dtype=np.float32)
    expected = F.interpolate(torch.from_numpy(values)[None, None], size=target, mode="nearest")[0, 0]
    np.testing.assert_array_equal(resize_nearest(values, target), expected.numpy())


@pytest.mark.parametrize("radius", [1, 2, 5])
def test_window_means_are_clipped_window_averages(radius):
    values = RNG.random((2, 9, 13))  # channels first
    expected = np.empty_like(values)
    for y in range(9):
        for x in range(13):
            window = values[:, max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1]
            expected[:, y, x] = window.reshape(2, -1).mean(axis=1)
    np.testing.assert_allclose(_box_mean(values, radius), expected, atol=1e-12)
    np.testing.assert_allclose(_box_mean(values[0], radius), expected[0], atol=1e-12)
    assert _box_mean(values.astype(np.float32), radius, np.float32).dtype == np.float32


def _naive_guided(small, alpha, full, radius, eps):
    """The fast guided filter written out pixel by pixel: a ridge fit per window, averaged, applied at full size."""
    height, width = alpha.shape
    slopes, offsets = np.zeros((height, width, 3)), np.zeros((height, width))
    for y in range(height):
        for x in range(width):
            rows, cols = slice(max(0, y - radius), y + radius + 1), slice(max(0, x - radius), x + radius + 1)
            guide, target = small[rows, cols].reshape(-1, 3).astype(np.float64), alpha[rows, cols].reshape(-1)
            mean_guide, mean_target = guide.mean(0), target.mean()
            covariance = (guide - mean_guide).T @ (guide - mean_guide) / len(guide)
            cross = (guide - mean_guide).T @ (target - mean_target) / len(guide)
            slopes[y, x] = np.linalg.solve(covariance + eps * np.eye(3), cross)
            offsets[y, x] = mean_target - slopes[y, x] @ mean_guide
    model = np.concatenate([slopes, offsets[..., None]], -1)
    averaged = np.empty_like(model)
    for y in range(height):
        for x in range(width):
            rows, cols = slice(max(0, y - radius), y + radius + 1), slice(max(0, x - radius), x + radius + 1)
            averaged[y, x] = model[rows, cols].reshape(-1, 4).mean(0)
    up = resize_bilinear(averaged.astype(np.float32), full.shape[:2])
    return np.clip((up[..., :3] * full).sum(-1) + up[..., 3], 0, 1)


@pytest.mark.parametrize("radius, eps", [(1, 1e-4), (2, 1e-2)])
def test_the_guided_filter_is_the_pixel_by_pixel_definition(radius, eps):
    full = RNG.random((40, 52, 3), dtype=np.float32)
    small = images.resize_image(full, (10, 13))
    alpha = RNG.random((10, 13), dtype=np.float32)
    expected = _naive_guided(small, alpha, full, radius, eps)
    result = GuidedUpsampler(small, full, radius, eps)(alpha)
    assert result.shape == (40, 52) and result.dtype == np.float32
    np.testing.assert_allclose(result, expected, atol=2e-4)


def test_an_alpha_that_is_a_linear_function_of_colour_is_recovered_at_full_size():
    full = RNG.random((64, 80, 3), dtype=np.float32)
    small = images.resize_image(full, (16, 20))
    weights, offset = np.array([0.3, -0.2, 0.5], np.float32), 0.2
    alpha_small = small @ weights + offset
    result = GuidedUpsampler(small, full, radius=2, eps=1e-8)(alpha_small)
    np.testing.assert_allclose(result, np.clip(full @ weights + offset, 0, 1), atol=2e-3)


def test_a_constant_alpha_stays_constant_and_the_output_is_clipped():
    full = RNG.random((30, 30, 3), dtype=np.float32)
    small = images.resize_image(full, (10, 10))
    upsampler = GuidedUpsampler(small, full)
    np.testing.assert_allclose(upsampler(np.full((10, 10), 0.25, np.float32)), 0.25, atol=1e-5)
    extreme = upsampler((RNG.random((10, 10)) > 0.5).astype(np.float32) * 3 - 1)
    assert extreme.min() >= 0 and extreme.max() <= 1


def test_bad_arguments_are_one_line_errors():
    full = RNG.random((30, 30, 3), dtype=np.float32)
    with pytest.raises(SmatError, match="HxWx3"):
        GuidedUpsampler(full[..., 0], full)
    with pytest.raises(SmatError, match="radius >= 1"):
        GuidedUpsampler(full, full, radius=0)
    with pytest.raises(SmatError, match="alpha is"):
        GuidedUpsampler(full[:10, :10], full)(np.zeros((9, 10), np.float32))
    with pytest.raises(SmatError, match="unknown upsampling 'cubic'"):
        upsample_alpha(np.zeros((10, 10), np.float32), (30, 30), "cubic")
    with pytest.raises(SmatError, match="needs the photo at both sizes"):
        upsample_alpha(np.zeros((10, 10), np.float32), (30, 30), "guided")


def _oracle(photo: np.ndarray, truth: np.ndarray, scale: float) -> dict[str, dict[str, float]]:
    """The ground truth scaled down with the photo and brought back three ways: each way's SAD and Grad."""
    height, width = truth.shape
    run_size = images.scaled_size(height, width, round(max(height, width) * scale))
    small = images.resize_image(photo, run_size)
    small_alpha = images.resize_image(np.repeat(truth[..., None], 3, -1), run_size)[..., 0]
    return {
        method: metrics.matting_metrics(
            upsample_alpha(small_alpha, (height, width), method, small=small, full=photo), truth
        )
        for method in ("nearest", "bilinear", "guided")
    }


@pytest.mark.parametrize("scale", [0.4, 0.25])
def test_guided_brings_a_scaled_alpha_back_closer_to_the_truth_than_nearest_or_bilinear(scale):
    composite = make_composite((240, 320), seed=11)
    scores = _oracle(composite.image, composite.alpha, scale)
    for metric in ("SAD", "Grad"):
        assert scores["guided"][metric] < scores["nearest"][metric]
        assert scores["guided"][metric] < scores["bilinear"][metric]


def test_on_real_photos_with_ground_truth_guided_beats_the_official_nearest(shared_photos):
    from smat_deploy.data.parity_sets import scan_photo_folder

    pairs = [(photo, alpha) for photo, alpha in scan_photo_folder(shared_photos)[0] if alpha is not None]
    assert len(pairs) >= 3
    for photo_path, alpha_path in pairs:
        photo, truth = images.load_image(photo_path), images.load_mask_image(alpha_path)
        scores = _oracle(photo, truth, 0.25)
        assert scores["guided"]["SAD"] < 0.6 * scores["nearest"]["SAD"], photo_path.name
        assert scores["guided"]["Grad"] < 0.6 * scores["nearest"]["Grad"], photo_path.name
