"""Training crops keep image and alpha aligned, and keep an exact alpha exact when no resize is needed."""

import numpy as np

from smat_deploy.data.dataset import MattingSample
from smat_deploy.train.augment import random_square_crop


def _sample(height, width) -> MattingSample:
    """An image whose red channel equals the alpha, so alignment can be checked pixel by pixel."""
    yy, xx = np.mgrid[0:height, 0:width]
    alpha = ((np.sin(yy / 7.0) * np.cos(xx / 5.0)) * 0.5 + 0.5).astype(np.float32)
    image = np.stack([alpha, 1 - alpha, np.full_like(alpha, 0.5)], axis=-1)
    return MattingSample(image, alpha, "s")


def test_a_sample_at_the_training_size_is_only_mirrored():
    sample = _sample(70, 70)
    seen = set()
    for seed in range(8):
        image, alpha = random_square_crop(sample, 70, np.random.default_rng(seed), max_zoom=1.0)
        mirrored = np.array_equal(alpha, sample.alpha[:, ::-1])
        assert mirrored or np.array_equal(alpha, sample.alpha)
        assert np.array_equal(image[..., 0], alpha)
        seen.add(mirrored)
    assert seen == {True, False}


def test_large_photos_are_cropped_zoomed_and_stay_aligned():
    sample = _sample(300, 500)
    for seed in range(4):
        image, alpha = random_square_crop(sample, 112, np.random.default_rng(seed), max_zoom=1.5)
        assert image.shape == (112, 112, 3) and alpha.shape == (112, 112)
        assert image.dtype == np.float32 and alpha.dtype == np.float32
        assert np.allclose(image[..., 0], alpha, atol=1e-6)
        assert np.allclose(image[..., 0] + image[..., 1], 1.0, atol=1e-5)


def test_small_photos_are_enlarged():
    image, alpha = random_square_crop(_sample(40, 60), 84, np.random.default_rng(0))
    assert image.shape == (84, 84, 3) and np.allclose(image[..., 0], alpha, atol=1e-6)
