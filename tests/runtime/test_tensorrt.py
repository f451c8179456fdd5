"""TensorRT engines behind ``Runtime``: built here from the exported ONNX, checked against ONNX Runtime.

These run where the tensorrt package and an NVIDIA GPU are present, and are skipped elsewhere with
the reason. The engine is built with a small optimisation profile so the out-of-profile refusal can
be checked on a size that fits in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tensorrt_plans import build_tensorrt_plan

from smat_deploy import SmatError
from smat_deploy import prompts as P
from smat_deploy.runtime import Runtime
from smat_deploy.runtime.tensorrt import unavailable_reason

REASON = unavailable_reason()
pytestmark = [pytest.mark.tensorrt, pytest.mark.skipif(REASON is not None, reason=f"TensorRT engines: {REASON}")]

PROFILE = ((1, 14, 14), (1, 266, 266), (2, 518, 518))  # min, opt, max: (batch, height, width)


@pytest.fixture(scope="module")
def engine(exported, tmp_path_factory) -> Path:
    return build_tensorrt_plan(exported["dir"] / "smat.onnx", tmp_path_factory.mktemp("engine") / "smat.plan", PROFILE)


@pytest.fixture(scope="module")
def trt_runtime(engine):
    return Runtime.open(engine)


@pytest.fixture(scope="module")
def onnx_runtime(exported):
    return Runtime.open(exported["dir"] / "smat.onnx", device="cpu")


def test_engine_matches_onnx_runtime_with_numpy_and_cuda_tensors(trt_runtime, onnx_runtime):
    photo = (np.random.default_rng(0).random((83, 121, 3)) * 255).astype(np.uint8)
    prompts = [{"type": "point", "x": 60, "y": 40}]
    expected = onnx_runtime(photo, prompts)
    alpha = trt_runtime(photo, prompts)
    assert isinstance(alpha, np.ndarray) and alpha.shape == (83, 121)
    assert np.abs(alpha - expected).max() <= 5e-3  # float32 engine; TF32 tactics may round a little

    batch = torch.rand(2, 3, 100, 130, device="cuda", generator=None)
    alpha_cuda = trt_runtime(batch, [[P.Box(10, 10, 60, 60)], []])
    assert alpha_cuda.is_cuda and alpha_cuda.shape == (2, 1, 100, 130)
    reference = onnx_runtime(batch.cpu().numpy(), [[P.Box(10, 10, 60, 60)], []])
    assert np.abs(alpha_cuda.cpu().numpy() - reference).max() <= 5e-3


def test_info_reports_the_engine_and_its_profile(trt_runtime):
    info = trt_runtime.info
    assert info.backend == "tensorrt" and info.precision == "float32" and info.device.startswith("cuda")
    assert info.limits == {"batch": [1, 2], "height": [14, 518], "width": [14, 518]}
    assert [i["name"] for i in info.inputs] == ["image", "prompt", "state"]


def test_sizes_outside_the_profile_are_refused_before_running(trt_runtime):
    with pytest.raises(SmatError, match=r"height 600 is outside .* 14\.\.518"):
        trt_runtime(np.zeros((600, 300, 3), np.uint8))
    with pytest.raises(SmatError, match="batch 3 is outside"):
        trt_runtime(np.zeros((3, 3, 64, 64), np.float32))


def test_an_engine_that_breaks_the_contract_is_refused(tmp_path, tiny_onnx_factory):
    broken = tiny_onnx_factory(
        tmp_path / "broken.onnx", names=("img", "prompt", "state", "alpha"), size=(28, 28), batch=1
    )
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(broken))
    serialized = builder.build_serialized_network(network, builder.create_builder_config())
    plan = tmp_path / "broken.plan"
    plan.write_bytes(bytes(serialized))
    with pytest.raises(SmatError, match=r"does not match the SMat contract.*missing input image"):
        Runtime.open(plan)
