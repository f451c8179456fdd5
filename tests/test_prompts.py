"""Prompt rasterisation geometry, JSON parsing, and the out-of-image policy."""

import json

import numpy as np
import pytest
from PIL import Image

from smat_deploy import prompts as P
from smat_deploy.errors import SmatError

SIZE = (100, 120)  # height, width


def test_point_is_a_41_pixel_square_by_default():
    mask = P.rasterize([P.Point(60, 50)], SIZE)
    ys, xs = np.nonzero(mask)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (30, 70, 40, 80)
    assert mask.sum() == 41 * 41
    assert set(np.unique(mask)) == {0.0, 1.0}


def test_point_near_a_corner_is_clipped_and_radius_is_configurable():
    mask = P.rasterize([P.Point(2, 3, radius=5)], SIZE)
    assert mask.sum() == (2 + 5 + 1) * (3 + 5 + 1)
    assert mask[0, 0] == 1 and mask[8, 7] == 1 and mask[9, 7] == 0


@pytest.mark.parametrize("point", [P.Point(-1, 10), P.Point(120, 10), P.Point(10, 100)])
def test_points_outside_the_image_are_errors(point):
    with pytest.raises(SmatError, match="outside the 120x100 image"):
        P.rasterize([point], SIZE)


def test_box_is_half_open_and_clipped():
    mask = P.rasterize([P.Box(10, 20, 30, 25)], SIZE)
    assert mask.sum() == 20 * 5 and mask[20, 10] == 1 and mask[24, 29] == 1 and mask[25, 30] == 0
    clipped = P.rasterize([P.Box(-50, -50, 5, 5)], SIZE)
    assert clipped.sum() == 25


@pytest.mark.parametrize(
    ("box", "message"),
    [
        (P.Box(130, 10, 150, 20), "does not overlap"),
        (P.Box(10, 10, 10, 20), "x0 < x1"),
        (P.Box(10, 30, 20, 20), "y0 < y1"),
    ],
)
def test_bad_boxes(box, message):
    with pytest.raises(SmatError, match=message):
        P.rasterize([box], SIZE)


def test_scribble_is_a_width_wide_stroke_along_the_polyline():
    mask = P.rasterize([P.Scribble(((10, 50), (90, 50)), width=5)], SIZE)
    ys, xs = np.nonzero(mask)
    assert (ys.min(), ys.max()) == (48, 52)
    assert (xs.min(), xs.max()) == (8, 92)
    assert mask.sum() == 5 * 85
    bent = P.rasterize([P.Scribble(((10, 10), (10, 60), (60, 60)), width=3)], SIZE)
    assert bent[35, 9:12].all() and bent[59:62, 35].all() and bent[35, 35] == 0


def test_scribble_partly_outside_is_clipped_and_fully_outside_is_an_error():
    mask = P.rasterize([P.Scribble(((-20, 5), (10, 5)), width=5)], SIZE)
    assert mask[:, :13].sum() == mask.sum() > 0
    with pytest.raises(SmatError, match="does not touch"):
        P.rasterize([P.Scribble(((-50, -50), (-20, -20)))], SIZE)


def test_masks_from_arrays_and_files(tmp_path):
    array = np.zeros(SIZE)
    array[5:10, 5:10] = 0.3
    assert P.rasterize([P.Mask(array)], SIZE).sum() == 25
    Image.fromarray((array * 255).astype(np.uint8)).save(tmp_path / "m.png")
    assert P.rasterize([P.Mask(str(tmp_path / "m.png"))], SIZE).sum() == 25
    rgba = np.zeros((*SIZE, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere, but only the alpha marks the target
    rgba[40:50, 40:60, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert P.rasterize([P.Mask(str(tmp_path / "rgba.png"))], SIZE).sum() == 200
    with pytest.raises(SmatError, match="is 120x99 but the image is 120x100"):
        P.rasterize([P.Mask(np.zeros((99, 120)))], SIZE)


def test_union_of_kinds_and_none():
    assert P.rasterize([], SIZE).sum() == 0
    union = P.rasterize([P.Point(20, 20, radius=0), P.Box(50, 50, 52, 52)], SIZE)
    assert union.sum() == 5
    assert P.prompt_kind([]) == "none" and P.prompt_kind([P.Point(1, 1)]) == "point"
    assert P.prompt_kind([P.Point(1, 1), P.Box(0, 0, 2, 2)]) == "mixed"


def test_json_prompt_file_with_every_kind(tmp_path):
    Image.fromarray(np.full(SIZE, 255, np.uint8)).save(tmp_path / "mask.png")
    spec = [
        {"type": "point", "x": 5, "y": 6},
        {"type": "point", "x": 50, "y": 60, "radius": 3},
        {"type": "box", "x0": 1, "y0": 2, "x1": 3, "y1": 4},
        {"type": "scribble", "points": [[1, 2], [3, 4]], "width": 7},
        {"type": "mask", "path": "mask.png"},
    ]
    (tmp_path / "p.json").write_text(json.dumps(spec))
    parsed = P.load_prompt_file(tmp_path / "p.json")
    assert parsed[0] == P.Point(5, 6, 20)
    assert parsed[1] == P.Point(50, 60, 3)
    assert parsed[2] == P.Box(1, 2, 3, 4)
    assert parsed[3] == P.Scribble(((1, 2), (3, 4)), 7)
    assert parsed[4].source == str(tmp_path / "mask.png")
    assert P.rasterize(parsed, SIZE).sum() == SIZE[0] * SIZE[1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[{"type": "point", "x": 1}', "malformed prompt JSON"),
        ('[{"type": "lasso"}]', "unknown type 'lasso'"),
        ('[{"type": "point", "x": 1}]', r"prompt\[0\] \(point\) is missing y"),
        ('[{"type": "box", "x0": 1, "y0": 1, "x1": 2, "y1": 2, "z": 3}]', "unknown field"),
        ('[{"type": "point", "x": "a", "y": 1}]', r"prompt\[0\].x must be a finite number"),
        ('[{"type": "scribble", "points": [[1, 2, 3]]}]', r"must be an \[x, y\] pair"),
        ('[{"type": "point", "x": 1, "y": 2, "radius": 2.5}]', "whole number"),
        ("[3]", "must be an object"),
    ],
)
def test_malformed_prompt_files(tmp_path, text, message):
    (tmp_path / "p.json").write_text(text)
    with pytest.raises(SmatError, match=message):
        P.load_prompt_file(tmp_path / "p.json")


def test_scribble_files_and_cli_pairs(tmp_path):
    (tmp_path / "s.json").write_text("[[1, 2], [3, 4]]")
    (tmp_path / "t.json").write_text('{"points": [[1, 2]], "width": 9}')
    assert P.load_scribble_file(tmp_path / "s.json") == P.Scribble(((1, 2), (3, 4)), 5)
    assert P.load_scribble_file(tmp_path / "t.json") == P.Scribble(((1, 2),), 9)
    assert P.parse_pair("3,4.5", 2, "--point") == (3.0, 4.5)
    for bad in ("3", "3,x", "1,2,3", "nan,1"):
        with pytest.raises(SmatError, match="--point must be 2"):
            P.parse_pair(bad, 2, "--point")
