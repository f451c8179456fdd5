"""Pictures for reports: prompt overlays and difference heatmaps, written atomically as PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from smat_deploy._files import atomic_output
from smat_deploy.images import save_rgb

PROMPT_COLOUR = np.array([1.0, 0.15, 0.1], dtype=np.float32)


def prompt_overlay(image: np.ndarray, prompt: np.ndarray, opacity: float = 0.6) -> np.ndarray:
    """The photo with the prompt's pixels tinted red (and a one-pixel outline), ``HxWx3`` in [0, 1]."""
    mask = np.asarray(prompt, dtype=np.float32) > 0.5
    out = np.array(image, dtype=np.float32, copy=True)
    out[mask] = (1 - opacity) * out[mask] + opacity * PROMPT_COLOUR
    edge = mask & ~(
        np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1)
    )  # pixels of the mask with a neighbour outside it
    out[edge] = PROMPT_COLOUR
    return out


def save_overlay(path: str | os.PathLike[str], image: np.ndarray, prompt: np.ndarray) -> Path:
    return save_rgb(path, prompt_overlay(image, prompt))


def save_heatmap(path: str | os.PathLike[str], difference: np.ndarray, title: str) -> Path:
    """``|difference|`` as a heatmap with a colour bar whose top is the largest value (at least 1e-6)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    difference = np.abs(np.asarray(difference, dtype=np.float64))
    height, width = difference.shape
    scale = 4.0 / max(height, width)
    fig, ax = plt.subplots(figsize=(max(2.5, width * scale) + 1.2, max(2.0, height * scale) + 0.6), dpi=110)
    shown = ax.imshow(difference, cmap="inferno", vmin=0.0, vmax=max(float(difference.max()), 1e-6))
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=7)
    fig.tight_layout()
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
