"""Data the project makes or reads: synthetic composites with exact alpha, image/alpha folders, training prompts.

Synthetic composites serve the demo, calibration and training; folders of image/alpha pairs serve
training on real mattes.
"""

from __future__ import annotations

import os

from smat_deploy.data.dataset import MattingDataset, MattingSample
from smat_deploy.data.folder import FolderDataset
from smat_deploy.data.synthetic import HELDOUT_FIRST_SEED, SyntheticComposites, make_composite
from smat_deploy.errors import SmatError


def open_dataset(
    folder: str | os.PathLike[str] | None = None, synthetic: int | None = None, size: int = 224
) -> MattingDataset:
    """Exactly one of ``folder`` (image/alpha pairs) or ``synthetic`` (that many composites of ``size``)."""
    if (folder is None) == (synthetic is None):
        raise SmatError("give exactly one data source: --data DIR or --synthetic N")
    if synthetic is not None:
        if synthetic < 1:
            raise SmatError(f"--synthetic needs at least 1 composite, got {synthetic}")
        return SyntheticComposites(synthetic, size)
    return FolderDataset(folder)


__all__ = [
    "HELDOUT_FIRST_SEED",
    "FolderDataset",
    "MattingDataset",
    "MattingSample",
    "SyntheticComposites",
    "make_composite",
    "open_dataset",
]
