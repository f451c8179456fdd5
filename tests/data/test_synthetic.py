"""Synthetic training composites: deterministic, exact, and disjoint from the held-out ones."""

import numpy as np
import pytest

from smat_deploy.data import HELDOUT_FIRST_SEED, SyntheticComposites, make_composite
from smat_deploy.errors import SmatError


def test_composites_are_generated_from_their_seed_and_cached():
    dataset = SyntheticComposites(3, 70, first_seed=5)
    sample = dataset.load(2)
    reference = make_composite((70, 70), seed=7)
    assert np.array_equal(sample.alpha, reference.alpha) and np.array_equal(sample.image, reference.image)
    assert dataset.load(2) is sample
    assert len(dataset) == 3 and sample.name == "synthetic-7"


def test_composite_is_exact_alpha_blend_with_soft_edges():
    c = make_composite((112, 112), seed=1)
    expected = c.alpha[..., None] * c.foreground + (1 - c.alpha[..., None]) * c.background
    assert np.allclose(c.image, expected, atol=1e-6)
    soft = (c.alpha > 0.05) & (c.alpha < 0.95)
    assert 0.01 < soft.mean() < 0.5 and (c.alpha == 0).any() and (c.alpha >= 0.99).any()


def test_training_seeds_never_reach_the_held_out_ones():
    SyntheticComposites(HELDOUT_FIRST_SEED, 70)  # seeds 0 .. HELDOUT_FIRST_SEED - 1: fine
    with pytest.raises(SmatError, match="below 1000000"):
        SyntheticComposites(HELDOUT_FIRST_SEED + 1, 70)
