"""The exported SMat model behind ``Runtime``: same alpha as the PyTorch reference, from any input form."""

from __future__ import annotations

from multiprocessing.pool import ThreadPool

import numpy as np
import pytest
import torch

from smat_deploy import prompts as P
from smat_deploy.runtime import Runtime

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


def test_thread_pool_calls_equal_serial_calls(onnx_runtime):
    jobs = [
        ((RNG.random((28 + 14 * (i % 2), 42 + i, 3)) * 255).astype(np.uint8), [P.Point(10, 10, 5)] if i % 2 else None)
        for i in range(6)
    ]
    serial = [onnx_runtime(image, prompt) for image, prompt in jobs]
    with ThreadPool(3) as pool:
        parallel = pool.starmap(onnx_runtime, jobs)
    for one, other in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(one, other)
