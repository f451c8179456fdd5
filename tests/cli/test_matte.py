"""``smat-deploy matte`` end to end through the real entry point, including every bad input."""

import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from smat_deploy.model import save_checkpoint


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray((rng.random((45, 59, 3)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, varying_model):
    return save_checkpoint(varying_model, tmp_path_factory.mktemp("ckpt") / "smat.pth")


def test_automatic_and_interactive_matte_write_alpha_and_cutout(run_cli, photo, tmp_path, checkpoint):
    auto = run_cli("matte", photo, "-o", tmp_path / "auto.png", "--cutout", tmp_path / "cut.png", "-c", checkpoint)
    assert auto.code == 0, auto.stderr
    alpha_auto = np.asarray(Image.open(tmp_path / "auto.png"))
    assert alpha_auto.shape == (45, 59)
    assert np.asarray(Image.open(tmp_path / "cut.png")).shape == (45, 59, 4)
    clicked = run_cli("matte", photo, "--point", "20,20", "-o", tmp_path / "pt.png", "-c", checkpoint, "--json")
    assert clicked.code == 0, clicked.stderr
    summary = json.loads(clicked.stdout)
    assert summary["mode"] == "interactive" and summary["prompt"] == "point" and summary["size"] == [59, 45]
    assert np.abs(np.asarray(Image.open(tmp_path / "pt.png")).astype(int) - alpha_auto).max() > 0


def test_help_shows_an_example(run_cli):
    result = run_cli("matte", "--help")
    assert result.code == 0 and "smat-deploy matte photo.jpg" in result.stdout


def test_bad_inputs_give_one_line_errors_and_write_nothing(run_cli, photo, tmp_path):
    out = tmp_path / "alpha.png"
    out.write_bytes(b"previous result")
    (tmp_path / "bad.json").write_text("[{")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small_mask.png")
    torch.save({"model": {"decoder.x": torch.zeros(1)}}, tmp_path / "wrong.pth")

    class Exploit:
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / "pwned"),))

    with open(tmp_path / "evil.pth", "wb") as handle:
        pickle.dump({"model": Exploit()}, handle)

    cases = [
        (("matte", tmp_path / "missing.png", "-o", out), "image not found"),
        (("matte", tmp_path / "corrupt.png", "-o", out), "cannot read image"),
        (("matte", photo, "--prompt", tmp_path / "bad.json", "-o", out), "malformed prompt JSON"),
        (("matte", photo, "--mask", tmp_path / "small_mask.png", "-o", out), "but the image is 59x45"),
        (("matte", photo, "--state", "interactive", "-o", out), "needs a prompt"),
        (("matte", photo, "--point", "500,5", "-o", out), "outside the 59x45 image"),
        (("matte", photo, "-c", tmp_path / "wrong.pth", "-o", out), "does not match SMat"),
        (("matte", photo, "-c", tmp_path / "evil.pth", "-o", out), "refusing to load"),
        (("matte", photo, "-o", tmp_path / "nowhere" / "alpha.png"), "output folder does not exist"),
    ]
    for args, message in cases:
        run_cli(*args).expect_error(message)
        assert out.read_bytes() == b"previous result", args
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "nowhere").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
