"""Matting metrics against small cases worked out by hand (or from an independent formula), plus input checks."""

import numpy as np
import pytest
import torch

from smat_deploy.errors import SmatError
from smat_deploy.evaluation import METRIC_NAMES, conn, grad, mad, matting_metrics, mean_metrics, mse, sad
from smat_deploy.metrics import _connectivity_levels

METRICS = {"SAD": sad, "MSE": mse, "MAD": mad, "Grad": grad, "Conn": conn}


def random_pair(shape=(12, 15), seed=0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random(shape), rng.random(shape)


# --------------------------------------------------------------------------------------------------
# SAD, MSE, MAD

# |pred - gt| = [[0, 0.5], [0.5, 0]]: dyadic values, so every result below is exact.
PRED_2X2 = np.array([[0.0, 0.5], [1.0, 0.25]])
GT_2X2 = np.array([[0.0, 1.0], [0.5, 0.25]])


def test_sad_mse_mad_on_a_2x2_case():
    assert sad(PRED_2X2, GT_2X2) == 1.0 / 1000  # 0 + 0.5 + 0.5 + 0
    assert mse(PRED_2X2, GT_2X2) == 0.125  # (0.25 + 0.25) / 4
    assert mad(PRED_2X2, GT_2X2) == 0.25  # 1.0 / 4


def test_all_wrong_3x3_matte():
    ones, zeros = np.ones((3, 3)), np.zeros((3, 3))
    assert sad(ones, zeros) == 9 / 1000
    assert mse(ones, zeros) == 1.0
    assert mad(ones, zeros) == 1.0


def test_mask_restricts_sums_and_means_to_its_pixels():
    mask = np.array([[False, True], [False, True]])  # differences 0.5 and 0
    assert sad(PRED_2X2, GT_2X2, mask) == 0.5 / 1000
    assert mse(PRED_2X2, GT_2X2, mask) == 0.125  # 0.25 / 2 pixels, not / 4
    assert mad(PRED_2X2, GT_2X2, mask) == 0.25  # 0.5 / 2
    one_pixel = np.array([[False, True], [False, False]])
    assert (mse(PRED_2X2, GT_2X2, one_pixel), mad(PRED_2X2, GT_2X2, one_pixel)) == (0.25, 0.5)


# --------------------------------------------------------------------------------------------------
# Grad


def reference_gradient_magnitude(alpha: np.ndarray) -> np.ndarray:
    """DIM's gaussgradient written out literally: 2-D kernel, edge padding, flipped-kernel window sums."""
    sigma = 1.4
    # ceil(1.4 * sqrt(-2 * ln(sqrt(2 pi) * 1.4 * 0.01))) = ceil(1.4 * sqrt(6.6995)) = ceil(3.624) = 4
    half = 4
    size = 2 * half + 1

    def gauss(x: float) -> float:
        return np.exp(-(x**2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))

    def dgauss(x: float) -> float:
        return -x * gauss(x) / sigma**2

    hx = np.array([[gauss(i - half) * dgauss(j - half) for j in range(size)] for i in range(size)])
    hx /= np.sqrt((hx**2).sum())
    padded = np.pad(alpha, half, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size))
    gx = (windows * hx[::-1, ::-1]).sum(axis=(-2, -1))  # convolution = correlation with the flipped kernel
    gy = (windows * hx.T[::-1, ::-1]).sum(axis=(-2, -1))
    return np.sqrt(gx**2 + gy**2)


def test_grad_matches_a_literal_2d_implementation_of_the_dim_filters():
    pred, gt = random_pair((11, 14), seed=1)
    expected = ((reference_gradient_magnitude(pred) - reference_gradient_magnitude(gt)) ** 2).sum() / 1000
    assert grad(pred, gt) == pytest.approx(expected, rel=1e-12)


def test_grad_of_a_vertical_step_edge_follows_from_1d_sums():
    """A step from 0 to 1 at column 6 (gt all zero): only gx is non-zero, and it has a closed form.

    The kernel is g(dy) * dg(dx) normalised to unit L2 norm. Rows are identical, so the row pass only
    multiplies by ``S = sum(g) / ||g||``; the column pass of a step gives the running sum
    ``C(m) = sum_{v <= m} dg(v) / ||dg||`` at offset ``m = column - 6``, non-zero for m = -4 .. 3.
    Hence Grad = rows * S^2 * sum_m C(m)^2 / 1000.
    """
    rows, columns, edge = 5, 13, 6
    pred = np.zeros((rows, columns))
    pred[:, edge:] = 1.0
    offsets = np.arange(-4, 5)
    g = np.exp(-(offsets**2) / (2 * 1.4**2))  # constant factors cancel in the normalisation
    dg = -offsets * g
    row_gain = g.sum() / np.linalg.norm(g)
    running = np.cumsum(dg / np.linalg.norm(dg))
    expected = rows * row_gain**2 * (running[:-1] ** 2).sum() / 1000
    assert running[-1] == pytest.approx(0.0, abs=1e-15)  # the step is fully "seen" after 9 columns
    assert grad(pred, np.zeros_like(pred)) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.0979536, rel=1e-6)  # the DIM value, not scipy's gaussian_filter / 10
    assert grad(np.zeros_like(pred), pred) == grad(pred, np.zeros_like(pred))
    # Same edge in pred and gt: no error; the mask only selects pixels of the error map.
    assert grad(pred, pred) == 0.0
    far_from_edge = np.zeros_like(pred, dtype=bool)
    far_from_edge[:, :2] = True
    assert grad(pred, np.zeros_like(pred), far_from_edge) == pytest.approx(0.0, abs=1e-15)


def test_grad_is_zero_for_identical_and_for_constant_mattes():
    pred, _ = random_pair(seed=2)
    assert grad(pred, pred) == 0.0
    assert grad(np.full((7, 9), 0.3), np.full((7, 9), 0.9)) == pytest.approx(0.0, abs=1e-20)


# --------------------------------------------------------------------------------------------------
# Conn


def test_conn_traced_by_hand_on_a_1x4_row():
    """pred = [1, .8, .6, .2], gt = [1, 1, .5, 0].

    (pred >= t) & (gt >= t): t <= .5 -> pixels {0,1,2}; .6 <= t <= .8 -> {0,1}; t >= .9 -> {0};
    pixel 3 never (gt = 0). So l = [1, .8, .5, 0].
    d_pred = [0, 0, .1, .2] -> phi_pred = [1, 1, 1, .8]   (.1 < .15 is not penalised)
    d_gt   = [0, .2, 0, 0]  -> phi_gt   = [1, .8, 1, 1]
    Conn = (0 + .2 + 0 + .2) / 1000.
    """
    pred = np.array([[1.0, 0.8, 0.6, 0.2]])
    gt = np.array([[1.0, 1.0, 0.5, 0.0]])
    np.testing.assert_allclose(_connectivity_levels(pred, gt), [[1.0, 0.8, 0.5, 0.0]])
    assert conn(pred, gt) == pytest.approx(0.4 / 1000, rel=1e-12)
    assert conn(gt, pred) == conn(pred, gt)
    only_pixel_1 = np.array([[False, True, False, False]])
    assert conn(pred, gt, only_pixel_1) == pytest.approx(0.2 / 1000, rel=1e-12)


def test_conn_excludes_a_disconnected_blob_from_the_largest_component():
    """Pixel 3 is a one-pixel island next to the two-pixel main body, so it drops out at t = .1: l = 0.

    phi_pred = 1 - .8 = .2, phi_gt = 1 - .7 = .3 -> Conn = .1 / 1000. Joined to the body (middle
    pixel set to 1) it would keep l = .7, d_pred = .1 < .15 and Conn = 0.
    """
    pred = np.array([[1.0, 1.0, 0.0, 0.8, 0.0]])
    gt = np.array([[1.0, 1.0, 0.0, 0.7, 0.0]])
    np.testing.assert_allclose(_connectivity_levels(pred, gt), [[1.0, 1.0, 0.0, 0.0, 0.0]])
    assert conn(pred, gt) == pytest.approx(0.1 / 1000, rel=1e-9)
    pred[0, 2] = gt[0, 2] = 1.0
    np.testing.assert_allclose(_connectivity_levels(pred, gt), [[1.0, 1.0, 1.0, 0.7, 0.0]])
    assert conn(pred, gt) == 0.0


def test_conn_uses_4_connectivity():
    """The bottom-right pixel touches the 2x2 body only diagonally: a separate component, l = 0."""
    gt = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.7]])
    pred = gt.copy()
    pred[2, 2] = 0.8
    assert _connectivity_levels(pred, gt)[2, 2] == 0.0
    assert conn(pred, gt) == pytest.approx(0.1 / 1000, rel=1e-9)  # with 8-connectivity: l = .7, Conn = 0


def test_background_is_never_the_largest_component():
    """Three background pixels outnumber the two foreground ones; the component is still the foreground.

    l = [0, 0, 0, 1, .9]; d_gt at the last pixel is .1 < .15, so Conn = 0. Picking the background as
    "largest" (a known slip in some ports) would give l = 0 there and Conn = .1 / 1000.
    """
    pred = np.array([[0.0, 0.0, 0.0, 1.0, 0.9]])
    gt = np.array([[0.0, 0.0, 0.0, 1.0, 1.0]])
    np.testing.assert_allclose(_connectivity_levels(pred, gt), [[0.0, 0.0, 0.0, 1.0, 0.9]])
    assert conn(pred, gt) == 0.0


def test_a_pixel_that_left_the_component_never_comes_back():
    """Left body (alpha .3, 3 px) is largest up to t = .3; from .4 to .7 the right pair (alpha .7) is, but
    it already dropped out at t = .1, so its l stays 0 (not .7, the last threshold it was in again)."""
    alpha = np.array([[0.3, 0.3, 0.3, 0.0, 0.7, 0.7]])
    np.testing.assert_allclose(_connectivity_levels(alpha, alpha), [[0.3, 0.3, 0.3, 0.0, 0.0, 0.0]])


def test_conn_when_pred_and_gt_never_overlap():
    """Empty intersection at every threshold: l = 0 everywhere, phi_pred = 1, phi_gt = 0 -> 6 / 1000."""
    assert conn(np.zeros((2, 3)), np.ones((2, 3))) == pytest.approx(6 / 1000)


def test_conn_thresholds_are_exact_tenths():
    """An alpha of exactly 0.6 (153/255) reaches the 0.6 threshold; 0.1 * 6 = 0.6000000000000001 would not."""
    alpha = np.full((1, 2), 153 / 255)
    np.testing.assert_array_equal(_connectivity_levels(alpha, alpha), [[0.6, 0.6]])


# --------------------------------------------------------------------------------------------------
# All metrics


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_metrics_are_symmetric_and_zero_on_a_perfect_matte(name):
    pred, gt = random_pair(seed=3)
    metric = METRICS[name]
    assert metric(pred, gt) > 0
    assert metric(pred, gt) == pytest.approx(metric(gt, pred), rel=1e-12)
    assert metric(gt, gt) == 0.0


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_a_full_mask_equals_no_mask(name):
    pred, gt = random_pair(seed=4)
    full = np.ones(pred.shape, dtype=bool)
    assert METRICS[name](pred, gt, full) == pytest.approx(METRICS[name](pred, gt), rel=1e-12)


def test_matting_metrics_returns_the_five_in_order():
    pred, gt = random_pair(seed=5)
    mask = np.zeros(pred.shape, dtype=bool)
    mask[2:9, 3:11] = True
    result = matting_metrics(pred, gt, mask)
    assert tuple(result) == METRIC_NAMES == ("SAD", "MSE", "MAD", "Grad", "Conn")
    for name, value in result.items():
        assert isinstance(value, float)
        assert value == METRICS[name](pred, gt, mask)


def test_torch_tensors_give_the_same_numbers():
    pred, gt = random_pair(seed=6)
    mask = pred > 0.5
    expected = matting_metrics(pred, gt, mask)
    got = matting_metrics(torch.from_numpy(pred), torch.from_numpy(gt).requires_grad_(), torch.from_numpy(mask))
    assert got == expected
    as_float32 = matting_metrics(pred.astype(np.float32), torch.from_numpy(gt.astype(np.float32)))
    assert as_float32["SAD"] == pytest.approx(sad(pred.astype(np.float32), gt.astype(np.float32)))


def test_mean_metrics_weights_every_image_equally():
    per_image = [{"SAD": 1.0, "MSE": 0.5}, {"SAD": 3.0, "MSE": 0.0}]
    assert mean_metrics(per_image) == {"SAD": 2.0, "MSE": 0.25}
    assert mean_metrics(iter(per_image)) == {"SAD": 2.0, "MSE": 0.25}
    with pytest.raises(SmatError, match="no per-image metrics"):
        mean_metrics([])
    with pytest.raises(SmatError, match="image 1 has metrics"):
        mean_metrics([{"SAD": 1.0}, {"MSE": 1.0}])


# --------------------------------------------------------------------------------------------------
# Bad inputs


@pytest.mark.parametrize("metric", [*METRICS.values(), matting_metrics])
@pytest.mark.parametrize(
    ("pred", "gt", "message"),
    [
        (np.zeros((3, 4)), np.zeros((4, 3)), r"same shape, got \(3, 4\) and \(4, 3\)"),
        (np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3)), r"pred must be one HxW alpha matte, got shape \(1, 1, 3, 3\)"),
        (np.zeros(5), np.zeros(5), "one HxW alpha matte"),
        (np.zeros((0, 3)), np.zeros((0, 3)), "empty"),
        (np.array([[0.0, np.nan]]), np.zeros((1, 2)), "pred contains NaN or infinite"),
        (np.zeros((1, 2)), np.array([[np.inf, 0.0]]), "gt contains NaN or infinite"),
        (np.array([[0.0, 1.5]]), np.zeros((1, 2)), r"pred has values in \[0, 1.5\]; alpha must lie in \[0, 1\]"),
        (np.zeros((1, 2)), np.array([[-0.25, 0.0]]), r"gt has values in \[-0.25, 0\]"),
        (np.full((2, 2), 255, np.uint8), np.zeros((2, 2)), "divide 8-bit mattes by 255"),
        (np.array([["a", "b"]]), np.zeros((1, 2)), "real-valued"),
    ],
)
def test_bad_mattes_raise_one_clear_error(metric, pred, gt, message):
    with pytest.raises(SmatError, match=message):
        metric(pred, gt)


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.ones((2, 2)), "mask must be boolean"),
        (np.full((2, 2), 128, np.uint8), r"e.g. trimap == 128"),
        (np.ones((2, 3), dtype=bool), r"mask has shape \(2, 3\) but pred and gt have \(2, 2\)"),
        (np.zeros((2, 2), dtype=bool), "selects no pixels"),
    ],
)
def test_bad_masks_raise_one_clear_error(mask, message):
    with pytest.raises(SmatError, match=message):
        matting_metrics(PRED_2X2, GT_2X2, mask)


def test_boolean_and_integer_mattes_are_accepted():
    hard = np.array([[True, False], [True, True]])
    assert sad(hard, hard.astype(np.int64)) == 0.0
    assert sad(hard, np.zeros((2, 2))) == 3 / 1000
