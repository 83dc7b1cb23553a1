"""Instance head: decodes the adaptor pyramid into 8-D per-pixel instance features, guided by the
point head's fusion features through cross-attention."""

from __future__ import annotations

import torch
from torch import nn

from iggt_ros.model.config import IggtModelConfig
from iggt_ros.model.dpt import FusionDecoder, build_resize_layers, resize_bilinear
from iggt_ros.model.window_attention import WindowCrossAttention, WindowSelfAttention


class CrossAttention(nn.Module):
    """Plain multi-head cross-attention with separate q/k/v projections.

    Quirk (released model): no pre-norm and no residual; callers replace their features with
    the output.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.projq = nn.Linear(dim, dim)
        self.projk = nn.Linear(dim, dim)
        self.projv = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Args: query [N, Nq, C]; context [N, Nk, C]. Returns [N, Nq, C]."""
        n, nq, c = query.shape
        d = c // self.num_heads
        q = self.projq(query).reshape(n, nq, self.num_heads, d).transpose(1, 2)
        k = self.projk(context).reshape(n, -1, self.num_heads, d).transpose(1, 2)
        v = self.projv(context).reshape(n, -1, self.num_heads, d).transpose(1, 2)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(n, nq, c))


class ImageBranch(nn.Module):
    """Full-resolution image features fused into the instance head's last stage.

    The decoder's features come from tokens of `patch_size` pixels; upsampled, they blur across
    object boundaries. Two 3x3 convolutions on the image give edge and colour features at every
    pixel, and a residual 3x3 fusion lets the last layers snap the decoded features to them.

    Args:
        channels: width of the image features.
        head_width: channels of the decoder output they are fused with.
    """

    def __init__(self, channels: int, head_width: int) -> None:
        super().__init__()
        self.image_conv = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(head_width + channels, head_width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(head_width, head_width, 3, padding=1),
        )

    def forward(self, decoded: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Args: decoded [N, C, H, W] at the input size; images [N, 3, H, W] in [0, 1]. Returns [N, C, H, W]."""
        features = self.image_conv(images * 2.0 - 1.0)
        return decoded + self.fuse(torch.cat([decoded, features], dim=1))


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """[N, C, h, w] -> [N, h*w, C]."""
    return x.flatten(2).transpose(1, 2)


class PartHead(nn.Module):
    """Instance-feature decoder.

    Args:
        config: model sizes (part_* and window_* fields).
    """

    def __init__(self, config: IggtModelConfig) -> None:
        super().__init__()
        c = config
        f = c.part_features
        if c.part_head_legacy_channels is not None:
            # Quirk (released model): inherited DPT layers that the forward pass never uses; kept
            # only so that official checkpoints load strictly.
            self.norm = nn.LayerNorm(c.head_dim_in)
            self.projects = nn.ModuleList(nn.Conv2d(c.head_dim_in, oc, 1) for oc in c.part_head_legacy_channels)
            self.resize_layers = build_resize_layers(tuple(c.part_head_legacy_channels))
        self.scratch = FusionDecoder(tuple(c.adaptor_channels), f, c.part_output_dim)
        if c.keep_dead_cross_attention:
            # Quirk (released model): computed then discarded by the release; only its weights are kept.
            self.cross_attention_1 = CrossAttention(f, c.cross_attention_heads)
        self.cross_attention_2 = CrossAttention(f, c.cross_attention_heads)
        self.window_cross_attention = WindowCrossAttention(
            f, c.window_cross_heads, c.window_size, c.overlap_ratio, c.window_conv_hidden, f
        )
        self.window_self_atten = WindowSelfAttention(
            c.window_self_dim, c.window_self_heads, c.window_size, c.window_conv_hidden, c.window_self_dim,
            c.cab_compress_ratio, c.cab_squeeze_factor, c.cab_scale,
        )
        if c.image_features:
            self.image_branch = ImageBranch(c.image_features, self.scratch.output_conv1.out_channels)

    def forward(
        self,
        pyramid: list[torch.Tensor],
        point_features: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        image_hw: tuple[int, int],
        num_frames: tuple[int, int],
        window_bias: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decode instance features.

        Args:
            pyramid: adaptor maps [B*S, C, 4h, 4w], [.., 2h, 2w], [.., h, w], [.., h/2, w/2].
            point_features: point-head refinenet2/3/4 outputs ([B*S, F, 4h, 4w], [.., 2h, 2w], [.., h, w]).
            image_hw: input (H, W).
            num_frames: (B, S).
            window_bias: optional precomputed `window_cross_attention.relative_bias()`.
            images: [B*S, 3, H, W] input in [0, 1]; required when the head has an image branch.

        Returns:
            [B, S, output_dim, H, W] raw features (quirk of the release: no activation or normalisation).
        """
        l1, l2, l3, l4 = self.scratch.reduce(pyramid)
        pf2, _pf3, pf4 = point_features
        out = self.scratch.refinenet4(l4, size=l3.shape[-2:])
        # Quirk (released model): cross-attention to the point features replaces the map (no residual).
        attended = self.cross_attention_2(map_to_tokens(out), map_to_tokens(pf4))
        out = attended.transpose(1, 2).reshape(out.shape)
        out = self.scratch.refinenet3(out, l3, size=l2.shape[-2:])
        # Quirk (released model): cross_attention_1 against pf3 would run here, but its result is discarded.
        out = self.scratch.refinenet2(out, l2, size=l1.shape[-2:])
        out = self.window_cross_attention(out, pf2, window_bias)
        out = self.scratch.output_conv1(self.scratch.refinenet1(out, l1))
        out = self.window_self_atten(out)
        out = resize_bilinear(out, image_hw)
        if hasattr(self, "image_branch"):
            if images is None:
                raise ValueError("this instance head fuses full-resolution image features: pass images")
            out = self.image_branch(out, images)
        out = self.scratch.output_conv2(out)
        b, s = num_frames
        return out.reshape(b, s, *out.shape[1:])
