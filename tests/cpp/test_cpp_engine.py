"""The C++ library on tiny contract models (fast): the prompt reaches the engine exactly, the pair's checks,
and every bad input to ``smat_matte`` is one line and exit 2."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smat_deploy.cpp import CError, Engine, Predictor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the tiny pair's module
from tiny_pair import make_tiny_pair

from smat_deploy import prompts as P


@pytest.fixture
def make_tiny_onnx(tiny_onnx_factory):
    return tiny_onnx_factory


@pytest.fixture
def dark_photo() -> np.ndarray:
    """Pixels of at most 100: the tiny model's mean stays below 1, so a marked pixel reads exactly 1."""
    rng = np.random.default_rng(5)
    return rng.integers(0, 101, (37, 53, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "prompts",
    [
        None,
        [{"type": "point", "x": 10.5, "y": 20.5, "radius": 3}],
        [{"type": "box", "x0": 3.5, "y0": 2, "x1": 40, "y1": 30.5}],
        [{"type": "scribble", "points": [[1, 1], [50.5, 35], [20, 5]], "width": 4}],
        [{"type": "point", "x": 52, "y": 36, "radius": 0}, {"type": "box", "x0": -9, "y0": -9, "x1": 2, "y1": 2}],
    ],
)
@pytest.mark.parametrize("state", [-1, 0, 1])
def test_the_tiny_model_sees_the_python_mask_and_state(
    libsmat, tmp_path, dark_photo, prompts, state, make_tiny_onnx, tiny_expected_alpha
):
    engine = Engine(libsmat, make_tiny_onnx(tmp_path / "tiny.onnx"))
    try:
        if prompts is None and state == 1:
            with pytest.raises(CError, match="interactive state with an empty prompt"):
                engine.matte(dark_photo, prompts, state)
            return
        got = engine.matte(dark_photo, prompts, state)
    finally:
        engine.close()
    mask = (
        np.zeros(dark_photo.shape[:2], np.float32)
        if prompts is None
        else P.rasterize(P.parse_prompts(prompts), dark_photo.shape[:2])
    )
    used_state = float(mask.any()) if state == -1 else float(state)
    image = (dark_photo.astype(np.float32) / np.float32(255)).transpose(2, 0, 1)[None]
    expected = tiny_expected_alpha(image, mask[None, None], np.array([[used_state]], np.float32))[0, 0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got == 1.0, (mask * used_state) == 1.0)  # marked pixels exactly, nothing else


def test_the_pair_is_checked_as_python_checks_it(libsmat, tmp_path, dark_photo):
    good = tmp_path / "good"
    make_tiny_pair(good, carry=True)
    pair = Predictor(libsmat, good)
    embedded = pair.embed(dark_photo)
    alpha = pair.predict(embedded, [{"type": "box", "x0": 5, "y0": 5, "x1": 20, "y1": 20}])
    mean = float((dark_photo.astype(np.float32) / 255).mean())
    assert abs(float(alpha[10, 10]) - mean) < 1e-5 and float(alpha[30, 40]) == 0.0  # prompt * state * mean(image)
    pair.free(embedded)
    pair.close()
    other = tmp_path / "other"
    make_tiny_pair(other, weights=("a" * 64, "b" * 64))
    with pytest.raises(
        CError,
        match=r"smat_encoder.onnx and smat_decoder.onnx were exported from different weights "
        r"\(weights_sha256 aaaaaaaaaaaa vs bbbbbbbbbbbb\): export both again",
    ) as err:
        Predictor(libsmat, other)
    assert err.value.status == 3
    wrong = tmp_path / "wrong"
    make_tiny_pair(wrong, decoder_partner="smat_encoder_fp16.onnx")
    with pytest.raises(
        CError, match=re.escape("smat_decoder.onnx names smat_encoder_fp16.onnx as its encoder, not smat_encoder.onnx")
    ):
        Predictor(libsmat, wrong)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        CError, match=re.escape("empty has no smat_encoder.onnx: make the pair with smat-deploy export --interactive")
    ):
        Predictor(libsmat, empty)
    lonely = tmp_path / "lonely"
    make_tiny_pair(lonely)
    (lonely / "smat_decoder.onnx").unlink()
    with pytest.raises(CError, match=re.escape("smat_encoder.onnx's decoder smat_decoder.onnx is not beside it")):
        Predictor(libsmat, lonely)


def _run(build: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(build / "smat_matte"), *args], capture_output=True, text=True, timeout=300, check=False)


def _one_line(result: subprocess.CompletedProcess, message: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0], lines[0]


def test_bad_input_to_smat_matte_is_one_line_and_exit_2(cpp_build, tmp_path, dark_photo, make_tiny_onnx):
    photo = tmp_path / "photo.png"
    Image.fromarray(dark_photo).save(photo)
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    out = tmp_path / "alpha.png"
    out.write_bytes(b"keep me")  # an earlier alpha: a failed run must leave it as it was
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(model.read_bytes()[:60])
    not_smat = make_tiny_onnx(tmp_path / "other.onnx", names=("pixels", "prompt", "state", "alpha"))
    corrupt_png, corrupt_jpg = tmp_path / "corrupt.png", tmp_path / "corrupt.jpg"
    corrupt_png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    Image.fromarray(dark_photo).save(corrupt_jpg)
    corrupt_jpg.write_bytes(corrupt_jpg.read_bytes()[:200])
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps([{"type": "lasso", "points": []}]))
    pair = tmp_path / "pair"
    make_tiny_pair(pair, weights=("a" * 64, "b" * 64))
    cases = [
        ((str(tmp_path / "missing.jpg"), "-e", str(model)), "image not found:"),
        ((str(photo), "-e", str(tmp_path / "missing.onnx")), "engine not found:"),
        ((str(photo), "-e", str(truncated)), "OpenVINO cannot load"),
        ((str(photo), "-e", str(not_smat)), "is not an SMat model: it takes ['pixels', 'prompt', 'state']"),
        ((str(photo), "-e", str(pair)), "were exported from different weights"),
        ((str(photo), "-e", str(model), "--point", "53,10"), "point (53, 10) lies outside the 53x37 image"),
        ((str(photo), "-e", str(model), "--box", "1,2,3"), "--box must be 4 comma-separated numbers, got '1,2,3'"),
        ((str(corrupt_png), "-e", str(model)), "cannot read image"),
        ((str(corrupt_jpg), "-e", str(model)), "cannot read image"),
        ((str(photo), "-e", str(model), "--prompt", str(unknown)), "prompt[0]: unknown type 'lasso'"),
        ((str(photo), "-e", str(model), "--state", "interactive"), "interactive state with an empty prompt"),
        ((str(photo), "-e", str(model), "--frobnicate"), "unknown option --frobnicate"),
        ((str(photo), "-e", str(model), "--state", "sometimes"), "--state must be auto or interactive"),
    ]
    for args, message in cases:
        _one_line(_run(cpp_build, *args, "-o", str(out)), message)
        assert out.read_bytes() == b"keep me"
    _one_line(_run(cpp_build, str(photo), "-e", str(model)), "give the alpha's path with -o")
    _one_line(_run(cpp_build, str(photo), "-e", str(model), "-o", str(tmp_path / "nowhere" / "a.png")), "cannot write")
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp-" in p.name) == []


def test_smat_matte_writes_the_alpha_atomically_and_reports_json(cpp_build, tmp_path, dark_photo, make_tiny_onnx):
    photo = tmp_path / "photo.jpg"
    Image.fromarray(dark_photo).save(photo, quality=95)
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    result = _run(
        cpp_build, str(photo), "-e", str(model), "--box", "5,5,30,20", "-o", str(tmp_path / "a.png"), "--json"
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["width"] == 53 and summary["height"] == 37 and summary["pair"] is False
    alpha = np.asarray(Image.open(tmp_path / "a.png"))
    assert alpha.shape == (37, 53) and alpha.dtype == np.uint8
    assert (alpha[5:20, 5:30] == 255).all() and (alpha[25:, 35:] < 255).all()
    assert "--engine MODEL" in _run(cpp_build, "--help").stdout


def test_the_cpp_test_program_passes_on_the_tiny_models(cpp_build, tmp_path):
    """smat_tests without SMAT_TEST_MODELS: its model-free cases (prompts, JSON, the C ABI's null pointers)."""
    result = subprocess.run([str(cpp_build / "smat_tests")], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ", 0 failed" in result.stdout
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_scribble_files_are_read_as_smat_deploy_reads_them(cpp_build, tmp_path, dark_photo, make_tiny_onnx):
    """A list of points (default width) and an object with its own width: the tiny model's alpha is exactly 1
    where Python's scribble marks and below 1 elsewhere."""
    photo = tmp_path / "photo.png"
    Image.fromarray(dark_photo).save(photo)
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    (tmp_path / "list.json").write_text(json.dumps([[3.5, 4], [40, 30.5], [50, 2]]))
    (tmp_path / "object.json").write_text(json.dumps({"points": [[10, 30], [45.5, 8]], "width": 8}))
    for name in ("list.json", "object.json"):
        out = tmp_path / f"{name}.png"
        result = _run(cpp_build, str(photo), "-e", str(model), "--scribble", str(tmp_path / name), "-o", str(out))
        assert result.returncode == 0, result.stderr
        mask = P.rasterize([P.load_scribble_file(tmp_path / name)], dark_photo.shape[:2])
        np.testing.assert_array_equal(np.asarray(Image.open(out)) == 255, mask == 1, err_msg=name)
    (tmp_path / "bad.json").write_text(json.dumps({"points": [[1, 2]], "colour": 3}))
    _one_line(
        _run(
            cpp_build,
            str(photo),
            "-e",
            str(model),
            "--scribble",
            str(tmp_path / "bad.json"),
            "-o",
            str(tmp_path / "b.png"),
        ),
        f"scribble {tmp_path / 'bad.json'} (scribble) has unknown field(s) colour",
    )
