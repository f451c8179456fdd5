"""``smat-deploy matte --engine`` and folder mode, on a tiny contract model whose output is known exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from smat_deploy.images import to_uint8


def _photo(path, seed, size=(45, 59)):
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8)).save(path)
    return path


def tiny_alpha_8bit(photo_path, mask=None):
    """What the tiny model writes: max(mean RGB, marked pixels), as 8 bits."""
    photo = np.asarray(Image.open(photo_path)).astype(np.float32) / 255
    alpha = photo.mean(axis=-1)
    if mask is not None:
        alpha = np.maximum(alpha, mask)
    return to_uint8(alpha)


def test_matte_with_an_onnx_engine(run_cli, tmp_path, tiny_onnx):
    photo = _photo(tmp_path / "photo.png", 0)
    result = run_cli(
        "matte",
        photo,
        "--engine",
        tiny_onnx,
        "--point",
        "20,10",
        "--point-radius",
        "3",
        "-o",
        tmp_path / "a.png",
        "--json",
    )
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["engine"]["backend"] == "onnxruntime" and summary["engine"]["precision"] == "float32"
    assert summary["mode"] == "interactive" and summary["weights"] == f"inside {tiny_onnx}"
    mask = np.zeros((45, 59), np.float32)
    mask[7:14, 17:24] = 1
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), tiny_alpha_8bit(photo, mask))
    text = run_cli("matte", photo, "--engine", tiny_onnx, "-o", tmp_path / "auto.png")
    assert text.code == 0 and "on onnxruntime (cpu)" in text.stdout and "note:" not in text.stderr


def test_engine_errors_are_one_line_and_leave_the_output_alone(run_cli, tmp_path, tiny_onnx, tiny_onnx_factory):
    photo = _photo(tmp_path / "photo.png", 1)
    out = tmp_path / "alpha.png"
    out.write_bytes(b"previous result")
    fixed = tiny_onnx_factory(tmp_path / "fixed.onnx", size=(28, 28), batch=1)
    wrong = tiny_onnx_factory(tmp_path / "wrong.onnx", names=("image", "hint", "state", "alpha"))
    (tmp_path / "model.bin").write_bytes(b"?")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small_mask.png")
    cases = [
        (("--engine", tmp_path / "model.bin"), "unknown engine type 'model.bin'"),
        (("--engine", wrong), "does not match the SMat contract"),
        (("--engine", fixed), "height 45 is outside what"),
        (("--engine", tiny_onnx, "--mask", tmp_path / "small_mask.png"), "but the image is 59x45"),
        (("--engine", tiny_onnx, "-c", tmp_path / "smat.pth"), "--checkpoint is for the torch engine"),
        (("--engine", tiny_onnx, "--device", "tpu"), "unknown device 'tpu'"),
    ]
    for args, message in cases:
        run_cli("matte", photo, *args, "-o", out).expect_error(message)
        assert out.read_bytes() == b"previous result", args
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture
def photo_folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(folder / "a.png", 2)
    _photo(folder / "b.jpg", 3, size=(30, 40))
    (folder / "b.json").write_text(json.dumps([{"type": "box", "x0": 5, "y0": 5, "x1": 15, "y1": 20}]))
    (folder / "c.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    _photo(folder / "d.png", 4)
    (folder / "d.json").write_text("[{")
    (folder / "notes.txt").write_text("not a photo")
    _photo(folder / ".hidden.png", 5)
    return folder


def test_folder_mode_mattes_every_photo_skips_the_broken_ones_and_fails_at_the_end(
    run_cli, tmp_path, photo_folder, tiny_onnx
):
    out, cuts = tmp_path / "alphas", tmp_path / "cutouts"
    result = run_cli("matte", photo_folder, "-o", out, "--cutout", cuts, "--engine", tiny_onnx, "--json")
    assert result.code != 0
    summary = json.loads(result.stdout)
    assert [row["image"].rsplit("/", 1)[-1] for row in summary["images"]] == ["a.png", "b.jpg"]
    assert [row["mode"] for row in summary["images"]] == ["automatic", "interactive"]
    assert [row["image"].rsplit("/", 1)[-1] for row in summary["skipped"]] == ["c.png", "d.png"]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert (
        len(warnings) == 2
        and "c.png: cannot read image" in warnings[0]
        and "d.png: malformed prompt JSON" in warnings[1]
    )
    assert result.stderr.strip().splitlines()[-1] == "error: 2 of 4 photos were skipped (see the warnings above)"
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(out / "a.png")), tiny_alpha_8bit(photo_folder / "a.png"))
    box = np.zeros((30, 40), np.float32)
    box[5:20, 5:15] = 1
    np.testing.assert_array_equal(np.asarray(Image.open(out / "b.png")), tiny_alpha_8bit(photo_folder / "b.jpg", box))
    assert np.asarray(Image.open(cuts / "b.png")).shape == (30, 40, 4)

    forced_auto = run_cli("matte", photo_folder, "-o", tmp_path / "auto", "--engine", tiny_onnx, "--state", "auto")
    assert forced_auto.code != 0 and "1 of 4 photos were skipped" in forced_auto.stderr  # d.json is ignored now
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "auto" / "b.png")), tiny_alpha_8bit(photo_folder / "b.jpg")
    )


def test_a_clean_folder_run_exits_zero(run_cli, tmp_path, tiny_onnx):
    folder = tmp_path / "good"
    folder.mkdir()
    for seed in range(3):
        _photo(folder / f"p{seed}.png", seed)
    result = run_cli("matte", folder, "-o", tmp_path / "out", "--engine", tiny_onnx)
    assert result.code == 0, result.stderr
    assert "3 of 3 photos matted on onnxruntime" in result.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0.png", "p1.png", "p2.png"]


def test_folder_mode_refuses_what_cannot_work(run_cli, tmp_path, photo_folder, tiny_onnx):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.png").write_bytes(b"")
    twins = tmp_path / "twins"
    twins.mkdir()
    _photo(twins / "x.png", 1)
    _photo(twins / "x.jpg", 2)
    cases = [
        ((photo_folder, "--point", "3,3", "-o", tmp_path / "o"), "prompt options apply to one photo"),
        ((photo_folder, "--mask", tmp_path / "m.png", "-o", tmp_path / "o"), "prompt options apply to one photo"),
        ((photo_folder, "-o", photo_folder), "must differ from the photo folder"),
        ((photo_folder, "-o", tmp_path / "file.png"), "must be a folder in folder mode"),
        ((tmp_path / "empty", "-o", tmp_path / "o"), "no photos in"),
        ((twins, "-o", tmp_path / "o"), "x.jpg and x.png would both be written"),
    ]
    for args, message in cases:
        run_cli("matte", *args, "--engine", tiny_onnx).expect_error(message)


@pytest.mark.heavy
def test_onnx_engine_matches_the_torch_engine_with_the_same_weights(run_cli, tmp_path, exported):
    photo = _photo(tmp_path / "photo.png", 9, size=(83, 121))
    reference = run_cli("matte", photo, "--point", "60,40", "-o", tmp_path / "torch.png", "-c", exported["checkpoint"])
    onnx_run = run_cli(
        "matte", photo, "--point", "60,40", "-o", tmp_path / "onnx.png", "--engine", exported["dir"] / "smat.onnx"
    )
    assert reference.code == onnx_run.code == 0, reference.stderr + onnx_run.stderr
    torch_alpha = np.asarray(Image.open(tmp_path / "torch.png")).astype(int)
    onnx_alpha = np.asarray(Image.open(tmp_path / "onnx.png")).astype(int)
    assert np.abs(torch_alpha - onnx_alpha).max() <= 1 and torch_alpha.std() > 5
