"""Photos read by the C++ library equal what smat-deploy reads: PNG modes, JPEG, EXIF orientation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from smat_deploy.cpp import CError, read_image
from smat_deploy.errors import SmatError
from smat_deploy.images import load_image


def _python_pixels(path) -> np.ndarray:
    return np.rint(load_image(path) * 255.0).astype(np.uint8)


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    rng = np.random.default_rng(11)
    base = np.linspace(0, 255, 37 * 23 * 3).reshape(23, 37, 3)
    return np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_of_jpeg_and_png_is_applied_as_pillow_applies_it(libsmat, picture, tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    for suffix in (".jpg", ".png"):
        path = tmp_path / f"o{orientation}{suffix}"
        Image.fromarray(picture).save(path, exif=exif.tobytes(), **({"quality": 90} if suffix == ".jpg" else {}))
        expected = _python_pixels(path)
        got = read_image(libsmat, path)
        assert got.shape == expected.shape, (suffix, got.shape, expected.shape)
        np.testing.assert_array_equal(got, expected, err_msg=f"{suffix} orientation {orientation}")


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "P-transparent", "1"])
def test_png_modes(libsmat, picture, tmp_path, mode):
    image = Image.fromarray(picture)
    if mode == "RGBA":
        image = image.convert("RGBA")
        image.putalpha(Image.fromarray((picture[..., 0] // 2).astype(np.uint8)))
    elif mode == "P-transparent":
        image = image.convert("P")
        image.info["transparency"] = 3
    else:
        image = image.convert(mode)
    path = tmp_path / f"{mode}.png"
    image.save(path)
    np.testing.assert_array_equal(read_image(libsmat, path), _python_pixels(path))


def test_grayscale_and_progressive_jpeg(libsmat, picture, tmp_path):
    for name, image, options in (
        ("gray.jpg", Image.fromarray(picture).convert("L"), {}),
        ("progressive.jpg", Image.fromarray(picture), {"progressive": True, "quality": 75}),
        ("subsampled.jpg", Image.fromarray(picture), {"subsampling": 2, "quality": 60}),
    ):
        path = tmp_path / name
        image.save(path, **options)
        np.testing.assert_array_equal(read_image(libsmat, path), _python_pixels(path), err_msg=name)


def test_shared_photos_decode_to_the_same_pixels(libsmat, shared_photos):
    photos = sorted(p for p in shared_photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    photos = [p for p in photos if "alpha" not in p.name and "truth" not in p.name and "_tri" not in p.name]
    assert len(photos) >= 6
    for path in photos:
        np.testing.assert_array_equal(read_image(libsmat, path), _python_pixels(path), err_msg=str(path))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "cannot read image .*: not a PNG or JPEG file"),
        (b"GIF89a" + b"\0" * 40, "cannot read image .*: not a PNG or JPEG file"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 30, "cannot read image .*"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 30, "cannot read image .*"),
    ],
)
def test_corrupt_files_are_one_line_errors(libsmat, tmp_path, content, message):
    path = tmp_path / "bad.img"
    path.write_bytes(content)
    with pytest.raises(CError, match=message) as err:
        read_image(libsmat, path)
    assert err.value.status == 5 and "\n" not in err.value.message


def test_truncated_files_are_errors_not_crashes(libsmat, picture, tmp_path):
    for suffix in (".png", ".jpg"):
        whole = tmp_path / f"whole{suffix}"
        Image.fromarray(picture).save(whole)
        data = whole.read_bytes()
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(SmatError, match="cannot read image"):  # smat-deploy refuses both
            load_image(cut)
        with pytest.raises(CError, match="cannot read image") as err:
            read_image(libsmat, cut)
        assert err.value.status == 5
