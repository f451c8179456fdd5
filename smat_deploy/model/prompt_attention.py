"""The prompt cross-attention: one post-norm transformer decoder layer on a single query token.

Layout and parameter names match the authors' DETR-style ``TransformerDecoder`` with one
``TransformerDecoderLayer`` (``normalize_before=False``, no final norm), so checkpoint keys are
``prompt_cross_attn.layers.0.{self_attn,multihead_attn,linear1,linear2,norm1,norm2,norm3}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class PromptAttentionConfig:
    d_model: int = 384
    num_heads: int = 8
    dim_feedforward: int = 2048
    dropout: float = 0.1  # the authors' default; inactive in eval mode


class PromptDecoderLayer(nn.Module):
    """Self-attention, cross-attention to the patch tokens, FFN; LayerNorm after each residual."""

    def __init__(self, config: PromptAttentionConfig) -> None:
        super().__init__()
        d = config.d_model
        self.self_attn = nn.MultiheadAttention(d, config.num_heads, dropout=config.dropout)
        self.multihead_attn = nn.MultiheadAttention(d, config.num_heads, dropout=config.dropout)
        self.linear1 = nn.Linear(d, config.dim_feedforward)
        self.linear2 = nn.Linear(config.dim_feedforward, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.norm3 = nn.LayerNorm(d)
        self.dropout = nn.Dropout(config.dropout)
        self.dropout1 = nn.Dropout(config.dropout)
        self.dropout2 = nn.Dropout(config.dropout)
        self.dropout3 = nn.Dropout(config.dropout)

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """``query`` ``[1,B,C]`` and ``memory`` ``[N,B,C]`` (sequence-first, as nn.MultiheadAttention)."""
        x = self.norm1(query + self.dropout1(self.self_attn(query, query, query)[0]))
        attended = self.multihead_attn(x, memory, memory)[0]
        x = self.norm2(x + self.dropout2(attended))
        x = self.norm3(x + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(x))))))
        return x


class PromptCrossAttention(nn.Module):
    """Updates the candidate token (prompt feature or class token) with the image's patch tokens."""

    def __init__(self, config: PromptAttentionConfig | None = None) -> None:
        super().__init__()
        self.config = config or PromptAttentionConfig()
        self.layers = nn.ModuleList([PromptDecoderLayer(self.config)])

    def forward(self, candidate: torch.Tensor, patch_tokens: torch.Tensor) -> torch.Tensor:
        """``candidate`` ``[B,C]``, ``patch_tokens`` ``[B,N,C]`` -> updated candidate ``[B,C]``."""
        query = candidate.unsqueeze(0)
        memory = patch_tokens.transpose(0, 1)
        for layer in self.layers:
            query = layer(query, memory)
        return query.squeeze(0)
