"""Training prompts drawn from the alpha follow the authors' conventions (SPEC section 3)."""

import numpy as np
import pytest
from scipy import ndimage

from smat_deploy.data.prompt_sampling import (
    bspline,
    parse_kinds,
    sample_kinds,
    sample_prompt,
)
from smat_deploy.errors import SmatError
from smat_deploy.prompts import PromptKind


def _alpha_with_rectangle(size=(120, 160), rows=(30, 90), cols=(40, 130)) -> np.ndarray:
    alpha = np.zeros(size, dtype=np.float32)
    alpha[rows[0] : rows[1], cols[0] : cols[1]] = 1.0
    return alpha


def test_a_click_is_the_41px_square_around_a_foreground_pixel():
    alpha = np.zeros((100, 100), dtype=np.float32)
    alpha[50, 60] = 0.9  # the only foreground pixel: every click lands on it
    mask = sample_prompt(alpha, "point", np.random.default_rng(0))
    expected = np.zeros_like(alpha)
    expected[30:71, 40:81] = 1
    assert np.array_equal(mask, expected)


def test_training_uses_one_to_three_clicks():
    alpha = np.zeros((300, 300), dtype=np.float32)
    for y, x in [(40, 40), (150, 260), (260, 60)]:  # three far-apart foreground pixels
        alpha[y, x] = 1.0
    counts = {ndimage.label(sample_prompt(alpha, "point", np.random.default_rng(s)))[1] for s in range(30)}
    assert counts == {1, 2, 3}


def test_box_is_the_bounding_box_of_alpha_above_0_2():
    alpha = _alpha_with_rectangle(rows=(10, 20), cols=(30, 50))
    alpha[5, 5] = 0.2  # not foreground: the authors threshold at alpha > 0.2
    alpha[25, 55] = 0.21  # foreground: stretches the box to row 25 and column 55 inclusive
    mask = sample_prompt(alpha, "box", np.random.default_rng(0))
    expected = np.zeros_like(alpha)
    expected[10:26, 30:56] = 1
    assert np.array_equal(mask, expected)


def test_bspline_runs_from_the_first_to_the_last_control_point():
    control = np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 10.0]])
    curve = bspline(control, samples_per_span=8)
    assert np.allclose(curve[0], control[0]) and np.allclose(curve[-1], control[-1])
    line = bspline(np.array([[0.0, 0.0], [5.0, 5.0], [10.0, 10.0], [20.0, 20.0]]))
    assert np.allclose(line[:, 0], line[:, 1])  # collinear control points stay on their line
    assert np.all(np.diff(line[:, 0]) >= -1e-9)


def test_scribble_is_one_5px_stroke_on_the_foreground():
    alpha = _alpha_with_rectangle()
    for seed in range(5):
        mask = sample_prompt(alpha, "scribble", np.random.default_rng(seed)).astype(bool)
        assert mask.any() and ndimage.label(mask)[1] == 1
        # 5 px wide: the stroke stays within 2 px of the foreground and is 5 px thick somewhere.
        assert not (mask & ~ndimage.binary_dilation(alpha > 0.2, iterations=2)).any()
        assert ndimage.binary_erosion(mask, structure=np.ones((5, 5))).any()


def test_mask_is_the_foreground_grown_or_shrunk_by_a_few_pixels():
    alpha = _alpha_with_rectangle()
    foreground = alpha > 0.2
    outer = ndimage.binary_dilation(foreground, iterations=4)
    inner = ndimage.binary_erosion(foreground, iterations=4)
    areas = set()
    for seed in range(12):
        mask = sample_prompt(alpha, "mask", np.random.default_rng(seed)).astype(bool)
        assert not (mask & ~outer).any() and not (inner & ~mask).any()
        areas.add(int(mask.sum()))
    assert len(areas) > 3  # really perturbed, not a copy of the answer


@pytest.mark.parametrize("kind", list(PromptKind))
def test_no_foreground_means_automatic_for_every_kind(kind):
    alpha = np.full((80, 80), 0.2, dtype=np.float32)  # nothing above the threshold
    assert not sample_prompt(alpha, kind, np.random.default_rng(0)).any()


def test_none_is_all_zeros_even_with_a_foreground():
    assert not sample_prompt(_alpha_with_rectangle(), "none", np.random.default_rng(0)).any()


def test_a_batch_mixes_kinds_and_is_reproducible():
    kinds = list(PromptKind)
    drawn = sample_kinds(kinds, 40, np.random.default_rng(3))
    assert set(drawn) == set(kinds)
    assert drawn == sample_kinds(kinds, 40, np.random.default_rng(3))


def test_parse_kinds():
    assert parse_kinds("box, point,box") == (PromptKind.BOX, PromptKind.POINT)
    with pytest.raises(SmatError, match="unknown prompt kind"):
        parse_kinds("box,lasso")
    with pytest.raises(SmatError, match="no prompt kinds"):
        parse_kinds(" , ")
