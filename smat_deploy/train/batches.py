"""Training batches: samples, crops and prompts drawn from a random stream that depends on (seed, step) only.

Seeding every step on its own, instead of running one stream through the whole run, is what makes a
resumed run equal to an uninterrupted one: step ``k`` draws the same samples, crops, prompt kinds and
prompts whether or not the process restarted before it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from smat_deploy.data.dataset import MattingDataset, MattingSample, SkipReport
from smat_deploy.data.prompt_sampling import sample_kinds, sample_prompt
from smat_deploy.errors import SmatError
from smat_deploy.prompts import PromptKind
from smat_deploy.train.augment import random_square_crop


@dataclass(frozen=True)
class TrainingBatch:
    image: torch.Tensor  # [B,3,S,S] RGB in [0, 1]
    alpha: torch.Tensor  # [B,1,S,S] ground truth
    prompt: torch.Tensor  # [B,1,S,S] 0/1, all zeros for automatic samples
    kinds: tuple[PromptKind, ...]  # what was asked for; an empty foreground turns it into automatic
    names: tuple[str, ...]


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The random stream of one training step."""
    return np.random.default_rng([seed, step])


def step_torch_seed(seed: int, step: int) -> int:
    """Seed for torch's own randomness (dropout) during one step."""
    return int(np.random.SeedSequence([seed, step, 1]).generate_state(1)[0])


class BatchSampler:
    """Draws batch ``step`` of a run: ``batch_size`` samples (with replacement), each cropped and prompted."""

    def __init__(
        self,
        dataset: MattingDataset,
        batch_size: int,
        size: int,
        kinds: Sequence[PromptKind],
        seed: int,
        max_zoom: float | None = None,
    ) -> None:
        self.dataset, self.batch_size, self.size, self.seed = dataset, batch_size, size, seed
        self.kinds = tuple(kinds)
        self.max_zoom = dataset.default_max_zoom if max_zoom is None else max_zoom
        #: Samples that could not be read while training (files broken beyond their header).
        self.skipped = SkipReport()
        self._bad: set[int] = set()

    def _load(self, rng: np.random.Generator) -> MattingSample:
        # Every attempt draws one index, known-bad or not, so the stream does not depend on what
        # an earlier process already found out.
        for _ in range(len(self.dataset) + 100):
            index = int(rng.integers(len(self.dataset)))
            if index in self._bad:
                continue
            try:
                return self.dataset.load(index)
            except SmatError as err:
                self._bad.add(index)
                self.skipped.add("unreadable while training", str(err))
                warnings.warn(f"skipping a sample that cannot be read: {err}", stacklevel=2)
        raise SmatError(f"no readable sample left in {self.dataset.describe()}")

    def batch(self, step: int) -> TrainingBatch:
        rng = step_rng(self.seed, step)
        kinds = sample_kinds(self.kinds, self.batch_size, rng)
        images, alphas, prompts, names = [], [], [], []
        for kind in kinds:
            sample = self._load(rng)
            image, alpha = random_square_crop(sample, self.size, rng, self.max_zoom)
            images.append(image)
            alphas.append(alpha)
            prompts.append(sample_prompt(alpha, kind, rng))
            names.append(sample.name)
        return TrainingBatch(
            image=torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
            alpha=torch.from_numpy(np.stack(alphas))[:, None],
            prompt=torch.from_numpy(np.stack(prompts))[:, None],
            kinds=tuple(kinds),
            names=tuple(names),
        )
