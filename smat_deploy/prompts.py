"""Prompts: every kind (point, box, scribble, mask) is rasterised to a binary mask at the image size.

Conventions (the authors' evaluation code):
- point: a ``(2r+1) x (2r+1)`` square centred on the click, ``r = 20`` px by default;
- box: the filled rectangle ``x0 <= x < x1, y0 <= y < y1`` (half-open, like array slicing);
- scribble: a polyline through the given points, drawn ``width`` px wide (default 5, the authors'
  5x5 dilation of a one-pixel stroke);
- mask: any image or array the size of the photo; non-zero pixels are marked;
- none: all zeros, i.e. automatic mode.

Coordinates are pixels, ``x`` to the right (column) and ``y`` down (row), origin at the top-left
pixel. Outside the image: a point must lie inside it; boxes and scribbles are clipped to it and must
still mark at least one pixel. Anything else is an error, so a typo never silently turns an
interactive request into automatic mode.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
from scipy import ndimage

from smat_deploy.contract import PROMPT_KINDS
from smat_deploy.errors import SmatError

DEFAULT_POINT_RADIUS = 20
DEFAULT_SCRIBBLE_WIDTH = 5


#: The contract's prompt kinds as an enum: ``PromptKind.NONE`` (automatic), ``POINT``, ``BOX``, ``SCRIBBLE``, ``MASK``.
PromptKind = StrEnum("PromptKind", [(kind.upper(), kind) for kind in PROMPT_KINDS])


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    radius: int = DEFAULT_POINT_RADIUS
    kind = PromptKind.POINT


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float
    kind = PromptKind.BOX


@dataclass(frozen=True)
class Scribble:
    points: tuple[tuple[float, float], ...]
    width: int = DEFAULT_SCRIBBLE_WIDTH
    kind = PromptKind.SCRIBBLE


@dataclass(frozen=True)
class Mask:
    """A mask given as an array (``HxW``) or as an image file."""

    source: np.ndarray | str | os.PathLike[str]
    kind = PromptKind.MASK


Prompt = Point | Box | Scribble | Mask
Size = tuple[int, int]  # (height, width)


# -- rasterisation --------------------------------------------------------------------------------
def rasterize_points(points: Iterable[Point], size: Size) -> np.ndarray:
    """Union of the clicks' squares; every point must lie inside the image."""
    height, width = size
    mask = np.zeros(size, dtype=np.float32)
    for point in points:
        x, y = round(point.x), round(point.y)
        if not (0 <= x < width and 0 <= y < height):
            raise SmatError(f"point ({point.x:g}, {point.y:g}) lies outside the {width}x{height} image")
        if point.radius < 0:
            raise SmatError(f"point radius must be >= 0, got {point.radius}")
        r = point.radius
        mask[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1] = 1
    return mask


def rasterize_box(box: Box, size: Size) -> np.ndarray:
    """The filled, half-open rectangle, clipped to the image."""
    height, width = size
    if not (box.x1 > box.x0 and box.y1 > box.y0):
        raise SmatError(f"box needs x0 < x1 and y0 < y1, got ({box.x0:g}, {box.y0:g}, {box.x1:g}, {box.y1:g})")
    x0, x1 = (min(max(round(v), 0), width) for v in (box.x0, box.x1))
    y0, y1 = (min(max(round(v), 0), height) for v in (box.y0, box.y1))
    if x0 >= x1 or y0 >= y1:
        raise SmatError(
            f"box ({box.x0:g}, {box.y0:g}, {box.x1:g}, {box.y1:g}) does not overlap the {width}x{height} image"
        )
    mask = np.zeros(size, dtype=np.float32)
    mask[y0:y1, x0:x1] = 1
    return mask


def rasterize_scribble(scribble: Scribble, size: Size) -> np.ndarray:
    """A one-pixel polyline through the points, dilated by a ``width x width`` square, clipped to the image."""
    height, width = size
    if len(scribble.points) < 1:
        raise SmatError("a scribble needs at least one point")
    if scribble.width < 1:
        raise SmatError(f"scribble width must be >= 1, got {scribble.width}")
    # Rasterise on a canvas with a margin so strokes just outside the image still dilate into it.
    margin = scribble.width
    canvas = np.zeros((height + 2 * margin, width + 2 * margin), dtype=bool)
    path = np.asarray(scribble.points, dtype=np.float64).reshape(-1, 2)
    segments = itertools.pairwise(path) if len(path) > 1 else [(path[0], path[0])]
    for start, end in segments:
        steps = max(1, math.ceil(np.abs(end - start).max()) * 2)
        samples = np.rint(start + np.linspace(0.0, 1.0, steps + 1)[:, None] * (end - start)).astype(np.int64)
        xs, ys = samples[:, 0] + margin, samples[:, 1] + margin
        keep = (xs >= 0) & (xs < canvas.shape[1]) & (ys >= 0) & (ys < canvas.shape[0])
        canvas[ys[keep], xs[keep]] = True
    stroke = ndimage.binary_dilation(canvas, structure=np.ones((scribble.width, scribble.width), dtype=bool))
    mask = stroke[margin : margin + height, margin : margin + width].astype(np.float32)
    if not mask.any():
        raise SmatError(f"scribble does not touch the {width}x{height} image")
    return mask


def rasterize_mask(mask: Mask, size: Size) -> np.ndarray:
    """A mask array or image file of exactly the image size; non-zero pixels are marked."""
    if isinstance(mask.source, np.ndarray):
        array = mask.source
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        name = "mask array"
    else:
        from smat_deploy.images import load_mask_image  # images imports nothing from here

        array = load_mask_image(mask.source)
        name = f"mask {mask.source}"
    if array.shape != tuple(size):
        raise SmatError(f"{name} is {array.shape[1]}x{array.shape[0]} but the image is {size[1]}x{size[0]}")
    return (np.asarray(array) != 0).astype(np.float32)


def rasterize(prompts: Sequence[Prompt], size: Size) -> np.ndarray:
    """Union of all prompts as a float32 ``HxW`` mask of 0 and 1; an empty list gives automatic mode."""
    mask = np.zeros(size, dtype=np.float32)
    for prompt in prompts:
        if isinstance(prompt, Point):
            part = rasterize_points([prompt], size)
        elif isinstance(prompt, Box):
            part = rasterize_box(prompt, size)
        elif isinstance(prompt, Scribble):
            part = rasterize_scribble(prompt, size)
        elif isinstance(prompt, Mask):
            part = rasterize_mask(prompt, size)
        else:
            raise SmatError(f"unknown prompt object: {type(prompt).__name__}")
        np.maximum(mask, part, out=mask)
    return mask


def prompt_kind(prompts: Sequence[Prompt]) -> PromptKind | str:
    """The kind of a prompt list: ``none``, a single kind, or ``mixed``."""
    kinds = {p.kind for p in prompts}
    if not kinds:
        return PromptKind.NONE
    return kinds.pop() if len(kinds) == 1 else "mixed"


# -- JSON ------------------------------------------------------------------------------------------
_FIELDS: dict[str, tuple[set[str], set[str]]] = {  # type -> (required, optional)
    "point": ({"x", "y"}, {"radius"}),
    "box": ({"x0", "y0", "x1", "y1"}, set()),
    "scribble": ({"points"}, {"width"}),
    "mask": ({"path"}, set()),
}


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SmatError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _integer(value: object, where: str) -> int:
    number = _number(value, where)
    if number != int(number):
        raise SmatError(f"{where} must be a whole number, got {value!r}")
    return int(number)


def _scribble_points(value: object, where: str) -> tuple[tuple[float, float], ...]:
    if not isinstance(value, list) or not value:
        raise SmatError(f"{where} must be a non-empty list of [x, y] pairs")
    points = []
    for i, pair in enumerate(value):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise SmatError(f"{where}[{i}] must be an [x, y] pair, got {pair!r}")
        points.append((_number(pair[0], f"{where}[{i}][0]"), _number(pair[1], f"{where}[{i}][1]")))
    return tuple(points)


def parse_prompt(obj: object, where: str = "prompt", base_dir: Path | None = None) -> Prompt:
    """One JSON object -> a prompt. Mask paths are relative to ``base_dir`` (the JSON file's folder)."""
    if not isinstance(obj, dict):
        raise SmatError(f'{where} must be an object with a "type", got {type(obj).__name__}')
    kind = obj.get("type")
    if kind not in _FIELDS:
        raise SmatError(f"{where}: unknown type {kind!r} (expected one of {', '.join(_FIELDS)})")
    required, optional = _FIELDS[kind]
    keys = set(obj) - {"type"}
    if missing := sorted(required - keys):
        raise SmatError(f"{where} ({kind}) is missing {', '.join(missing)}")
    if unknown := sorted(keys - required - optional):
        raise SmatError(f"{where} ({kind}) has unknown field(s) {', '.join(unknown)}")
    if kind == "point":
        radius = _integer(obj.get("radius", DEFAULT_POINT_RADIUS), f"{where}.radius")
        return Point(_number(obj["x"], f"{where}.x"), _number(obj["y"], f"{where}.y"), radius)
    if kind == "box":
        return Box(*(_number(obj[k], f"{where}.{k}") for k in ("x0", "y0", "x1", "y1")))
    if kind == "scribble":
        width = _integer(obj.get("width", DEFAULT_SCRIBBLE_WIDTH), f"{where}.width")
        return Scribble(_scribble_points(obj["points"], f"{where}.points"), width)
    path = obj["path"]
    if not isinstance(path, str) or not path:
        raise SmatError(f"{where}.path must be a file path string")
    return Mask(str((base_dir or Path(".")) / path))


def _read_json(path: str | os.PathLike[str]) -> object:
    path = Path(path)
    if not path.is_file():
        raise SmatError(f"prompt file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SmatError(f"malformed prompt JSON in {path}: {err}") from None


def parse_prompts(data: object, base_dir: Path | None = None) -> list[Prompt]:
    """A JSON list of prompt objects (or one object) -> prompts."""
    items = data if isinstance(data, list) else [data]
    return [parse_prompt(item, f"prompt[{i}]", base_dir) for i, item in enumerate(items)]


def load_prompt_file(path: str | os.PathLike[str]) -> list[Prompt]:
    """Read a JSON prompt file: a list of objects, each with ``"type"``: point, box, scribble or mask."""
    return parse_prompts(_read_json(path), Path(path).parent)


def load_scribble_file(path: str | os.PathLike[str], width: int = DEFAULT_SCRIBBLE_WIDTH) -> Scribble:
    """A scribble file: a JSON list of ``[x, y]`` points, or ``{"points": [...], "width": W}``."""
    data = _read_json(path)
    if isinstance(data, dict):
        prompt = parse_prompt({"type": "scribble", **data}, f"scribble {path}")
        assert isinstance(prompt, Scribble)
        return prompt
    return Scribble(_scribble_points(data, f"scribble {path}"), width)


def parse_pair(text: str, count: int, what: str) -> tuple[float, ...]:
    """``"X,Y"`` (or ``count`` comma-separated numbers) from the command line."""
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise SmatError(f"{what} must be {count} comma-separated numbers, got {text!r}")
    return values
