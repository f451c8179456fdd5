"""The reference model against independent expectations: padding, components, batching, state."""

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from smat_deploy.errors import SmatError
from smat_deploy.model import SMat, padded_size, state_from_prompt
from smat_deploy.model.smat import PIXEL_MEAN, PIXEL_STD


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((518, 518), (518, 518)),  # both multiples: untouched
        ((28, 30), (42, 42)),  # H is a multiple but W is not: H still grows by a whole 14
        ((100, 140), (112, 154)),  # W is a multiple: W grows by 14 too
        ((15, 14), (28, 28)),
        ((13 * 14, 13 * 14 + 1), (14 * 14, 14 * 14)),
    ],
)
def test_padding_rule_includes_the_official_quirk(size, expected):
    assert padded_size(*size) == expected


def _capture_backbone_input(model: SMat):
    seen = {}
    handle = model.backbone.register_forward_pre_hook(lambda module, args: seen.setdefault("x", args[0].clone()))
    return seen, handle


def test_model_pads_zeros_after_normalisation_and_crops_back(varying_model):
    image = torch.rand(1, 3, 28, 31)
    seen, handle = _capture_backbone_input(varying_model)
    with torch.no_grad():
        alpha = varying_model(image, torch.zeros(1, 1, 28, 31))
    handle.remove()
    x = seen["x"]
    assert x.shape == (1, 3, 42, 42)
    mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    assert torch.allclose(x[:, :, :28, :31], (image - mean) / std, atol=1e-6)
    assert x[:, :, 28:].abs().max() == 0 and x[:, :, :, 31:].abs().max() == 0
    assert alpha.shape == (1, 1, 28, 31)
    assert alpha.min() >= 0 and alpha.max() <= 1


def test_backbone_equals_timm_dinov2_at_native_size():
    torch.manual_seed(1)
    model = SMat()
    reference = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=518, num_classes=0)
    state = {k: v for k, v in model.backbone.state_dict().items() if k != "mask_token"}
    reference.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 518, 518)
    with torch.no_grad():
        tokens = reference.forward_features(x)
        patches, cls = model.backbone.forward_features(x)
    assert torch.allclose(patches, tokens[:, 1:], atol=1e-5)
    assert torch.allclose(cls, tokens[:, 0], atol=1e-5)


def test_prompt_layer_equals_torch_post_norm_decoder_layer():
    torch.manual_seed(2)
    model = SMat().eval()
    ours = model.prompt_cross_attn
    reference = nn.TransformerDecoderLayer(384, 8, 2048, dropout=0.1, activation="relu", norm_first=False).eval()
    reference.load_state_dict(ours.layers[0].state_dict(), strict=True)
    candidate, patches = torch.randn(3, 384), torch.randn(3, 50, 384)
    with torch.no_grad():
        expected = reference(candidate.unsqueeze(0), patches.transpose(0, 1)).squeeze(0)
        got = ours(candidate, patches)
    assert torch.allclose(got, expected, atol=1e-5)


def test_decoder_layout_matches_the_official_checkpoint_shapes():
    shapes = {k: tuple(v.shape) for k, v in SMat().state_dict().items() if k.startswith("decoder.")}
    assert shapes["decoder.convstream.convs.0.conv.weight"] == (48, 3, 3, 3)
    assert shapes["decoder.convstream.convs.2.conv.weight"] == (192, 96, 3, 3)
    # Fusion inputs: upsampled features (385 = 384 + similarity, then 256, 128, 64) + D3, D2, D1, D0.
    assert shapes["decoder.fusion_blks.0.conv.conv.weight"] == (256, 385 + 192, 3, 3)
    assert shapes["decoder.fusion_blks.1.conv.conv.weight"] == (128, 256 + 96, 3, 3)
    assert shapes["decoder.fusion_blks.2.conv.conv.weight"] == (64, 128 + 48, 3, 3)
    assert shapes["decoder.fusion_blks.3.conv.conv.weight"] == (32, 64 + 3, 3, 3)
    assert shapes["decoder.matting_head.matting_convs.0.weight"] == (16, 32, 3, 3)
    assert shapes["decoder.matting_head.matting_convs.3.weight"] == (1, 16, 1, 1)
    assert len(SMat().state_dict()) == 244


def official_candidate(model: SMat, patches, cls, prompt, h, w):
    """The authors' loop: nearest-resized prompt, masked sum / (count + 1e-6), per-sample choice."""
    batch = patches.shape[0]
    small = F.interpolate(prompt, (h, w), mode="nearest")
    grid = patches.permute(0, 2, 1).reshape(batch, 384, h, w)
    mask_token = (small * grid).sum(dim=[-1, -2]) / (small.sum(dim=[-1, -2]) + 1e-6)
    judge = torch.any(prompt.bool().view(batch, -1), dim=-1, keepdim=True).int()
    merged = torch.zeros_like(cls)
    for i in range(batch):
        merged[i] = mask_token[i] if judge[i] == 1 else cls[i]
    return merged


def test_branch_free_candidate_equals_the_official_loop(varying_model):
    torch.manual_seed(3)
    h, w = 4, 6
    patches, cls = torch.randn(3, h * w, 384), torch.randn(3, 384)
    prompt = torch.zeros(3, 1, 14 * h, 14 * w)
    prompt[1, :, 14:40, 28:60] = 1
    prompt[2, :, 0:3, 0:3] = 1
    state = state_from_prompt(prompt)
    got = varying_model.candidate_token(patches, cls, prompt, state)
    assert torch.allclose(got, official_candidate(varying_model, patches, cls, prompt, h, w), atol=1e-5)
    assert torch.equal(state.flatten(), torch.tensor([0.0, 1.0, 1.0]))


def test_similarity_is_cosine_then_min_max_per_image():
    candidate, patches = torch.randn(2, 384), torch.randn(2, 30, 384)
    sim = SMat.similarity_map(candidate, patches)
    cos = F.normalize(patches, dim=-1) @ F.normalize(candidate, dim=-1).unsqueeze(-1)
    cos = cos.squeeze(-1)
    expected = (cos - cos.min(1, keepdim=True).values) / (
        cos.max(1, keepdim=True).values - cos.min(1, keepdim=True).values + 1e-6
    )
    assert torch.allclose(sim, expected, atol=1e-5)
    assert torch.allclose(sim.min(1).values, torch.zeros(2)) and torch.allclose(
        sim.max(1).values, torch.ones(2), atol=1e-5
    )


def _batch(size=(60, 75)):
    torch.manual_seed(4)
    image = torch.rand(3, 3, *size)
    prompt = torch.zeros(3, 1, *size)
    prompt[0, :, 10:40, 20:50] = 1
    prompt[2, :, 5:25, 5:60] = 1
    return image, prompt


def test_mixed_state_batch_equals_per_sample_runs(varying_model):
    image, prompt = _batch()
    with torch.no_grad():
        batched = varying_model(image, prompt)
        single = torch.cat([varying_model(image[i : i + 1], prompt[i : i + 1]) for i in range(3)])
    assert batched.std() > 0.01, "weights must give a varying alpha for this comparison to mean anything"
    assert torch.allclose(batched, single, atol=1e-5)
    # The prompt must matter: the interactive sample differs from its automatic run.
    with torch.no_grad():
        automatic = varying_model(image[:1], torch.zeros_like(prompt[:1]))
    assert (automatic - batched[:1]).abs().max() > 1e-3


def test_explicit_state_matches_derived_and_state_zero_ignores_the_prompt(varying_model):
    image, prompt = _batch()
    with torch.no_grad():
        derived = varying_model(image, prompt)
        explicit = varying_model(image, prompt, state_from_prompt(prompt))
        forced_auto = varying_model(image, prompt, torch.zeros(3, 1))
        automatic = varying_model(image, torch.zeros_like(prompt))
    assert torch.equal(derived, explicit)
    assert torch.allclose(forced_auto, automatic, atol=1e-6)


@pytest.mark.parametrize(
    ("image_shape", "prompt_shape", "state", "message"),
    [
        ((1, 3, 40, 40), (1, 1, 40, 40), torch.ones(1, 1), "empty prompt"),
        ((1, 3, 40, 40), (1, 1, 40, 41), None, "prompt must be"),
        ((1, 3, 13, 40), (1, 1, 13, 40), None, "at least 14x14"),
        ((1, 4, 40, 40), (1, 1, 40, 40), None, "image must be"),
        ((1, 3, 40, 40), (1, 1, 40, 40), torch.full((1, 1), 0.5), r"0 \(automatic\) or 1"),
        ((2, 3, 40, 40), (2, 1, 40, 40), torch.ones(1, 1), "state must be"),
    ],
)
def test_bad_inputs_are_refused(image_shape, prompt_shape, state, message):
    model = SMat().eval()
    with pytest.raises(SmatError, match=message):
        model(torch.rand(image_shape), torch.zeros(prompt_shape), state)
