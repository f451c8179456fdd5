"""The exported SMat model behind ``Runtime``: same alpha as the PyTorch reference, from any input form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smat_deploy import prompts as P
from smat_deploy.runtime import Runtime, backend_class

pytestmark = pytest.mark.heavy

RNG = np.random.default_rng(21)


@pytest.fixture(scope="module")
def onnx_runtime(exported):
    return Runtime.open(exported["dir"] / "smat.onnx", device="cpu")


@pytest.fixture(scope="module")
def reference(finetuned_model):
    return Runtime.open(finetuned_model, device="cpu")  # the weights `exported` was made from


def test_onnx_runtime_matches_the_reference_for_every_input_form(onnx_runtime, reference):
    photo = (RNG.random((45, 59, 3)) * 255).astype(np.uint8)
    prompts = [{"type": "point", "x": 30, "y": 20, "radius": 8}]
    alpha = onnx_runtime(photo, prompts)
    assert isinstance(alpha, np.ndarray) and alpha.shape == (45, 59)
    assert np.abs(alpha - reference(photo, prompts)).max() <= 1e-4
    assert alpha.std() > 0.01

    batch = torch.rand(2, 3, 70, 56, generator=torch.Generator().manual_seed(3))
    per_sample = [[], [P.Box(10, 10, 40, 50)]]
    alpha_t = onnx_runtime(batch, per_sample)
    assert isinstance(alpha_t, torch.Tensor) and alpha_t.shape == (2, 1, 70, 56)
    assert (alpha_t - reference(batch, per_sample)).abs().max() <= 1e-4
    assert (alpha_t[0] - alpha_t[1]).abs().max() > 1e-3  # automatic and interactive samples differ


def test_info_reads_the_exported_manifest(onnx_runtime, exported):
    info = onnx_runtime.info
    assert info.backend == "onnxruntime" and info.precision == "float32"
    assert info.details["manifest"] == str(exported["dir"] / "smat.json")
    assert info.providers == ["CPUExecutionProvider"]


def test_openvino_forced_on_the_export_matches_onnx_runtime(onnx_runtime, exported):
    if (reason := backend_class("openvino").unavailable_reason()) is not None:
        pytest.skip(reason)
    openvino = Runtime.open(exported["dir"] / "smat.onnx", backend="openvino")
    assert openvino.info.backend == "openvino" and openvino.info.precision == "float32"
    photo = (RNG.random((83, 121, 3)) * 255).astype(np.uint8)
    batch = RNG.random((2, 3, 42, 70)).astype(np.float32)
    for image, prompts in (
        (photo, [{"type": "point", "x": 60, "y": 40, "radius": 8}]),
        (batch, [[P.Box(3, 3, 20, 20)], []]),
    ):
        expected = onnx_runtime(image, prompts)
        assert expected.std() > 0.01  # a real matte, not a constant
        # fp32 kernels differ in summation order: measured 3e-7 at most on this export
        assert np.abs(openvino(image, prompts) - expected).max() <= 1e-5
