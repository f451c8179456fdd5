"""``Runtime`` on a tiny contract model with ONNX Runtime: input forms, output forms, validation, info.

What every backend must do (contract checks of a model file, size limits, threads, options, devices) is in
test_backend_contract.py, run over the whole registry.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from smat_deploy import SmatError
from smat_deploy import prompts as P
from smat_deploy.runtime import Runtime

RNG = np.random.default_rng(7)
PHOTO = (RNG.random((30, 41, 3)) * 255).astype(np.uint8)


def contract_image(photo: np.ndarray) -> np.ndarray:
    return (photo.astype(np.float32) / 255).transpose(2, 0, 1)[None]


def square(height: int, width: int, x: int, y: int, radius: int) -> np.ndarray:
    mask = np.zeros((1, 1, height, width), np.float32)
    mask[..., max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1] = 1
    return mask


def test_single_uint8_photo_gives_an_hxw_numpy_alpha(tiny_onnx, tiny_expected_alpha):
    runtime = Runtime.open(tiny_onnx)
    alpha = runtime(PHOTO)
    assert isinstance(alpha, np.ndarray) and alpha.shape == (30, 41) and alpha.dtype == np.float32
    expected = tiny_expected_alpha(contract_image(PHOTO), np.zeros((1, 1, 30, 41)), np.zeros((1, 1)))
    np.testing.assert_allclose(alpha, expected[0, 0], atol=1e-6)


def test_batch_of_floats_and_torch_tensors_mirror_the_input_kind(tiny_onnx, tiny_expected_alpha):
    runtime = Runtime.open(tiny_onnx)
    batch = RNG.random((3, 3, 20, 17)).astype(np.float32)
    prompt = (RNG.random((3, 1, 20, 17)) > 0.7).astype(np.float32)
    state = np.array([[1], [0], [1]], np.float32)
    expected = tiny_expected_alpha(batch, prompt, state)
    alpha = runtime(batch, prompt, state)
    assert isinstance(alpha, np.ndarray) and alpha.shape == (3, 1, 20, 17)
    np.testing.assert_allclose(alpha, expected, atol=1e-6)
    alpha_t = runtime(torch.from_numpy(batch), torch.from_numpy(prompt), torch.from_numpy(state))
    assert isinstance(alpha_t, torch.Tensor) and alpha_t.device.type == "cpu" and alpha_t.shape == (3, 1, 20, 17)
    np.testing.assert_allclose(alpha_t.numpy(), expected, atol=1e-6)
    single_t = runtime(torch.from_numpy(PHOTO))
    assert isinstance(single_t, torch.Tensor) and single_t.shape == (30, 41)
    # float64 photos in [0, 1] are accepted too
    np.testing.assert_allclose(runtime(PHOTO / 255.0), single_t.numpy(), atol=1e-6)


def test_prompt_objects_json_dicts_and_masks_give_the_same_alpha(tiny_onnx, tiny_expected_alpha):
    runtime = Runtime.open(tiny_onnx)
    expected = tiny_expected_alpha(contract_image(PHOTO), square(30, 41, 20, 10, 3), np.ones((1, 1)))[0, 0]
    as_json = runtime(PHOTO, [{"type": "point", "x": 20, "y": 10, "radius": 3}])
    as_object = runtime(PHOTO, [P.Point(20, 10, radius=3)])
    as_one_dict = runtime(PHOTO, {"type": "point", "x": 20, "y": 10, "radius": 3})
    as_uint8_mask = runtime(PHOTO, (square(30, 41, 20, 10, 3)[0, 0] * 255).astype(np.uint8))
    as_bool_mask = runtime(PHOTO, square(30, 41, 20, 10, 3)[0, 0] > 0)
    for alpha in (as_json, as_object, as_one_dict, as_uint8_mask, as_bool_mask):
        np.testing.assert_allclose(alpha, expected, atol=1e-6)
    box = runtime(PHOTO, [{"type": "box", "x0": 2, "y0": 3, "x1": 9, "y1": 12}])
    box_mask = np.zeros((1, 1, 30, 41), np.float32)
    box_mask[..., 3:12, 2:9] = 1
    np.testing.assert_allclose(
        box, tiny_expected_alpha(contract_image(PHOTO), box_mask, np.ones((1, 1)))[0, 0], atol=1e-6
    )


def test_state_is_derived_per_sample_and_can_be_forced(tiny_onnx, tiny_expected_alpha):
    runtime = Runtime.open(tiny_onnx)
    batch = RNG.random((2, 3, 16, 16)).astype(np.float32) * 0.5
    per_sample = [[], [{"type": "box", "x0": 0, "y0": 0, "x1": 4, "y1": 4}]]
    alpha = runtime(batch, per_sample)
    prompt = np.zeros((2, 1, 16, 16), np.float32)
    prompt[1, :, :4, :4] = 1
    np.testing.assert_allclose(alpha, tiny_expected_alpha(batch, prompt, np.array([[0], [1]], np.float32)), atol=1e-6)
    forced_auto = runtime(batch, per_sample, state=0)
    np.testing.assert_allclose(forced_auto, tiny_expected_alpha(batch, prompt, np.zeros((2, 1), np.float32)), atol=1e-6)
    shared = runtime(batch, [P.Box(0, 0, 4, 4)])  # one list for every sample
    both = np.zeros_like(prompt)
    both[:, :, :4, :4] = 1
    np.testing.assert_allclose(shared, tiny_expected_alpha(batch, both, np.ones((2, 1), np.float32)), atol=1e-6)


@pytest.mark.parametrize(
    ("image", "prompt", "state", "message"),
    [
        (PHOTO[:13], None, None, "at least 14x14"),
        (PHOTO[..., 0], None, None, "HxWx3 (one photo) or Bx3xHxW"),
        (PHOTO[..., :2], None, None, "HxWx3 (RGB, channels last)"),
        (np.zeros((1, 4, 20, 20), np.float32), None, None, "Bx3xHxW (RGB, channels first)"),
        (PHOTO.astype(np.float32), None, None, "must lie in [0, 1]"),
        (PHOTO.astype(np.int32), None, None, "uint8 or float"),
        ([[1, 2, 3]], None, None, "numpy array or a torch tensor"),
        (PHOTO, np.ones((30, 40), np.float32), None, "prompt mask is 40x30 but the image is 41x30"),
        (PHOTO, np.ones((2, 1, 30, 41), np.float32), None, "prompt mask must be Bx1xHxW = [1, 1, 30, 41]"),
        (PHOTO, np.ones((1, 30, 41), np.float32), None, "HxW or Bx1xHxW"),
        (PHOTO, [{"type": "point", "x": 100, "y": 5}], None, "outside the 41x30 image"),
        (PHOTO, [{"type": "blob"}], None, "unknown type 'blob'"),
        (PHOTO, "point", None, "prompt must be a mask, prompt objects or None"),
        (PHOTO, None, 1, "interactive state with an empty prompt"),
        (PHOTO, None, 2, "state must be 0 (automatic) or 1"),
        (PHOTO, None, np.ones(3), "one value per sample (1)"),
    ],
)
def test_bad_inputs_raise_one_line_errors(tiny_onnx, image, prompt, state, message):
    runtime = Runtime.open(tiny_onnx)
    with pytest.raises(SmatError) as caught:
        runtime(image, prompt, state)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_opening_bad_files_gives_one_line_errors(tmp_path, tiny_onnx_factory):
    (tmp_path / "model.bin").write_bytes(b"123")
    (tmp_path / "garbage.onnx").write_bytes(b"not a protobuf")
    cases = [
        (tmp_path / "model.bin", "unknown engine type 'model.bin'"),
        (tmp_path / "missing.onnx", "engine not found"),
        (tmp_path / "garbage.onnx", "ONNX Runtime cannot load"),
        ("torch.onnx.export", "unknown engine type"),
    ]
    for engine, message in cases:
        with pytest.raises(SmatError) as caught:
            Runtime.open(engine)
        assert message in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(SmatError, match="unknown device 'gpu0'"):
        Runtime.open(tiny_onnx_factory(tmp_path / "tiny.onnx"), device="gpu0")


def test_info_reports_backend_precision_providers_and_contract(tmp_path, tiny_onnx_factory):
    runtime = Runtime.open(tiny_onnx_factory(tmp_path / "int8.onnx", precision="int8"), device="cpu", threads=1)
    info = runtime.info.as_dict()
    assert info["backend"] == "onnxruntime" and info["precision"] == "int8" and info["device"] == "cpu"
    assert info["providers"] == ["CPUExecutionProvider"] and info["threads"] == 1
    assert info["manifest"].endswith("int8.json")
    assert [(i["name"], i["dtype"], i["shape"]) for i in info["inputs"]] == [
        ("image", "float32", ["batch", 3, "height", "width"]),
        ("prompt", "float32", ["batch", 1, "height", "width"]),
        ("state", "float32", ["batch", 1]),
    ]
    assert info["outputs"] == [{"name": "alpha", "dtype": "float32", "shape": ["batch", 1, "height", "width"]}]
    no_manifest = Runtime.open(tiny_onnx_factory(tmp_path / "bare.onnx"))
    assert no_manifest.info.precision.startswith("unknown")
    assert no_manifest.info.as_dict()["graph_optimization"] == "ORT_ENABLE_ALL"
    # the TensorRT INT8 file is float16 outside its int8 layers (an AutoCast graph): basic optimisation, as fp16
    assert info["graph_optimization"] == "ORT_ENABLE_BASIC"


def test_fp16_models_get_basic_graph_optimisation(tmp_path, tiny_onnx_factory):
    # ORT_ENABLE_ALL's fusions crashed on AutoCast graphs; `export --fp16` records precision "fp16"
    runtime = Runtime.open(tiny_onnx_factory(tmp_path / "smat_fp16.onnx", precision="fp16"), device="cpu")
    assert runtime.info.precision == "fp16" and runtime.info.details["graph_optimization"] == "ORT_ENABLE_BASIC"
    photo = np.full((28, 42, 3), 100, np.uint8)
    np.testing.assert_allclose(runtime(photo), np.full((28, 42), 100 / 255), atol=1e-6)  # automatic: mean RGB


def test_a_requested_gpu_provider_runs_on_the_gpu_or_is_an_error_never_a_silent_cpu_run(tiny_onnx):
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(SmatError, match="has no CUDAExecutionProvider"):
            Runtime.open(tiny_onnx, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        return
    try:
        runtime = Runtime.open(tiny_onnx, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    except SmatError as err:
        assert "CUDAExecutionProvider was requested but did not load" in str(err)
        return
    assert runtime.info.providers[0] == "CUDAExecutionProvider"


def test_auto_device_always_finds_somewhere_to_run(tiny_onnx):
    runtime = Runtime.open(tiny_onnx, device="auto")
    assert runtime.info.providers[-1] == "CPUExecutionProvider"
    assert runtime(PHOTO).shape == (30, 41)


def test_tensorrt_engines_report_a_missing_package_in_one_line(tmp_path):
    pytest.importorskip("smat_deploy.runtime.tensorrt")
    from smat_deploy.runtime.tensorrt import unavailable_reason

    reason = unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT and a GPU are available here; tests/runtime/test_tensorrt.py covers engines")
    (tmp_path / "smat.plan").write_bytes(b"engine bytes")
    with pytest.raises(SmatError) as caught:
        Runtime.open(tmp_path / "smat.plan")
    assert str(caught.value) == reason and "\n" not in reason
    assert "TensorRT" in reason and ("pip install tensorrt" in reason or "GPU" in reason)


def test_runtime_is_available_from_the_package_root():
    import smat_deploy

    assert smat_deploy.Runtime is Runtime and "Runtime" in smat_deploy.__all__


def test_importing_the_runtime_never_imports_tensorrt():
    code = "import sys, smat_deploy.runtime; print('tensorrt' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert result.stdout.strip() == "False"


def test_cuda_tensors_are_bound_in_place_and_come_back_on_the_gpu(tiny_onnx, tiny_expected_alpha):
    if not torch.cuda.is_available() or "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs a CUDA GPU and onnxruntime-gpu's CUDA provider")
    try:
        runtime = Runtime.open(tiny_onnx, device="cuda")
    except SmatError as err:
        pytest.skip(f"the CUDA provider does not load here: {err}")
    batch = torch.rand(2, 3, 20, 30, device="cuda")
    prompt = torch.zeros(2, 1, 20, 30, device="cuda")
    prompt[1, :, 5:10, 5:10] = 1
    alpha = runtime(batch, prompt)
    assert alpha.is_cuda and alpha.shape == (2, 1, 20, 30)
    expected = tiny_expected_alpha(batch.cpu().numpy(), prompt.cpu().numpy(), np.array([[0], [1]], np.float32))
    np.testing.assert_allclose(alpha.cpu().numpy(), expected, atol=1e-6)
