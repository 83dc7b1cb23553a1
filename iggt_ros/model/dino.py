"""DINOv2-style patch embedding: a small ViT with a class token and register tokens.

Only its normalised patch tokens feed the aggregator. Its position table was trained for a
square grid and is resized to the input grid; that resize (bicubic with antialiasing) has no
ONNX equivalent, so `resized_pos_embed` can be computed once per input size and frozen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from iggt_ros.model.layers import Block

DINO_NORM_EPS = 1e-6  # quirk: DINO LayerNorms use eps 1e-6, the aggregator 1e-5


class PatchProjection(nn.Module):
    """Non-overlapping patch-size convolution turning an image into patch tokens."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Args: images [N, 3, H, W]. Returns [N, h*w, C]."""
        return self.proj(images).flatten(2).transpose(1, 2)


def resize_pos_embed(pos_embed: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """Resize a square DINO position table to (grid_h, grid_w).

    Quirk (released model): bicubic with antialias=True to an explicit output size (no
    interpolate offset), computed in float32; a grid equal to the trained one is used as is.

    Args:
        pos_embed: [1, 1 + M*M, C] (class position first).

    Returns:
        [1, 1 + grid_h*grid_w, C].
    """
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    side = int(round(patch_pos.shape[1] ** 0.5))
    if (grid_h, grid_w) == (side, side):
        return pos_embed
    dim = pos_embed.shape[-1]
    grid = patch_pos.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", antialias=True)
    patch_pos = grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
    return torch.cat([cls_pos.float(), patch_pos], dim=1).to(pos_embed.dtype)


class DinoPatchEmbed(nn.Module):
    """ViT patch embedding with register tokens; returns the normalised patch tokens.

    Args:
        img_size: side the position table was trained for.
        patch_size: patch side in pixels.
        embed_dim: token width.
        depth: number of ViT blocks.
        num_heads: attention heads per block.
        num_register_tokens: register tokens inserted after the class token.
        layer_scale_init: initial LayerScale value.
        keep_mask_token: keep the (unused) masked-modelling token so official weights load strictly.
    """

    def __init__(
        self,
        img_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        num_register_tokens: int,
        layer_scale_init: float = 1.0,
        keep_mask_token: bool = True,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        grid = img_size // patch_size
        self.patch_embed = PatchProjection(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        if keep_mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, 4.0, layer_scale_init, qk_norm=False, norm_eps=DINO_NORM_EPS)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=DINO_NORM_EPS)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)

    def forward(self, images: torch.Tensor, pos_embed: torch.Tensor | None = None) -> torch.Tensor:
        """Embed images.

        Args:
            images: [N, 3, H, W], already normalised.
            pos_embed: optional precomputed `resize_pos_embed` output for this (H, W).

        Returns:
            [N, h*w, C] normalised patch tokens.
        """
        n, _, height, width = images.shape
        if pos_embed is None:
            pos_embed = resize_pos_embed(self.pos_embed, height // self.patch_size, width // self.patch_size)
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(n, -1, -1), x], dim=1) + pos_embed
        # Quirk (released model): registers are inserted after the position embedding is added.
        x = torch.cat([x[:, :1], self.register_tokens.expand(n, -1, -1), x[:, 1:]], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1 + self.num_register_tokens :]
