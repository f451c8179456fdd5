"""Analytic FLOP counts against the published figures and against torch's own counter."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from smat_deploy.evaluation.flops import attention_half_side, padded_shape, smat_flops
from smat_deploy.model import padded_size


def test_518_costs_about_165_gflop_backbone_93_decoder_71():
    count = smat_flops(518, 518)
    assert count.total / 1e9 == pytest.approx(165, abs=1)
    assert count.backbone / 1e9 == pytest.approx(93, abs=1)
    assert count.decoder / 1e9 == pytest.approx(71, abs=1)
    assert count.tokens == 37 * 37
    assert 0.15 < count.attention_share < 0.25
    assert smat_flops(518, 518, batch=4).total == pytest.approx(4 * count.total)


@pytest.mark.parametrize(("height", "width", "batch"), [(56, 70, 1), (45, 31, 2), (28, 45, 1)])
def test_equals_torch_flop_counter_on_the_reference_model(varying_model, height, width, batch):
    """Independent count: torch dispatches every matmul, attention and convolution through the counter.

    The counted forward runs under the MATH attention backend. On CPU, recent torch sends
    ``scaled_dot_product_attention`` to a fused kernel (``_scaled_dot_product_flash_attention_for_cpu``)
    that ``FlopCounterMode`` has no formula for, so the backbone's ``Q K^T`` and ``attn V`` products would
    silently count as zero, and which kernel torch picks differs between versions and machines. MATH
    spells attention out as the matrix products the counter sees, on every machine. The same forward
    without the override must give the same alpha, so forcing MATH changes how attention is computed,
    not what is computed (and counted).
    """
    model = varying_model  # weights do not change the count; varying ones make the alpha comparison mean something
    image = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(0))
    prompt = torch.zeros(batch, 1, height, width)
    prompt[..., 5:12, 5:12] = 1
    with torch.inference_mode():
        default_alpha = model(image, prompt)
        with sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
            counted_alpha = model(image, prompt)
    assert smat_flops(height, width, batch).total == counter.get_total_flops()
    assert default_alpha.std() > 0.01  # not a constant: the comparison below sees the attention
    torch.testing.assert_close(counted_alpha, default_alpha, rtol=0, atol=1e-5)


def test_padding_follows_the_model_including_the_quirk():
    for height, width in [(518, 518), (28, 45), (100, 130), (14, 14), (1040, 1560)]:
        assert padded_shape(height, width) == tuple(int(v) for v in padded_size(height, width))
    assert smat_flops(517, 517).total == smat_flops(518, 518).total


def test_attention_grows_quadratically_and_passes_half_around_1000_px():
    small, large = smat_flops(518, 518), smat_flops(1036, 1036)  # 4x the tokens
    assert large.attention / small.attention == pytest.approx((4 * 1369 + 1) ** 2 / 1370**2)
    assert large.decoder / small.decoder == pytest.approx(4.0)
    side = attention_half_side()
    assert 900 <= side <= 1100 and side % 14 == 0
    assert smat_flops(side, side).attention_share >= 0.5 > smat_flops(side - 14, side - 14).attention_share
