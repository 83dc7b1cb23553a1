"""Instance-branch adaptor: turns four aggregator layers into a feature pyramid for the part head.

It shares only the layer indices with the DPT heads; its resampling stages interleave
transposed convolutions with BatchNorm residual blocks.
"""

from __future__ import annotations

import torch
from torch import nn

from iggt_ros.model.dpt import tokens_to_map


class ProjectionBlock(nn.Module):
    """1x1 conv-BN-ReLU, a BN residual pair of 3x3 convs, then a 1x1 output conv.

    BatchNorm uses its running statistics in eval mode (the released weights carry them).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.input_proj = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()
        )
        self.residual_conv = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.output_proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x [N, C, h, w]. Returns [N, C, h, w]."""
        x = self.input_proj(x)
        return self.output_proj(self.residual_conv(x) + x)


def build_adaptor_resize_layers(channels: tuple[int, ...]) -> nn.ModuleList:
    """x4 (two stride-2 transposed convs), x2, x1 and /2 stages, each followed by a ProjectionBlock."""
    c0, c1, c2, c3 = channels
    return nn.ModuleList(
        [
            nn.Sequential(
                nn.ConvTranspose2d(c0, c0, kernel_size=4, stride=2, padding=1),
                ProjectionBlock(c0),
                nn.ConvTranspose2d(c0, c0, kernel_size=4, stride=2, padding=1),
                ProjectionBlock(c0),
            ),
            nn.Sequential(nn.ConvTranspose2d(c1, c1, kernel_size=2, stride=2), ProjectionBlock(c1)),
            nn.Sequential(nn.Identity(), ProjectionBlock(c2)),
            nn.Sequential(nn.Conv2d(c3, c3, kernel_size=3, stride=2, padding=1), ProjectionBlock(c3)),
        ]
    )


class PartAdaptor(nn.Module):
    """Feature pyramid for the instance branch.

    Quirk (released model): no position embedding (the sine encoding the release computes here
    is discarded, so it is not computed at all).

    Args:
        dim_in: token width (2x the aggregator width).
        patch_size: patch side in pixels.
        out_channels: widths of the four levels.
        layer_indices: aggregator layers to read.
    """

    def __init__(
        self, dim_in: int, patch_size: int, out_channels: tuple[int, ...], layer_indices: tuple[int, ...]
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.layer_indices = tuple(layer_indices)
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, oc, 1) for oc in out_channels)
        self.resize_layers = build_adaptor_resize_layers(tuple(out_channels))

    def forward(
        self, layers: list[torch.Tensor], image_hw: tuple[int, int], patch_start_idx: int
    ) -> list[torch.Tensor]:
        """Build the pyramid.

        Args:
            layers: aggregator outputs, each [B, S, P, dim_in].
            image_hw: input (H, W).
            patch_start_idx: number of special tokens per frame.

        Returns:
            Four maps [B*S, C_i, 4h, 4w], [.., 2h, 2w], [.., h, w], [.., h/2, w/2].
        """
        grid = (image_hw[0] // self.patch_size, image_hw[1] // self.patch_size)
        levels = []
        for i, layer_idx in enumerate(self.layer_indices):
            x = self.norm(tokens_to_map(layers[layer_idx], patch_start_idx, grid))
            x = x.permute(0, 2, 1).reshape(x.shape[0], x.shape[-1], grid[0], grid[1])
            levels.append(self.resize_layers[i](self.projects[i](x)))
        return levels
