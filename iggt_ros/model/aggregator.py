"""The VGGT aggregator: DINO patch tokens plus camera/register tokens, refined by alternating
frame-wise and global (all frames of the window) attention."""

from __future__ import annotations

import torch
from torch import nn

from iggt_ros.model.config import IggtModelConfig
from iggt_ros.model.dino import DinoPatchEmbed
from iggt_ros.model.layers import Block

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def per_frame_tokens(tokens: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Pick the reference-frame or other-frame version of a special token for every frame.

    Quirk (released model): slot 0 marks frame 0 only, slot 1 is shared by frames 1..S-1; this is
    the only way the architecture knows which frame defines the world frame. Written as a select
    over the frame index so S = 1 and a dynamic S both export cleanly.

    Args:
        tokens: [1, 2, T, C] (slot 0, slot 1).
        num_frames: S.

    Returns:
        [S, T, C].
    """
    first = torch.arange(num_frames, device=tokens.device).view(num_frames, 1, 1) == 0
    return torch.where(first, tokens[0, 0:1], tokens[0, 1:2])


class Aggregator(nn.Module):
    """Alternating-attention backbone.

    Args:
        config: model sizes.
    """

    def __init__(self, config: IggtModelConfig) -> None:
        super().__init__()
        c = config
        self.patch_size = c.patch_size
        self.patch_start_idx = c.patch_start_idx
        self.patch_embed = DinoPatchEmbed(
            c.img_size, c.patch_size, c.embed_dim, c.dino_depth, c.dino_num_heads,
            c.num_register_tokens, c.dino_layer_scale_init, c.keep_mask_token,
        )
        self.frame_blocks = nn.ModuleList(
            Block(c.embed_dim, c.num_heads, c.mlp_ratio, c.layer_scale_init, qk_norm=True) for _ in range(c.depth)
        )
        self.global_blocks = nn.ModuleList(
            Block(c.embed_dim, c.num_heads, c.mlp_ratio, c.layer_scale_init, qk_norm=True) for _ in range(c.depth)
        )
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, c.embed_dim) * 1e-6)
        self.register_token = nn.Parameter(torch.randn(1, 2, c.num_register_tokens, c.embed_dim) * 1e-6)
        # Quirk (released model): ImageNet normalisation happens inside the model, on [0, 1] input.
        self.register_buffer("_resnet_mean", torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("_resnet_std", torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1), persistent=False)

    def forward(
        self,
        images: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        dino_pos_embed: torch.Tensor | None = None,
        keep_layers: tuple[int, ...] | None = None,
    ) -> list[torch.Tensor | None]:
        """Run the backbone.

        Args:
            images: [B, S, 3, H, W] in [0, 1].
            rope: (cos, sin) tables [P, head_dim] for this patch grid (`rope.rope_tables`).
            dino_pos_embed: optional precomputed DINO position table for this (H, W).
            keep_layers: layers whose output to keep; None keeps all (other entries are None,
                which saves memory at inference).

        Returns:
            One entry per layer: [B, S, P, 2C], frame-block output concatenated with the
            global-block output (frame first). Token order per frame: camera, registers, patches.
        """
        b, s, _, h, w = images.shape
        images = ((images - self._resnet_mean) / self._resnet_std).reshape(b * s, 3, h, w)
        patches = self.patch_embed(images, dino_pos_embed)
        special = torch.cat([per_frame_tokens(self.camera_token, s), per_frame_tokens(self.register_token, s)], 1)
        special = special.unsqueeze(0).expand(b, -1, -1, -1).reshape(b * s, self.patch_start_idx, -1)
        tokens = torch.cat([special, patches], dim=1)
        p, c = tokens.shape[1], tokens.shape[2]

        outputs: list[torch.Tensor | None] = []
        for i, (frame_block, global_block) in enumerate(zip(self.frame_blocks, self.global_blocks, strict=True)):
            # Quirk (released model): order frame 0, global 0, frame 1, ...; output i = cat(frame_i, global_i).
            tokens = frame_block(tokens.reshape(b * s, p, c), rope)
            frame_out = tokens
            tokens = global_block(tokens.reshape(b, s * p, c), rope)
            if keep_layers is None or i in keep_layers:
                outputs.append(torch.cat([frame_out.reshape(b, s, p, c), tokens.reshape(b, s, p, c)], dim=-1))
            else:
                outputs.append(None)
        return outputs
