"""What a training dataset is: indexed samples of an RGB image and its exact alpha.

Two kinds exist: :class:`~smat_deploy.data.synthetic.SyntheticComposites` (generated, no files) and
:class:`~smat_deploy.data.folder.FolderDataset` (image/alpha pairs on disk). Both hand out samples at
their own size; :func:`~smat_deploy.data.augment.random_square_crop` brings them to the training size.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Protocol

import numpy as np

_EXAMPLES = 3


@dataclass(frozen=True)
class MattingSample:
    image: np.ndarray  # float32 HxWx3, RGB in [0, 1]
    alpha: np.ndarray  # float32 HxW in [0, 1]
    name: str


class SkipReport:
    """Skipped samples grouped by reason, for one warning per reason and a machine-readable count."""

    def __init__(self) -> None:
        self.names: dict[str, list[str]] = defaultdict(list)

    def add(self, reason: str, name: str) -> None:
        self.names[reason].append(name)

    def counts(self) -> dict[str, int]:
        return {reason: len(names) for reason, names in self.names.items()}

    def total(self) -> int:
        return sum(len(names) for names in self.names.values())

    def warn(self, where: str) -> None:
        for reason, names in self.names.items():
            shown = ", ".join(names[:_EXAMPLES]) + (
                f" and {len(names) - _EXAMPLES} more" if len(names) > _EXAMPLES else ""
            )
            warnings.warn(f"skipped {len(names)} sample(s) in {where}: {reason}: {shown}", stacklevel=3)


class MattingDataset(Protocol):
    """``len(dataset)`` samples; ``load(i)`` reads one, raising :class:`SmatError` when it is unreadable."""

    #: Largest zoom of the training crops that suits this data (see ``random_square_crop``).
    default_max_zoom: float
    #: Samples left out when the dataset was opened.
    skipped: SkipReport

    def __len__(self) -> int: ...

    def load(self, index: int) -> MattingSample: ...

    def describe(self) -> str:
        """One line for logs and summaries, e.g. ``"48 synthetic composites"``."""
        ...
