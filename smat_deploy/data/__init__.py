"""Data every stage uses, made or read with numpy alone (no PyTorch): the layer below the model.

- :mod:`~smat_deploy.data.synthetic`: composites with exact alpha (demo, calibration, training, tests).
- :mod:`~smat_deploy.data.folder`: folders of image/alpha pairs (training on real mattes).
- :mod:`~smat_deploy.data.prompt_sampling`: random training prompts from an alpha.
- :mod:`~smat_deploy.data.cases`: the input factory: contract-shaped cases with prompts from alpha.
- :mod:`~smat_deploy.data.calibration`: the calibration set (``calib-data``) every quantiser reads.
- :mod:`~smat_deploy.data.parity_sets`: photo folders, calibration sets or composites as scored samples.
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
