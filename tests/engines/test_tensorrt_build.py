"""The TensorRT builder: everything checkable without TensorRT, and a real build where it exists."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from smat_deploy.engines.tensorrt_build import Profile, Shape, build_engine, check_smat_onnx, tensorrt_status
from smat_deploy.errors import SmatError

TRT_AVAILABLE, TRT_REASON = tensorrt_status()


def test_shapes_and_profiles_are_validated():
    assert Shape.parse("2x518x300", "--opt") == Shape(2, 518, 300)
    assert Shape(1, 14, 14).input_shapes()["state"] == (1, 1)
    for bad in ("518x518", "1x518xw", ""):
        with pytest.raises(SmatError, match="--max must be BxHxW"):
            Shape.parse(bad, "--max")
    with pytest.raises(SmatError, match="height must satisfy min <= opt <= max"):
        Profile(Shape(1, 600, 600), Shape(1, 518, 518), Shape(1, 1024, 1024)).validate()
    with pytest.raises(SmatError, match="height, width >= 14"):
        Profile(Shape(1, 8, 8), Shape(1, 518, 518), Shape(1, 1024, 1024)).validate()
    assert Profile().validate().as_dict() == {"min": "1x14x14", "opt": "1x518x518", "max": "4x1568x1568"}


def _not_smat(path):
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["output"])],
        "classifier",
        [value("input", TensorProto.FLOAT, [1, 3, 224, 224])],
        [value("output", TensorProto.FLOAT, [1, 3, 224, 224])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_a_non_smat_onnx_is_refused_before_anything_else(tmp_path):
    with pytest.raises(SmatError, match="is not an SMat model: unexpected input input"):
        build_engine(_not_smat(tmp_path / "other.onnx"), tmp_path / "x.plan")
    with pytest.raises(SmatError, match="ONNX file not found"):
        check_smat_onnx(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(SmatError, match="not a readable ONNX model"):
        check_smat_onnx(tmp_path / "junk.onnx")
    assert not (tmp_path / "x.plan").exists()


@pytest.mark.skipif(TRT_AVAILABLE, reason="TensorRT is installed here: the real build test covers this machine")
def test_build_without_tensorrt_says_why(run_cli, exported, tmp_path):
    result = run_cli("build", "--onnx", exported["dir"] / "smat.onnx", "--output", tmp_path / "smat.plan")
    assert result.code != 0
    assert result.stderr.strip().splitlines() == [f"error: cannot build an engine: {TRT_REASON}"]
    assert not (tmp_path / "smat.plan").exists()


@pytest.mark.tensorrt
@pytest.mark.skipif(not TRT_AVAILABLE, reason=f"needs TensorRT and a GPU: {TRT_REASON}")
def test_real_engine_matches_onnx_runtime(exported, tmp_path):
    import json

    import onnxruntime as ort
    import tensorrt as trt
    import torch

    profile = Profile(Shape(1, 14, 14), Shape(1, 150, 190), Shape(3, 400, 400))
    result = build_engine(
        exported["dir"] / "smat.onnx", tmp_path / "smat.plan", profile=profile, timing_cache=tmp_path / "cache"
    )
    manifest = json.loads(result.manifest.read_text())
    assert manifest["profile"]["max"] == "3x400x400" and manifest["gpu"]["compute_capability"]
    assert (tmp_path / "cache").stat().st_size > 0
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(result.engine.read_bytes())
    context = engine.create_execution_context()
    from smat_deploy.data.cases import make_case

    case = make_case("trt", (150, 190), ("none", "point", "box"), seed=0)
    tensors = {k: torch.from_numpy(v).cuda() for k, v in case.feed().items()}
    alpha = torch.empty(3, 1, 150, 190, device="cuda")
    for name, tensor in tensors.items():
        context.set_input_shape(name, tuple(tensor.shape))
        context.set_tensor_address(name, tensor.data_ptr())
    context.set_tensor_address("alpha", alpha.data_ptr())
    stream = torch.cuda.Stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    expected = ort.InferenceSession(str(exported["dir"] / "smat.onnx"), providers=["CPUExecutionProvider"]).run(
        None, case.feed()
    )[0]
    assert np.abs(alpha.cpu().numpy() - expected).max() < 1e-3
