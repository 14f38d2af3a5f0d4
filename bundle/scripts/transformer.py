"""Pre-norm ViT block on PyTorch's fused attention, with a key mask for the padding of dropped tokens.

Shapes: tokens (B, K, D), K token slots of width D; ``attn_mask`` (B, 1, 1, K) bool, True where a key may be attended
to (:func:`scripts.tokens.key_padding_mask`), or None when no slot is padding.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class SelfAttention(nn.Module):
    """Multi-head self-attention on PyTorch's fused ``scaled_dot_product_attention`` with an optional key mask."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"width {dim} must be divisible by the number of heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, K, D); attn_mask: (B, 1, 1, K) bool, True = may be attended to. Returns (B, K, D)."""
        batch, length, dim = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class TransformerBlock(nn.Module):
    """Pre-norm ViT block.

    Written here rather than taken from ``monai.networks.blocks.TransformerBlock`` so that the attention mask always
    goes to the fused kernel with SDPA's broadcast semantics, the state-dict keys do not move with MONAI releases, and
    no unused cross-attention parameters are created. (MONAI's ``MaskedAutoEncoderViT`` has no plane embedding and no
    way to drop the tokens of absent planes, hence the own encoder.)
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, K, D); attn_mask: (B, 1, 1, K) bool or None. Returns (B, K, D)."""
        x = x + self.attn(self.norm1(x), attn_mask)
        return x + self.mlp(self.norm2(x))


def init_transformer_weights(module: nn.Module) -> None:
    """MAE initialisation, applied with ``module.apply``: xavier-uniform linears with zero bias, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
