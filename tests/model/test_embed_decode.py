"""SMat.embed / SMat.decode: the whole forward split at the prompt, with the same numbers."""

from __future__ import annotations

import pytest
import torch

from smat_deploy.errors import SmatError
from smat_deploy.model import Embedding, padded_size


def _batch(height: int, width: int, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, height, width, generator=generator)
    prompt = torch.zeros(batch, 1, height, width)
    prompt[:, :, height // 4 : height // 2, width // 3 : (2 * width) // 3] = 1
    return image, prompt


@pytest.mark.parametrize("size", [(518, 518), (100, 130), (98, 140), (14, 14), (301, 117)])
def test_decode_of_embed_is_the_whole_forward_bit_for_bit(finetuned_model, size):
    image, prompt = _batch(*size)
    with torch.inference_mode():
        whole = finetuned_model(image, prompt)
        split = finetuned_model.decode(finetuned_model.embed(image), prompt)
    assert whole.std() > 0.01  # the fine-tuned weights give a matte with structure
    assert torch.equal(whole, split)


def test_one_embedding_answers_several_prompts_and_modes_exactly(finetuned_model):
    image, _ = _batch(150, 190, batch=3, seed=1)
    prompts = []
    for top, left in ((10, 10), (60, 90), (100, 20)):
        prompt = torch.zeros(3, 1, 150, 190)
        prompt[:, :, top : top + 30, left : left + 40] = 1
        prompts.append(prompt)
    mixed_state = torch.tensor([[1.0], [0.0], [1.0]])
    with torch.inference_mode():
        embedding = finetuned_model.embed(image)
        before = [t.clone() for t in embedding.tensors()]
        for prompt in prompts:
            assert torch.equal(finetuned_model.decode(embedding, prompt), finetuned_model(image, prompt))
            assert torch.equal(
                finetuned_model.decode(embedding, prompt, mixed_state), finetuned_model(image, prompt, mixed_state)
            )
        answers = [finetuned_model.decode(embedding, p) for p in prompts]
    assert not torch.equal(answers[0], answers[1])  # the prompt matters
    assert all(torch.equal(a, b) for a, b in zip(before, embedding.tensors(), strict=True))  # nothing mutated


@pytest.mark.parametrize("size", [(518, 518), (768, 1024), (100, 130), (28, 45)])
def test_embedding_shapes_and_memory_follow_the_padded_grid(varying_model, size):
    height, width = size
    image, _ = _batch(height, width)
    with torch.inference_mode():
        embedding = varying_model.embed(image)
    # The padding rule, computed independently: when either side is not a multiple of 14, both grow.
    aligned = height % 14 == 0 and width % 14 == 0
    grid_h, grid_w = (height // 14, width // 14) if aligned else (height // 14 + 1, width // 14 + 1)
    assert tuple(int(s) for s in padded_size(height, width)) == (14 * grid_h, 14 * grid_w)
    assert embedding.grid == (grid_h, grid_w) and (embedding.height, embedding.width) == (height, width)
    assert tuple(embedding.features.shape) == (1, 384, grid_h, grid_w)
    assert tuple(embedding.class_token.shape) == (1, 384)
    assert tuple(embedding.image16.shape) == (1, 3, 16 * grid_h, 16 * grid_w)
    assert tuple(embedding.detail2.shape) == (1, 96, 4 * grid_h, 4 * grid_w)
    assert tuple(embedding.detail3.shape) == (1, 192, 2 * grid_h, 2 * grid_w)
    cells = grid_h * grid_w
    assert embedding.nbytes == 4 * (384 * cells + 384 + 3 * 256 * cells + 96 * 16 * cells + 192 * 4 * cells)


def test_embedding_memory_at_the_benchmark_sizes(varying_model):
    # 518x518 is the native 37x37 grid: 1369 cells of 3456 floats each, plus the class token.
    image, _ = _batch(518, 518)
    with torch.inference_mode():
        assert varying_model.embed(image).nbytes == 4 * (3456 * 37 * 37 + 384)


def test_decode_refuses_prompts_that_do_not_fit_the_embedding(varying_model):
    image, prompt = _batch(100, 130)
    with torch.inference_mode():
        embedding = varying_model.embed(image)
        with pytest.raises(SmatError, match=r"prompt must be \[B,1,H,W\] = \[1, 1, 100, 130\]"):
            varying_model.decode(embedding, prompt[:, :, :99])
        with pytest.raises(SmatError, match="prompt must be"):
            varying_model.decode(embedding, torch.cat([prompt, prompt]))
        with pytest.raises(SmatError, match="interactive state with an empty prompt"):
            varying_model.decode(embedding, torch.zeros_like(prompt), torch.ones(1, 1))
        with pytest.raises(SmatError, match="image must be"):
            varying_model.embed(image[:, :2])


def test_embedding_is_a_plain_record_of_tensors():
    tensors = {
        "features": torch.zeros(2, 384, 3, 4),
        "class_token": torch.zeros(2, 384),
        "image16": torch.zeros(2, 3, 48, 64),
        "detail2": torch.zeros(2, 96, 12, 16),
        "detail3": torch.zeros(2, 192, 6, 8),
    }
    embedding = Embedding(**tensors, height=40, width=50)
    assert embedding.batch == 2 and embedding.grid == (3, 4) and embedding.device == torch.device("cpu")
    assert [name for name in Embedding.TENSORS] == list(tensors)
