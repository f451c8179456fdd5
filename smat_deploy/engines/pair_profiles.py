"""TensorRT optimisation profiles for the interactive pair: the decoder's follow from the encoder's image profile.

The encoder takes ``image [B,3,H,W]``; the decoder takes the embedding the encoder made from that
image plus ``prompt [B,1,H,W]`` and ``state [B,1]``. Its embedding sizes follow the padded token grid
``gh x gw`` of the photo (``features [B,384,gh,gw]``, ``image16 [B,3,16gh,16gw]``,
``detail2 [B,96,4gh,4gw]``, ``fusion0 [B,256,2gh,2gw]``, ``class_token [B,384]``), so one image
profile (min, opt, max of batch, height and width) decides every decoder input's profile.

The official padding rule makes the grid jump: when *either* side is not a multiple of the patch,
*both* sides grow to the next multiple, so an aligned side grows by a whole patch. The grid's range
over an image range is therefore not simply the grid of the smallest and the largest image:

- the smallest ``gh`` is ``H_min / 14`` only when ``H_min`` is a multiple of 14 *and* some width in
  the range is one too; otherwise ``H_min // 14 + 1``;
- the largest ``gh`` is ``H_max / 14`` only when ``H_max`` is a multiple of 14 *and* every width in the
  range is one too (the width range is that one aligned size); otherwise ``H_max // 14 + 1``.

Both bounds are tight (some photo in the range reaches each), so every photo in the image range has
its embedding inside the decoder's profile and no shape outside it is tuned for.

Standard library only: the builder and anything that describes a built pair use the same figures.
"""

from __future__ import annotations

from typing import Protocol

from smat_deploy.contract import EMBEDDING, PATCH_SIZE, padded_grid

#: Grid scale of each spatial embedding tensor (``class_token`` has no spatial axes).
EMBEDDING_SCALES = {"features": 1, "image16": 16, "detail2": 4, "fusion0": 2}
#: Channels of each embedding tensor, from the contract.
EMBEDDING_CHANNELS = {spec["name"]: spec["shape"][1] for spec in EMBEDDING}

Dims = tuple[int, ...]
#: ``{input name: (min dims, opt dims, max dims)}``: what ``IOptimizationProfile.set_shape`` takes.
ProfileShapes = dict[str, tuple[Dims, Dims, Dims]]


class ImageShape(Protocol):
    batch: int
    height: int
    width: int


class ImageProfile(Protocol):
    min: ImageShape
    opt: ImageShape
    max: ImageShape


def _has_aligned(low: int, high: int, patch: int) -> bool:
    """Some side in ``[low, high]`` is a multiple of ``patch``."""
    return (high // patch) * patch >= low


def _has_unaligned(low: int, high: int, patch: int) -> bool:
    """Some side in ``[low, high]`` is not a multiple of ``patch``."""
    return high > low or low % patch != 0


def grid_bounds(low: int, high: int, other_low: int, other_high: int, patch: int = PATCH_SIZE) -> tuple[int, int]:
    """``(min, max)`` of one grid side over photos with that side in ``[low, high]`` and the other side in
    ``[other_low, other_high]`` (the padding rule couples the two sides)."""
    if not (1 <= low <= high and 1 <= other_low <= other_high):
        raise ValueError(
            f"side ranges must satisfy 1 <= min <= max, got [{low}, {high}] and [{other_low}, {other_high}]"
        )
    smallest = low // patch if low % patch == 0 and _has_aligned(other_low, other_high, patch) else low // patch + 1
    largest = high // patch + 1 if high % patch or _has_unaligned(other_low, other_high, patch) else high // patch
    return smallest, largest


def grid_profile(profile: ImageProfile, patch: int = PATCH_SIZE) -> dict[str, tuple[int, int, int]]:
    """``{"grid_height": (min, opt, max), "grid_width": (...)}`` for an image profile."""
    low, opt, high = profile.min, profile.opt, profile.max
    gh = grid_bounds(low.height, high.height, low.width, high.width, patch)
    gw = grid_bounds(low.width, high.width, low.height, high.height, patch)
    opt_h, opt_w = padded_grid(opt.height, opt.width)
    return {"grid_height": (gh[0], opt_h, gh[1]), "grid_width": (gw[0], opt_w, gw[1])}


def encoder_shapes(profile: ImageProfile) -> ProfileShapes:
    """The encoder's one profiled input: ``image [B,3,H,W]``."""
    points = (profile.min, profile.opt, profile.max)
    return {"image": tuple((s.batch, 3, s.height, s.width) for s in points)}  # type: ignore[dict-item]


def decoder_shapes(profile: ImageProfile, patch: int = PATCH_SIZE) -> ProfileShapes:
    """Every decoder input's ``(min, opt, max)`` for photos in the encoder's image ``profile``."""
    grid = grid_profile(profile, patch)
    points = (profile.min, profile.opt, profile.max)
    shapes: ProfileShapes = {}
    for spec in EMBEDDING:
        name = spec["name"]
        channels = EMBEDDING_CHANNELS[name]
        if name in EMBEDDING_SCALES:
            scale = EMBEDDING_SCALES[name]
            shapes[name] = tuple(  # type: ignore[assignment]
                (s.batch, channels, scale * grid["grid_height"][i], scale * grid["grid_width"][i])
                for i, s in enumerate(points)
            )
        else:
            shapes[name] = tuple((s.batch, channels) for s in points)  # type: ignore[assignment]
    shapes["prompt"] = tuple((s.batch, 1, s.height, s.width) for s in points)  # type: ignore[assignment]
    shapes["state"] = tuple((s.batch, 1) for s in points)  # type: ignore[assignment]
    return shapes


def profile_record(shapes: ProfileShapes) -> dict[str, dict[str, list[int]]]:
    """``shapes`` as JSON for a sidecar: ``{name: {"min": [...], "opt": [...], "max": [...]}}``."""
    return {
        name: dict(zip(("min", "opt", "max"), (list(d) for d in dims), strict=True)) for name, dims in shapes.items()
    }
