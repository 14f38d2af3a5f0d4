"""An encoder built the way the paper's authors built theirs, as the benchmark's reference for speedups.

Their implementation choices, written here independently: fp32 throughout, attention as an explicit
``softmax(Q K^T / sqrt(d)) V`` (the (heads, N, N) score and probability maps are materialised, no fused kernel),
plain pre-norm ViT blocks without fusion, a class token, and a width one channel wider than the bundle's (their
position embedding adds a one-channel SA/LA flag: width 1025 with 5 heads at the paper's size). Only the cost
matters here: positions are a fixed random buffer and nothing is trained.

Shapes: ``patches`` (B, N, patch_dim) in, (B, N + 1, width) out (class token first).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def baseline_heads(width: int, max_heads: int) -> int:
    """The most heads <= ``max_heads`` that divide ``width`` (1025 and 16 give the authors' 5)."""
    return max(h for h in range(1, max_heads + 1) if width % h == 0)


class ExplicitAttention(nn.Module):
    """Multi-head self-attention with the attention map computed explicitly (no fused kernel)."""

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (width // num_heads) ** -0.5
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, width) -> (B, N, width); builds the (B, heads, N, N) map."""
        batch, length, width = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, width // self.num_heads).permute(2, 0, 3, 1, 4)
        query, key, value = qkv[0], qkv[1], qkv[2]
        attention = (query @ key.transpose(-2, -1) * self.scale).softmax(dim=-1)
        return self.proj((attention @ value).transpose(1, 2).reshape(batch, length, width))


class BaselineBlock(nn.Module):
    """Pre-norm ViT block: x + attention(norm(x)), then x + MLP(norm(x)) with a GELU MLP ``mlp_ratio`` wide."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = ExplicitAttention(width, num_heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, int(width * mlp_ratio)), nn.GELU(), nn.Linear(int(width * mlp_ratio), width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, width) -> (B, N, width)."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class BaselineEncoder(nn.Module):
    """Patch embedding, class token, fixed positions, ``num_layers`` explicit-attention blocks and a final norm.

    Args:
        patch_dim: values per patch (pt * ph * pw).
        num_tokens: N, the patches encoded per call (a position each).
        width: token width (the authors': the bundle's width + 1).
        num_heads: attention heads (must divide ``width``).
        num_layers: blocks.
    """

    def __init__(self, patch_dim: int, num_tokens: int, width: int, num_heads: int, num_layers: int) -> None:
        super().__init__()
        self.patch_embed = nn.Linear(patch_dim, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        # fixed, not learned (their sin-cos table); random values cost the same as a table
        self.register_buffer("position", torch.randn(1, num_tokens + 1, width) * 0.02)
        self.blocks = nn.ModuleList([BaselineBlock(width, num_heads) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(width)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """patches: (B, N, patch_dim) -> (B, N + 1, width)."""
        x = self.patch_embed(patches)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.position
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def build_baseline(
    patch_size: tuple[int, int, int], num_tokens: int, hidden_size: int, num_heads: int, num_layers: int
) -> BaselineEncoder:
    """The authors'-style encoder for a bundle encoder of ``hidden_size`` / ``num_heads`` / ``num_layers`` with
    patches of ``patch_size`` (t, y, x), over ``num_tokens`` patches: width ``hidden_size + 1``, the most heads up to
    ``num_heads`` that divide it. Returns the encoder (fp32, eval mode)."""
    width = hidden_size + 1
    encoder = BaselineEncoder(math.prod(patch_size), num_tokens, width, baseline_heads(width, num_heads), num_layers)
    return encoder.eval()
