"""Image loading across modes, depths and EXIF orientations, the long-side cap, and writers."""

import warnings

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


# What a viewer shows for each EXIF orientation, written from the EXIF specification's wording (not from
# PIL's transpose names): the stored pixels are mirrored and/or rotated clockwise (``k=-1``) to display.
_VIEWED = {
    None: lambda a: a,  # no EXIF at all
    1: lambda a: a,
    2: np.fliplr,  # mirrored horizontally
    3: lambda a: np.rot90(a, 2),  # rotated 180
    4: np.flipud,  # mirrored vertically
    5: lambda a: np.rot90(np.fliplr(a), 1),  # mirrored horizontally, rotated 270 clockwise
    6: lambda a: np.rot90(a, -1),  # rotated 90 clockwise: a portrait phone photo stored landscape
    7: lambda a: np.rot90(np.fliplr(a), -1),  # mirrored horizontally, rotated 90 clockwise
    8: lambda a: np.rot90(a, 1),  # rotated 270 clockwise
}


def _asymmetric(height: int, width: int, cell: int = 1) -> np.ndarray:
    """An RGB uint8 picture that no flip or rotation maps onto itself: distinct colours per ``cell`` block."""
    rows, cols = np.meshgrid(np.arange(height) // cell, np.arange(width) // cell, indexing="ij")
    return np.stack([rows * 37 % 256, cols * 23 % 256, (rows * 5 + cols * 11) % 256], axis=-1).astype(np.uint8)


def _save_with_orientation(array: np.ndarray, path, orientation: int | None, **kwargs) -> None:
    image = Image.fromarray(array)
    if orientation is None:
        image.save(path, **kwargs)
        return
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif, **kwargs)


@pytest.mark.parametrize("orientation", list(_VIEWED))
def test_exif_orientation_applied_png(tmp_path, orientation):
    stored = _asymmetric(20, 32)  # landscape as stored
    path = tmp_path / "photo.png"
    _save_with_orientation(stored, path, orientation)
    if orientation is not None:  # the tag really is in the file
        assert Image.open(path).getexif()[0x0112] == orientation
    loaded = images.load_image(path)
    expected = _VIEWED[orientation](stored).astype(np.float32) / 255.0
    assert loaded.shape == expected.shape and loaded.dtype == np.float32 and loaded.flags.c_contiguous
    assert np.array_equal(loaded, expected)


@pytest.mark.parametrize("orientation", [None, 1, 3, 6, 8])
def test_exif_orientation_applied_jpeg(tmp_path, orientation):
    # Flat 8x8 cells on JPEG's block grid, no chroma subsampling: decoding is off by a few levels at most,
    # while any wrong orientation is off by far more (checked below), so a tolerance separates the two.
    stored = _asymmetric(32, 48, cell=8)
    path = tmp_path / "photo.jpg"
    _save_with_orientation(stored, path, orientation, quality=95, subsampling=0)
    loaded = images.load_image(path)
    expected = _VIEWED[orientation](stored).astype(np.float32) / 255.0
    assert loaded.shape == expected.shape
    assert np.abs(loaded - expected).max() <= 6 / 255
    for other in {1, 3, 6, 8} - {orientation or 1}:  # no tag and 1 both mean "as stored"
        wrong = _VIEWED[other](stored).astype(np.float32) / 255.0
        assert wrong.shape != loaded.shape or np.abs(loaded - wrong).max() > 0.2


def test_portrait_phone_photo_point_lands_on_the_subject(tmp_path):
    """Orientation 6: stored landscape, shown portrait; a point read off the viewer hits the marked pixel."""
    viewed = np.zeros((48, 32, 3), np.uint8)  # portrait, as the viewer shows it
    viewed[10:14, 4:8] = 255  # the subject, near the top left in the viewer
    stored = np.rot90(viewed, 1)  # what a phone held upright writes: the sensor's landscape frame
    assert stored.shape[:2] == (32, 48)
    _save_with_orientation(np.ascontiguousarray(stored), tmp_path / "phone.png", 6)
    loaded = images.load_image(tmp_path / "phone.png")
    assert loaded.shape == (48, 32, 3)
    x, y = 5, 11  # --point X,Y as read off the viewer
    assert loaded[y, x].min() == 1.0 and loaded[40, 25].max() == 0.0


def test_exif_orientation_keeps_16_bit_and_applies_to_masks(tmp_path):
    deep = (np.arange(20 * 30, dtype=np.uint32).reshape(20, 30) * 100).astype(np.uint16)
    _save_with_orientation(deep, tmp_path / "deep.png", 8)
    loaded = images.load_image(tmp_path / "deep.png")
    expected = np.rot90(deep, 1).astype(np.float32) / 65535.0
    assert loaded.shape == (30, 20, 3) and np.allclose(loaded[..., 0], expected, atol=1e-7)

    mask = np.zeros((20, 30), np.uint8)
    mask[2:6, 20:27] = 255
    _save_with_orientation(mask, tmp_path / "mask.png", 6)
    loaded_mask = images.load_mask_image(tmp_path / "mask.png")
    assert np.array_equal(loaded_mask, np.rot90(mask, -1).astype(np.float32) / 255.0)

    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 3] = mask  # the alpha channel is the mask
    _save_with_orientation(rgba, tmp_path / "mask_rgba.png", 3)
    assert np.array_equal(images.load_mask_image(tmp_path / "mask_rgba.png"), np.rot90(mask, 2) / np.float32(255))


def test_unreadable_exif_leaves_the_photo_as_stored(tmp_path):
    stored = _asymmetric(20, 30)
    truncated = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12"  # the IFD ends mid-entry
    Image.fromarray(stored).save(tmp_path / "odd.png", exif=truncated)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL warns about the corrupt EXIF block
        loaded = images.load_image(tmp_path / "odd.png")
    assert np.array_equal(loaded, stored / np.float32(255))
