"""Position-embedding resize for DINOv2, in two forms that compute the same numbers.

DINOv2 stores position embeddings for a 37x37 grid (518 px at patch 14). For any other grid the
official code calls ``F.interpolate(mode="bicubic", antialias=False, scale_factor=((h+0.1)/37,
(w+0.1)/37))``. Because a scale factor is given, PyTorch maps output pixel ``i`` to the source
coordinate ``(i + 0.5) / scale - 0.5``, i.e. with ``37 / (h + 0.1)``, not ``37 / h``. A size-based
resize, an antialiased one, or ONNX's ``Resize`` (which TensorRT turns into an output-shape resize)
therefore give different numbers.

``resize_pos_embed_reference`` is the official call. ``resize_pos_embed_matmul`` builds the same
separable bicubic filter as two small interpolation matrices from the grid size alone and applies
them with matrix products, which every ONNX runtime evaluates identically. It follows ATen's
arithmetic step by step (scale, source index, index clamp, Keys coefficients); the two agree to
float32 rounding (about 1e-5 on a unit-variance table), not bit for bit, because ATen's CPU kernel is
compiled with fused multiply-adds, which plain float32 graph operations cannot reproduce. Both are
equally close to a float64 evaluation; a size-based resize differs by O(1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: DINOv2's historical offset added to the target grid size before computing the scale factor.
INTERPOLATE_OFFSET = 0.1
#: PyTorch's bicubic convolution coefficient (Keys' cubic with A = -0.75).
CUBIC_A = -0.75


def resize_pos_embed_reference(grid: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Official DINOv2 resize of a ``[1, C, M, M]`` grid to ``[1, C, h, w]``.

    At exactly ``h == w == M`` the table is used unchanged, as in DINOv2.
    """
    m = grid.shape[-1]
    if h == m and w == m:
        return grid
    scale = ((h + INTERPOLATE_OFFSET) / m, (w + INTERPOLATE_OFFSET) / m)
    out = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
    assert out.shape[-2:] == (h, w), "scale-factor resize produced an unexpected grid size"
    return out


def _cubic_weights(t: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution weights for taps at offsets -1, 0, 1, 2 (``t`` in [0, 1]), in ATen's order."""
    a = CUBIC_A

    def near(x: torch.Tensor) -> torch.Tensor:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: torch.Tensor) -> torch.Tensor:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    opposite = 1 - t
    return torch.stack([far(t + 1), near(t), near(opposite), far(opposite + 1)], dim=-1)


def bicubic_matrix(out_size: int, in_size: int, device: torch.device | None = None) -> torch.Tensor:
    """``[out_size, in_size]`` matrix reproducing PyTorch's scale-factor bicubic resize along one axis.

    ``out_size`` may be symbolic (derived from an input shape during export), so the exported graph
    computes the matrix at run time from the shape. Out-of-range taps are clamped to the border, as
    ATen does.
    """
    positions = torch.arange(out_size, dtype=torch.float32, device=device)
    out_f = size_as_float(positions)
    # in / (out + 0.1) written as 10*in / (10*out + 1): both operands are exact in float32, so the one
    # division rounds correctly, as ATen's double-precision scale does after its cast to float.
    inverse_scale = (10.0 * in_size) / (10.0 * out_f + 1.0)
    source = (positions + 0.5) * inverse_scale - 0.5
    base = torch.floor(source).clamp(max=in_size - 1)
    weights = _cubic_weights((source - base).clamp(0, 1))  # [out, 4]
    taps = base.unsqueeze(-1) + torch.arange(-1, 3, dtype=torch.float32, device=device)
    taps = taps.clamp(0, in_size - 1)  # [out, 4]
    columns = torch.arange(in_size, dtype=torch.float32, device=device)
    one_hot = (taps.unsqueeze(-1) == columns).to(torch.float32)  # [out, 4, in]
    return (weights.unsqueeze(-1) * one_hot).sum(dim=1)


def size_as_float(positions: torch.Tensor) -> torch.Tensor:
    """The length of ``positions`` (``arange(n)``) as a 0-d float tensor.

    Read from the data rather than the Python size, so that a symbolic size stays a graph value.
    Exact in float32 for any size below 2**24.
    """
    return positions[-1:].sum() + 1.0


def _identity(out_size: int, in_size: int, device: torch.device | None) -> torch.Tensor:
    """``[out_size, in_size]`` matrix with ones on the diagonal (the identity when sizes agree)."""
    rows = torch.arange(out_size, device=device).unsqueeze(-1)
    cols = torch.arange(in_size, device=device)
    return (rows == cols).to(torch.float32)


def resize_pos_embed_matmul(grid: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Same result as :func:`resize_pos_embed_reference`, as ``Wh @ grid @ Ww^T`` (branch-free).

    ``grid`` is ``[C, M, M]``; ``h`` and ``w`` may be symbolic sizes. The unchanged-table rule at the
    native grid is a blend with the identity, so no data-dependent control flow reaches the
    exported graph.
    """
    m = grid.shape[-1]
    device = grid.device
    h_f = size_as_float(torch.arange(h, dtype=torch.float32, device=device))
    w_f = size_as_float(torch.arange(w, dtype=torch.float32, device=device))
    native = ((h_f == m) & (w_f == m)).to(torch.float32)
    rows = native * _identity(h, m, device) + (1 - native) * bicubic_matrix(h, m, device)
    cols = native * _identity(w, m, device) + (1 - native) * bicubic_matrix(w, m, device)
    # Width first, then height: the order of ATen's separable loops.
    return torch.matmul(rows, torch.matmul(grid, cols.transpose(0, 1)))
