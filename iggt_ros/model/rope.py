"""2D rotary position embedding over the patch grid.

The tables depend only on the patch grid (h, w), so they are built from Python ints once per
input size: no tensor-valued table length and no lookup reaches a traced graph.
"""

from __future__ import annotations

import torch


def token_positions(grid_h: int, grid_w: int, num_special: int) -> torch.Tensor:
    """Integer (y, x) positions of one frame's tokens.

    Quirk (released model): patch positions are shifted by +1 so that the special tokens
    (camera and registers) alone sit at (0, 0).

    Returns:
        [num_special + h*w, 2] int64, patches in row-major order.
    """
    ys = torch.arange(grid_h).repeat_interleave(grid_w)
    xs = torch.arange(grid_w).repeat(grid_h)
    patches = torch.stack([ys, xs], dim=-1) + 1
    return torch.cat([torch.zeros(num_special, 2, dtype=torch.long), patches], dim=0)


def rope_tables(
    grid_h: int, grid_w: int, num_special: int, head_dim: int, base: float = 100.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cos/sin tables for `apply_rope_2d`.

    The first half of each head is rotated by the y position and the second half by x; each
    half uses `head_dim/4` frequencies base^(-2i/(head_dim/2)), duplicated (rotate-half layout).

    Returns:
        (cos, sin), each [num_special + h*w, head_dim] float32.
    """
    half = head_dim // 2
    inv_freq = 1.0 / (base ** (torch.arange(0, half, 2).float() / half))
    pos = token_positions(grid_h, grid_w, num_special).float()
    ang_y = pos[:, 0:1] * inv_freq[None, :]
    ang_x = pos[:, 1:2] * inv_freq[None, :]
    angles = torch.cat([ang_y, ang_y, ang_x, ang_x], dim=-1)
    return angles.cos(), angles.sin()


def _rotate_quarters(x: torch.Tensor) -> torch.Tensor:
    """Rotate-half applied separately to the y half and the x half: [a, b, c, d] -> [-b, a, -d, c]."""
    a, b, c, d = x.chunk(4, dim=-1)
    return torch.cat([-b, a, -d, c], dim=-1)


def apply_rope_2d(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys.

    Args:
        x: [B, heads, N, head_dim].
        cos, sin: [P, head_dim] from `rope_tables`, where N is a multiple of P: global attention
            sees the frames of a window one after another, all with the same positions.

    Returns:
        [B, heads, N, head_dim].
    """
    b, heads, n, d = x.shape
    x = x.reshape(b, heads, -1, cos.shape[0], d)
    return (x * cos + _rotate_quarters(x) * sin).reshape(b, heads, n, d)
