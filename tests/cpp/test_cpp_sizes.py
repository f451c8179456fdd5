"""Photos too large for the budget in the C++ library: the size policy of smat_deploy/runtime/sizing.py (the run
size, the photo and prompt scaled down) and the alpha brought back by smat_deploy/upsample.py, in the same
arithmetic: the C++ alphas equal the Python runtime's."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from smat_deploy import prompts as P
from smat_deploy.cpp import CError, Engine, upsample_alpha
from smat_deploy.data.calibration import bundled_photo
from smat_deploy.images import resize_image
from smat_deploy.runtime import Runtime
from smat_deploy.runtime.sizing import SizePolicy
from smat_deploy.upsample import UPSAMPLING_METHODS
from smat_deploy.upsample import upsample_alpha as python_upsample


def _photo(size: tuple[int, int], name: str = "camera.png") -> np.ndarray:
    """A real photo at ``size`` (height, width), as the 8-bit pixels a caller hands over."""
    return np.round(resize_image(bundled_photo(name), size) * 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("full", "small"),
    [((60, 80), (30, 40)), ((97, 61), (45, 29)), ((1080, 1462), (518, 701)), ((1500, 1400), (420, 392))],
)
def test_upsampling_equals_pythons(libsmat, full, small):
    """1500x1400 is two of the guided filter's strips (2 million pixels each)."""
    rng = np.random.default_rng(sum(full))
    photo = resize_image(bundled_photo("coffee.png"), full)
    scaled = resize_image(photo, small)
    noise = rng.random((small[0] // 4 + 1, small[1] // 4 + 1, 3)).astype(np.float32)
    alpha = resize_image(noise, small)[..., 0]  # an alpha with structure at several scales
    for method in UPSAMPLING_METHODS:
        expected = python_upsample(alpha, full, method, small=scaled, full=photo)
        got = upsample_alpha(libsmat, method, alpha, scaled, photo, full)
        tolerance = 1e-5 if method == "guided" else 0.0
        assert np.abs(got - expected).max() <= tolerance, method


def test_upsampling_refuses_what_it_cannot_do(libsmat):
    alpha = np.zeros((20, 20), np.float32)
    with pytest.raises(CError, match="upsampling enlarges: 20x20 to 10x10 is not that"):
        upsample_alpha(libsmat, "bilinear", alpha, None, None, (10, 10))
    with pytest.raises(CError, match="unknown upsampling 'cubic': expected one of guided, bilinear, nearest"):
        upsample_alpha(libsmat, "cubic", alpha, None, None, (40, 40))
    with pytest.raises(CError, match="small_rgb is a null pointer"):
        upsample_alpha(libsmat, "guided", alpha, None, None, (40, 40))


@pytest.mark.heavy
@pytest.mark.parametrize(
    ("size", "max_side", "upsampling", "kind"),
    [
        ((1000, 750), 518, "guided", "box"),
        ((280, 700), 333, "guided", "none"),
        ((873, 1000), 600, "bilinear", "point"),
        ((512, 512), 301, "nearest", "scribble"),
    ],
)
def test_a_scaled_run_equals_the_python_runtime(libsmat, exported, size, max_side, upsampling, kind):
    """Sizes off the patch grid, every upsampling, automatic and interactive: the same run size, the same scaled
    photo and prompt, the same alpha at the photo's size (<= 1e-5; 0 when measured)."""
    height, width = size
    pixels = _photo(size, "hubble_deep_field.jpg" if kind == "point" else "camera.png")
    prompts = {
        "none": None,
        "box": [{"type": "box", "x0": width * 0.2, "y0": height * 0.2, "x1": width * 0.8, "y1": height * 0.8}],
        "point": [{"type": "point", "x": width / 2, "y": height / 2, "radius": 3}],
        "scribble": [{"type": "scribble", "points": [[30, 40], [width / 2, height / 3]], "width": 2}],
    }[kind]
    model = exported["dir"] / "smat.onnx"
    engine = Engine(libsmat, model, size_policy=True, max_side=max_side, upsampling=upsampling)
    try:
        got = engine.matte(pixels, prompts)
    finally:
        engine.close()
    runtime = Runtime.open(model, backend="openvino", size_policy=SizePolicy(max_side=max_side, upsampling=upsampling))
    assert runtime.plan(1, height, width).scaled
    mask = np.zeros(size, np.float32) if prompts is None else P.rasterize(P.parse_prompts(prompts), size)
    image = (pixels.astype(np.float32) / 255).transpose(2, 0, 1)[None]
    expected, _ = runtime.call(image, mask[None, None].astype(np.float32), None)
    assert got.shape == size
    assert np.abs(got - np.asarray(expected)[0, 0]).max() <= 1e-5


def test_a_photo_too_large_for_the_budget_runs_scaled_only_with_the_policy(libsmat, tiny_onnx_factory, tmp_path):
    """The budget binds (not max_side): without the policy the photo is refused, with it the alpha comes back at
    the photo's size."""
    model = tiny_onnx_factory(tmp_path / "tiny.onnx")
    pixels = _photo((900, 1200))
    with open("/proc/self/status") as status:
        resident = next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) * 1024 / 1e6
    budget = resident + 400  # the full size needs about 1 GB on OpenVINO's memory model; 600 px about 150 MB
    refused = Engine(libsmat, model, max_memory_mb=budget)
    try:
        with pytest.raises(CError, match=r"open the engine with Options::size_policy") as err:
            refused.matte(pixels)
        assert err.value.status == 7
    finally:
        refused.close()
    engine = Engine(libsmat, model, max_memory_mb=budget, size_policy=True)
    try:
        alpha = engine.matte(pixels)
    finally:
        engine.close()
    assert alpha.shape == (900, 1200) and alpha.min() >= 0 and alpha.max() <= 1
    gray = pixels.astype(np.float32).mean(axis=2) / 255  # the tiny model's alpha: the photo's mean RGB
    assert np.abs(alpha - gray).mean() < 0.02  # brought back along the photo's own edges
    with pytest.raises(CError, match=r"a 1200x900 photo needs at least [\d,]+ MB even at 14x14"):
        tight = Engine(libsmat, model, max_memory_mb=resident + 1, size_policy=True)
        try:
            tight.matte(pixels)
        finally:
            tight.close()


def test_bad_policy_options_are_one_line_each(libsmat, tiny_onnx_factory, tmp_path):
    model = tiny_onnx_factory(tmp_path / "tiny.onnx")
    with pytest.raises(CError, match="upsampling must be guided, bilinear or nearest, got 'cubic'"):
        Engine(libsmat, model, size_policy=True, upsampling="cubic")
    engine = Engine(libsmat, model, size_policy=True, scale_to=5)
    try:
        with pytest.raises(CError, match="scale_to must be at least 14, got 5"):
            engine.matte(_photo((30, 40)))
    finally:
        engine.close()


@pytest.mark.heavy
def test_smat_matte_scales_as_smat_deploy_matte(smat_matte, python_matte, exported, tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(_photo((750, 1000), "hubble_deep_field.jpg")).save(photo)
    model = exported["dir"] / "smat.onnx"
    common = ["--box", "200,150,800,600", "--max-side", "500"]
    cpp = smat_matte(photo, "-e", model, *common, "-o", tmp_path / "c.png")
    assert cpp.returncode == 0, cpp.stderr
    python = python_matte(photo, "--engine", model, "--backend", "openvino", *common, "-o", tmp_path / "p.png")
    assert python.returncode == 0, python.stderr
    assert "ran at 500x375 (scaled to --max-side 500" in python.stdout + python.stderr
    c, p = (np.asarray(Image.open(tmp_path / name)) for name in ("c.png", "p.png"))
    assert c.shape == p.shape == (750, 1000) and np.array_equal(c, p)
    bad = smat_matte(photo, "-e", model, "--upsampling", "cubic", "-o", tmp_path / "x.png")
    assert bad.returncode == 2 and "--upsampling must be guided, bilinear or nearest, got 'cubic'" in bad.stderr
