"""The C++ library against the Python runtime on the real export (fine-tuned weights): the C ABI and
``smat_matte`` equal ``Runtime``/``Predictor`` on OpenVINO (max |alpha diff| <= 1e-5) and ONNX Runtime (<= 1e-4),
on real photos at sizes that are not multiples of 14, every prompt kind, automatic and interactive. (These
weights move the alpha little for some prompts; that the prompt reaches the engine exactly is shown on tiny
contract models in test_cpp_engine.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from smat_deploy import Predictor as PyPredictor
from smat_deploy import Runtime
from smat_deploy.cpp import Engine, Predictor
from smat_deploy.images import load_image

pytestmark = pytest.mark.heavy

SIZES = [(30, 45), (700, 280), (1000, 750)]  # width x height


@pytest.fixture(scope="module")
def photos(shared_photos, tmp_path_factory):
    """Three shared photos resized to the sizes above, as 8-bit PNGs (what both sides read)."""
    folder = tmp_path_factory.mktemp("cpp-photos")
    sources = sorted((shared_photos / "am2k_gfm_pred_notGT").glob("*.jpg")) + sorted(
        (shared_photos / "aim500_aimnet_pred_notGT").glob("*.jpg")
    )
    out = {}
    for (width, height), source in zip(SIZES, sources, strict=False):
        path = folder / f"{source.stem}_{width}x{height}.png"
        Image.open(source).convert("RGB").resize((width, height), Image.Resampling.BILINEAR).save(path)
        out[(width, height)] = path
    assert len(out) == len(SIZES)
    return out


def _prompts(kind: str, width: int, height: int, folder) -> list[dict] | None:
    if kind == "none":
        return None
    if kind == "point":
        return [
            {"type": "point", "x": width * 0.5 + 0.5, "y": height * 0.45, "radius": max(2, min(width, height) // 20)}
        ]
    if kind == "box":
        return [{"type": "box", "x0": width * 0.15, "y0": height * 0.1, "x1": width * 0.85 + 0.5, "y1": height * 0.95}]
    if kind == "scribble":
        return [{"type": "scribble", "points": [[width * 0.3, height * 0.3], [width * 0.6, height * 0.7]], "width": 5}]
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4 : 3 * height // 4, width // 3 : 2 * width // 3] = 255
    path = folder / f"mask_{width}x{height}.png"
    Image.fromarray(mask).save(path)
    return [{"type": "mask", "path": str(path)}]


@pytest.fixture(scope="module")
def runtimes(exported):
    model = exported["dir"] / "smat.onnx"
    return Runtime.open(model, backend="openvino"), Runtime.open(model, backend="onnxruntime")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_c_abi_equals_the_python_runtime_for_every_prompt_kind(libsmat, exported, runtimes, photos, size, tmp_path):
    openvino, onnxruntime = runtimes
    width, height = size
    pixels = np.rint(load_image(photos[size]) * 255).astype(np.uint8)
    engine = Engine(libsmat, exported["dir"] / "smat.onnx")
    try:
        for kind in ("none", "point", "box", "scribble", "mask"):
            prompts = _prompts(kind, width, height, tmp_path)
            # interactive (derived from the prompt); and once, a prompt given with the automatic state (ignored)
            states = (-1, 0) if kind == "box" else (-1,)
            for state in states:
                got = engine.matte(pixels, prompts, state)
                python_state = None if state == -1 else state
                want_ov = openvino(pixels, prompts, python_state)
                want_ort = onnxruntime(pixels, prompts, python_state)
                assert got.shape == (height, width)
                assert np.abs(got - want_ov).max() <= 1e-5, (kind, state, float(np.abs(got - want_ov).max()))
                assert np.abs(got - want_ort).max() <= 1e-4, (kind, state, float(np.abs(got - want_ort).max()))
    finally:
        engine.close()


def test_the_cpp_pair_equals_the_python_predictor_five_clicks(libsmat, exported, photos):
    pixels = np.rint(load_image(photos[(700, 280)]) * 255).astype(np.uint8)
    python_ov = PyPredictor.open(exported["dir"], backend="openvino")
    python_ort = PyPredictor.open(exported["dir"], backend="onnxruntime")
    embedded_ov, embedded_ort = python_ov.embed(pixels), python_ort.embed(pixels)
    pair = Predictor(libsmat, exported["dir"])
    embedded = pair.embed(pixels)
    try:
        for click in range(5):
            prompts = [{"type": "point", "x": 100.0 + 110 * click, "y": 60.0 + 35 * click, "radius": 12}]
            got = pair.predict(embedded, prompts)
            assert np.abs(got - python_ov.predict(embedded_ov, prompts)).max() <= 1e-5
            assert np.abs(got - python_ort.predict(embedded_ort, prompts)).max() <= 1e-4
    finally:
        pair.free(embedded)
        pair.close()


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_smat_matte_equals_smat_deploy_matte_on_a_shared_photo_with_a_box(
    smat_matte, python_matte, exported, shared_photos, tmp_path
):
    photo = shared_photos / "pymatting_lemur" / "lemur.png"
    if not photo.is_file():
        photo = sorted((shared_photos / "am2k_gfm_pred_notGT").glob("*.jpg"))[0]
    width, height = Image.open(photo).size
    box = f"{width // 8},{height // 10},{width - width // 8},{height - height // 20}"
    model = exported["dir"] / "smat.onnx"
    cpp = smat_matte(photo, "--engine", model, "--box", box, "-o", tmp_path / "cpp.png", "--json")
    assert cpp.returncode == 0, cpp.stderr
    assert json.loads(cpp.stdout)["outputs"] == [str(tmp_path / "cpp.png")]
    python = python_matte(photo, "--engine", model, "--backend", "openvino", "--box", box, "-o", tmp_path / "py.png")
    assert python.returncode == 0, python.stderr
    cpp_alpha, python_alpha = _png(tmp_path / "cpp.png"), _png(tmp_path / "py.png")
    assert cpp_alpha.shape == (height, width) and cpp_alpha.dtype == np.uint8
    np.testing.assert_array_equal(cpp_alpha, python_alpha)
    assert cpp_alpha.std() > 10  # a real matte, not a constant


def test_smat_matte_embeds_once_for_several_prompt_files(smat_matte, exported, photos, tmp_path):
    photo = photos[(700, 280)]
    for name, prompt in (
        ("a", {"type": "point", "x": 300, "y": 120}),
        ("b", {"type": "box", "x0": 50, "y0": 20, "x1": 600, "y1": 270}),
    ):
        (tmp_path / f"{name}.json").write_text(json.dumps([prompt]))
    out = tmp_path / "alphas"
    out.mkdir()
    result = smat_matte(
        photo,
        "--engine",
        exported["dir"],
        "--prompt",
        tmp_path / "a.json",
        "--prompt",
        tmp_path / "b.json",
        "-o",
        out,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["pair"] is True and sorted(summary["outputs"]) == [str(out / "a.png"), str(out / "b.png")]
    runtime = Runtime.open(exported["dir"] / "smat.onnx", backend="openvino")
    pixels = np.rint(load_image(photo) * 255).astype(np.uint8)
    for name in ("a", "b"):
        expected = runtime(pixels, json.loads((tmp_path / f"{name}.json").read_text()))
        got = _png(out / f"{name}.png").astype(np.float32) / 255
        assert np.abs(got - expected).max() <= 0.5 / 255 + 1e-5  # 8-bit rounding of the same alpha
