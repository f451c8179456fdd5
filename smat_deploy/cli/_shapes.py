"""Image sizes and batch lists on the command line, in one format for every command.

An image size is ``WIDTHxHEIGHT``, as photo sizes are written (``1024x768``); a bare ``N`` means
``NxN``. Options that only take squares (a calibration image, a training crop) accept ``N`` or
``NxN``. Batch sizes are never part of an image size: they are their own option, whole numbers
separated by commas. Every side is at least :data:`~smat_deploy.contract.MIN_SIDE` (one ViT patch).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from smat_deploy.contract import MIN_SIDE
from smat_deploy.errors import SmatError

_SIZE = re.compile(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?")
FORMAT = "WIDTHxHEIGHT, or N for NxN"


class ImageSize(NamedTuple):
    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


def parse_image_size(text: str, option: str, *, square: bool = False) -> ImageSize:
    """``"1024x768"`` -> ``ImageSize(1024, 768)``; ``"518"`` -> ``ImageSize(518, 518)``.

    ``square``: the option takes square images only (``N`` or ``NxN``); another shape is an error
    rather than silently using one side.
    """
    match = _SIZE.fullmatch(text)
    if not match:
        raise SmatError(f"{option} must be {FORMAT} (e.g. 1024x768 or 518), got {text!r}")
    width = int(match[1])
    height = int(match[2]) if match[2] is not None else width
    if min(width, height) < MIN_SIDE:
        raise SmatError(f"{option} {width}x{height}: both sides must be at least {MIN_SIDE} pixels")
    if square and width != height:
        raise SmatError(f"{option} takes a square size (N or NxN), got {width}x{height}")
    return ImageSize(width, height)


def parse_image_sizes(text: str, option: str) -> list[ImageSize]:
    """Comma-separated image sizes (``"518,1024x768"``), in order, each once."""
    return list(dict.fromkeys(parse_image_size(part, option) for part in text.split(",")))


def parse_batches(text: str, option: str, *, count: int | None = None) -> list[int]:
    """Comma-separated batch sizes (``"1,4"``), each at least 1; ``count``: exactly that many values."""
    try:
        batches = [int(part) for part in text.split(",")]
    except ValueError:
        raise SmatError(f"{option} must be whole numbers separated by commas (e.g. 1,4), got {text!r}") from None
    if any(batch < 1 for batch in batches):
        raise SmatError(f"{option} values must be at least 1, got {text!r}")
    if count is not None and len(batches) != count:
        raise SmatError(f"{option} takes {count} values separated by commas, got {text!r}")
    return batches
