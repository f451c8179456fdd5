"""``Predictor`` on every backend that runs here gives ONNX Runtime's alpha, on real photos.

The exported pair of the fine-tuned fixture (alpha with real structure) opened on OpenVINO, and the PyTorch
reference split of the same checkpoint, against the pair on ONNX Runtime: every prompt kind, on the shared
photos at sizes that are not multiples of 14 (the padded grid's quirk applies), within 1e-5 (float32).
"""

from __future__ import annotations

import numpy as np
import pytest

from smat_deploy import Predictor
from smat_deploy.contract import PATCH_SIZE, PROMPT_KINDS
from smat_deploy.data.parity_sets import derived_prompt, scan_photo_folder
from smat_deploy.images import load_image

pytestmark = pytest.mark.heavy

#: float32: the backends evaluate one graph (or the reference's arithmetic) to rounding.
TOLERANCE = 1e-5
#: Long side of the photos: CPU-sized, not a multiple of 14.
MAX_SIDE = 289
PHOTOS = 3


@pytest.fixture(scope="module")
def photos(shared_photos) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """The shared photos with a ground truth (prompts are derived from it), then one without."""
    found, _ = scan_photo_folder(shared_photos)
    with_alpha = [(p, a) for p, a in found if a is not None][: PHOTOS - 1]
    without = [(p, a) for p, a in found if a is None][:1]
    chosen = []
    for photo, alpha_path in with_alpha + without:
        rgb = load_image(photo, max_side=MAX_SIDE)
        height, width = rgb.shape[:2]
        rgb = rgb[: height - (height % PATCH_SIZE == 0), : width - (width % PATCH_SIZE == 0)]  # off the grid
        alpha = None
        if alpha_path is not None:
            alpha = load_image(alpha_path, max_side=MAX_SIDE).mean(axis=-1)[: rgb.shape[0], : rgb.shape[1]]
        chosen.append((photo.name, rgb, alpha))
    assert len(chosen) == PHOTOS
    return chosen


@pytest.fixture(scope="module")
def predictors(exported) -> dict[str, Predictor]:
    opened = {"onnxruntime": Predictor.open(exported["dir"], device="cpu")}
    from smat_deploy.runtime.registry import backend_class

    if backend_class("openvino").unavailable_reason() is None:
        opened["openvino"] = Predictor.open(exported["dir"], backend="openvino", device="cpu")
    opened["torch"] = Predictor.open(exported["checkpoint"], backend="torch", device="cpu")
    return opened


@pytest.mark.parametrize("backend", ["openvino", "torch"])
def test_the_predictor_on_each_backend_equals_onnx_runtime_on_real_photos(backend, predictors, photos):
    if backend not in predictors:
        pytest.skip(f"{backend} is not installed here")
    reference, predictor = predictors["onnxruntime"], predictors[backend]
    assert predictor.backend == backend
    worst, spread = 0.0, []
    for name, rgb, alpha in photos:
        height, width = rgb.shape[:2]
        assert height % PATCH_SIZE and width % PATCH_SIZE, name
        mine, theirs = predictor.embed(rgb), reference.embed(rgb)
        for kind in PROMPT_KINDS:
            prompt = derived_prompt(alpha, (height, width), kind)
            assert (prompt.sum() > 0) == (kind != "none"), (name, kind)
            state = 0.0 if kind == "none" else 1.0
            expected = reference.predict(theirs, prompt, state)
            got = predictor.predict(mine, prompt, state)
            assert got.shape == expected.shape == (height, width) and got.dtype == np.float32
            worst = max(worst, float(np.abs(got - expected).max()))
            spread.append(float(expected.std()))
    assert min(spread) > 0.05  # real mattes, not a constant
    assert worst <= TOLERANCE, f"{backend} vs onnxruntime: max |alpha diff| {worst:.2e}"
