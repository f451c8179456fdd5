"""One training step as the seed's Algorithm 1, and the optimizer it runs with.

Algorithm 1: prompt -> state (1 when the prompt marks a pixel) -> candidate feature (mean patch token
under the prompt, or the class token when there is none) -> cross-attention to the patch tokens ->
similarity map -> detail decoder -> alpha -> loss. The forward half is the model's own
:meth:`SMat.forward_padded`, the same code inference runs, so training cannot drift from it.

Optimizer. The authors use AdamW (lr 5e-4, weight decay 0.1) with a layer-wise learning-rate decay
of 0.01 over the 12 DINOv2 blocks, so the pretrained backbone barely moves. Here there are two groups:
the prompt attention and decoder at ``lr``, the backbone at ``lr * backbone_lr_scale`` (or frozen).
Weight decay applies to weight matrices and kernels only, not to biases, norms, the position table or
the class token, which decay would pull towards zero for no benefit. The learning rate is constant:
fine-tunes here are short, and a schedule would have to be part of the resume state.
"""

from __future__ import annotations

import torch
from torch import nn

from smat_deploy.model import SMat, state_from_prompt
from smat_deploy.train.batches import TrainingBatch
from smat_deploy.train.losses import MattingLosses, matting_loss

DEFAULT_WEIGHT_DECAY = 0.1
ADAM_BETAS = (0.9, 0.999)


def freeze_backbone(model: SMat, frozen: bool = True) -> None:
    """Stop (or restart) gradient updates of the DINOv2 backbone; it has no BatchNorm whose statistics would move."""
    for parameter in model.backbone.parameters():
        parameter.requires_grad_(not frozen)


def _decays(name: str, parameter: nn.Parameter) -> bool:
    return parameter.ndim >= 2 and not name.endswith(("pos_embed", "cls_token", "mask_token"))


def build_optimizer(
    model: SMat, lr: float, backbone_lr_scale: float = 0.1, weight_decay: float = DEFAULT_WEIGHT_DECAY
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, in a fixed group order (so optimizer states can be resumed)."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            key = (name.startswith("backbone."), _decays(name, parameter))
            groups.setdefault(key, []).append(parameter)
    param_groups = [
        {
            "params": groups[key],
            "lr": lr * (backbone_lr_scale if key[0] else 1.0),
            "weight_decay": weight_decay if key[1] else 0.0,
            "name": ("backbone" if key[0] else "heads") + ("" if key[1] else "-no-decay"),
        }
        for key in sorted(groups)
    ]
    return torch.optim.AdamW(param_groups, lr=lr, betas=ADAM_BETAS)


def predict_for_training(model: SMat, image: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """Algorithm 1's forward half: alpha ``[B,1,H,W]`` with gradients, state derived from the prompt."""
    height, width = image.shape[-2:]
    state = state_from_prompt(prompt)
    padded_image, padded_prompt = model.preprocess(image, prompt)
    return model.forward_padded(padded_image, padded_prompt, state)[:, :, :height, :width]


def training_step(model: SMat, optimizer: torch.optim.Optimizer, batch: TrainingBatch) -> MattingLosses:
    """One update on ``batch``: forward in training mode (BatchNorm batch statistics, dropout), loss, AdamW step."""
    model.train()
    alpha = predict_for_training(model, batch.image, batch.prompt)
    losses = matting_loss(alpha, batch.alpha)
    optimizer.zero_grad(set_to_none=True)
    losses.total.backward()
    optimizer.step()
    return losses
