"""The PyTorch reference behind ``Runtime``: same numbers as the model, from a module or a checkpoint."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from smat_deploy import prompts as P
from smat_deploy.model import predict_alpha, save_checkpoint
from smat_deploy.runtime import Runtime

RNG = np.random.default_rng(11)
PHOTO = (RNG.random((45, 59, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def reference(varying_model):
    return Runtime.open(varying_model, device="cpu")


def test_module_runtime_equals_the_reference_model(reference, varying_model):
    mask = P.rasterize([P.Point(30, 20, radius=6)], (45, 59))
    expected = predict_alpha(varying_model, PHOTO.astype(np.float32) / 255, mask)
    alpha = reference(PHOTO, [{"type": "point", "x": 30, "y": 20, "radius": 6}])
    assert isinstance(alpha, np.ndarray) and alpha.shape == (45, 59)
    np.testing.assert_array_equal(alpha, expected)
    assert alpha.std() > 0.01  # the default weights give a varying alpha: the comparison means something
    automatic = reference(torch.from_numpy(PHOTO))
    assert isinstance(automatic, torch.Tensor)
    np.testing.assert_array_equal(automatic.numpy(), predict_alpha(varying_model, PHOTO.astype(np.float32) / 255))


def test_read_only_arrays_run_without_a_warning_and_stay_untouched(reference):
    photo = PHOTO.astype(np.float32) / 255
    frozen = photo.copy()
    frozen.flags.writeable = False
    mask = P.rasterize([P.Point(30, 20, radius=6)], (45, 59))
    mask.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when handed a non-writable numpy array
        alpha = reference(frozen, mask)
    np.testing.assert_array_equal(alpha, reference(photo, mask.copy()))
    np.testing.assert_array_equal(frozen, photo)


def test_checkpoint_runtime_equals_the_module_and_reports_itself(reference, varying_model, tmp_path):
    checkpoint = save_checkpoint(varying_model, tmp_path / "smat.pth")
    runtime = Runtime.open(checkpoint, device="cpu")
    batch = RNG.random((2, 3, 28, 45)).astype(np.float32)
    prompt = [[P.Box(3, 3, 20, 20)], []]
    np.testing.assert_array_equal(runtime(batch, prompt), reference(batch, prompt))
    info = runtime.info.as_dict()
    assert info["backend"] == "torch" and info["precision"] == "float32" and info["device"] == "cpu"
    assert info["providers"] == ["torch-cpu"] and info["weights"] == str(checkpoint)
    assert info["inputs"][0] == {"name": "image", "dtype": "float32", "shape": ["batch", 3, "height", "width"]}
