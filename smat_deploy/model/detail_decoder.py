"""ViTMatte's detail-capture decoder, "concat" variant with 3 image channels (the authors' ``Detail_Capture_DINO_V2``).

Checkpoint keys: ``decoder.convstream.convs.{0,1,2}.{conv,bn}``, ``decoder.fusion_blks.{0..3}.conv.{conv,bn}``,
``decoder.matting_head.matting_convs.{0,1,3}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from smat_deploy.model.resize import resize_bilinear

#: The ConvStream's input is the image at 16 pixels per token (four stride-2 stages below the token grid).
DETAIL_SCALE = 16


@dataclass(frozen=True)
class DecoderConfig:
    feature_chans: int = 384
    image_chans: int = 3
    convstream_out: tuple[int, ...] = (48, 96, 192)
    fusion_out: tuple[int, ...] = (256, 128, 64, 32)
    head_mid_chans: int = 16


class ConvBnRelu(nn.Module):
    """3x3 convolution (no bias), BatchNorm, ReLU."""

    def __init__(self, in_chans: int, out_chans: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class ConvStream(nn.Module):
    """Stride-2 conv stages that extract detail features D1..D3 from the image D0."""

    def __init__(self, in_chans: int, out_chans: tuple[int, ...]) -> None:
        super().__init__()
        chans = (in_chans, *out_chans)
        self.convs = nn.ModuleList(ConvBnRelu(chans[i], chans[i + 1], stride=2) for i in range(len(out_chans)))

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        details = [image]
        for conv in self.convs:
            details.append(conv(details[-1]))
        return details


class FusionBlock(nn.Module):
    """Upsample x2 (bilinear), concatenate with a detail map, 3x3 conv + BN + ReLU."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.conv = ConvBnRelu(in_chans, out_chans, stride=1)

    def forward(self, features: torch.Tensor, detail: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(features, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.conv(torch.cat([detail, up], dim=1))


class MattingHead(nn.Module):
    """3x3 conv (with bias) + BN + ReLU + 1x1 conv to one channel; logits."""

    def __init__(self, in_chans: int, mid_chans: int) -> None:
        super().__init__()
        self.matting_convs = nn.Sequential(
            nn.Conv2d(in_chans, mid_chans, 3, 1, 1),
            nn.BatchNorm2d(mid_chans),
            nn.ReLU(),
            nn.Conv2d(mid_chans, 1, 1, 1, 0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.matting_convs(x)


class DetailCaptureDecoder(nn.Module):
    """Patch features + similarity map + padded image -> alpha at the padded image size."""

    def __init__(self, config: DecoderConfig | None = None, patch_size: int = 14) -> None:
        super().__init__()
        self.config = config = config or DecoderConfig()
        #: The padded image's side over the ConvStream input's (``14h / 16h``): the image resize's fixed ratio.
        self._to_detail = (patch_size, DETAIL_SCALE)
        self.convstream = ConvStream(config.image_chans, config.convstream_out)
        # "concat" merge: the similarity map is one extra feature channel.
        fusion_in = (config.feature_chans + 1, *config.fusion_out[:-1])
        details = (*reversed(config.convstream_out), config.image_chans)
        self.fusion_blks = nn.ModuleList(
            FusionBlock(fusion_in[i] + details[i], config.fusion_out[i]) for i in range(len(config.fusion_out))
        )
        self.matting_head = MattingHead(config.fusion_out[-1], config.head_mid_chans)

    def details(self, image: torch.Tensor, grid: tuple[int, int], graph: bool = False) -> list[torch.Tensor]:
        """ConvStream on the padded image (``14h x 14w``) resized to ``16h x 16w``: ``[D0, D1, D2, D3]``
        (prompt-independent). ``graph``: the resize in its graph form (:mod:`smat_deploy.model.resize`)."""
        h, w = grid
        return self.convstream(resize_bilinear(image, (DETAIL_SCALE * h, DETAIL_SCALE * w), self._to_detail, graph))

    def fuse(
        self,
        features: torch.Tensor,
        similarity: torch.Tensor,
        details: list[torch.Tensor],
        padded_size,
        graph: bool = False,
    ) -> torch.Tensor:
        """Fusion blocks and matting head: features ``[B,C,h,w]``, similarity ``[B,1,h,w]``, ``[D0..D3]`` -> alpha."""
        x = torch.cat([features, similarity], dim=1)
        for block, detail in zip(self.fusion_blks, reversed(details), strict=True):
            x = block(x, detail)
        return self.alpha_from(x, padded_size, graph)

    def alpha_from(self, x: torch.Tensor, padded_size, graph: bool = False) -> torch.Tensor:
        """The matting head on the last fusion block's output (``16h x 16w``), resized to the padded size."""
        alpha = torch.sigmoid(self.matting_head(x))
        return resize_bilinear(alpha, tuple(padded_size), self._to_detail[::-1], graph)

    def forward(self, features: torch.Tensor, similarity: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Features ``[B,C,h,w]``, similarity ``[B,1,h,w]``, image ``[B,3,14h,14w]`` -> alpha ``[B,1,14h,14w]``."""
        details = self.details(image, features.shape[-2:])
        return self.fuse(features, similarity, details, image.shape[-2:])
