"""``smat-deploy matte`` on photos of any size: the size policy from the command line, every mode, the refusals,
an allocation failure, and phone- and camera-sized photos with the defaults (heavy)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_pair import make_tiny_pair

from smat_deploy import images
from smat_deploy.runtime import Predictor, Runtime
from smat_deploy.runtime.sizing import SizePolicy

REPO = Path(__file__).resolve().parents[2]


def _photo(path: Path, height: int, width: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_a_photo_above_max_side_runs_scaled_and_its_alpha_comes_back_at_full_size(run_cli, tmp_path, tiny_onnx):
    photo = _photo(tmp_path / "wide.png", 300, 400)
    result = run_cli(
        "matte", photo, "--engine", tiny_onnx, "--max-side", "128", "--upsampling", "nearest", "-o",
        tmp_path / "a.png", "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["plan"]["scaled"] and summary["plan"]["run_size"] == [128, 96]
    assert summary["plan"]["reason"] == "scaled to --max-side 128" and summary["plan"]["upsampling"] == "nearest"
    assert summary["peak_memory_mb"] > 0 and set(summary["stages"]) == {"scale", "engine", "upsample"}
    alpha = np.asarray(Image.open(tmp_path / "a.png"))
    runtime = Runtime.open(tiny_onnx, device="cpu", size_policy=SizePolicy(max_side=128, upsampling="nearest"))
    expected = runtime(images.load_image(photo))
    assert alpha.shape == (300, 400)
    np.testing.assert_array_equal(alpha, images.to_uint8(expected))
    text = run_cli("matte", photo, "--engine", tiny_onnx, "--max-side", "128", "-o", tmp_path / "b.png")
    assert text.code == 0 and "ran at 128x96 (scaled to --max-side 128; guided upsampling" in text.stdout
    assert "peak memory" in text.stdout and "budget" in text.stdout


def test_a_photo_that_fits_runs_at_full_size_exactly_as_without_a_policy(run_cli, tmp_path, tiny_onnx):
    photo = _photo(tmp_path / "small.png", 60, 80)
    result = run_cli("matte", photo, "--engine", tiny_onnx, "-o", tmp_path / "a.png", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["plan"]["reason"] == "full size"
    expected = Runtime.open(tiny_onnx, device="cpu")(images.load_image(photo))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), images.to_uint8(expected))


def test_a_budget_too_small_is_refused_in_one_line_and_nothing_is_written(run_cli, tmp_path, tiny_onnx):
    photo = _photo(tmp_path / "p.png", 300, 400)
    out = tmp_path / "a.png"
    out.write_bytes(b"previous result")
    result = run_cli("matte", photo, "--engine", tiny_onnx, "--max-memory-mb", "1", "-o", out)
    assert result.code == 2
    result.expect_error("needs at least")
    assert "raise --max-memory-mb" in result.stderr
    assert out.read_bytes() == b"previous result"
    for option, value, message in (
        ("--max-memory-mb", "0", "--max-memory-mb must be a positive number"),
        ("--scale-to", "5", "--scale-to must be at least 14"),
        ("--max-side", "5", "--max-side must be at least 14"),
        ("--upsampling", "cubic", "--upsampling must be one of guided, bilinear, nearest"),
    ):
        bad = run_cli("matte", photo, "--engine", tiny_onnx, option, value, "-o", out)
        assert bad.code == 2
        bad.expect_error(message)


def test_an_allocation_failure_inside_the_engine_is_one_line_exit_2_and_writes_nothing(
    run_cli, tmp_path, tiny_onnx, monkeypatch
):
    from smat_deploy.runtime.onnxrt import OnnxRuntimeBackend

    def fail(self, image, prompt, state):
        raise RuntimeError(
            "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running MatMul node. "
            "Status Message: Failed to allocate memory for requested buffer of size 90747433984"
        )

    monkeypatch.setattr(OnnxRuntimeBackend, "run", fail)
    photo = _photo(tmp_path / "p.png", 60, 80)
    out = tmp_path / "a.png"
    result = run_cli("matte", photo, "--engine", tiny_onnx, "-o", out)
    assert result.code == 2
    result.expect_error("the engine ran out of memory at 80x60 (batch 1; predicted")
    assert "lower --max-side or --max-memory-mb" in result.stderr and "unexpected" not in result.stderr
    assert not out.exists()


def test_folder_mode_runs_every_photo_by_the_same_rule(run_cli, tmp_path, tiny_onnx):
    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(folder / "large.png", 200, 260, seed=1)
    _photo(folder / "small.png", 50, 40, seed=2)
    result = run_cli("matte", folder, "--engine", tiny_onnx, "--max-side", "100", "-o", tmp_path / "out", "--json")
    assert result.code == 0, result.stderr
    rows = {Path(row["image"]).name: row for row in json.loads(result.stdout)["images"]}
    assert rows["large.png"]["run_size"] == [100, 77] and rows["small.png"]["run_size"] == [40, 50]
    assert np.asarray(Image.open(tmp_path / "out" / "large.png")).shape == (200, 260)
    assert np.asarray(Image.open(tmp_path / "out" / "small.png")).shape == (50, 40)


def test_several_prompt_files_embed_once_at_the_policys_size_and_answer_at_full_size(run_cli, tmp_path):
    make_tiny_pair(tmp_path / "pair")
    photo = _photo(tmp_path / "p.png", 120, 160)
    boxes = {"a": [10, 10, 60, 50], "b": [80, 40, 150, 110]}
    files = []
    for name, (x0, y0, x1, y1) in boxes.items():
        files += ["--prompt", tmp_path / f"{name}.json"]
        (tmp_path / f"{name}.json").write_text(json.dumps([{"type": "box", "x0": x0, "y0": y0, "x1": x1, "y1": y1}]))
    result = run_cli(
        "matte", photo, *files, "--engine", tmp_path / "pair", "--max-side", "80", "--upsampling", "nearest",
        "-o", tmp_path / "alphas", "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["run_size"] == [80, 60]
    predictor = Predictor.open(tmp_path / "pair", size_policy=SizePolicy(max_side=80, upsampling="nearest"))
    embedding = predictor.embed(images.load_image(photo))
    for name, (x0, y0, x1, y1) in boxes.items():
        alpha = np.asarray(Image.open(tmp_path / "alphas" / f"{name}.png"))
        box = [{"type": "box", "x0": x0, "y0": y0, "x1": x1, "y1": y1}]
        assert alpha.shape == (120, 160)
        np.testing.assert_array_equal(alpha, images.to_uint8(predictor.predict(embedding, box)))
        assert alpha[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].min() == 255 and alpha[:, : x0 - 2].max() == 0


def _camera_photo(path: Path, width: int, height: int) -> Path:
    """A real photo enlarged to a phone's or camera's size (or a composite when ../shared is absent), as JPEG."""
    source = REPO.parent / "shared" / "data" / "matting" / "am2k_gfm_pred_notGT" / "sample8.jpg"
    if source.is_file():
        image = Image.open(source).convert("RGB")
    else:
        from smat_deploy.data.synthetic import make_composite

        image = Image.fromarray(images.to_uint8(make_composite((540, 720), seed=3).image))
    image.resize((width, height), Image.Resampling.BICUBIC).save(path, quality=90)
    return path


@pytest.mark.heavy
@pytest.mark.parametrize(
    "size, engine",
    [((4000, 3000), "default"), ((8000, 6000), "onnx")],
    ids=["12-megapixel phone photo, default engine", "48-megapixel camera photo, ONNX Runtime"],
)
def test_phone_and_camera_photos_give_full_size_alphas_within_the_default_budget(tmp_path, exported, size, engine):
    """With the defaults (no size option), in a fresh process: a full-size alpha, the process's measured peak under
    the budget and within 20 % of the policy's prediction, made before the call."""
    width, height = size
    photo = _camera_photo(tmp_path / "photo.jpg", width, height)
    command = [sys.executable, "-m", "smat_deploy", "matte", str(photo), "-o", str(tmp_path / "alpha.png"), "--json"]
    command += [] if engine == "default" else ["--engine", str(exported["dir"] / "smat.onnx")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO, check=False)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    plan = summary["plan"]
    print(f"\n{width}x{height} ({engine}): ran at {plan['run_size']}, {summary['seconds']:.1f} s, stages "
          f"{summary['stages']}, peak {summary['peak_memory_mb']} MB, predicted {plan['predicted_peak_mb']:.0f} MB, "
          f"budget {plan['budget']['total_mb']} MB")  # fmt: skip
    assert plan["scaled"] and max(plan["run_size"]) == 1568 and plan["reason"] == "scaled to fit the budget"
    assert Image.open(tmp_path / "alpha.png").size == (width, height)
    assert summary["peak_memory_mb"] <= plan["budget"]["total_mb"]
    assert summary["peak_memory_mb"] == pytest.approx(plan["predicted_peak_mb"], rel=0.2)
