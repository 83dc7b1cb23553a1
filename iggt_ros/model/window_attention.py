"""Window attention modules of the instance head (HAT-style).

`WindowCrossAttention` lets instance features attend to point-head features inside overlapping
windows; `WindowSelfAttention` refines the instance features with non-overlapping window
attention plus a channel-attention conv branch. Both need h and w to be multiples of the
window size, which is why IGGT inputs must be multiples of 28 pixels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from iggt_ros.model.layers import Attention, Mlp


# ---------------------------------------------------------------------------------------------
# Index tables and window layouts
# ---------------------------------------------------------------------------------------------
def self_attention_index(window: int) -> torch.Tensor:
    """Relative-position index inside one window (kept for the state dict; nothing reads it).

    Returns:
        [window^2, window^2] int64 with values in [0, (2*window-1)^2).
    """
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def overlap_attention_index(window: int, overlap_window: int) -> torch.Tensor:
    """Relative-position index from the query window's cells to its overlapping key window's cells.

    Quirk (released model): the offset added before flattening makes many entries negative;
    indexing the bias table with them wraps around (index + table size), and that is what the
    released weights were trained with.

    Returns:
        [window^2, overlap_window^2] int64.
    """
    def grid(n: int) -> torch.Tensor:
        return torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")).flatten(1)

    rel = (grid(overlap_window)[:, None, :] - grid(window)[:, :, None]).permute(1, 2, 0)
    rel = rel + (window - overlap_window + 1)
    return rel[..., 0] * (window + overlap_window - 1) + rel[..., 1]


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """[N, h, w, C] -> [N * h/window * w/window, window*window, C], windows row-major."""
    n, h, w, c = x.shape
    x = x.reshape(n, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of `window_partition`: [N*nW, window*window, C] -> [N, h, w, C]."""
    c = windows.shape[-1]
    x = windows.reshape(-1, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def scrambled_query_windows(q: torch.Tensor, window: int) -> torch.Tensor:
    """Query windows exactly as the released window cross-attention cuts them.

    Quirk (released model): the channel-first view [N, C, h, w] of the queries is windowed as if
    it were [N, h, w, C]: rows of channels and columns of image rows form the "window", so a query
    window mixes channels and positions. Pure reshapes and permutes.

    Args:
        q: [N, h, w, C] with C and h multiples of `window`.

    Returns:
        [N * h*w/window^2, window*window, C].
    """
    n, h, w, c = q.shape
    t = q.permute(0, 3, 1, 2).reshape(n, c // window, window, h // window, window, w)
    return t.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def overlapping_windows(x: torch.Tensor, window: int, overlap_window: int) -> torch.Tensor:
    """Overlapping key/value windows, equal to `nn.Unfold(overlap_window, stride=window, padding=p)`.

    Built from zero padding, reshapes and strided slices (no im2col), so it exports to ONNX
    and TensorRT unchanged.

    Args:
        x: [N, C, h, w] with h, w multiples of `window`.

    Returns:
        [N * h/window * w/window, overlap_window^2, C], window cells row-major.
    """
    n, c, h, w = x.shape
    pad = (overlap_window - window) // 2
    block = math.gcd(window, 2 * pad)
    step, count = window // block, overlap_window // block
    nh, nw = h // window, w // window
    x = nn.functional.pad(x, (pad, pad, pad, pad))
    hp, wp = h + 2 * pad, w + 2 * pad
    rows = x.reshape(n, c, hp // block, block, wp)
    rows = torch.stack([rows[:, :, j : j + step * (nh - 1) + 1 : step] for j in range(count)], dim=3)
    rows = rows.reshape(n, c, nh, overlap_window, wp // block, block)
    cols = torch.stack([rows[:, :, :, :, j : j + step * (nw - 1) + 1 : step] for j in range(count)], dim=5)
    cols = cols.reshape(n, c, nh, overlap_window, nw, overlap_window)
    return cols.permute(0, 2, 4, 3, 5, 1).reshape(n * nh * nw, overlap_window * overlap_window, c)


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------
class DropPath(nn.Module):
    """Stochastic depth on a residual branch (identity in eval mode)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation gating of channels."""

    def __init__(self, channels: int, squeeze_factor: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, channels // squeeze_factor, 1),
            nn.ReLU(),
            nn.Conv2d(channels // squeeze_factor, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class ChannelAttentionBlock(nn.Module):
    """Conv branch of the hybrid attention block: two 3x3 convs and channel attention."""

    def __init__(self, channels: int, compress_ratio: int, squeeze_factor: int) -> None:
        super().__init__()
        hidden = channels // compress_ratio
        self.cab = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden, channels, 3, padding=1),
            ChannelAttention(channels, squeeze_factor),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cab(x)


class HybridAttentionBlock(nn.Module):
    """Window self-attention in parallel with a channel-attention conv branch, then an MLP.

    Quirk (released model): windows are never shifted and carry no relative-position bias.
    """

    def __init__(
        self, dim: int, num_heads: int, window: int, compress_ratio: int, squeeze_factor: int,
        conv_scale: float, drop_path: float = 0.1,
    ) -> None:
        super().__init__()
        self.window = window
        self.conv_scale = conv_scale
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.conv_block = ChannelAttentionBlock(dim, compress_ratio, squeeze_factor)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Args: x [N, h*w, C] tokens; hw (h, w). Returns [N, h*w, C]."""
        h, w = hw
        n, _, c = x.shape
        shortcut = x
        x = self.norm1(x).reshape(n, h, w, c)
        conv = self.conv_block(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(n, h * w, c)
        attn = self.attn(window_partition(x, self.window))
        attn = window_reverse(attn, self.window, h, w).reshape(n, h * w, c)
        x = shortcut + self.drop_path(attn) + conv * self.conv_scale
        return x + self.drop_path(self.mlp(self.norm2(x)))


class OverlapCrossAttentionBlock(nn.Module):
    """Cross-attention from 8x8 query windows to overlapping 12x12 key/value windows, then an MLP."""

    def __init__(self, dim: int, num_heads: int, window: int, overlap_window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.overlap_window = overlap_window
        self.scale = (dim // num_heads) ** -0.5
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((window + overlap_window - 1) ** 2, num_heads)
        )
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, hw: tuple[int, int], bias: torch.Tensor) -> torch.Tensor:
        """Attend.

        Args:
            x: [N, h*w, C] query tokens.
            kv: [N, h*w, C] key/value source tokens.
            hw: (h, w).
            bias: [heads, window^2, overlap_window^2] relative-position bias.

        Returns:
            [N, h*w, C].
        """
        h, w = hw
        n, _, c = x.shape
        shortcut = x
        x, kv = self.norm1(x), self.norm1(kv)
        q = scrambled_query_windows(self.q(x).reshape(n, h, w, c), self.window)
        k = overlapping_windows(self.k(kv).transpose(1, 2).reshape(n, c, h, w), self.window, self.overlap_window)
        v = overlapping_windows(self.v(kv).transpose(1, 2).reshape(n, c, h, w), self.window, self.overlap_window)
        d = c // self.num_heads
        q = q.reshape(q.shape[0], q.shape[1], self.num_heads, d).transpose(1, 2)
        k = k.reshape(k.shape[0], k.shape[1], self.num_heads, d).transpose(1, 2)
        v = v.reshape(v.shape[0], v.shape[1], self.num_heads, d).transpose(1, 2)
        attn = ((q * self.scale) @ k.transpose(-2, -1) + bias).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(-1, self.window * self.window, c)
        # The output windows go back to their true places (only the queries were scrambled).
        out = window_reverse(out, self.window, h, w).reshape(n, h * w, c)
        x = self.proj(out) + shortcut
        return x + self.mlp(self.norm2(x))


class TokenNorm(nn.Module):
    """Flatten a feature map to tokens and normalise them (the `patch_embed` of HAT-style modules)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x [N, C, h, w]. Returns [N, h*w, C]."""
        return self.norm(x.flatten(2).transpose(1, 2))


class ConvTail(nn.Module):
    """Shared tail: tokens -> map, 3x3 conv plus the raw input, then 3x3 conv + LeakyReLU and a 3x3 conv."""

    def __init__(self, dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(dim, hidden, 3, padding=1), nn.LeakyReLU(0.01))
        self.conv_last = nn.Conv2d(hidden, out_dim, 3, padding=1)

    def finish(self, tokens: torch.Tensor, x_in: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x_in.shape
        y = self.norm(tokens).transpose(1, 2).reshape(n, c, h, w)
        y = self.conv_after_body(y) + x_in
        # Quirk (released model): no residual from here back to the module input.
        return self.conv_last(self.conv_before_upsample(y))


class WindowSelfAttention(ConvTail):
    """One hybrid attention block between a token norm and the conv tail.

    Args:
        dim: channels in and inside the block.
        num_heads: attention heads.
        window: window side.
        hidden: width of `conv_before_upsample`.
        out_dim: output channels.
    """

    def __init__(
        self, dim: int, num_heads: int, window: int, hidden: int, out_dim: int,
        compress_ratio: int = 3, squeeze_factor: int = 30, conv_scale: float = 0.01,
    ) -> None:
        super().__init__(dim, hidden, out_dim)
        self.patch_embed = TokenNorm(dim)
        self.atten_block = HybridAttentionBlock(dim, num_heads, window, compress_ratio, squeeze_factor, conv_scale)
        self.register_buffer("relative_position_index_SA", self_attention_index(window))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x [N, C, h, w]. Returns [N, out_dim, h, w]."""
        tokens = self.atten_block(self.patch_embed(x), (x.shape[-2], x.shape[-1]))
        return self.finish(tokens, x)


class WindowCrossAttention(ConvTail):
    """Overlapping window cross-attention between a token norm and the conv tail.

    Args:
        dim: channels of queries and keys/values.
        num_heads: attention heads.
        window: query window side.
        overlap_ratio: key windows are window * (1 + overlap_ratio) wide.
        hidden: width of `conv_before_upsample`.
        out_dim: output channels.
    """

    def __init__(
        self, dim: int, num_heads: int, window: int, overlap_ratio: float, hidden: int, out_dim: int
    ) -> None:
        super().__init__(dim, hidden, out_dim)
        overlap_window = window + int(overlap_ratio * window)
        self.patch_embed = TokenNorm(dim)
        self.atten_block = OverlapCrossAttentionBlock(dim, num_heads, window, overlap_window)
        self.register_buffer("relative_position_index_SA", self_attention_index(window))
        self.register_buffer("relative_position_index_OCA", overlap_attention_index(window, overlap_window))

    def relative_bias(self) -> torch.Tensor:
        """Gathered bias [heads, window^2, overlap_window^2], negative indices wrapped like Python indexing."""
        table = self.atten_block.relative_position_bias_table
        index = torch.remainder(self.relative_position_index_OCA, table.shape[0])
        return table[index.reshape(-1)].reshape(*index.shape, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-attend.

        Args:
            x: [N, C, h, w] queries (instance features).
            kv: [N, C, h, w] keys and values (point-head features).
            bias: optional precomputed `relative_bias()`.

        Returns:
            [N, out_dim, h, w].
        """
        hw = (x.shape[-2], x.shape[-1])
        # Quirk (released model): the token norm runs on the queries and on the keys/values.
        tokens = self.atten_block(self.patch_embed(x), self.patch_embed(kv), hw,
                                  self.relative_bias() if bias is None else bias)
        return self.finish(tokens, x)
