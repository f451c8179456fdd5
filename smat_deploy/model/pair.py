"""The exported pair's embedding, from the reference's: what ``smat_encoder.onnx`` writes and ``smat_decoder.onnx``
reads (:data:`smat_deploy.contract.EMBEDDING`) is :meth:`SMat.embed`'s, with ``detail3`` replaced by ``fusion0``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from smat_deploy.model.smat import Embedding, SMat


def first_fusion_fixed_part(model: SMat, features: torch.Tensor, detail3: torch.Tensor) -> torch.Tensor:
    """``fusion0``: the first fusion convolution over its prompt-independent input channels, before BatchNorm.

    The first fusion block convolves ``[D3, up(features), up(similarity)]`` (192 + 384 + 1 channels).
    A convolution is a sum over input channels, so the 576 channels that do not depend on the prompt
    can be convolved once per photo; a click then convolves only the similarity channel and adds.
    That moves about a quarter of a click's work into the encoder. The sum is the same in exact
    arithmetic; in float32 it is added in another order (differences of about 1e-7 in alpha).
    """
    conv = model.decoder.fusion_blks[0].conv.conv
    upsampled = F.interpolate(features, scale_factor=2.0, mode="bilinear", align_corners=False)
    fixed = torch.cat([detail3, upsampled], dim=1)
    return F.conv2d(fixed, conv.weight[:, : fixed.shape[1]], stride=conv.stride, padding=conv.padding)


def pair_embedding(model: SMat, embedding: Embedding) -> tuple[torch.Tensor, ...]:
    """The reference embedding as the exported pair carries it (:data:`~smat_deploy.contract.EMBEDDING_NAMES`)."""
    fusion0 = first_fusion_fixed_part(model, embedding.features, embedding.detail3)
    return embedding.features, embedding.class_token, embedding.image16, embedding.detail2, fusion0
