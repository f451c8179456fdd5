"""The calibration set: layout, every prompt kind, the built-in photos, determinism, and refusals."""

import json

import numpy as np
import pytest
from PIL import Image

from smat_deploy.data import calibration as C
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
        calib = C.build_calibration_set(tmp_path / "calib", synthetic=2, from_dir=photos, size=70, builtin_photos=False)
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
    assert calib.image.min() >= 0 and calib.image.max() <= 1
    assert len(calib.feeds()) == 20 and calib.feeds()[3]["image"].shape == (1, 3, 70, 70)
    assert [s["origin"] for s in index["samples"][::5]] == [
        "synthetic composite (seed 0)",
        "synthetic composite (seed 1)",
        "your photo gray.png",
        "your photo wide.jpg",
    ]


def test_the_default_set_is_one_composite_and_the_four_bundled_photos(tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    calib = C.build_calibration_set(tmp_path / "calib", synthetic=C.DEFAULT_SYNTHETIC, size=70)
    assert C.DEFAULT_SYNTHETIC == 1 and len(calib) == (1 + 4) * 5
    names = ["synthetic_0000", *(f"photo_skimage_{n}" for n in ("astronaut", "chelsea", "coffee", "rocket"))]
    assert [s["id"] for s in calib.samples] == [f"{name}:{kind}" for name in names for kind in C.PROMPT_KINDS]
    photos = calib.samples[5:]
    assert all(s["source"] == "photo" and s["alpha"] is None for s in photos)
    assert [s["origin"] for s in photos[::5]] == [
        "scikit-image skimage.data.astronaut(): public domain (NASA, Eileen Collins)",
        "scikit-image skimage.data.chelsea(): CC0 (Stefan van der Walt)",
        "scikit-image skimage.data.coffee(): CC0 (Rachel Michetti)",
        "scikit-image skimage.data.rocket(): public domain (SpaceX)",
    ]
    # Photo prompts mark the central region, as for your own photos; the state follows the prompt kind.
    assert [s["state"] for s in photos[:5]] == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert [s["prompts"] for s in photos[:5]] == [s["prompts"] for s in photos[5:10]]
    # The bundled files, squared like any photo: the same pixels as scikit-image's own loaders.
    for position, name in enumerate(("astronaut", "chelsea", "coffee", "rocket")):
        expected = C._square(getattr(skimage_data, name)().astype(np.float32) / 255, 70)
        np.testing.assert_allclose(calib.image[5 + 5 * position].transpose(1, 2, 0), expected, atol=1e-6)
        assert all(np.array_equal(calib.image[5 + 5 * position], calib.image[5 + 5 * position + k]) for k in range(5))
    assert calib.image[5:].std() > 0.1  # real photos, not blank frames


def test_the_cli_default_and_no_builtin_photos(run_cli, tmp_path):
    pytest.importorskip("skimage.data")
    result = run_cli("calib-data", "--output", tmp_path / "default", "--size", "42", "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["samples"], summary["images"], summary["synthetic"], summary["photos"]) == (25, 5, 1, 4)
    result = run_cli("calib-data", "--output", tmp_path / "old", "--size", "42", "--no-builtin-photos")
    assert result.code == 0, result.stderr
    assert "wrote 5 samples (1 images: 1 synthetic, 0 photos; x 5 prompt kinds, 42x42)" in result.stdout
    old = C.load_calibration_set(tmp_path / "old")
    assert [s["source"] for s in old.samples] == ["synthetic"] * 5
    assert sorted(p.name for p in (tmp_path / "old" / "images").iterdir()) == ["synthetic_0000.png"]
    # Without the photos the set is exactly the composite-only set of before.
    default = C.load_calibration_set(tmp_path / "default")
    assert np.array_equal(old.image, default.image[:5]) and np.array_equal(old.prompt, default.prompt[:5])


def test_same_seed_same_set_and_seed_changes_it(tmp_path):
    a = C.build_calibration_set(tmp_path / "a", synthetic=1, size=42, seed=3)
    b = C.build_calibration_set(tmp_path / "b", synthetic=1, size=42, seed=3)
    c = C.build_calibration_set(tmp_path / "c", synthetic=1, size=42, seed=4)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.prompt, b.prompt)
    assert not np.array_equal(a.image[:5], c.image[:5])  # the composite changes with the seed ...
    assert np.array_equal(a.image[5:], c.image[5:]) and len(a) == 25  # ... the built-in photos do not
    # Byte for byte: the tensors and the index are the same files.
    for name in ("calib.npz", "index.json", "images/photo_skimage_rocket.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_rebuilding_replaces_and_a_failed_build_keeps_the_old_set(tmp_path, monkeypatch):
    out = tmp_path / "calib"
    C.build_calibration_set(out, synthetic=2, size=42)
    C.build_calibration_set(out, synthetic=1, size=42, builtin_photos=False)
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
        C.build_calibration_set(tmp_path / "o", builtin_photos=False)
    assert len(C.build_calibration_set(tmp_path / "photos_only", size=28)) == 4 * 5  # the photos alone
    clash = tmp_path / "clash"
    clash.mkdir()
    (clash / "skimage_rocket.png").write_bytes(
        (tmp_path / "photos_only" / "images/photo_skimage_rocket.png").read_bytes()
    )
    with pytest.raises(SmatError, match=r"share the name\(s\) photo_skimage_rocket"):
        C.build_calibration_set(tmp_path / "o", size=28, from_dir=clash)
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
