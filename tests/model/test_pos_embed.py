"""Position-embedding resize: the official call, its export-friendly twin, and why size-based is wrong."""

import pytest
import torch
import torch.nn.functional as F

from smat_deploy.model.backbone import DinoV2Backbone
from smat_deploy.model.pos_embed import resize_pos_embed_matmul, resize_pos_embed_reference

# Grids where a size-based resize gives different numbers from the +0.1 scale-factor one.
GRIDS = [(10, 20), (38, 38), (74, 50), (1, 3), (37, 38), (36, 37), (150, 100), (23, 61)]


def official(grid: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The call in DINOv2's interpolate_pos_encoding, written out with its arguments."""
    return F.interpolate(grid, scale_factor=((h + 0.1) / 37, (w + 0.1) / 37), mode="bicubic", antialias=False)


@pytest.fixture(scope="module")
def grid():
    return torch.randn(1, 384, 37, 37, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(("h", "w"), GRIDS)
def test_reference_matches_official_call_and_size_based_does_not(grid, h, w):
    ours = resize_pos_embed_reference(grid, h, w)
    expected = official(grid, h, w)
    assert ours.shape == (1, 384, h, w)
    assert torch.equal(ours, expected)
    size_based = F.interpolate(grid, size=(h, w), mode="bicubic", antialias=False)
    antialiased = F.interpolate(grid, scale_factor=((h + 0.1) / 37, (w + 0.1) / 37), mode="bicubic", antialias=True)
    assert (size_based - expected).abs().max() > 1e-2
    if h < 37 or w < 37:  # antialias only changes a downscale
        assert (antialiased - expected).abs().max() > 1e-2


@pytest.mark.parametrize(("h", "w"), GRIDS)
def test_matmul_form_matches_official_to_float32_rounding(grid, h, w):
    ours = resize_pos_embed_matmul(grid[0], h, w).unsqueeze(0)
    expected = official(grid, h, w)
    assert ours.shape == expected.shape
    # Both float32 evaluations sit about 1e-5 from the float64 value; allow a few times that.
    assert (ours - expected).abs().max() < 1e-4
    exact = official(grid.double(), h, w)
    ours_error = (ours.double() - exact).abs().max()
    aten_error = (expected.double() - exact).abs().max()
    assert ours_error <= 3 * aten_error + 1e-6


def test_native_grid_is_used_unchanged(grid):
    assert torch.equal(resize_pos_embed_reference(grid, 37, 37), grid)
    assert torch.equal(resize_pos_embed_matmul(grid[0], 37, 37), grid[0])
    # The +0.1 offset would otherwise move every sample slightly even at 37x37.
    assert (official(grid, 37, 37) - grid).abs().max() > 1e-4


def test_backbone_table_uses_the_official_resize():
    torch.manual_seed(0)
    backbone = DinoV2Backbone()
    table = backbone.pos_embed.detach()
    patch_grid = table[:, 1:].reshape(1, 37, 37, 384).permute(0, 3, 1, 2)
    for h, w in [(37, 37), (20, 31)]:
        got = backbone.position_embeddings(h, w).detach()
        assert torch.equal(got[:, 0], table[:, 0])
        expected = patch_grid if (h, w) == (37, 37) else official(patch_grid, h, w)
        assert torch.equal(got[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, h * w, 384))
    got = backbone.position_embeddings(20, 31, "matmul").detach()
    assert (got[:, 1:] - official(patch_grid, 20, 31).permute(0, 2, 3, 1).reshape(1, -1, 384)).abs().max() < 1e-4
