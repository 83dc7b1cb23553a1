"""Input-size dependent tables of an IGGT model, computed once per (H, W).

Every positional quantity of the model depends only on the input size (and, for two of them,
on weights): RoPE cos/sin, the resized DINO position table, the DPT UV embeddings and the
gathered window-attention bias. Building them outside the forward pass keeps float64 math,
antialiased bicubic resizing and index gathers out of traced graphs; an exported graph then
has a static (H, W) and a dynamic frame count S.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from iggt_ros.model.dino import resize_pos_embed
from iggt_ros.model.dpt import UvTable
from iggt_ros.model.rope import rope_tables


@dataclass
class InputTables:
    """Tables for one input size (H, W)."""

    image_hw: tuple[int, int]
    rope: tuple[torch.Tensor, torch.Tensor]
    """(cos, sin) [P, head_dim] for the aggregator attention."""
    dino_pos_embed: torch.Tensor
    """[1, 1 + h*w, C] DINO position table resized to the patch grid."""
    depth_uv: list[UvTable]
    point_uv: list[UvTable]
    window_bias: torch.Tensor
    """[heads, 64, 144] relative-position bias of the window cross-attention."""


def is_tracing() -> bool:
    """True while torch.export / torch.compile / the ONNX exporters trace the model."""
    return bool(torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


def build_input_tables(model: nn.Module, image_hw: tuple[int, int]) -> InputTables:
    """Compute every table of `model` (an `Iggt`) for input size (H, W) from its current weights."""
    config = model.config
    grid_h, grid_w = image_hw[0] // config.patch_size, image_hw[1] // config.patch_size
    device = model.aggregator.camera_token.device
    cos, sin = rope_tables(grid_h, grid_w, config.patch_start_idx, config.embed_dim // config.num_heads,
                           config.rope_freq)

    def move(table: UvTable) -> UvTable:
        return table[0].to(device), table[1].to(device)

    return InputTables(
        image_hw=tuple(image_hw),
        rope=(cos.to(device), sin.to(device)),
        dino_pos_embed=resize_pos_embed(model.aggregator.patch_embed.pos_embed, grid_h, grid_w),
        depth_uv=[move(t) for t in model.depth_head.position_tables(image_hw)],
        point_uv=[move(t) for t in model.point_head.position_tables(image_hw)],
        window_bias=model.part_head.window_cross_attention.relative_bias(),
    )


class FixedInputTables(nn.Module):
    """`InputTables` frozen as non-persistent buffers, so they follow `.to()` and become graph constants.

    The weight-dependent entries (DINO position table, window bias) are a snapshot of the
    weights at the time this was built; the model recomputes them in eager mode and uses the
    snapshot only while being traced.
    """

    def __init__(self, tables: InputTables) -> None:
        super().__init__()
        self.image_hw = tables.image_hw
        self.num_uv = len(tables.depth_uv)
        with torch.no_grad():
            self.register_buffer("rope_cos", tables.rope[0].detach().clone(), persistent=False)
            self.register_buffer("rope_sin", tables.rope[1].detach().clone(), persistent=False)
            self.register_buffer("dino_pos_embed", tables.dino_pos_embed.detach().clone(), persistent=False)
            self.register_buffer("window_bias", tables.window_bias.detach().clone(), persistent=False)
            for prefix, uv in (("depth_uv", tables.depth_uv), ("point_uv", tables.point_uv)):
                for i, (tx, ty) in enumerate(uv):
                    self.register_buffer(f"{prefix}_{i}_x", tx.detach().clone(), persistent=False)
                    self.register_buffer(f"{prefix}_{i}_y", ty.detach().clone(), persistent=False)

    def tables(self) -> InputTables:
        def uv(prefix: str) -> list[UvTable]:
            return [(getattr(self, f"{prefix}_{i}_x"), getattr(self, f"{prefix}_{i}_y")) for i in range(self.num_uv)]

        return InputTables(
            image_hw=self.image_hw,
            rope=(self.rope_cos, self.rope_sin),
            dino_pos_embed=self.dino_pos_embed,
            depth_uv=uv("depth_uv"),
            point_uv=uv("point_uv"),
            window_bias=self.window_bias,
        )
