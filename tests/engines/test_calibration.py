"""The calibration set: layout, every prompt kind, determinism, and refusals."""

import json

import numpy as np
import pytest
from PIL import Image

from smat_deploy.engines import calibration as C
from smat_deploy.errors import SmatError


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((90, 130, 3)) * 255).astype(np.uint8)).save(folder / "wide.jpg")
    Image.fromarray((rng.random((150, 100)) * 255).astype(np.uint8)).save(folder / "gray.png")
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    (folder / "notes.txt").write_text("not a photo")
    return folder


def test_layout_prompt_kinds_and_tensors(tmp_path, photos):
    with pytest.warns(UserWarning, match="skipped 1 unreadable photo"):
        calib = C.build_calibration_set(tmp_path / "calib", synthetic=2, from_dir=photos, size=70)
    assert len(calib) == (2 + 2) * 5
    index = json.loads((tmp_path / "calib" / "index.json").read_text())
    assert index["size"] == [70, 70] and index["format"] == C.INDEX_FORMAT
    by_image = {}
    for sample in index["samples"]:
        by_image.setdefault(sample["image"], []).append(sample["prompt_kind"])
        assert (tmp_path / "calib" / sample["image"]).is_file()
        assert sample["state"] == (0.0 if sample["prompt_kind"] == "none" else 1.0)
    assert all(sorted(kinds) == sorted(C.PROMPT_KINDS) for kinds in by_image.values())
    assert sum(s["alpha"] is not None for s in index["samples"]) == 10  # synthetic ones know their alpha
    assert calib.image.shape == (20, 3, 70, 70) and calib.prompt.shape == (20, 1, 70, 70)
    assert calib.state.shape == (20, 1)
    # The prompt tensor agrees with the state: automatic samples are all zeros, the others mark pixels.
    marked = calib.prompt.reshape(20, -1).max(axis=1)
    assert np.array_equal(marked, calib.state[:, 0])
    assert 0 <= calib.image.min() and calib.image.max() <= 1
    assert len(calib.feeds()) == 20 and calib.feeds()[3]["image"].shape == (1, 3, 70, 70)


def test_same_seed_same_set_and_seed_changes_it(tmp_path):
    a = C.build_calibration_set(tmp_path / "a", synthetic=1, size=42, seed=3)
    b = C.build_calibration_set(tmp_path / "b", synthetic=1, size=42, seed=3)
    c = C.build_calibration_set(tmp_path / "c", synthetic=1, size=42, seed=4)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.prompt, b.prompt)
    assert not np.array_equal(a.image, c.image)


def test_rebuilding_replaces_and_a_failed_build_keeps_the_old_set(tmp_path, monkeypatch):
    out = tmp_path / "calib"
    C.build_calibration_set(out, synthetic=2, size=42)
    C.build_calibration_set(out, synthetic=1, size=42)
    assert len(C.load_calibration_set(out)) == 5 and len(list((out / "images").iterdir())) == 1

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(C.np, "savez", fail)
    with pytest.raises(OSError):
        C.build_calibration_set(out, synthetic=3, size=42)
    assert len(C.load_calibration_set(out)) == 5
    assert sorted(p.name for p in out.iterdir()) == ["alphas", "calib.npz", "images", "index.json"]


def test_refusals(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SmatError, match="no readable photos"):
        C.build_calibration_set(tmp_path / "o", from_dir=empty)
    with pytest.raises(SmatError, match="calibration folder not found"):
        C.build_calibration_set(tmp_path / "o", from_dir=tmp_path / "missing")
    with pytest.raises(SmatError, match="nothing to build"):
        C.build_calibration_set(tmp_path / "o")
    with pytest.raises(SmatError, match="holds no calibration set"):
        C.load_calibration_set(empty)
    calib = C.build_calibration_set(tmp_path / "mixed", synthetic=1, size=42)
    Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(calib.directory / calib.samples[0]["image"])
    with pytest.raises(SmatError, match="calibration images of mixed sizes"):
        C.load_calibration_set(calib.directory)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "index.json").write_text("{")
    (tmp_path / "bad" / "calib.npz").write_bytes(b"nope")
    with pytest.raises(SmatError, match="unreadable calibration set"):
        C.load_calibration_set(tmp_path / "bad")
