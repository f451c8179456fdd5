"""The five matting metrics (SAD, MSE, MAD, Grad, Conn), defined once for every table the project prints.

Conventions, shared by all five:

- ``pred`` and ``gt`` are one ``HxW`` alpha matte each, floats in [0, 1] (numpy arrays or torch tensors).
  Anything else is an error rather than silently rescaled or clipped: an 8-bit matte passed by mistake
  would otherwise inflate every number by 255 (or 255^2) and still look plausible.
- ``mask`` (optional, boolean ``HxW``) selects the pixels that are summed or averaged, e.g.
  ``trimap == 128`` for the trimap-based DIM protocol. The default is the whole image, which is what
  the automatic benchmarks report. Grad and Conn always filter and find components on the whole image;
  the mask only chooses which pixels of the error map count, exactly as the DIM evaluation code does.
- Units are those of the DIM tables: SAD, Grad and Conn are sums divided by 1000; MSE and MAD are plain
  means (papers often print them multiplied by 1000; that is a presentation choice left to the caller).
- Dataset-level numbers are the mean of the per-image values (:func:`mean_metrics`).

Computation is in float64 whatever the input dtype, so the numbers do not depend on whether a backend
returned float16, float32 or float64 mattes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from scipy import ndimage

from smat_deploy.errors import SmatError

#: Keys of :func:`matting_metrics`, in the order papers print them.
METRIC_NAMES = ("SAD", "MSE", "MAD", "Grad", "Conn")

#: Standard deviation (pixels) of the Gaussian-derivative filters behind Grad (DIM).
GRAD_SIGMA = 1.4

#: Conn thresholds are ``k / CONN_STEPS`` for ``k = 0 .. CONN_STEPS`` (step 0.1, DIM).
CONN_STEPS = 10

#: Conn only penalises a pixel whose alpha lies at least this far above its connectivity level (DIM).
CONN_MIN_DISTANCE = 0.15

#: A numpy array or a torch tensor (tensors are read without this module importing torch).
Alpha = Any


# --------------------------------------------------------------------------------------------------
# Input validation


def _as_array(value: object, name: str) -> np.ndarray:
    torch = sys.modules.get("torch")  # a tensor means torch is loaded already
    if torch is not None and isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value if value.dtype == torch.bool else value.double()
        return value.numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as err:
        raise SmatError(f"{name} is not an array: {err}".splitlines()[0]) from None


def _check_alpha(value: object, name: str) -> np.ndarray:
    array = _as_array(value, name)
    if not (array.dtype == bool or np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise SmatError(f"{name} must be a real-valued alpha matte, got dtype {array.dtype}")
    if array.ndim != 2:
        raise SmatError(f"{name} must be one HxW alpha matte, got shape {tuple(array.shape)}")
    if array.size == 0:
        raise SmatError(f"{name} is empty (shape {tuple(array.shape)})")
    array = array.astype(np.float64, copy=False)
    if not np.isfinite(array).all():
        raise SmatError(f"{name} contains NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise SmatError(
            f"{name} has values in [{low:.6g}, {high:.6g}]; alpha must lie in [0, 1] (divide 8-bit mattes by 255)"
        )
    return array


def _check_inputs(pred: Alpha, gt: Alpha, mask: Alpha | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validated float64 ``pred`` and ``gt`` and boolean ``mask`` (None: the whole image)."""
    pred_array = _check_alpha(pred, "pred")
    gt_array = _check_alpha(gt, "gt")
    if pred_array.shape != gt_array.shape:
        raise SmatError(f"pred and gt must have the same shape, got {pred_array.shape} and {gt_array.shape}")
    if mask is None:
        return pred_array, gt_array, None
    mask_array = _as_array(mask, "mask")
    # A trimap passed as the mask would silently count the foreground too; insist on an explicit boolean.
    if mask_array.dtype != bool:
        raise SmatError(f"mask must be boolean (e.g. trimap == 128), got dtype {mask_array.dtype}")
    if mask_array.shape != pred_array.shape:
        raise SmatError(f"mask has shape {tuple(mask_array.shape)} but pred and gt have {pred_array.shape}")
    if not mask_array.any():
        raise SmatError("mask selects no pixels; the metrics would be undefined")
    return pred_array, gt_array, mask_array


def _select(error_map: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    return error_map if mask is None else error_map[mask]


# --------------------------------------------------------------------------------------------------
# Metrics on validated arrays


def _sad(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None) -> float:
    return float(_select(np.abs(pred - gt), mask).sum() / 1000.0)


def _mse(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None) -> float:
    return float(_select((pred - gt) ** 2, mask).mean())


def _mad(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None) -> float:
    return float(_select(np.abs(pred - gt), mask).mean())


def _gaussian_derivative_filters(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """The 1-D factors of DIM's 2-D kernel ``hx(i, j) = gauss(i) * dgauss(j)``, each of unit L2 norm.

    DIM's ``gaussgradient`` (G. Xiong, used by the DIM evaluation code) takes the half size
    ``ceil(sigma * sqrt(-2 * log(sqrt(2 pi) * sigma * 0.01)))`` (4 for sigma 1.4, a 9x9 kernel) and
    divides the kernel by its Frobenius norm. That norm is the product of the factors' norms, so
    normalising each factor gives the same kernel while allowing two cheap 1-D passes.
    """
    half = int(np.ceil(sigma * np.sqrt(-2.0 * np.log(np.sqrt(2.0 * np.pi) * sigma * 1e-2))))
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    gauss = np.exp(-(offsets**2) / (2.0 * sigma**2)) / (sigma * np.sqrt(2.0 * np.pi))
    dgauss = -offsets * gauss / sigma**2
    return gauss / np.linalg.norm(gauss), dgauss / np.linalg.norm(dgauss)


def _gradient_magnitude(alpha: np.ndarray) -> np.ndarray:
    # mode="nearest" is MATLAB's imfilter(..., 'replicate', 'conv'); convolve1d flips the kernel like 'conv'.
    # Edge replication is separable, so the two 1-D passes equal the 2-D filter exactly (up to rounding).
    smooth, derivative = _gaussian_derivative_filters(GRAD_SIGMA)

    def filter2d(rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        once = ndimage.convolve1d(alpha, rows, axis=0, mode="nearest")
        return ndimage.convolve1d(once, columns, axis=1, mode="nearest")

    return np.hypot(filter2d(smooth, derivative), filter2d(derivative, smooth))


def _grad(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None) -> float:
    error_map = (_gradient_magnitude(pred) - _gradient_magnitude(gt)) ** 2
    return float(_select(error_map, mask).sum() / 1000.0)


def _largest_component(region: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of ``region`` (all False when it is empty).

    Background is never a candidate. Some Python ports pick ``argmax(bincount(labels))``, which lets
    the background (label 0) win whenever it is the largest area; MATLAB's ``bwconncomp`` in the DIM
    code never returns it. Ties go to the component met first in row-major order.
    """
    labels, count = ndimage.label(region, structure=ndimage.generate_binary_structure(2, 1))
    if count == 0:
        return np.zeros(region.shape, dtype=bool)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    return labels == int(sizes.argmax())


def _connectivity_levels(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``l`` per pixel: the last threshold at which it still belonged to the largest common component.

    A pixel counts as inside at threshold 0 (everything is); it leaves at the first threshold where it is
    not in the largest component of ``(pred >= t) & (gt >= t)`` and never comes back, even if a later,
    different largest component covers it again (DIM). Pixels inside up to threshold 1 get ``l = 1``.
    Thresholds are ``k / 10`` rather than ``0.1 * k``, so an alpha of exactly 0.6 (153/255) reaches 0.6.
    """
    levels = np.ones_like(pred)
    inside = np.ones(pred.shape, dtype=bool)
    for k in range(1, CONN_STEPS + 1):
        threshold = k / CONN_STEPS
        largest = _largest_component((pred >= threshold) & (gt >= threshold))
        levels[inside & ~largest] = (k - 1) / CONN_STEPS
        inside &= largest
        if not inside.any():
            break
    return levels


def _conn(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None) -> float:
    levels = _connectivity_levels(pred, gt)

    def phi(alpha: np.ndarray) -> np.ndarray:
        distance = alpha - levels
        return 1.0 - distance * (distance >= CONN_MIN_DISTANCE)

    return float(_select(np.abs(phi(pred) - phi(gt)), mask).sum() / 1000.0)


# --------------------------------------------------------------------------------------------------
# Public API


def sad(pred: Alpha, gt: Alpha, mask: Alpha | None = None) -> float:
    """Sum of absolute differences over the region, divided by 1000 (a 1000x1000 all-wrong matte gives 1000)."""
    return _sad(*_check_inputs(pred, gt, mask))


def mse(pred: Alpha, gt: Alpha, mask: Alpha | None = None) -> float:
    """Mean squared difference over the region's pixels (not multiplied by 1000)."""
    return _mse(*_check_inputs(pred, gt, mask))


def mad(pred: Alpha, gt: Alpha, mask: Alpha | None = None) -> float:
    """Mean absolute difference over the region's pixels (not multiplied by 1000)."""
    return _mad(*_check_inputs(pred, gt, mask))


def grad(pred: Alpha, gt: Alpha, mask: Alpha | None = None) -> float:
    """Gradient error, DIM definition: ``sum over the region of (|grad pred| - |grad gt|)^2 / 1000``.

    Gradients come from DIM's first-order Gaussian-derivative filters, sigma 1.4: a 9x9 kernel
    ``gauss(dy) * dgauss(dx)`` (and its transpose) normalised to unit L2 norm, applied by convolution with
    replicated borders, to alpha in [0, 1]. The DIM MATLAB code stretches each 8-bit matte to [0, 1] by its
    own min and max (``mat2gray``); the widely used Python ports divide by 255 instead, which is what
    computing on alpha in [0, 1] reproduces. The two agree whenever a matte spans 0 to 1.

    The other convention in the literature (P3M/AIM code: ``scipy.ndimage.gaussian_filter(order=1)``,
    sum divided by 10) uses a unit-gain derivative. DIM's unit-norm kernel is about 9.83 times that
    filter for sigma 1.4, a squared gain of about 96.6, so its sum / 1000 lands within a few percent of
    the other's sum / 10; numbers from the two are comparable in size but not identical.
    """
    return _grad(*_check_inputs(pred, gt, mask))


def conn(pred: Alpha, gt: Alpha, mask: Alpha | None = None) -> float:
    """Connectivity error (DIM): ``sum over the region of |phi(pred) - phi(gt)| / 1000``.

    For thresholds t = 0.1, 0.2, ..., 1, take the largest 4-connected component of
    ``(pred >= t) & (gt >= t)``; ``l`` is the last threshold at which a pixel was still in it (every pixel
    is in at t = 0; once out, it stays out), ``d = alpha - l`` and ``phi = 1 - d * [d >= 0.15]``, computed
    for pred and gt with the same ``l``. A pixel cut off from the main body of the matte early gets a
    small ``l`` and hence a large ``d``, so disagreements about such fragments are what Conn measures.
    """
    return _conn(*_check_inputs(pred, gt, mask))


def matting_metrics(pred: Alpha, gt: Alpha, mask: Alpha | None = None) -> dict[str, float]:
    """All five metrics for one image, keyed by :data:`METRIC_NAMES`; the inputs are validated once."""
    arrays = _check_inputs(pred, gt, mask)
    return {
        "SAD": _sad(*arrays),
        "MSE": _mse(*arrays),
        "MAD": _mad(*arrays),
        "Grad": _grad(*arrays),
        "Conn": _conn(*arrays),
    }


def mean_metrics(per_image: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Dataset-level numbers: the plain mean of per-image metrics, every image weighted equally.

    That is how matting tables are reported (not a pixel-weighted mean), so a large image does not
    dominate. Every image must carry the same metric names.
    """
    rows = list(per_image)
    if not rows:
        raise SmatError("no per-image metrics to average")
    names = list(rows[0])
    for index, row in enumerate(rows):
        if set(row) != set(names):
            raise SmatError(f"image {index} has metrics {sorted(row)}, expected {sorted(names)}")
    return {name: float(np.mean([row[name] for row in rows])) for name in names}
