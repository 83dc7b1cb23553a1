"""Instance-branch adaptor: turns four aggregator layers into a feature pyramid for the part head.

It shares only the layer indices with the DPT heads; its resampling stages interleave
transposed convolutions with BatchNorm residual blocks.
"""

from __future__ import annotations

import torch
from torch import nn

from iggt_ros.model.dpt import DPT_SCALES, check_scales, resample_layer, tokens_to_map


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


def build_adaptor_resize_layers(channels: tuple[int, ...], scales: tuple[float, ...] = DPT_SCALES) -> nn.ModuleList:
    """Each level resampled by its scale, then a ProjectionBlock.

    The released layout (x4, x2, x1, /2) reaches x4 with two stride-2 transposed convs, each followed
    by a ProjectionBlock; the other factors use one resampling layer (`dpt.resample_layer`).
    """
    check_scales(tuple(scales))
    levels = []
    for c, scale in zip(channels, scales, strict=True):
        if scale == 4:
            levels.append(nn.Sequential(
                nn.ConvTranspose2d(c, c, kernel_size=4, stride=2, padding=1), ProjectionBlock(c),
                nn.ConvTranspose2d(c, c, kernel_size=4, stride=2, padding=1), ProjectionBlock(c),
            ))
        else:
            levels.append(nn.Sequential(resample_layer(c, scale), ProjectionBlock(c)))
    return nn.ModuleList(levels)


class PartAdaptor(nn.Module):
    """Feature pyramid for the instance branch.

    Quirk (released model): no position embedding (the sine encoding the release computes here
    is discarded, so it is not computed at all).

    Args:
        dim_in: token width (2x the aggregator width).
        patch_size: patch side in pixels.
        out_channels: widths of the four levels.
        layer_indices: aggregator layers to read.
        scales: resampling of the four levels.
    """

    def __init__(
        self, dim_in: int, patch_size: int, out_channels: tuple[int, ...], layer_indices: tuple[int, ...],
        scales: tuple[float, ...] = DPT_SCALES,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.layer_indices = tuple(layer_indices)
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, oc, 1) for oc in out_channels)
        self.resize_layers = build_adaptor_resize_layers(tuple(out_channels), tuple(scales))

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
