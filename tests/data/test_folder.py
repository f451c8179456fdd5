"""Image/alpha folders: the layouts, and every kind of bad sample (skipped with a count, or one clear error)."""

import numpy as np
import pytest
from PIL import Image

from smat_deploy.data import FolderDataset, open_dataset
from smat_deploy.errors import SmatError


def _write_pair(root, stem, size=(40, 30), image_dir="image", alpha_dir="alpha", alpha_size=None, ext=".png"):
    rng = np.random.default_rng(len(stem))
    (root / image_dir).mkdir(parents=True, exist_ok=True)
    (root / alpha_dir).mkdir(parents=True, exist_ok=True)
    width, height = size
    Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8)).save(root / image_dir / f"{stem}{ext}")
    aw, ah = alpha_size or size
    alpha = np.zeros((ah, aw), dtype=np.uint8)
    alpha[ah // 4 : 3 * ah // 4, aw // 4 : 3 * aw // 4] = 255
    alpha[0, 0] = 128
    Image.fromarray(alpha).save(root / alpha_dir / f"{stem}.png")


def test_pairs_match_by_stem_across_formats(tmp_path):
    _write_pair(tmp_path, "a")
    _write_pair(tmp_path, "b", ext=".jpg")  # JPEG photo, PNG alpha
    dataset = FolderDataset(tmp_path)
    assert len(dataset) == 2 and dataset.skipped.total() == 0
    sample = dataset.load(1)
    assert sample.name == "b" and sample.image.shape == (30, 40, 3) and sample.alpha.shape == (30, 40)
    assert sample.alpha[0, 0] == pytest.approx(128 / 255) and sample.alpha.max() == 1.0


@pytest.mark.parametrize(("image_dir", "alpha_dir"), [("images", "alphas"), ("original", "mask"), ("merged", "alpha")])
def test_common_aliases_are_accepted(tmp_path, image_dir, alpha_dir):
    _write_pair(tmp_path, "x", image_dir=image_dir, alpha_dir=alpha_dir)
    assert len(FolderDataset(tmp_path)) == 1


def test_bad_samples_are_skipped_with_one_warning_per_reason_and_counted(tmp_path):
    _write_pair(tmp_path, "good")
    _write_pair(tmp_path, "small_alpha", alpha_size=(20, 15))
    _write_pair(tmp_path, "no_alpha")
    (tmp_path / "alpha" / "no_alpha.png").unlink()
    for stem in ("broken1", "broken2"):
        _write_pair(tmp_path, stem)
        (tmp_path / "image" / f"{stem}.png").write_bytes(b"not an image at all")
    with pytest.warns(UserWarning) as caught:
        dataset = FolderDataset(tmp_path)
    assert len(dataset) == 1
    assert dataset.skipped.counts() == {
        "alpha size differs from its image": 1,
        "no alpha file in alpha/": 1,
        "unreadable image file": 2,
    }
    messages = [str(w.message) for w in caught]
    assert len(messages) == 3
    assert any("small_alpha (20x15 vs 40x30)" in m for m in messages)
    assert any("broken1, broken2" in m for m in messages)


def test_a_folder_without_usable_pairs_is_an_error(tmp_path):
    _write_pair(tmp_path, "only")
    (tmp_path / "alpha" / "only.png").unlink()
    with pytest.raises(SmatError, match=r"no usable image/alpha pairs .*1 no alpha file"):
        FolderDataset(tmp_path)


def test_missing_folders_are_errors_that_name_the_layout(tmp_path):
    with pytest.raises(SmatError, match="dataset folder not found"):
        FolderDataset(tmp_path / "nope")
    (tmp_path / "photos").mkdir()
    with pytest.raises(SmatError, match=r"no image and alpha folders \(expected image/ \+ alpha/"):
        FolderDataset(tmp_path)


def test_open_dataset_needs_exactly_one_source(tmp_path):
    with pytest.raises(SmatError, match="exactly one data source"):
        open_dataset(tmp_path, 4)
    with pytest.raises(SmatError, match="exactly one data source"):
        open_dataset(None, None)
    assert len(open_dataset(None, 3, size=70)) == 3
