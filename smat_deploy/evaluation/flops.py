"""SMat's arithmetic cost for any image size, counted from the architecture.

Convention: every matrix product and convolution counts ``2 x multiply-adds`` (biases, norms,
softmax, activations, resizes and other element-wise work are left out, as in the usual
"GFLOP per image" figures and in :class:`torch.utils.flop_counter.FlopCounterMode`). The image is
first padded by the model's own rule (:func:`smat_deploy.model.padded_size`), so a 517x517 photo
costs what the 518x518 grid it is padded to costs.

Where the cost goes: the ViT-S backbone is linear in the number of tokens ``T`` except for its
attention products (``Q K^T`` and ``attn V``), which grow with ``T^2``; the detail decoder is a
stack of convolutions at up to 16x the token grid, linear in the pixel count. At 518x518 the whole
model costs about 165 GFLOP (backbone ~93, decoder ~71) and attention is about a fifth of it; the
quadratic part passes half of all FLOPs a little above 1000x1000 pixels (:func:`attention_half_side`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from smat_deploy.contract import PATCH_SIZE
from smat_deploy.model import SMatConfig


def padded_shape(height: int, width: int, patch: int = PATCH_SIZE) -> tuple[int, int]:
    """The official padding rule (quirk included) on plain integers."""
    if height % patch == 0 and width % patch == 0:
        return height, width
    return height + patch - height % patch, width + patch - width % patch


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one forward pass (all figures for the whole batch)."""

    height: int
    width: int
    batch: int
    tokens: int  # patch tokens per image (the class token not included)
    patch_embed: float
    backbone_linear: float  # qkv, proj and MLP of every block: linear in tokens
    attention: float  # Q K^T and attn V of every block: quadratic in tokens
    prompt: float  # prompt feature, cross-attention layer, similarity
    decoder: float  # ConvStream, fusion blocks, matting head

    @property
    def backbone(self) -> float:
        return self.patch_embed + self.backbone_linear + self.attention

    @property
    def total(self) -> float:
        return self.backbone + self.prompt + self.decoder

    @property
    def attention_share(self) -> float:
        return self.attention / self.total

    def as_dict(self) -> dict:
        return {**asdict(self), "backbone": self.backbone, "total": self.total, "attention_share": self.attention_share}


def _conv(out_h: int, out_w: int, in_chans: int, out_chans: int, kernel: int) -> int:
    return out_h * out_w * out_chans * in_chans * kernel * kernel


def smat_flops(height: int, width: int, batch: int = 1, config: SMatConfig | None = None) -> FlopCount:
    """FLOPs (``2 x`` multiply-adds of matmuls and convolutions) of SMat on ``batch`` images of ``height x width``."""
    config = config or SMatConfig()
    vit, cross, dec = config.backbone, config.prompt_attention, config.decoder
    patch, dim = vit.patch_size, vit.embed_dim
    padded_h, padded_w = padded_shape(height, width, patch)
    h, w = padded_h // patch, padded_w // patch
    tokens = h * w
    seq = tokens + 1  # with the class token
    hidden = int(dim * vit.mlp_ratio)

    patch_embed = tokens * dim * 3 * patch * patch
    # Per block: qkv (3 D^2), output projection (D^2) and MLP (2 D hidden) per token; Q K^T and attn V (T^2 D each).
    backbone_linear = vit.depth * seq * (4 * dim * dim + 2 * dim * hidden)
    attention = vit.depth * 2 * seq * seq * dim

    d = cross.d_model
    prompt = (
        tokens * dim  # masked sum of the patch tokens under the prompt
        + 4 * d * d
        + 2 * d  # self-attention on the single candidate token (qkv, out, two 1x1 products)
        + 2 * d * d
        + 2 * tokens * d * d
        + 2 * tokens * d  # cross-attention: q and out, k/v over the tokens, products
        + 2 * d * cross.dim_feedforward  # feed-forward
    )

    # Decoder: the image is resized to 16h x 16w; stride-2 stages halve it; fusion doubles the features back up.
    side_h, side_w = 16 * h, 16 * w
    stream_chans = (dec.image_chans, *dec.convstream_out)
    decoder = 0
    for stage in range(len(dec.convstream_out)):
        scale = 2 ** (stage + 1)
        decoder += _conv(side_h // scale, side_w // scale, stream_chans[stage], stream_chans[stage + 1], 3)
    in_chans = dec.feature_chans + 1  # patch features plus the similarity map ("concat" variant)
    for index, out_chans in enumerate(dec.fusion_out):
        scale = 2 ** (len(dec.fusion_out) - 1 - index)
        detail_chans = stream_chans[len(stream_chans) - 1 - index]
        decoder += _conv(side_h // scale, side_w // scale, in_chans + detail_chans, out_chans, 3)
        in_chans = out_chans
    decoder += _conv(side_h, side_w, in_chans, dec.head_mid_chans, 3) + _conv(side_h, side_w, dec.head_mid_chans, 1, 1)

    return FlopCount(
        height=height,
        width=width,
        batch=batch,
        tokens=tokens,
        patch_embed=2.0 * batch * patch_embed,
        backbone_linear=2.0 * batch * backbone_linear,
        attention=2.0 * batch * attention,
        prompt=2.0 * batch * prompt,
        decoder=2.0 * batch * decoder,
    )


def attention_half_side(config: SMatConfig | None = None) -> int:
    """The smallest square side (a multiple of 14) at which attention is at least half of all FLOPs."""
    side = PATCH_SIZE
    while smat_flops(side, side, config=config).attention_share < 0.5:
        side += PATCH_SIZE
    return side


@dataclass(frozen=True)
class PairFlops:
    """FLOPs of the exported interactive pair (``smat_encoder.onnx`` / ``smat_decoder.onnx``) beside the whole
    model's, same convention.

    The encoder is the backbone, the whole ConvStream and the first fusion convolution over its 576
    prompt-independent input channels (``fusion0``); the decoder is the prompt part (candidate token,
    cross-attention, similarity), the first fusion convolution's similarity channel, the ConvStream's
    first stage again (``D1`` is remade from ``image16`` rather than kept), the other fusion blocks and
    the matting head. So ``encoder + decoder`` exceeds ``whole`` by that one small convolution.
    """

    height: int
    width: int
    batch: int
    encoder: float
    decoder: float
    whole: float

    @property
    def decoder_share(self) -> float:
        """The prompt-dependent part's share of a whole-model run."""
        return self.decoder / self.whole

    @property
    def ideal_speedup(self) -> float:
        """A click's speed-up over a whole-model run if time followed FLOPs: ``whole / decoder``."""
        return self.whole / self.decoder

    def as_dict(self) -> dict:
        return {**asdict(self), "decoder_share": self.decoder_share, "ideal_speedup": self.ideal_speedup}


def convstream_flops(height: int, width: int, batch: int = 1, config: SMatConfig | None = None) -> list[float]:
    """FLOPs of each ConvStream stage (``D1``, ``D2``, ``D3``) on ``batch`` images of ``height x width``."""
    config = config or SMatConfig()
    dec, patch = config.decoder, config.backbone.patch_size
    padded_h, padded_w = padded_shape(height, width, patch)
    side_h, side_w = 16 * (padded_h // patch), 16 * (padded_w // patch)
    chans = (dec.image_chans, *dec.convstream_out)
    return [
        2.0 * batch * _conv(side_h // 2 ** (stage + 1), side_w // 2 ** (stage + 1), chans[stage], chans[stage + 1], 3)
        for stage in range(len(dec.convstream_out))
    ]


def pair_flops(height: int, width: int, batch: int = 1, config: SMatConfig | None = None) -> PairFlops:
    """How a whole-model run's FLOPs split between embedding a photo and answering one prompt on it."""
    config = config or SMatConfig()
    whole = smat_flops(height, width, batch, config)
    stages = convstream_flops(height, width, batch, config)
    fusion_and_head = whole.decoder - sum(stages)
    dec, patch = config.decoder, config.backbone.patch_size
    padded_h, padded_w = padded_shape(height, width, patch)
    fixed_chans = dec.feature_chans + dec.convstream_out[-1]  # D3 and the upsampled features
    side_h, side_w = 2 * (padded_h // patch), 2 * (padded_w // patch)
    fusion0 = 2.0 * batch * _conv(side_h, side_w, fixed_chans, dec.fusion_out[0], 3)
    return PairFlops(
        height=height,
        width=width,
        batch=batch,
        encoder=whole.backbone + sum(stages) + fusion0,
        decoder=whole.prompt + stages[0] + fusion_and_head - fusion0,
        whole=whole.total,
    )
