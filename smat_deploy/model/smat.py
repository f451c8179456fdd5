"""SMat: one network for automatic and interactive matting (CVPR 2024), inference numerics.

The forward pass reproduces the authors' inference code step by step; each step is a small method
so the ONNX wrapper and the training code can reuse them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from smat_deploy.errors import SmatError
from smat_deploy.model.backbone import BackboneConfig, DinoV2Backbone
from smat_deploy.model.detail_decoder import DecoderConfig, DetailCaptureDecoder
from smat_deploy.model.prompt_attention import PromptAttentionConfig, PromptCrossAttention

#: How the steps that runtimes compute differently are written: ``"reference"``, the official PyTorch calls;
#: ``"graph"``, the export's forms that every runtime evaluates with PyTorch's arithmetic (the position-table
#: resize as matrix products, :mod:`~smat_deploy.model.pos_embed`; the image and alpha resizes as gathers,
#: :mod:`~smat_deploy.model.resize`). Both compute the same numbers to float32 rounding.
Form = Literal["reference", "graph"]

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


@dataclass(frozen=True)
class Embedding:
    """Everything the prompt-dependent part of SMat needs from a photo: made once by :meth:`SMat.embed`.

    The backbone never sees the prompt, and neither does the ConvStream, so their outputs are kept;
    the prompt only picks the candidate token, which drives the cross-attention, the similarity map
    and the fusion stages, all of which :meth:`SMat.decode` runs per prompt. ``D1`` (the largest
    detail map, 48 channels at ``8h x 8w``) is not kept: one strided 3-channel convolution remakes
    it from ``image16`` for about 0.3 % of a click's work, which halves the embedding's memory.

    - ``features`` ``[B, C, h, w]``: the patch tokens after DINOv2's final LayerNorm, as a map;
    - ``class_token`` ``[B, C]``;
    - ``image16`` ``[B, 3, 16h, 16w]``: the normalised, padded image resized for the ConvStream (D0);
    - ``detail2`` ``[B, 96, 4h, 4w]`` and ``detail3`` ``[B, 192, 2h, 2w]``: ConvStream stages D2, D3;
    - ``height``, ``width``: the photo's size before padding (prompts must have it).

    Tensors stay on the device they were made on; nothing mutates them, so one embedding may serve
    several threads at once.
    """

    features: torch.Tensor
    class_token: torch.Tensor
    image16: torch.Tensor
    detail2: torch.Tensor
    detail3: torch.Tensor
    height: int
    width: int

    #: Tensor fields in the order the exported encoder writes them and the decoder reads them.
    TENSORS = ("features", "class_token", "image16", "detail2", "detail3")

    @property
    def batch(self) -> int:
        return int(self.features.shape[0])

    @property
    def grid(self) -> tuple[int, int]:
        """The token grid ``(h, w)`` of the padded photo."""
        return int(self.features.shape[-2]), int(self.features.shape[-1])

    @property
    def device(self) -> torch.device:
        return self.features.device

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, name) for name in self.TENSORS)


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
        self.decoder = DetailCaptureDecoder(config.decoder, config.patch_size)
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)

    # -- pipeline steps ------------------------------------------------------------------------
    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad ``x`` bottom/right to the official padded size (:func:`padded_size`)."""
        height, width = x.shape[-2:]
        new_h, new_w = padded_size(height, width, self.config.patch_size)
        return F.pad(x, (0, new_w - width, 0, new_h - height))

    def preprocess(self, image: torch.Tensor, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalise, then zero-pad image and prompt bottom/right by the official rule."""
        return self.pad((image - self.pixel_mean) / self.pixel_std), self.pad(prompt)

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

    def embed_padded(self, image: torch.Tensor, form: Form = "reference") -> tuple[torch.Tensor, ...]:
        """Normalised, padded image -> the prompt-independent tensors, in :attr:`Embedding.TENSORS` order."""
        tokens, class_token, details = self._image_features(image, form)
        return self._token_map(tokens, details[3]), class_token, details[0], details[2], details[3]

    def decode_padded(
        self,
        features: torch.Tensor,
        class_token: torch.Tensor,
        image16: torch.Tensor,
        detail2: torch.Tensor,
        detail3: torch.Tensor,
        prompt: torch.Tensor,
        state: torch.Tensor,
    ) -> torch.Tensor:
        """The prompt-dependent part: embedding tensors plus the padded prompt -> alpha at the padded size."""
        detail1 = self.decoder.convstream.convs[0](image16)  # the same op the embedding ran: the same numbers
        tokens = features.flatten(2).transpose(1, 2)
        return self._prompted(tokens, class_token, [image16, detail1, detail2, detail3], prompt, state, features)

    def forward_padded(
        self,
        image: torch.Tensor,
        prompt: torch.Tensor,
        state: torch.Tensor,
        form: Form = "reference",
    ) -> torch.Tensor:
        """Normalised, padded inputs -> alpha at the padded size (shared by inference, export and training)."""
        tokens, class_token, details = self._image_features(image, form)
        return self._prompted(tokens, class_token, details, prompt, state, form=form)

    def _image_features(self, image: torch.Tensor, form: Form) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        grid = (image.shape[-2] // self.config.patch_size, image.shape[-1] // self.config.patch_size)
        patch_tokens, class_token = self.backbone(image, "matmul" if form == "graph" else "reference")
        return patch_tokens, class_token, self.decoder.details(image, grid, graph=form == "graph")

    def _prompted(
        self,
        patch_tokens: torch.Tensor,
        class_token: torch.Tensor,
        details: list[torch.Tensor],
        prompt: torch.Tensor,
        state: torch.Tensor,
        features: torch.Tensor | None = None,
        form: Form = "reference",
    ) -> torch.Tensor:
        """Everything after the backbone and ConvStream; the token grid is the padded prompt's."""
        batch = patch_tokens.shape[0]
        h = prompt.shape[-2] // self.config.patch_size
        w = prompt.shape[-1] // self.config.patch_size
        candidate = self.candidate_token(patch_tokens, class_token, prompt, state)
        candidate = self.prompt_cross_attn(candidate, patch_tokens)
        similarity = self.similarity_map(candidate, patch_tokens).reshape(batch, 1, h, w)
        if features is None:
            features = patch_tokens.transpose(1, 2).reshape(batch, -1, h, w)
        return self.decoder.fuse(features, similarity, details, prompt.shape[-2:], graph=form == "graph")

    @staticmethod
    def _token_map(tokens: torch.Tensor, detail3: torch.Tensor) -> torch.Tensor:
        """``[B, h*w, C]`` -> ``[B, C, h, w]`` (the grid read off D3, which is ``2h x 2w``)."""
        h, w = detail3.shape[-2] // 2, detail3.shape[-1] // 2
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)

    def forward(self, image: torch.Tensor, prompt: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            check_inputs(image, prompt, state)
        if state is None:
            state = state_from_prompt(prompt)
        height, width = image.shape[-2:]
        padded_image, padded_prompt = self.preprocess(image, prompt)
        alpha = self.forward_padded(padded_image, padded_prompt, state)
        return alpha[:, :, :height, :width]

    # -- interactive use: embed a photo once, decode every prompt from the embedding ----------------
    def embed(self, image: torch.Tensor) -> Embedding:
        """``image`` float ``[B,3,H,W]`` in [0, 1] -> :class:`Embedding` (backbone and ConvStream, run once)."""
        check_image(image)
        height, width = image.shape[-2:]
        padded = self.pad((image - self.pixel_mean) / self.pixel_std)
        return Embedding(*self.embed_padded(padded), height=int(height), width=int(width))

    def decode(self, embedding: Embedding, prompt: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """One prompt (per sample) on an embedding -> alpha ``[B,1,H,W]``; ``decode(embed(x), p) == forward(x, p)``."""
        check_prompt(prompt, state, embedding.batch, embedding.height, embedding.width)
        if state is None:
            state = state_from_prompt(prompt)
        alpha = self.decode_padded(*embedding.tensors(), self.pad(prompt), state)
        return alpha[:, :, : embedding.height, : embedding.width]


def check_inputs(image: torch.Tensor, prompt: torch.Tensor, state: torch.Tensor | None) -> None:
    """Raise :class:`SmatError` with a one-line reason when the inputs break the model's contract."""
    check_image(image)
    batch, _, height, width = image.shape
    check_prompt(prompt, state, batch, height, width)


def check_image(image: torch.Tensor) -> None:
    if image.dim() != 4 or image.shape[1] != 3:
        raise SmatError(f"image must be [B,3,H,W], got {list(image.shape)}")
    height, width = image.shape[-2:]
    if height < 14 or width < 14:
        raise SmatError(f"image must be at least 14x14 pixels, got {height}x{width}")
    if not image.is_floating_point():
        raise SmatError(f"image must be a float tensor in [0, 1], got {image.dtype}")


def check_prompt(prompt: torch.Tensor, state: torch.Tensor | None, batch: int, height: int, width: int) -> None:
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
