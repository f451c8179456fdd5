"""Batches of a run: a function of (seed, step) only, mixed prompt kinds, and broken files skipped."""

import numpy as np
import pytest
import torch
from PIL import Image

from smat_deploy.data import FolderDataset, SyntheticComposites
from smat_deploy.prompts import PromptKind
from smat_deploy.train.batches import BatchSampler

KINDS = list(PromptKind)


def test_a_step_draws_the_same_batch_whatever_came_before():
    data = SyntheticComposites(5, 70)
    fresh = BatchSampler(data, 3, 70, KINDS, seed=4).batch(7)
    used = BatchSampler(data, 3, 70, KINDS, seed=4)
    for step in range(3):
        used.batch(step)
    again = used.batch(7)
    assert fresh.names == again.names and fresh.kinds == again.kinds
    assert torch.equal(fresh.image, again.image) and torch.equal(fresh.prompt, again.prompt)
    other = BatchSampler(data, 3, 70, KINDS, seed=5).batch(7)
    assert not torch.equal(fresh.image, other.image)


def test_batches_are_tensors_with_prompts_matching_their_kinds():
    sampler = BatchSampler(SyntheticComposites(5, 70), 4, 70, KINDS, seed=0)
    seen = set()
    for step in range(6):
        batch = sampler.batch(step)
        assert batch.image.shape == (4, 3, 70, 70) and batch.alpha.shape == batch.prompt.shape == (4, 1, 70, 70)
        assert batch.image.dtype == batch.prompt.dtype == torch.float32
        for kind, prompt in zip(batch.kinds, batch.prompt, strict=True):
            assert bool(prompt.any()) == (kind is not PromptKind.NONE)  # synthetic crops always show the object
            assert set(prompt.unique().tolist()) <= {0.0, 1.0}
            seen.add(kind)
    assert seen == set(KINDS)


def _write_pair(root, stem, size):
    rng = np.random.default_rng(len(stem))
    for folder in ("image", "alpha"):
        (root / folder).mkdir(exist_ok=True)
    Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(root / "image" / f"{stem}.png")
    Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8)).save(root / "alpha" / f"{stem}.png")


def test_a_file_broken_past_its_header_is_skipped_while_training(tmp_path):
    _write_pair(tmp_path, "good", 80)
    _write_pair(tmp_path, "truncated", 80)
    path = tmp_path / "image" / "truncated.png"
    path.write_bytes(path.read_bytes()[:200])  # header intact, pixel data cut off
    dataset = FolderDataset(tmp_path)
    assert len(dataset) == 2  # the header check cannot tell
    sampler = BatchSampler(dataset, batch_size=4, size=70, kinds=[PromptKind.NONE], seed=0)
    with pytest.warns(UserWarning, match="cannot be read"):
        batch = sampler.batch(0)
    assert batch.names == ("good",) * 4
    assert sampler.skipped.counts() == {"unreadable while training": 1}
