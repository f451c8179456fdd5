"""A folder of image/alpha pairs, the layout most matting datasets ship in.

``DIR/image/NAME.ext`` pairs with ``DIR/alpha/NAME.ext2``: same stem, any image format. Also accepted,
in this order when several exist: ``images/`` + ``alphas/``, ``original/`` + ``mask/``, ``merged/`` +
``alpha/``. Alphas are read as grayscale in [0, 1] (a non-trivial alpha channel is the alpha; 16-bit
files keep their precision).

Bad samples do not stop a run: an image without an alpha, an unreadable file, an alpha of another size
than its image (no resize can be trusted to align them) or several alphas for one stem are skipped,
reported as one warning per reason with a count, and counted in :attr:`FolderDataset.skipped`. A file
that only turns out to be broken when its pixels are read is skipped the same way during training.
Only a folder with no usable pair at all is an error.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from smat_deploy import images
from smat_deploy.data.dataset import MattingSample, SkipReport
from smat_deploy.errors import SmatError

#: (image folder, alpha folder) names, most common first.
LAYOUTS: tuple[tuple[str, str], ...] = (
    ("image", "alpha"),
    ("images", "alphas"),
    ("original", "mask"),
    ("merged", "alpha"),
)


def _image_files(folder: Path) -> dict[str, list[Path]]:
    suffixes = set(Image.registered_extensions())
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in suffixes:
            by_stem[path.stem].append(path)
    return by_stem


def _header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file header, or None when it is not a readable image."""
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


def find_layout(root: Path) -> tuple[Path, Path]:
    for image_dir, alpha_dir in LAYOUTS:
        if (root / image_dir).is_dir() and (root / alpha_dir).is_dir():
            return root / image_dir, root / alpha_dir
    accepted = ", ".join(f"{i}/ + {a}/" for i, a in LAYOUTS)
    raise SmatError(f"{root} has no image and alpha folders (expected {accepted})")


class FolderDataset:
    """Image/alpha pairs matched by file stem; headers are checked up front, pixels read on demand."""

    #: Photos are usually larger than the training size: crops zoom in up to 1.5x on the short side.
    default_max_zoom = 1.5

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = root = Path(root)
        if not root.is_dir():
            raise SmatError(f"dataset folder not found: {root}")
        self.image_dir, self.alpha_dir = find_layout(root)
        self.skipped = SkipReport()
        image_files, alpha_files = _image_files(self.image_dir), _image_files(self.alpha_dir)
        self.pairs: list[tuple[Path, Path]] = []
        for stem, paths in image_files.items():
            self._check_pair(stem, paths, alpha_files.get(stem, []))
        orphans = sorted(set(alpha_files) - set(image_files))
        for stem in orphans:
            self.skipped.add(f"alpha without an image in {self.image_dir.name}/", stem)
        if not self.pairs:
            detail = (
                "; ".join(f"{n} {reason}" for reason, n in self.skipped.counts().items()) or "both folders are empty"
            )
            raise SmatError(f"no usable image/alpha pairs in {root} ({detail})")
        self.skipped.warn(str(root))

    def _check_pair(self, stem: str, image_paths: list[Path], alpha_paths: list[Path]) -> None:
        if len(image_paths) > 1 or len(alpha_paths) > 1:
            self.skipped.add("several files share the name", stem)
            return
        if not alpha_paths:
            self.skipped.add(f"no alpha file in {self.alpha_dir.name}/", stem)
            return
        image_size, alpha_size = _header_size(image_paths[0]), _header_size(alpha_paths[0])
        if image_size is None or alpha_size is None:
            self.skipped.add("unreadable image file", stem)
        elif image_size != alpha_size:
            sizes = f"{alpha_size[0]}x{alpha_size[1]} vs {image_size[0]}x{image_size[1]}"
            self.skipped.add("alpha size differs from its image", f"{stem} ({sizes})")
        else:
            self.pairs.append((image_paths[0], alpha_paths[0]))

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> MattingSample:
        image_path, alpha_path = self.pairs[index]
        image = images.load_image(image_path)
        alpha = images.load_mask_image(alpha_path)
        if alpha.shape != image.shape[:2]:
            raise SmatError(
                f"{alpha_path} is {alpha.shape[1]}x{alpha.shape[0]} but its image is {image.shape[1]}x{image.shape[0]}"
            )
        return MattingSample(image, alpha, image_path.stem)

    def describe(self) -> str:
        skipped = self.skipped.total()
        note = f", {skipped} skipped" if skipped else ""
        return f"{len(self.pairs)} image/alpha pairs in {self.root}{note}"
