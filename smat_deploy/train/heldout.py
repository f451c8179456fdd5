"""Held-out synthetic composites: did a fine-tune improve the mattes?

The composites use seeds from :data:`HELDOUT_FIRST_SEED` on, which no training set reaches, so they
are never trained on. Each is matted automatically (no prompt) and with a box around its foreground
(the box needs no random draw, so every evaluation sees the same prompts; other modes can be asked
for and draw from a fixed seed). MAD is the mean absolute alpha error over the whole image; the
objective is the training loss on the same predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from smat_deploy.data.prompt_sampling import sample_prompt
from smat_deploy.data.synthetic import HELDOUT_FIRST_SEED, make_composite
from smat_deploy.model import SMat
from smat_deploy.prompts import PromptKind
from smat_deploy.train.losses import matting_loss

#: Prompt modes every held-out composite is matted in.
HELDOUT_MODES: tuple[PromptKind, ...] = (PromptKind.NONE, PromptKind.BOX)


@dataclass(frozen=True)
class HeldoutScore:
    mad: dict[str, float]  # prompt mode -> mean absolute error
    loss: dict[str, float]  # prompt mode -> training objective

    def mean_mad(self) -> float:
        return float(np.mean(list(self.mad.values())))


def heldout_batch(count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` held-out composites of ``size x size``: image ``[N,3,S,S]`` and alpha ``[N,1,S,S]``."""
    samples = [make_composite((size, size), seed=HELDOUT_FIRST_SEED + i) for i in range(count)]
    image = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).contiguous()
    alpha = torch.from_numpy(np.stack([s.alpha for s in samples]))[:, None]
    return image, alpha


@torch.inference_mode()
def evaluate_heldout(model: SMat, count: int, size: int, modes: tuple[PromptKind, ...] = HELDOUT_MODES) -> HeldoutScore:
    """MAD and loss of ``model`` (in eval mode) on ``count`` held-out composites; the model's mode is restored."""
    was_training = model.training
    model.eval()
    image, alpha = heldout_batch(count, size)
    mad, loss = {}, {}
    try:
        for mode in modes:
            rng = np.random.default_rng(0)  # fixed, so modes that do draw (point, scribble) are repeatable too
            prompt = torch.from_numpy(np.stack([sample_prompt(a[0].numpy(), mode, rng) for a in alpha]))[:, None]
            pred = torch.cat([model(image[i : i + 1], prompt[i : i + 1]) for i in range(count)])
            mad[str(mode)] = float((pred - alpha).abs().mean())
            loss[str(mode)] = float(matting_loss(pred, alpha).total)
    finally:
        model.train(was_training)
    return HeldoutScore(mad, loss)
