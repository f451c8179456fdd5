"""Image loading across modes and depths, the long-side cap, and writers."""

import numpy as np
import pytest
from PIL import Image

from smat_deploy import images
from smat_deploy.errors import SmatError


def test_rgba_grayscale_and_16_bit(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    loaded = images.load_image(tmp_path / "rgba.png")
    assert loaded.shape == (20, 30, 3) and loaded.dtype == np.float32
    assert np.allclose(loaded[..., 0], 1.0) and np.allclose(loaded[..., 1:], 0.0)

    Image.fromarray(np.full((20, 30), 51, np.uint8), "L").save(tmp_path / "gray.png")
    gray = images.load_image(tmp_path / "gray.png")
    assert gray.shape == (20, 30, 3) and np.allclose(gray, 0.2)

    deep = np.full((20, 30), 65535 // 4, np.uint16)
    deep[0, 0] = 65535
    Image.fromarray(deep).save(tmp_path / "deep.png")
    loaded16 = images.load_image(tmp_path / "deep.png")
    assert np.isclose(loaded16[1, 1, 0], (65535 // 4) / 65535, atol=1e-6) and loaded16[0, 0, 0] == 1.0

    Image.fromarray(np.full((20, 30, 3), 128, np.uint8)).save(tmp_path / "photo.jpg", quality=95)
    assert np.allclose(images.load_image(tmp_path / "photo.jpg"), 128 / 255, atol=2 / 255)


def test_missing_corrupt_and_tiny_images(tmp_path):
    with pytest.raises(SmatError, match="image not found"):
        images.load_image(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(SmatError, match="cannot read image"):
        images.load_image(tmp_path / "bad.png")
    Image.fromarray(np.zeros((10, 30), np.uint8)).save(tmp_path / "tiny.png")
    with pytest.raises(SmatError, match="at least 14x14"):
        images.load_image(tmp_path / "tiny.png")


def test_long_side_cap_and_nearest_resize_back():
    photo = np.random.default_rng(0).random((300, 200, 3)).astype(np.float32)
    assert images.cap_long_side(photo, 400) is photo
    capped = images.cap_long_side(photo, 150)
    assert capped.shape == (150, 100, 3)
    alpha = np.zeros((150, 100), np.float32)
    alpha[:75] = 1
    back = images.resize_alpha_nearest(alpha, (300, 200))
    assert back.shape == (300, 200) and set(np.unique(back)) == {0.0, 1.0}
    assert back[:150].all() and not back[150:].any()


def test_writers_refuse_bad_paths_and_keep_existing_files(tmp_path):
    alpha = np.linspace(0, 1, 20 * 30, dtype=np.float32).reshape(20, 30)
    path = images.save_alpha(tmp_path / "a.png", alpha)
    assert np.abs(np.asarray(Image.open(path)) / 255 - alpha).max() <= 0.5 / 255 + 1e-6
    with pytest.raises(SmatError, match="output folder does not exist"):
        images.save_alpha(tmp_path / "missing" / "a.png", alpha)
    with pytest.raises(SmatError, match="unknown image format"):
        images.save_alpha(tmp_path / "a.xyz", alpha)
    with pytest.raises(SmatError, match="needs a format with transparency"):
        images.save_cutout(tmp_path / "c.jpg", np.zeros((20, 30, 3)), alpha)
    cut = images.save_cutout(tmp_path / "c.png", np.ones((20, 30, 3)), alpha)
    assert np.asarray(Image.open(cut)).shape == (20, 30, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "c.png"]
