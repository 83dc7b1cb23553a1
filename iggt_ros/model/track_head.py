"""Point-track head of the released model, present so that official checkpoints load strictly.

The perception pipeline never tracks query points, so this module holds the parameters with
their official names and shapes but has no forward computation.
"""

from __future__ import annotations

import torch
from torch import nn

from iggt_ros.model.config import OFFICIAL_DPT_CHANNELS, IggtModelConfig
from iggt_ros.model.dpt import DPTHead
from iggt_ros.model.layers import Mlp


class _SelfAttentionBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)


class _CrossAttentionBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)


class _UpdateFormer(nn.Module):
    """Time/space transformer of the tracker with virtual tracks."""

    def __init__(self, input_dim: int, hidden: int, output_dim: int, depth: int, heads: int, virtual: int) -> None:
        super().__init__()
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_transform = nn.Linear(input_dim, hidden)
        self.output_norm = nn.LayerNorm(hidden)
        self.flow_head = nn.Linear(hidden, output_dim)
        self.virual_tracks = nn.Parameter(torch.randn(1, virtual, 1, hidden))  # (sic) official key name
        self.time_blocks = nn.ModuleList(_SelfAttentionBlock(hidden, heads) for _ in range(depth))
        self.space_virtual_blocks = nn.ModuleList(_SelfAttentionBlock(hidden, heads) for _ in range(depth))
        self.space_point2virtual_blocks = nn.ModuleList(_CrossAttentionBlock(hidden, heads) for _ in range(depth))
        self.space_virtual2point_blocks = nn.ModuleList(_CrossAttentionBlock(hidden, heads) for _ in range(depth))


class _Tracker(nn.Module):
    def __init__(self, c: IggtModelConfig) -> None:
        super().__init__()
        latent = c.track_features
        corr_dim = c.track_corr_levels * (2 * c.track_corr_radius + 1) ** 2
        input_dim = 3 * latent + 4  # correlation, track features, flow embedding (latent + 2), 2 flags
        self.corr_mlp = Mlp(corr_dim, c.track_hidden_size, latent)
        self.query_ref_token = nn.Parameter(torch.randn(1, 2, input_dim))
        self.fmap_norm = nn.LayerNorm(latent)
        self.ffeat_norm = nn.GroupNorm(1, latent)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent, latent), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent, 1))
        self.conf_predictor = nn.Sequential(nn.Linear(latent, 1))
        self.updateformer = _UpdateFormer(
            input_dim, c.track_hidden_size, latent + 2, c.track_depth, c.track_num_heads, c.track_virtual_tracks
        )


class TrackHead(nn.Module):
    """Parameters of the official track head (feature extractor and tracker); not runnable.

    Args:
        config: model sizes (track_* fields).
    """

    def __init__(self, config: IggtModelConfig) -> None:
        super().__init__()
        self.feature_extractor = DPTHead(
            config.head_dim_in, config.patch_size, config.track_features, OFFICIAL_DPT_CHANNELS,
            config.intermediate_layers, output_dim=None, pos_embed=False, down_ratio=2,
        )
        self.tracker = _Tracker(config)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(
            "point tracking is not implemented; the track head only carries the official weights. "
            "Call the model without query_points."
        )
