"""One-call matting on the PyTorch reference: numpy image and prompt mask in, numpy alpha out."""

from __future__ import annotations

import numpy as np
import torch

from smat_deploy.errors import SmatError
from smat_deploy.model.smat import SMat


def predict_alpha(
    model: SMat, image: np.ndarray, prompt: np.ndarray | None = None, state: float | None = None
) -> np.ndarray:
    """``image`` float32 ``HxWx3`` in [0, 1], ``prompt`` ``HxW`` (None: automatic) -> alpha float32 ``HxW``.

    ``state`` (1 interactive, 0 automatic) is derived from the prompt when None.
    """
    height, width = image.shape[:2]
    if prompt is None:
        prompt = np.zeros((height, width), dtype=np.float32)
    if prompt.shape != (height, width):
        raise SmatError(f"prompt is {prompt.shape[1]}x{prompt.shape[0]} but the image is {width}x{height}")
    image_t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    prompt_t = torch.from_numpy(np.ascontiguousarray(prompt, dtype=np.float32))[None, None]
    with torch.inference_mode():
        state_t = None if state is None else torch.tensor([[float(state)]])
        alpha = model(image_t, prompt_t, state_t)
    return alpha[0, 0].numpy()
