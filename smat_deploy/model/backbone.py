"""DINOv2 ViT-S/14 backbone (``forward_features``), built from timm blocks.

Parameter names follow DINOv2 exactly (``cls_token``, ``pos_embed``, ``mask_token``,
``patch_embed.proj``, ``blocks.N.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,mlp.fc2,ls2.gamma}``,
``norm``), so official checkpoints load without renaming. timm's own ViT is not used as a whole
because its position-embedding resample is size-based and antialiased, which is not what SMat was
trained with (see :mod:`smat_deploy.model.pos_embed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
from timm.models.vision_transformer import Block
from torch import nn

from smat_deploy.model.pos_embed import resize_pos_embed_matmul, resize_pos_embed_reference

PosEmbedResize = Literal["reference", "matmul"]


@dataclass(frozen=True)
class BackboneConfig:
    """DINOv2 ViT-S/14 as used by SMat (the hub model ``dinov2_vits14``)."""

    patch_size: int = 14
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    pos_grid: int = 37  # 518 px / 14
    layer_norm_eps: float = 1e-6
    layer_scale_init: float = 1.0


class DinoV2Backbone(nn.Module):
    """Patch tokens and class token after DINOv2's final LayerNorm.

    ``pos_embed_resize`` (an argument of :meth:`forward_features`) selects how the position table is
    resized to the token grid: ``"reference"`` is the official ``F.interpolate`` call, ``"matmul"``
    the export-friendly equivalent.
    """

    def __init__(self, config: BackboneConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or BackboneConfig()
        dim = config.embed_dim
        norm_layer = partial(nn.LayerNorm, eps=config.layer_norm_eps)
        self.patch_embed = _PatchEmbed(config.patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.pos_grid**2, dim))
        # Present in every official checkpoint; used by DINOv2's masked pre-training only.
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.blocks = nn.ModuleList(
            Block(
                dim,
                config.num_heads,
                mlp_ratio=config.mlp_ratio,
                qkv_bias=True,
                init_values=config.layer_scale_init,
                norm_layer=norm_layer,
            )
            for _ in range(config.depth)
        )
        self.norm = norm_layer(dim)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def position_embeddings(self, h: int, w: int, pos_embed_resize: PosEmbedResize = "reference") -> torch.Tensor:
        """``[1, 1 + h*w, C]`` table: class position plus the patch grid resized to ``h x w``."""
        m = self.config.pos_grid
        dim = self.config.embed_dim
        table = self.pos_embed.float()
        grid = table[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2)
        if pos_embed_resize == "matmul":
            patch = resize_pos_embed_matmul(grid[0], h, w).unsqueeze(0)
        else:
            patch = resize_pos_embed_reference(grid, h, w)
        patch = patch.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat([table[:, :1], patch], dim=1).to(self.pos_embed.dtype)

    def forward_features(
        self, image: torch.Tensor, pos_embed_resize: PosEmbedResize = "reference"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised, padded image ``[B,3,14h,14w]`` -> (patch tokens ``[B,h*w,C]``, class token ``[B,C]``)."""
        patch = self.config.patch_size
        h = image.shape[-2] // patch
        w = image.shape[-1] // patch
        x = self.patch_embed(image)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.position_embeddings(h, w, pos_embed_resize)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x[:, 1:], x[:, 0]

    forward = forward_features


class _PatchEmbed(nn.Module):
    """Non-overlapping patch projection (DINOv2's ``PatchEmbed`` without a norm)."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)
