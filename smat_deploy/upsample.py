"""An alpha computed below a photo's size, brought back to the photo's size with the photo's own edges.

When a photo is too large to run at full size, the engine runs on a scaled-down copy and its alpha has
the copy's size. Nearest or bilinear interpolation back to the photo's size (the official demo uses
nearest) gives a blocky or blurred edge where matting matters most: hair, fur, lace. A guided filter
(He, Sun and Tang, "Guided Image Filtering", TPAMI 2013) models the alpha, in each small window, as a
linear function of the photo's colour, ``alpha ~ a . I + b``; the fast guided filter (He and Sun, 2015,
arXiv:1505.00996) fits ``a`` and ``b`` on the scaled-down copy and applies them to the full-size photo,
so every pixel of the result follows the full-size photo's edges.

:class:`GuidedUpsampler` holds everything that depends on the photo alone (the guide's window means and
the inverse of its regularised colour covariance), so an interactive tool pays for it once per photo
and each click only for the alpha's part. The full-size step runs in horizontal strips, so its working
memory stays about 100 MB whatever the photo's size (a 48-megapixel alpha is written into one
``HxW`` float32 array, 192 MB).

Only numpy: the light runtime (ONNX Runtime, OpenVINO) has no PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from smat_deploy.errors import SmatError

#: How an alpha made at a smaller size is brought to the photo's size.
UPSAMPLING_METHODS = ("guided", "bilinear", "nearest")
#: Window radius of the guided filter, in pixels of the scaled-down photo (the engine's size).
DEFAULT_RADIUS = 1
#: Regularisation of the guided filter (colour variance in [0, 1] units): larger smooths more.
DEFAULT_EPS = 1e-5
#: Rows of the full-size photo handled at once by the last step (bounds its working memory).
_STRIP_PIXELS = 2_000_000


def _box_mean(values: np.ndarray, radius: int, dtype: type = np.float64) -> np.ndarray:
    """Mean over the ``(2r+1)^2`` window around every pixel of the last two axes, the window clipped at the borders.

    ``values`` is ``h x w`` or ``C x h x w``; the result has ``dtype``. SciPy's separable moving sum adds in
    double precision whatever the input (zeros outside the image); the sum is then divided by how many pixels
    of each window lie inside the image.
    """
    height, width = values.shape[-2:]
    size = (1,) * (values.ndim - 2) + (2 * radius + 1, 2 * radius + 1)
    window = float(np.prod(size))
    out = ndimage.uniform_filter(values, size=size, mode="constant", output=dtype)
    rows, cols = _inside(height, radius), _inside(width, radius)
    out *= (window / (rows[:, None] * cols[None, :])).astype(dtype)
    return out


def _inside(length: int, radius: int) -> np.ndarray:
    """How many of the ``2r+1`` positions around each index lie in ``[0, length)``."""
    index = np.arange(length)
    return (np.minimum(index + radius, length - 1) - np.maximum(index - radius, 0) + 1).astype(np.float64)


def _inverse_symmetric(xx, xy, xz, yy, yz, zz) -> np.ndarray:
    """The six distinct entries of the inverse of symmetric 3x3 matrices given by their six entries: ``6 x ...``."""
    cofactors = np.stack(
        [
            yy * zz - yz * yz,
            xz * yz - xy * zz,
            xy * yz - xz * yy,
            xx * zz - xz * xz,
            xy * xz - xx * yz,
            xx * yy - xy * xy,
        ]
    )
    cofactors /= xx * cofactors[0] + xy * cofactors[1] + xz * cofactors[2]  # the determinant
    return cofactors


def _source_positions(target: int, source: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear sampling (pixel centres aligned, ``align_corners=False``): lower index, upper index, weight."""
    position = (np.arange(target, dtype=np.float64) + 0.5) * (source / target) - 0.5
    position = np.clip(position, 0.0, source - 1)
    low = np.floor(position).astype(np.intp)
    high = np.minimum(low + 1, source - 1)
    return low, high, (position - low).astype(np.float32)


def resize_bilinear(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``h x w`` or ``h x w x C`` float -> ``size`` (height, width), bilinear (pixel centres aligned, no antialias)."""
    values = values.astype(np.float32, copy=False)
    low_y, high_y, weight_y = _source_positions(size[0], values.shape[0])
    low_x, high_x, weight_x = _source_positions(size[1], values.shape[1])
    trailing = (1,) * (values.ndim - 2)
    wy = weight_y.reshape((-1, 1, *trailing))
    by_row = values[low_y] * (1 - wy) + values[high_y] * wy
    wx = weight_x.reshape((1, -1, *trailing))
    return by_row[:, low_x] * (1 - wx) + by_row[:, high_x] * wx


def _enlarge_rows(channel: np.ndarray, size: tuple[int, int], start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of a float32 ``h x w`` map enlarged bilinearly to ``size`` (pixel centres aligned).

    Pillow's C resampling of the source region those rows sample (``box=``, in source pixels): the same values
    as enlarging the whole map and slicing (within 1e-7), without ever holding the whole enlargement.
    """
    height, width = size
    scale = channel.shape[0] / height
    box = (0.0, start * scale, float(channel.shape[1]), stop * scale)
    image = Image.fromarray(channel, mode="F")
    return np.asarray(image.resize((width, stop - start), Image.Resampling.BILINEAR, box=box))


def resize_nearest(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``h x w`` -> ``size`` by nearest neighbour (PyTorch's ``nearest``: ``src = floor(dst * in / out)``)."""
    rows = np.minimum((np.arange(size[0]) * values.shape[0]) // size[0], values.shape[0] - 1)
    cols = np.minimum((np.arange(size[1]) * values.shape[1]) // size[1], values.shape[1] - 1)
    return values[rows[:, None], cols[None, :]]


@dataclass(frozen=True)
class _GuideStatistics:
    """What the guided filter needs of the scaled-down photo, channels first, float32 (48 bytes a pixel)."""

    pixels: np.ndarray  # 3 x h x w
    mean: np.ndarray  # 3 x h x w: window means
    inverse: np.ndarray  # 6 x h x w: the distinct entries of (cov(I) + eps)^-1


class GuidedUpsampler:
    """Alpha at the engine's size -> alpha at the photo's size, following the full-size photo's edges.

    ``small``: the photo as the engine saw it (``h x w x 3`` in [0, 1]); ``full``: the photo itself
    (``H x W x 3``, at least as large). ``radius`` is in pixels of ``small``; ``eps`` regularises the colour
    covariance (see the module's text). Calling it with an ``h x w`` alpha returns the ``H x W`` alpha in
    [0, 1]. The photo's statistics are computed once, here; each call then costs the alpha's own window means
    at the small size and one pass over the full photo.

    Precision: window means add in double precision; the covariances (differences of means, where float32
    would cancel the digits that matter at ``eps`` = 1e-5) are formed in float64, everything after in float32.
    """

    def __init__(
        self, small: np.ndarray, full: np.ndarray, radius: int = DEFAULT_RADIUS, eps: float = DEFAULT_EPS
    ) -> None:
        if small.ndim != 3 or full.ndim != 3 or small.shape[-1] != 3 or full.shape[-1] != 3:
            raise SmatError(f"guided upsampling needs two HxWx3 photos, got {list(small.shape)} and {list(full.shape)}")
        if small.shape[0] > full.shape[0] or small.shape[1] > full.shape[1]:
            raise SmatError(
                f"guided upsampling enlarges: {list(small.shape[:2])} is larger than {list(full.shape[:2])}"
            )
        if radius < 1 or not eps > 0:
            raise SmatError(f"guided upsampling needs radius >= 1 and eps > 0, got {radius} and {eps:g}")
        self.radius, self.eps = radius, eps
        self.small_size = small.shape[:2]
        self.full = np.asarray(full, dtype=np.float32)
        pixels = np.ascontiguousarray(small.transpose(2, 0, 1), dtype=np.float32)
        mean = _box_mean(pixels, radius)
        pairs = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
        covariance = []
        for i, j in pairs:
            entry = _box_mean(pixels[i] * pixels[j], radius)
            entry -= mean[i] * mean[j]
            covariance.append((entry + eps if i == j else entry).astype(np.float32))
        self._guide = _GuideStatistics(pixels, mean.astype(np.float32), _inverse_symmetric(*covariance))

    @property
    def nbytes(self) -> int:
        """What the upsampler holds: the guide's statistics and the full-size photo."""
        guide = self._guide
        return int(guide.pixels.nbytes + guide.mean.nbytes + guide.inverse.nbytes + self.full.nbytes)

    @property
    def full_size(self) -> tuple[int, int]:
        return int(self.full.shape[0]), int(self.full.shape[1])

    def coefficients(self, alpha: np.ndarray) -> np.ndarray:
        """The window-averaged linear model ``(a_r, a_g, a_b, b)`` at the small size: ``4 x h x w`` float32."""
        if alpha.shape != self.small_size:
            raise SmatError(f"alpha is {list(alpha.shape)}, the guide {list(self.small_size)}")
        guide, radius = self._guide, self.radius
        target = np.asarray(alpha, dtype=np.float32)
        mean_alpha = _box_mean(target, radius)
        covariance = _box_mean(guide.pixels * target, radius)
        covariance -= guide.mean * mean_alpha
        cr, cg, cb = covariance.astype(np.float32)
        xx, xy, xz, yy, yz, zz = guide.inverse
        model = np.empty((4, *self.small_size), np.float32)
        model[0] = xx * cr + xy * cg + xz * cb
        model[1] = xy * cr + yy * cg + yz * cb
        model[2] = xz * cr + yz * cg + zz * cb
        model[3] = mean_alpha - (model[:3] * guide.mean).sum(axis=0)
        return _box_mean(model, radius, np.float32)

    def __call__(self, alpha: np.ndarray) -> np.ndarray:
        model = self.coefficients(alpha)
        height, width = self.full_size
        out = np.empty((height, width), dtype=np.float32)
        strip = max(1, _STRIP_PIXELS // width)
        for start in range(0, height, strip):
            stop = min(height, start + strip)
            photo = self.full[start:stop]
            value = np.array(_enlarge_rows(model[3], self.full_size, start, stop))  # writable
            for index in range(3):
                value += _enlarge_rows(model[index], self.full_size, start, stop) * photo[..., index]
            np.clip(value, 0.0, 1.0, out=out[start:stop])
        return out


def upsample_alpha(
    alpha: np.ndarray,
    size: tuple[int, int],
    method: str = "guided",
    *,
    small: np.ndarray | None = None,
    full: np.ndarray | None = None,
) -> np.ndarray:
    """An ``h x w`` alpha at ``size`` (height, width): ``guided`` (needs ``small`` and ``full``), ``bilinear``
    or ``nearest``; an alpha already at ``size`` is returned as it is."""
    if tuple(alpha.shape) == tuple(size):
        return alpha
    if method == "guided":
        if small is None or full is None:
            raise SmatError("guided upsampling needs the photo at both sizes")
        return GuidedUpsampler(small, full)(alpha)
    if method == "bilinear":
        return np.clip(resize_bilinear(alpha, size), 0.0, 1.0)
    if method == "nearest":
        return np.clip(resize_nearest(alpha, size), 0.0, 1.0)
    raise SmatError(f"unknown upsampling {method!r}: expected one of {', '.join(UPSAMPLING_METHODS)}")
