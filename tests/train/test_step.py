"""One training step: Algorithm 1's data flow, the optimizer groups, freezing, and that steps learn."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from smat_deploy.data import make_composite
from smat_deploy.data.prompt_sampling import sample_prompt
from smat_deploy.model import load_model
from smat_deploy.prompts import PromptKind
from smat_deploy.train import build_optimizer, freeze_backbone, predict_for_training, training_step
from smat_deploy.train.batches import TrainingBatch

SIZE = 70


def _batch(kinds=(PromptKind.NONE, PromptKind.BOX)) -> TrainingBatch:
    """Composites 0, 1, ... with one prompt of each given kind, in order."""
    rng = np.random.default_rng(0)
    samples = [make_composite((SIZE, SIZE), seed=i) for i in range(len(kinds))]
    prompts = [sample_prompt(s.alpha, kind, rng) for s, kind in zip(samples, kinds, strict=True)]
    return TrainingBatch(
        image=torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2),
        alpha=torch.from_numpy(np.stack([s.alpha for s in samples]))[:, None],
        prompt=torch.from_numpy(np.stack(prompts))[:, None],
        kinds=tuple(kinds),
        names=tuple(str(i) for i in range(len(kinds))),
    )


@pytest.fixture(scope="module")
def seeded():
    return load_model(seed=0)


@pytest.fixture
def model(seeded):
    """A fresh copy of the seeded model (building one costs ~2 s, copying it a fraction of that)."""
    return copy.deepcopy(seeded)


def test_training_forward_is_the_inference_forward(model):
    model.eval()
    image, prompt = torch.rand(2, 3, 75, 80), torch.zeros(2, 1, 75, 80)
    prompt[1, :, 10:30, 20:40] = 1
    with torch.no_grad():
        assert torch.equal(predict_for_training(model, image, prompt), model(image, prompt))


def test_step_derives_state_and_candidate_from_the_prompt(model, monkeypatch):
    # Algorithm 1: prompt -> state -> candidate (prompt feature or class token) -> cross-attention -> ...
    seen = {}
    original = model.candidate_token

    def spy(patch_tokens, class_token, prompt, state):
        seen.update(tokens=patch_tokens.detach(), cls=class_token.detach(), prompt=prompt, state=state)
        out = original(patch_tokens, class_token, prompt, state)
        seen["candidate"] = out.detach()
        return out

    monkeypatch.setattr(model, "candidate_token", spy)
    batch = _batch((PromptKind.NONE, PromptKind.BOX))
    training_step(model, build_optimizer(model, 1e-4), batch)
    assert seen["state"].tolist() == [[0.0], [1.0]]
    assert torch.equal(seen["candidate"][0], seen["cls"][0])
    # Sample 1: mean patch token over the patches whose top-left pixel the box covers.
    grid = batch.prompt[1, 0, ::14, ::14].flatten().bool()
    assert grid.any()
    assert torch.allclose(seen["candidate"][1], seen["tokens"][1][grid].mean(0), atol=1e-5)


def test_optimizer_groups_scale_the_backbone_and_spare_norms_from_decay(model):
    optimizer = build_optimizer(model, lr=1e-3, backbone_lr_scale=0.1, weight_decay=0.05)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"backbone", "backbone-no-decay", "heads", "heads-no-decay"}
    assert groups["backbone"]["lr"] == pytest.approx(1e-4) and groups["heads"]["lr"] == pytest.approx(1e-3)
    assert groups["heads"]["weight_decay"] == 0.05 and groups["backbone-no-decay"]["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert {
        "backbone.pos_embed",
        "backbone.cls_token",
        "backbone.norm.weight",
        "decoder.matting_head.matting_convs.0.bias",
    } <= no_decay
    assert "decoder.matting_head.matting_convs.0.weight" not in no_decay
    listed = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(listed) == sorted(id(p) for p in model.parameters())  # every parameter exactly once


def test_frozen_backbone_does_not_move_while_the_heads_do(model):
    freeze_backbone(model)
    optimizer = build_optimizer(model, 1e-3)
    assert {g["name"] for g in optimizer.param_groups} == {"heads", "heads-no-decay"}
    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head = model.decoder.matting_head.matting_convs[3].weight.clone()
    training_step(model, optimizer, _batch())
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in backbone.items())
    assert not torch.equal(head, model.decoder.matting_head.matting_convs[3].weight)


def test_steps_use_batch_statistics_and_update_the_running_ones(model):
    bn = model.decoder.convstream.convs[0].bn
    before_mean, before_count = bn.running_mean.clone(), bn.num_batches_tracked.item()
    training_step(model, build_optimizer(model, 1e-4), _batch())
    assert (bn.running_mean - before_mean).abs().max() > 0
    assert bn.num_batches_tracked.item() == before_count + 1


def test_repeated_steps_fit_a_fixed_batch(model):
    torch.manual_seed(0)
    freeze_backbone(model)  # halves the cost; the heads alone can fit one batch
    optimizer = build_optimizer(model, lr=2e-3)
    batch = _batch((PromptKind.NONE, PromptKind.POINT))
    losses = [training_step(model, optimizer, batch).total.item() for _ in range(6)]
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses


def test_loss_is_computed_at_the_input_size_not_the_padded_one(model):
    model.train()
    image, prompt = torch.rand(1, 3, 71, 72), torch.zeros(1, 1, 71, 72)  # pads to 84x84
    alpha = predict_for_training(model, image, prompt)
    assert alpha.shape == (1, 1, 71, 72)
    assert F.l1_loss(alpha, torch.zeros_like(alpha)).requires_grad
