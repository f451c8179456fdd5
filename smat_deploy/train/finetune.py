"""A fine-tuning run: steps, periodic atomic checkpoints, and exact resumption.

A training checkpoint is an official SMat checkpoint with extra entries, so every tool that loads
weights (``load_model``, ``smat-deploy matte -c``) reads it as it is::

    {"model": state_dict, "optimizer": AdamW state, "iteration": completed steps,
     "config": FinetuneConfig as a dict, "seed": seed, "losses": loss of every step so far}

Determinism: the initial weights come from the seed (or a checkpoint), each step's data and dropout
from ``(seed, step)`` alone (see :mod:`smat_deploy.train.batches`), and the optimizer state is saved
whole. So the same seed and settings give the same checkpoint, and a run resumed from step ``k`` ends
with the same weights as one that never stopped.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from smat_deploy.data.dataset import MattingDataset
from smat_deploy.data.prompt_sampling import ALL_KINDS
from smat_deploy.errors import SmatError
from smat_deploy.model import SMat, save_checkpoint
from smat_deploy.model.checkpoint import check_state_dict, read_checkpoint
from smat_deploy.prompts import PromptKind
from smat_deploy.train.batches import BatchSampler, step_torch_seed
from smat_deploy.train.step import build_optimizer, freeze_backbone, training_step

#: Steps averaged for the start and end loss of a run summary (training losses are noisy).
LOSS_WINDOW = 10
#: Settings that change the trajectory: a resume that differs in one of them is warned about.
_TRAJECTORY_KEYS = ("batch_size", "size", "lr", "backbone_lr_scale", "weight_decay", "prompt_kinds", "seed", "max_zoom")


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of a run. ``steps`` is the total: a resumed run continues up to it."""

    steps: int
    batch_size: int = 2
    size: int = 224
    lr: float = 1e-4
    backbone_lr_scale: float = 0.1
    weight_decay: float = 0.1
    freeze_backbone: bool = False
    prompt_kinds: tuple[str, ...] = tuple(k.value for k in ALL_KINDS)
    seed: int = 0
    save_every: int = 0  # 0: only at the end
    max_zoom: float | None = None  # None: the dataset's default

    def validate(self) -> None:
        """Raise :class:`SmatError` on the first setting that cannot work."""
        if self.steps < 1:
            raise SmatError(f"--steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise SmatError(f"--batch must be at least 1, got {self.batch_size}")
        if self.size < 70 or self.size % 14:
            raise SmatError(f"--size must be a multiple of 14 (the patch size) and at least 70, got {self.size}")
        if not self.lr > 0:
            raise SmatError(f"--lr must be positive, got {self.lr}")
        if self.backbone_lr_scale < 0 or self.weight_decay < 0:
            raise SmatError("--backbone-lr-scale and the weight decay must not be negative")
        if self.save_every < 0:
            raise SmatError(f"--save-every must be 0 (only at the end) or positive, got {self.save_every}")
        if self.max_zoom is not None and self.max_zoom < 1:
            raise SmatError(f"the crop zoom must be at least 1, got {self.max_zoom}")
        unknown = set(self.prompt_kinds) - {k.value for k in ALL_KINDS}
        if not self.prompt_kinds or unknown:
            raise SmatError(f"unknown prompt kinds: {sorted(unknown)}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["prompt_kinds"] = list(self.prompt_kinds)
        return data


@dataclass(frozen=True)
class ResumeState:
    """What a training checkpoint holds besides the weights."""

    source: str
    iteration: int
    optimizer: dict
    losses: list[float]
    config: dict


@dataclass
class FinetuneResult:
    out: Path
    start_step: int
    end_step: int
    losses: list[float]  # every step of the whole run, resumed parts included
    seconds: float
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> samples left out (opening and training)

    def loss_at_start(self) -> float:
        window = self.losses[:LOSS_WINDOW]
        return sum(window) / len(window)

    def loss_at_end(self) -> float:
        window = self.losses[-LOSS_WINDOW:]
        return sum(window) / len(window)


def read_resume_state(path: str | os.PathLike[str], model: SMat) -> ResumeState:
    """Load a training checkpoint's weights into ``model`` and return the rest; one clear error if it does not fit."""
    checkpoint = read_checkpoint(path)
    missing = [key for key in ("model", "optimizer", "iteration") if key not in checkpoint]
    if missing:
        raise SmatError(
            f"{path} is not a training checkpoint (no {', '.join(missing)}); "
            "use --checkpoint to start a new run from its weights"
        )
    check_state_dict(model, checkpoint["model"], source=f"resume checkpoint {path}")
    model.load_state_dict(checkpoint["model"], strict=False)
    return ResumeState(
        source=str(path),
        iteration=int(checkpoint["iteration"]),
        optimizer=checkpoint["optimizer"],
        losses=[float(v) for v in checkpoint.get("losses", [])],
        config=dict(checkpoint.get("config", {})),
    )


def _restore_optimizer(optimizer: torch.optim.Optimizer, resume: ResumeState, config: FinetuneConfig) -> None:
    lrs = [group["lr"] for group in optimizer.param_groups]
    try:
        optimizer.load_state_dict(resume.optimizer)
    except (ValueError, KeyError, TypeError) as err:
        was_frozen = resume.config.get("freeze_backbone")
        hint = f" (it was trained with freeze_backbone={was_frozen})" if was_frozen != config.freeze_backbone else ""
        raise SmatError(f"optimizer state in {resume.source} does not fit this run{hint}: {err}") from None
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr  # the command line's learning rate applies from here on


def _warn_config_changes(resume: ResumeState, config: FinetuneConfig) -> None:
    current = config.to_dict()
    changed = [
        f"{key} {current[key]} (checkpoint: {resume.config[key]})"
        for key in _TRAJECTORY_KEYS
        if key in resume.config and resume.config[key] != current[key]
    ]
    if changed:
        warnings.warn(
            "resuming with other settings than the checkpoint's: "
            + ", ".join(changed)
            + "; the result will differ from an uninterrupted run",
            stacklevel=3,
        )


def finetune(
    model: SMat,
    dataset: MattingDataset,
    config: FinetuneConfig,
    out: str | os.PathLike[str],
    *,
    resume: ResumeState | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> FinetuneResult:
    """Train ``model`` in place up to ``config.steps`` steps, writing checkpoints to ``out``.

    With ``resume`` (from :func:`read_resume_state`, which already put its weights into ``model``),
    the optimizer state, step count and loss history continue from that training checkpoint.
    ``on_step(step, losses)`` is called after every step (progress display). The model is left in
    eval mode.
    """
    config.validate()
    freeze_backbone(model, config.freeze_backbone)
    start, losses = 0, []
    if resume is not None:
        _warn_config_changes(resume, config)
        start, losses = resume.iteration, list(resume.losses[: resume.iteration])
        if start >= config.steps:
            raise SmatError(f"{resume.source} is already at step {start}; ask for more --steps than that to continue")
    optimizer = build_optimizer(model, config.lr, config.backbone_lr_scale, config.weight_decay)
    if resume is not None:
        _restore_optimizer(optimizer, resume, config)
    kinds = [PromptKind(k) for k in config.prompt_kinds]
    sampler = BatchSampler(dataset, config.batch_size, config.size, kinds, config.seed, config.max_zoom)

    def save(iteration: int) -> None:
        save_checkpoint(
            model,
            out,
            optimizer=optimizer.state_dict(),
            iteration=iteration,
            config=config.to_dict(),
            seed=config.seed,
            losses=list(losses),
            data=dataset.describe(),
        )

    began = time.perf_counter()
    for step in range(start, config.steps):
        batch = sampler.batch(step)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(step_torch_seed(config.seed, step))
            step_losses = training_step(model, optimizer, batch).as_floats()
        if not torch.isfinite(torch.tensor(step_losses["loss"])):
            raise SmatError(f"the loss became {step_losses['loss']} at step {step + 1}; try a lower --lr")
        losses.append(step_losses["loss"])
        if on_step is not None:
            on_step(step + 1, step_losses)
        if config.save_every and (step + 1) % config.save_every == 0 and step + 1 < config.steps:
            save(step + 1)
    save(config.steps)
    model.eval()
    skipped = {**dataset.skipped.counts(), **sampler.skipped.counts()}
    return FinetuneResult(Path(out), start, config.steps, losses, time.perf_counter() - began, skipped)
