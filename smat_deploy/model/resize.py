"""SMat's two size-changing bilinear resizes, in a form every runtime evaluates with PyTorch's arithmetic.

The reference resizes the padded image ``14h x 14w`` to ``16h x 16w`` for the ConvStream, and the alpha
from ``16h x 16w`` back to ``14h x 14w``, with ``F.interpolate(mode="bilinear", align_corners=False,
size=...)``. ATen maps output pixel ``i`` to the source coordinate ``max(scale * (i + 0.5) - 0.5, 0)``
with ``scale = in / out``. ONNX's ``Resize`` computes ``(i + 0.5) / (out / in) - 0.5`` instead: the
same number in exact arithmetic, another one in float32. The interpolation weight is the coordinate's
fractional part, so a rounding of the coordinate (an ulp of 300 is 3e-5) becomes an error of the weight
and, times the step between neighbouring pixels, of the output: ONNX Runtime's ``Resize`` differs from
PyTorch by up to 3e-4 on unit-variance data at these sizes and 2e-3 at 1800 pixels. Through ConvStream
and the fusion blocks that is the largest part of the exported graph's distance from the reference.

:func:`resize_bilinear_graph` follows ATen step by step: the source coordinate, the clamped indices and
the two weights per axis, then two ``Gather``s and a weighted sum per axis (height, then width). The
scale is a constant of the graph: both resizes have a fixed ratio (``14/16`` and ``16/14`` for every
grid), and ATen's ``(float)in / out`` of two exact integers in that ratio is the ratio rounded once to
float32. A constant also keeps runtimes from rewriting the division (OpenVINO turns ``a / b`` into
``a * b^-1``, another rounding); it enters the graph as a value computed from the shape, so that no
runtime reassociates the coordinate's arithmetic around it. For the image (``scale = 0.875``, exact)
the weights are PyTorch's exactly; for the alpha they may differ in the last bit where ATen's kernel
fuses a multiply-add. The
output agrees with ``F.interpolate`` to about 1e-6 on unit-variance data, at any size. The sizes may be
symbolic (derived from an input's shape during export).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from smat_deploy.model.pos_embed import size_as_float


def float32_ratio(numerator: int, denominator: int) -> float:
    """``numerator / denominator`` rounded once to float32: ATen's ``(float)in / out`` whenever ``in / out`` is
    this ratio (the two sizes are exact in float32 and the quotient is the same rational)."""
    return float(np.float32(numerator) / np.float32(denominator))


def _linear_taps(out_size: int, in_size: int, scale: float, device: torch.device) -> tuple[torch.Tensor, ...]:
    """ATen's linear taps along one axis: ``(index0, index1, weight0, weight1)``, each ``[out_size]``."""
    positions = torch.arange(out_size, dtype=torch.float32, device=device)
    # The scale as a graph value (the constant plus a zero read off the shape), so that no runtime folds
    # (i + 0.5) * scale into i * scale + 0.5 * scale: OpenVINO does, which moves a coordinate by an ulp.
    scale_value = size_as_float(positions) * 0 + scale
    source = ((positions + 0.5) * scale_value - 0.5).clamp(min=0)
    index0 = torch.floor(source)
    weight1 = (source - index0).clamp(0, 1)
    last = size_as_float(torch.arange(in_size, dtype=torch.float32, device=device)) - 1
    index0 = torch.minimum(index0, last)
    index1 = torch.minimum(index0 + 1, last)
    return index0.to(torch.int64), index1.to(torch.int64), 1 - weight1, weight1


def resize_bilinear_graph(x: torch.Tensor, size: tuple[int, int], ratio: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(x, size=size, mode="bilinear", align_corners=False)`` for ``x [B,C,H,W]``, in ATen's
    arithmetic (see the module's text), where each input side is ``ratio[0] / ratio[1]`` times the output's."""
    scale = float32_ratio(*ratio)
    rows0, rows1, row_weight0, row_weight1 = _linear_taps(size[0], x.shape[-2], scale, x.device)
    cols0, cols1, col_weight0, col_weight1 = _linear_taps(size[1], x.shape[-1], scale, x.device)
    rows = x.index_select(2, rows0) * row_weight0[:, None] + x.index_select(2, rows1) * row_weight1[:, None]
    return rows.index_select(3, cols0) * col_weight0 + rows.index_select(3, cols1) * col_weight1


def resize_bilinear(
    x: torch.Tensor, size: tuple[int, int], ratio: tuple[int, int], graph: bool = False
) -> torch.Tensor:
    """The reference's ``F.interpolate`` bilinear resize to ``size``, or its graph form (``graph=True``); the
    input's sides are ``ratio[0] / ratio[1]`` times the output's."""
    if graph:
        return resize_bilinear_graph(x, size, ratio)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
