"""Where ``smat-deploy parity`` gets its samples: photo folders (ground truth found by name), calibration sets,
composites; prompts derived from the alpha or the central region; bad files skipped and counted."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from smat_deploy.data.calibration import BUILTIN_PHOTOS, HOLDOUT_PHOTOS, build_calibration_set, bundled_photo
from smat_deploy.data.parity_sets import load_parity_data, parse_prompt_kinds, scan_photo_folder
from smat_deploy.errors import SmatError


def _photo(path, size=(30, 40), seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8)).save(path)
    return path


def _alpha(path, box, size=(30, 40)):
    """An alpha that is 255 inside ``box`` = (y0, y1, x0, x1) and 0 elsewhere."""
    alpha = np.zeros(size, np.uint8)
    y0, y1, x0, x1 = box
    alpha[y0:y1, x0:x1] = 255
    Image.fromarray(alpha).save(path)
    return path


def test_photos_pair_with_their_ground_truth_by_name_and_other_mattes_are_not_photos(tmp_path):
    names = {
        "GT01.png": "photo",
        "GT01_truth.png": "alpha",
        "GT01_tri.png": "trimap",
        "merged_GT05.jpg": "photo",
        "alpha_GT05.jpg": "alpha",
        "fg_GT05.jpg": "layer",
        "trimap_GT05.png": "trimap",
        "lemur.png": "photo",
        "lemur_alpha.png": "alpha",
        "lemur_alpha_fba.png": "another method's alpha",
        "sample1.jpg": "photo",
        "sample1_pred_alpha.png": "a prediction",
        "notes.txt": "not an image",
    }
    for name in names:
        if name.endswith((".png", ".jpg")):
            _photo(tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    _photo(tmp_path / "sub" / "cat.png")
    pairs, notes = scan_photo_folder(tmp_path)
    found = {str(p.relative_to(tmp_path)): (a.name if a else None) for p, a in pairs}
    assert found == {
        "GT01.png": "GT01_truth.png",
        "merged_GT05.jpg": "alpha_GT05.jpg",
        "lemur.png": "lemur_alpha.png",
        "sample1.jpg": None,
        "sub/cat.png": None,
    }
    assert [str(p.relative_to(tmp_path)) for p, _ in pairs][:3] == ["GT01.png", "lemur.png", "merged_GT05.jpg"]
    assert notes == []


def test_folder_dataset_layout_pairs_by_stem(tmp_path):
    (tmp_path / "image").mkdir()
    (tmp_path / "alpha").mkdir()
    _photo(tmp_path / "image" / "a.jpg")
    _photo(tmp_path / "image" / "b.png")
    _alpha(tmp_path / "alpha" / "a.png", (5, 20, 10, 30))
    pairs, _ = scan_photo_folder(tmp_path)
    assert [(p.name, a.name if a else None) for p, a in pairs] == [("a.jpg", "a.png"), ("b.png", None)]


def test_shared_photos_ground_truth_is_found_and_predictions_are_not(shared_photos):
    pairs, _ = scan_photo_folder(shared_photos)
    with_gt = {p.name: a.name for p, a in pairs if a is not None}
    # SOURCES.md: GT01 (real GT), GT05 (exact for the composite) and the lemur (pseudo-GT) have an alpha;
    # the *_pred_alpha files are published predictions, and 17 photos in all (trimaps, fg/bg layers excluded).
    assert with_gt == {
        "GT01.png": "GT01_truth.png",
        "merged_GT05.jpg": "alpha_GT05.jpg",
        "lemur.png": "lemur_alpha.png",
    }
    assert len(pairs) == 17
    assert not any(token in p.name for p, _ in pairs for token in ("pred", "_tri", "trimap", "fg_", "bg_", "alpha"))


def test_prompts_come_from_the_alpha_or_the_central_region(tmp_path):
    _photo(tmp_path / "dog.png")
    _alpha(tmp_path / "dog_alpha.png", (5, 20, 10, 30))
    _photo(tmp_path / "zebra.png", size=(50, 100))
    data = load_parity_data(tmp_path, ("none", "box", "mask"))
    assert data.kind == "photos" and data.images == 2 and len(data.samples) == 6
    by = {(s.name, s.kind): s for s in data.samples}
    assert not by["dog.png", "none"].prompt.any() and by["dog.png", "none"].state == 0.0
    expected_box = np.zeros((30, 40), np.float32)
    expected_box[5:20, 10:30] = 1
    np.testing.assert_array_equal(by["dog.png", "box"].prompt, expected_box)
    np.testing.assert_array_equal(by["dog.png", "mask"].prompt, expected_box)
    assert by["dog.png", "box"].state == 1.0 and by["dog.png", "box"].alpha.max() == 1.0
    central = np.zeros((50, 100), np.float32)
    central[15:35, 30:70] = 1  # the middle 40 % of each side
    np.testing.assert_array_equal(by["zebra.png", "box"].prompt, central)
    assert by["zebra.png", "box"].alpha is None


def test_long_side_cap_and_limit(tmp_path):
    _photo(tmp_path / "big.png", size=(60, 120))
    _alpha(tmp_path / "big_alpha.png", (10, 50, 20, 100), size=(60, 120))
    _photo(tmp_path / "other.png")
    data = load_parity_data(tmp_path, ("point",), max_size=40, limit=1)
    assert data.images == 1 and [s.name for s in data.samples] == ["big.png"]  # photos with an alpha first
    sample = data.samples[0]
    assert sample.image.shape == (20, 40, 3) and sample.alpha.shape == (20, 40) and sample.prompt.shape == (20, 40)
    assert sample.size == "40x20"


def test_bad_files_are_skipped_with_a_reason_and_the_rest_load(tmp_path):
    _photo(tmp_path / "good.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all")
    _photo(tmp_path / "odd.png")
    _alpha(tmp_path / "odd_alpha.png", (0, 5, 0, 5), size=(20, 20))  # another size than its photo
    _photo(tmp_path / "hint.png")
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(tmp_path / "hint_mask.png")
    (tmp_path / "hint.json").write_text(json.dumps([{"type": "mask", "path": "hint_mask.png"}]))
    (tmp_path / "good.json").write_text(json.dumps([{"type": "box", "x0": 2, "y0": 3, "x1": 12, "y1": 9}]))
    skipped = []
    data = load_parity_data(tmp_path, ("none", "file"), on_skip=lambda item, reason: skipped.append((item, reason)))
    reasons = dict(skipped)
    assert set(reasons) == {"broken.jpg", "odd.png", "hint.json"}
    assert "cannot read image" in reasons["broken.jpg"]
    assert "is 20x20 but the photo is 40x30" in reasons["odd.png"]
    assert "but the image is 40x30" in reasons["hint.json"]
    assert data.skipped == [{"item": i, "reason": r} for i, r in skipped]
    assert sorted((s.name, s.kind) for s in data.samples) == [
        ("good.png", "file"),
        ("good.png", "none"),
        ("hint.png", "none"),
    ]
    good_file = next(s for s in data.samples if s.kind == "file")
    assert good_file.prompt.sum() == 10 * 6 and good_file.prompt[3:9, 2:12].all()


def test_calibration_set_and_defaults(tmp_path, monkeypatch):
    calib = build_calibration_set(tmp_path / "calib", synthetic=2, size=28)
    data = load_parity_data(tmp_path / "calib", ("none", "mask"), limit=1)
    assert data.kind == "calibration" and data.images == 1
    assert [s.kind for s in data.samples] == ["none", "mask"]
    index = [i for i, s in enumerate(calib.samples) if s["image"] == calib.samples[0]["image"]]
    mask_index = next(i for i in index if calib.samples[i]["prompt_kind"] == "mask")
    np.testing.assert_array_equal(data.samples[1].prompt, calib.prompt[mask_index, 0])
    np.testing.assert_array_equal(data.samples[0].image, calib.image[index[0]].transpose(1, 2, 0))
    assert data.samples[0].alpha is not None and data.samples[0].alpha.shape == (28, 28)

    monkeypatch.chdir(tmp_path)  # no calib_data/ here
    fallback = load_parity_data(None, ("none", "point"), max_size=56)
    assert fallback.kind == "bundled" and fallback.images == 5 + 2 and len(fallback.samples) == 7 * 2
    photos = [s for s in fallback.samples if s.alpha is None]
    assert sorted({s.name for s in photos}) == sorted(f"skimage_{name}" for name, _, _ in HOLDOUT_PHOTOS)
    assert {s.size for s in fallback.samples if s.alpha is not None} == {"56x56", "56x42"}  # the composites
    assert max(max(s.image.shape[:2]) for s in photos) == 56
    assert all(s.prompt.any() == (s.kind == "point") for s in fallback.samples)
    (tmp_path / "calib").rename(tmp_path / "calib_data")
    assert load_parity_data(None, ("none",)).kind == "calibration"
    assert load_parity_data(None, ("none",), use_calibration_set=False).kind == "bundled"  # what demo asks
    assert load_parity_data(None, ("none",), limit=1, use_calibration_set=False).images == 2  # 1 photo, 1 composite


def test_the_default_held_out_photos_are_real_bundled_photos_calibration_never_uses():
    calibration_files = {filename for _, filename, _ in BUILTIN_PHOTOS}
    held_out_files = {filename for _, filename, _ in HOLDOUT_PHOTOS}
    assert len(held_out_files) == 5 and not calibration_files & held_out_files
    for _, filename, _ in HOLDOUT_PHOTOS:
        photo = bundled_photo(filename)
        assert photo.ndim == 3 and photo.shape[2] == 3 and min(photo.shape[:2]) >= 256
        assert photo.std() > 0.05  # a photo, not a flat image


@pytest.mark.parametrize(
    ("prompts", "message"),
    [("", "--prompts is empty"), ("none,clicks", "unknown prompt kind(s) clicks"), (" , ", "--prompts is empty")],
)
def test_prompt_kinds_are_checked(prompts, message):
    with pytest.raises(SmatError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_prompt_kinds(prompts)
    assert parse_prompt_kinds("mask, none,POINT") == ("none", "point", "mask")


def test_bad_data_arguments(tmp_path):
    with pytest.raises(SmatError, match="data folder not found"):
        load_parity_data(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(SmatError, match="must be a folder"):
        load_parity_data(tmp_path / "file.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SmatError, match="no photos in"):
        load_parity_data(tmp_path / "empty")
    with pytest.raises(SmatError, match="--max-side must be at least 14"):
        load_parity_data(tmp_path, max_size=5)
