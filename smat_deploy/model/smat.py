"""SMat: one network for automatic and interactive matting (CVPR 2024), inference numerics.

The forward pass reproduces the authors' inference code step by step; each step is a small method
so the ONNX wrapper and the training code can reuse them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from smat_deploy.errors import SmatError
from smat_deploy.model.backbone import BackboneConfig, DinoV2Backbone, PosEmbedResize
from smat_deploy.model.detail_decoder import DecoderConfig, DetailCaptureDecoder
from smat_deploy.model.prompt_attention import PromptAttentionConfig, PromptCrossAttention

#: ImageNet statistics used by the official model (applied to RGB in [0, 1]).
PIXEL_MEAN = (123.675 / 255.0, 116.28 / 255.0, 103.53 / 255.0)
PIXEL_STD = (58.395 / 255.0, 57.12 / 255.0, 57.375 / 255.0)
#: Denominator guard of the masked mean over prompt patches (official value).
PROMPT_MEAN_EPS = 1e-6
#: Denominator guard of the per-image min-max normalisation of the similarity map (official value).
SIMILARITY_RANGE_EPS = 1e-6


@dataclass(frozen=True)
class SMatConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    prompt_attention: PromptAttentionConfig = field(default_factory=PromptAttentionConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)

    @property
    def patch_size(self) -> int:
        return self.backbone.patch_size


def padded_size(height: int, width: int, patch: int = 14) -> tuple[int, int]:
    """Size after the official padding rule, quirk included.

    When either side is not a multiple of ``patch``, *both* sides become ``side + patch - side % patch``,
    so a side that already is a multiple grows by a whole patch. Written without branches (``sym_min``)
    so that it stays symbolic when the model is exported with dynamic height and width.
    """
    needs_pad = torch.sym_min(1, height % patch + width % patch)
    return height + needs_pad * (patch - height % patch), width + needs_pad * (patch - width % patch)


def state_from_prompt(prompt: torch.Tensor) -> torch.Tensor:
    """``[B,1]`` float: 1 where the sample's prompt marks any pixel (interactive), else 0 (automatic)."""
    return (prompt != 0).flatten(1).any(dim=1, keepdim=True).to(prompt.dtype)


class SMat(nn.Module):
    """Reference SMat model. ``forward(image, prompt, state=None) -> alpha``.

    - ``image``: float32 ``[B,3,H,W]``, RGB in [0, 1]; any ``H, W >= 14``.
    - ``prompt``: float32 ``[B,1,H,W]``, 1 where the user marked the target, all zeros for automatic mode.
    - ``state``: float32 ``[B,1]``, 1 interactive / 0 automatic; derived from the prompt when ``None``.
    - returns alpha, float32 ``[B,1,H,W]`` in [0, 1].

    A batch may mix automatic and interactive samples: the candidate token is a branch-free blend,
    which equals the authors' per-sample loop.
    """

    def __init__(self, config: SMatConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or SMatConfig()
        self.backbone = DinoV2Backbone(config.backbone)
        self.prompt_cross_attn = PromptCrossAttention(config.prompt_attention)
        self.decoder = DetailCaptureDecoder(config.decoder)
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)

    # -- pipeline steps ------------------------------------------------------------------------
    def preprocess(self, image: torch.Tensor, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalise, then zero-pad image and prompt bottom/right by the official rule."""
        height, width = image.shape[-2:]
        new_h, new_w = padded_size(height, width, self.config.patch_size)
        pads = (0, new_w - width, 0, new_h - height)
        image = (image - self.pixel_mean) / self.pixel_std
        return F.pad(image, pads), F.pad(prompt, pads)

    def candidate_token(
        self, patch_tokens: torch.Tensor, class_token: torch.Tensor, prompt: torch.Tensor, state: torch.Tensor
    ) -> torch.Tensor:
        """``state * prompt_feature + (1 - state) * class_token``.

        The prompt feature is the mean of the patch tokens under the prompt, after resizing the
        (padded) prompt to the token grid with *nearest* interpolation. The padded prompt is exactly
        ``14h x 14w``, so PyTorch's nearest rule ``src = floor(dst * 14)`` samples the top-left pixel
        of each patch: a strided slice. The slice is used because it is exact in every runtime,
        whereas an ONNX nearest ``Resize`` divides by ``1/14`` in float32 and can pick the pixel
        before it (thin prompts then change).
        """
        patch = self.config.patch_size
        grid_prompt = prompt[:, :, ::patch, ::patch].flatten(1)  # [B, h*w]
        masked_sum = torch.bmm(grid_prompt.unsqueeze(1), patch_tokens).squeeze(1)  # [B, C]
        prompt_feature = masked_sum / (grid_prompt.sum(dim=1, keepdim=True) + PROMPT_MEAN_EPS)
        return state * prompt_feature + (1 - state) * class_token

    @staticmethod
    def similarity_map(candidate: torch.Tensor, patch_tokens: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of the candidate to every patch token, min-max normalised per image: ``[B,h*w]``."""
        similarity = torch.cosine_similarity(candidate.unsqueeze(1), patch_tokens, dim=-1)
        low = similarity.min(dim=-1, keepdim=True).values
        high = similarity.max(dim=-1, keepdim=True).values
        return (similarity - low) / (high - low + SIMILARITY_RANGE_EPS)

    def forward_padded(
        self,
        image: torch.Tensor,
        prompt: torch.Tensor,
        state: torch.Tensor,
        pos_embed_resize: PosEmbedResize = "reference",
    ) -> torch.Tensor:
        """Normalised, padded inputs -> alpha at the padded size (shared by inference, export and training)."""
        batch = image.shape[0]
        h = image.shape[-2] // self.config.patch_size
        w = image.shape[-1] // self.config.patch_size
        patch_tokens, class_token = self.backbone(image, pos_embed_resize)
        candidate = self.candidate_token(patch_tokens, class_token, prompt, state)
        candidate = self.prompt_cross_attn(candidate, patch_tokens)
        similarity = self.similarity_map(candidate, patch_tokens).reshape(batch, 1, h, w)
        features = patch_tokens.transpose(1, 2).reshape(batch, -1, h, w)
        return self.decoder(features, similarity, image)

    def forward(self, image: torch.Tensor, prompt: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            check_inputs(image, prompt, state)
        if state is None:
            state = state_from_prompt(prompt)
        height, width = image.shape[-2:]
        padded_image, padded_prompt = self.preprocess(image, prompt)
        alpha = self.forward_padded(padded_image, padded_prompt, state)
        return alpha[:, :, :height, :width]


def check_inputs(image: torch.Tensor, prompt: torch.Tensor, state: torch.Tensor | None) -> None:
    """Raise :class:`SmatError` with a one-line reason when the inputs break the model's contract."""
    if image.dim() != 4 or image.shape[1] != 3:
        raise SmatError(f"image must be [B,3,H,W], got {list(image.shape)}")
    batch, _, height, width = image.shape
    if height < 14 or width < 14:
        raise SmatError(f"image must be at least 14x14 pixels, got {height}x{width}")
    if not image.is_floating_point():
        raise SmatError(f"image must be a float tensor in [0, 1], got {image.dtype}")
    if tuple(prompt.shape) != (batch, 1, height, width):
        raise SmatError(f"prompt must be [B,1,H,W] = {[batch, 1, height, width]}, got {list(prompt.shape)}")
    if state is None:
        return
    if tuple(state.shape) != (batch, 1):
        raise SmatError(f"state must be [B,1] = {[batch, 1]}, got {list(state.shape)}")
    if not bool(((state == 0) | (state == 1)).all()):
        raise SmatError("state must be 0 (automatic) or 1 (interactive)")
    empty = (state[:, 0] == 1) & ~state_from_prompt(prompt)[:, 0].bool()
    if bool(empty.any()):
        samples = ", ".join(str(i) for i in torch.nonzero(empty).flatten().tolist())
        raise SmatError(
            f"interactive state with an empty prompt (sample {samples}): the prompt feature is undefined; "
            "mark at least one pixel or use state 0"
        )
