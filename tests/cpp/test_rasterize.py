"""The C++ prompt masks equal smat_deploy.prompts' bit for bit, and fail with the same messages."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from smat_deploy import prompts as P
from smat_deploy.cpp import CError, rasterize
from smat_deploy.errors import SmatError

SIZES = [(14, 14), (17, 29), (30, 45), (64, 48), (97, 61), (120, 200)]


def _coordinate(rng: np.random.Generator, limit: int, slack: int) -> float:
    """Whole, half (the rounding ties) and arbitrary sub-pixel positions, some outside the image."""
    value = rng.uniform(-slack, limit + slack)
    pick = rng.integers(4)
    if pick == 0:
        return float(round(value))
    if pick == 1:
        return float(np.floor(value)) + 0.5
    return float(value)


def _prompt(rng: np.random.Generator, height: int, width: int) -> dict:
    kind = ("point", "box", "scribble")[rng.integers(3)]
    if kind == "point":
        return {
            "type": "point",
            "x": _coordinate(rng, width, 2),
            "y": _coordinate(rng, height, 2),
            "radius": int(rng.integers(0, 26)),
        }
    if kind == "box":
        x0, x1 = sorted(_coordinate(rng, width, 15) for _ in range(2))
        y0, y1 = sorted(_coordinate(rng, height, 15) for _ in range(2))
        if rng.random() < 0.05:  # reversed: an error on both sides
            x0, x1 = x1, x0
        return {"type": "box", "x0": x0, "y0": y0, "x1": x1, "y1": y1}
    count = int(rng.integers(1, 6))
    points = [[_coordinate(rng, width, 12), _coordinate(rng, height, 12)] for _ in range(count)]
    return {"type": "scribble", "points": points, "width": int(rng.integers(1, 10))}


def _python(prompts: list[dict], height: int, width: int) -> np.ndarray | str:
    try:
        return P.rasterize(P.parse_prompts(prompts), (height, width)).astype(np.uint8)
    except SmatError as err:
        return str(err)


def test_thousands_of_generated_prompts_give_the_same_pixels_and_errors(libsmat):
    rng = np.random.default_rng(20261207)
    compared = errors = 0
    for case in range(3000):
        height, width = SIZES[case % len(SIZES)]
        prompts = [_prompt(rng, height, width) for _ in range(int(rng.integers(1, 4)))]
        expected = _python(prompts, height, width)
        try:
            got = rasterize(libsmat, prompts, height, width)
        except CError as err:
            assert isinstance(expected, str), f"case {case}: C++ refused {prompts}: {err.message}"
            assert err.status == 4 and err.message == expected, (case, prompts)
            errors += 1
            continue
        assert not isinstance(expected, str), f"case {case}: Python refused {prompts} ({expected}), C++ did not"
        if not np.array_equal(got, expected):
            diff = np.argwhere(got != expected)
            pytest.fail(f"case {case} {width}x{height} {prompts}: {len(diff)} pixels differ, first at {diff[0]}")
        compared += 1
    assert compared > 2000 and errors > 50  # both paths exercised


@pytest.mark.parametrize("size", [(700, 280), (1000, 750), (45, 30)])
def test_long_strokes_and_edges_at_larger_sizes(libsmat, size):
    width, height = size
    prompts = [
        {
            "type": "scribble",
            "points": [[-30.5, 2.5], [width + 40.25, height - 0.5], [3.5, height / 2 + 0.5]],
            "width": 6,
        },
        {"type": "point", "x": width - 1.5, "y": 0.5, "radius": 30},  # a tie: rounds to the even column
        {"type": "box", "x0": -1e6, "y0": height - 2.5, "x1": 1e6, "y1": 1e9},
        {"type": "scribble", "points": [[width / 3 + 0.5, height / 3 + 0.5]], "width": 4},
    ]
    expected = _python(prompts, height, width)
    assert not isinstance(expected, str), expected
    np.testing.assert_array_equal(rasterize(libsmat, prompts, height, width), expected)


def test_mask_files_are_read_as_python_reads_them(libsmat, tmp_path):
    rng = np.random.default_rng(3)
    height, width = 40, 52
    gray = (rng.random((height, width)) < 0.3).astype(np.uint8) * rng.integers(1, 256, (height, width)).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere: the alpha channel is the mask
    rgba[..., 3] = (rng.random((height, width)) < 0.5) * 200
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    wide = (rng.random((height, width)) < 0.2).astype(np.uint16) * 3  # 16-bit values below 256
    Image.fromarray(wide).save(tmp_path / "wide.png")
    for name in ("gray.png", "rgba.png", "wide.png"):
        prompts = [{"type": "mask", "path": name}]
        expected = P.rasterize(P.parse_prompts(prompts, tmp_path), (height, width)).astype(np.uint8)
        assert expected.any()
        np.testing.assert_array_equal(rasterize(libsmat, prompts, height, width, str(tmp_path)), expected, err_msg=name)
    with pytest.raises(CError, match=r"mask .*gray\.png is 52x40 but the image is 40x52"):
        rasterize(libsmat, [{"type": "mask", "path": "gray.png"}], 52, 40, str(tmp_path))


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        ([{"type": "lasso"}], "prompt[0]: unknown type 'lasso' (expected one of point, box, scribble, mask)"),
        ([{"type": "box", "x0": 1}], "prompt[0] (box) is missing x1, y0, y1"),
        ([{"type": "point", "x": 1, "y": 2, "colour": 3}], "prompt[0] (point) has unknown field(s) colour"),
        ([{"type": "scribble", "points": []}], "prompt[0].points must be a non-empty list of [x, y] pairs"),
        ([{"type": "point", "x": 1, "y": 2, "radius": 1.5}], "prompt[0].radius must be a whole number, got 1.5"),
        (["point"], 'prompt[0] must be an object with a "type", got str'),
    ],
)
def test_bad_prompt_json_gets_the_python_message(libsmat, prompts, message):
    with pytest.raises(SmatError) as python:
        P.parse_prompts(prompts)
    assert str(python.value) == message
    with pytest.raises(CError) as cpp:
        rasterize(libsmat, prompts, 20, 20)
    assert cpp.value.status == 4 and cpp.value.message == message
