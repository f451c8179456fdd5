"""The module that is exported: SMat's own steps, in their graph-friendly form.

Like segment-anything's ONNX wrapper, this reuses the reference model's submodules instead of
bending the model: the only differences are that the steps runtimes compute differently take their
graph form (``form="graph"``: the position-embedding resize as matrix products,
:mod:`smat_deploy.model.pos_embed`; the image and alpha resizes as gathers in PyTorch's arithmetic,
:mod:`smat_deploy.model.resize`), the state is a required input, and input validation (Python
control flow) is left to the caller. Normalisation, padding and cropping stay inside, so a caller in
any language feeds raw RGB in [0, 1] and gets alpha at the input size.
"""

from __future__ import annotations

import torch
from torch import nn

from smat_deploy.model import SMat


class GraphSMat(nn.Module):
    """``(image [B,3,H,W], prompt [B,1,H,W], state [B,1]) -> alpha [B,1,H,W]``, all float32."""

    def __init__(self, model: SMat) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, prompt: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        padded_image, padded_prompt = self.model.preprocess(image, prompt)
        alpha = self.model.forward_padded(padded_image, padded_prompt, state, form="graph")
        return alpha[:, :, :height, :width]
