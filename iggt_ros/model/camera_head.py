"""Camera head: predicts the 9-D pose encoding of every frame from its camera token.

Pose encoding `absT_quaR_FoV`: translation (3), quaternion xyzw (4), fov_h, fov_w (radians);
see `geometry.py` for the conversion to extrinsics/intrinsics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from iggt_ros.model.layers import Block, Mlp

POSE_ENCODING_DIM = 9


def activate_pose(pose: torch.Tensor) -> torch.Tensor:
    """Final activations: translation and quaternion linear, field of view ReLU (quirk of the release).

    Args:
        pose: [..., 9] raw encoding. Returns: [..., 9].
    """
    return torch.cat([pose[..., :7], F.relu(pose[..., 7:])], dim=-1)


class CameraHead(nn.Module):
    """Iteratively refined pose regression with adaLN conditioning on the previous estimate.

    Args:
        dim_in: camera-token width (2x the aggregator width).
        trunk_depth: transformer blocks per iteration (attending across the frames of a window).
        num_heads: attention heads of the trunk.
        iterations: refinement steps; every step's estimate is returned.
    """

    def __init__(self, dim_in: int, trunk_depth: int = 4, num_heads: int = 16, iterations: int = 4) -> None:
        super().__init__()
        self.iterations = iterations
        self.trunk = nn.Sequential(*(Block(dim_in, num_heads, 4.0, 0.01) for _ in range(trunk_depth)))
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_ENCODING_DIM))
        self.embed_pose = nn.Linear(POSE_ENCODING_DIM, dim_in)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, dim_in // 2, POSE_ENCODING_DIM)

    def forward(self, layer_tokens: torch.Tensor) -> list[torch.Tensor]:
        """Regress poses.

        Args:
            layer_tokens: last aggregator layer [B, S, P, dim_in]; token 0 of each frame is its camera token.

        Returns:
            `iterations` activated pose encodings, each [B, S, 9]; the last is the final estimate.
        """
        # Quirk (released model): the normalised camera tokens stay fixed across iterations; only
        # the adaLN modulation changes with the previous estimate.
        tokens = self.token_norm(layer_tokens[:, :, 0])
        pose = None
        outputs = []
        for _ in range(self.iterations):
            if pose is None:
                cond = self.embed_pose(self.empty_pose_tokens.expand(tokens.shape[0], tokens.shape[1], -1))
            else:
                cond = self.embed_pose(pose.detach())
            shift, scale, gate = self.poseLN_modulation(cond).chunk(3, dim=-1)
            x = gate * (self.adaln_norm(tokens) * (1 + scale) + shift) + tokens
            delta = self.pose_branch(self.trunk_norm(self.trunk(x)))
            pose = delta if pose is None else pose + delta
            outputs.append(activate_pose(pose))
        return outputs
