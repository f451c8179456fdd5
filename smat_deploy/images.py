"""Reading photos and masks, writing alpha mattes and cutouts, and the optional long-side cap.

Images are handled as float32 ``HxWx3`` RGB arrays in [0, 1]. RGBA photos lose their alpha channel
(it is not part of SMat's input), grayscale is replicated to three channels, and 16-bit files keep
their full range before scaling to [0, 1]. A file's EXIF orientation is applied when it is read, so the
array is the picture a photo viewer shows (a portrait phone photo stored landscape loads as portrait) and
``--point X,Y`` coordinates read off a viewer land where they were meant to.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from smat_deploy._files import atomic_output, check_output_path
from smat_deploy.contract import MIN_SIDE
from smat_deploy.errors import SmatError

#: Formats an RGBA cutout can be written in.
CUTOUT_SUFFIXES = {".png", ".webp", ".tif", ".tiff"}
#: Files read as photos when a folder is given (matte's folder mode, calibration and parity photos).
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _open(path: str | os.PathLike[str]) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise SmatError(f"image not found: {path}")
    return _decode(path, str(path))


def _decode(source: Path | io.BytesIO, name: str, max_pixels: int | None = None) -> Image.Image:
    """Decode an image file (path or bytes), refusing more than ``max_pixels`` before its pixels are read."""
    try:
        with warnings.catch_warnings():
            if max_pixels is not None:  # an upload: Pillow's own warning (above 89 megapixels) refuses it too
                warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise SmatError(
                    f"image {name} is {width}x{height} ({width * height / 1e6:.1f} megapixels), above the limit "
                    f"of {max_pixels / 1e6:g} megapixels"
                )
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise SmatError(f"image {name} is too large to decode safely (a decompression bomb?)") from None
    except UnidentifiedImageError as err:
        if isinstance(source, Path):
            raise SmatError(f"cannot read image {name}: {type(err).__name__}: {err}".splitlines()[0]) from None
        raise SmatError(f"cannot read image {name}: not an image format this server reads, or a damaged file") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise SmatError(f"cannot read image {name}: {type(err).__name__}: {err}".splitlines()[0]) from None
    return _upright(image)


def _upright(image: Image.Image) -> Image.Image:
    """The image as a viewer shows it: its EXIF orientation (tag 0x0112, values 2 to 8) applied.

    Without a tag, or with orientation 1, the image itself is returned (no copy). An EXIF block too
    broken to read leaves the image as stored: the pixels were readable before orientation mattered.
    """
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        if orientation not in range(2, 9):
            return image
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError, struct.error):
        return image


def _to_float(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> float32 array in [0, 1], ``HxW`` or ``HxWxC``."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(image, dtype=np.float32) / 65535.0
    if image.mode == "I":  # 16-bit PNGs often decode as 32-bit integers holding 0..65535
        array = np.asarray(image, dtype=np.float32)
        return array / (65535.0 if array.max(initial=0) > 255 else 255.0)
    if image.mode == "F":
        return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    if image.mode not in ("L", "RGB", "RGBA", "LA"):
        image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
    return np.asarray(image, dtype=np.float32) / 255.0


def load_image(path: str | os.PathLike[str], max_side: int | None = None) -> np.ndarray:
    """A photo as float32 ``HxWx3`` RGB in [0, 1]; optionally capped (see :func:`cap_long_side`)."""
    return _photo_array(_open(path), path, max_side)


def decode_image(data: bytes, name: str = "upload", max_pixels: int | None = None) -> np.ndarray:
    """A photo file's bytes (an upload) as :func:`load_image` reads a file, refusing more than ``max_pixels``."""
    if not data:
        raise SmatError(f"image {name} is empty")
    return _photo_array(_decode(io.BytesIO(data), name, max_pixels), name, None)


def _photo_array(image: Image.Image, path: object, max_side: int | None) -> np.ndarray:
    array = _to_float(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    elif array.shape[-1] == 2:  # LA
        array = np.repeat(array[..., :1], 3, axis=-1)
    else:
        array = array[..., :3]
    if min(array.shape[:2]) < MIN_SIDE:
        raise SmatError(f"image {path} is {array.shape[1]}x{array.shape[0]}; SMat needs at least {MIN_SIDE}x{MIN_SIDE}")
    if max_side is not None:
        array = cap_long_side(array, max_side)
    return np.ascontiguousarray(array)


def load_mask_image(path: str | os.PathLike[str]) -> np.ndarray:
    """A mask file as float32 ``HxW``. With a non-trivial alpha channel, the alpha is the mask.

    Like :func:`load_image`, the file's EXIF orientation is applied, so a mask saved beside its photo
    with the same orientation tag lines up with the loaded photo.
    """
    array = _to_float(_open(path))
    if array.ndim == 3:
        has_alpha = array.shape[-1] in (2, 4)
        if has_alpha and array[..., -1].min() < 1.0:
            return array[..., -1]
        return array[..., :-1].max(axis=-1) if has_alpha else array.max(axis=-1)
    return array


def cap_long_side(image: np.ndarray, max_side: int) -> np.ndarray:
    """Scale the image down (bilinear) so its long side is ``max_side``; smaller images are unchanged.

    The official inference scripts cap very large photos (the demo at 1280 px above 1920, the
    benchmark script at 1560) and resize the alpha back to the original size with nearest
    interpolation; :func:`resize_alpha_nearest` does that last step. Off by default here.
    """
    if max_side < MIN_SIDE:
        raise SmatError(f"--max-side must be at least {MIN_SIDE}, got {max_side}")
    height, width = image.shape[:2]
    if max(height, width) <= max_side:
        return image
    return resize_image(image, scaled_size(height, width, max_side))


def scaled_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """``(height, width)`` scaled so the long side is ``long_side``, the aspect kept, no side below the minimum."""
    scale = long_side / max(height, width)
    return max(MIN_SIDE, round(height * scale)), max(MIN_SIDE, round(width * scale))


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A float32 ``HxWxC`` image in [0, 1] at ``size`` (height, width), each channel by Pillow's bilinear filter.

    Shrinking, Pillow widens the filter with the scale (every source pixel counts, no aliasing), which is
    what a photo scaled down for the engine needs.
    """
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32), mode="F").resize(
                (size[1], size[0]), Image.Resampling.BILINEAR
            )
        )
        for c in range(image.shape[-1])
    ]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)


def resize_alpha_nearest(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Alpha ``HxW`` -> ``size`` (height, width) with nearest interpolation, as the official scripts do."""
    if alpha.shape == tuple(size):
        return alpha
    resized = Image.fromarray(alpha.astype(np.float32), mode="F").resize((size[1], size[0]), Image.Resampling.NEAREST)
    return np.asarray(resized, dtype=np.float32)


def to_uint8(array: np.ndarray) -> np.ndarray:
    return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def check_image_output(path: str | os.PathLike[str], *, transparency: bool = False) -> Path:
    """Fail before any work when ``path`` cannot receive an image: missing folder or unknown format."""
    path = check_output_path(path)
    suffix = path.suffix.lower()
    if transparency and suffix not in CUTOUT_SUFFIXES:
        raise SmatError(
            f"a cutout needs a format with transparency ({', '.join(sorted(CUTOUT_SUFFIXES))}), got {path.name}"
        )
    if suffix not in Image.registered_extensions():
        raise SmatError(f"cannot write {path.name}: unknown image format {suffix or '(no suffix)'}")
    return path


def save_alpha(path: str | os.PathLike[str], alpha: np.ndarray) -> Path:
    """Write an ``HxW`` alpha in [0, 1] as an 8-bit grayscale image (format from the suffix), atomically."""
    path = check_image_output(path)
    with atomic_output(path) as tmp:
        _save(Image.fromarray(to_uint8(alpha), mode="L"), tmp, path)
    return path


def save_cutout(path: str | os.PathLike[str], image: np.ndarray, alpha: np.ndarray) -> Path:
    """Write the photo with the alpha as its transparency (RGBA), atomically."""
    path = check_image_output(path, transparency=True)
    rgba = np.concatenate([to_uint8(image), to_uint8(alpha)[..., None]], axis=-1)
    with atomic_output(path) as tmp:
        _save(Image.fromarray(rgba, mode="RGBA"), tmp, path)
    return path


def save_rgb(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write an ``HxWx3`` float image in [0, 1] as 8-bit RGB, atomically."""
    path = check_image_output(path)
    with atomic_output(path) as tmp:
        _save(Image.fromarray(to_uint8(image), mode="RGB"), tmp, Path(path))
    return Path(path)


def _save(image: Image.Image, tmp: Path, final: Path) -> None:
    image_format = Image.registered_extensions()[final.suffix.lower()]
    if image_format == "JPEG" and image.mode == "RGBA":
        raise SmatError(f"cannot write {final.name}: JPEG has no transparency")
    image.save(tmp, format=image_format)
