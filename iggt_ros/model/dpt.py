"""DPT dense prediction head (depth, point map, track features) and its building blocks.

The head reads four aggregator layers, turns each into a feature map at a different scale,
fuses them coarse-to-fine with residual refinement units, and upsamples to the input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

UvTable = tuple[torch.Tensor, torch.Tensor]
UV_EMBED_RATIO = 0.1
UV_OMEGA0 = 100.0


# ---------------------------------------------------------------------------------------------
# UV position embedding
# ---------------------------------------------------------------------------------------------
def _sincos(values: torch.Tensor, dim: int) -> torch.Tensor:
    """[N] positions -> [N, dim] (sin half then cos half), computed in float64 as the release does."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / UV_OMEGA0**omega
    angles = values.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def uv_embedding_table(channels: int, grid_h: int, grid_w: int, aspect: float) -> UvTable:
    """Separable sin/cos embedding of a normalised UV grid, already scaled by 0.1.

    The grid spans +-aspect/diag in x and +-1/diag in y with a half-pixel inset. The first half
    of the channels encodes x (varies along the width) and the second half y, so the table is
    stored as two broadcastable parts instead of a full [C, H, W] tensor.

    Returns:
        (tx [C/2, 1, grid_w], ty [C/2, grid_h, 1]) float32.
    """
    diag = (aspect**2 + 1.0) ** 0.5
    span_x, span_y = aspect / diag, 1.0 / diag
    xs = torch.linspace(-span_x * (grid_w - 1) / grid_w, span_x * (grid_w - 1) / grid_w, grid_w)
    ys = torch.linspace(-span_y * (grid_h - 1) / grid_h, span_y * (grid_h - 1) / grid_h, grid_h)
    half = channels // 2
    tx = _sincos(xs, half) * UV_EMBED_RATIO
    ty = _sincos(ys, half) * UV_EMBED_RATIO
    return tx.t().reshape(half, 1, grid_w).contiguous(), ty.t().reshape(half, grid_h, 1).contiguous()


def add_uv_embedding(x: torch.Tensor, table: UvTable) -> torch.Tensor:
    """Add a `uv_embedding_table` to a feature map [N, C, h, w] without materialising [C, h, w]."""
    tx, ty = table
    half = tx.shape[0]
    return torch.cat([x[:, :half] + tx, x[:, half:] + ty], dim=1)


# ---------------------------------------------------------------------------------------------
# Fusion blocks
# ---------------------------------------------------------------------------------------------
def resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with align_corners=True, the only resize the dense heads use."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class ResidualConvUnit(nn.Module):
    """Two 3x3 convolutions with a skip connection."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Quirk (released model): its first ReLU is in place, so the skip adds relu(x), not x.
        x = F.relu(x)
        return self.conv2(F.relu(self.conv1(x))) + x


class FeatureFusionBlock(nn.Module):
    """Merge a coarser decoder map with a skip feature map, refine, and upsample."""

    def __init__(self, features: int, has_skip: bool = True) -> None:
        super().__init__()
        if has_skip:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor | None = None, size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Args: x [N, F, h, w]; skip [N, F, h, w] or None; size output (h, w), default 2x.

        Returns: [N, F, *size].
        """
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            size = (2 * x.shape[-2], 2 * x.shape[-1])
        return self.out_conv(resize_bilinear(x, size))


class FusionDecoder(nn.Module):
    """Per-level 3x3 channel reduction, four fusion blocks, and the output convolutions.

    Args:
        in_channels: channels of the four input levels (finest first).
        features: decoder width.
        output_dim: channels of the final 1x1 conv; None builds no `output_conv2` (track features).
        keep_width: `output_conv1` keeps `features` channels instead of halving them.
    """

    def __init__(
        self, in_channels: tuple[int, ...], features: int, output_dim: int | None, keep_width: bool = False
    ) -> None:
        super().__init__()
        for i, channels in enumerate(in_channels, start=1):
            setattr(self, f"layer{i}_rn", nn.Conv2d(channels, features, 3, padding=1, bias=False))
        self.refinenet1 = FeatureFusionBlock(features)
        self.refinenet2 = FeatureFusionBlock(features)
        self.refinenet3 = FeatureFusionBlock(features)
        # Quirk (released model): the coarsest fusion block has no skip branch.
        self.refinenet4 = FeatureFusionBlock(features, has_skip=False)
        head_width = features if keep_width else features // 2
        self.output_conv1 = nn.Conv2d(features, head_width, 3, padding=1)
        if output_dim is not None:
            self.output_conv2 = nn.Sequential(
                nn.Conv2d(head_width, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, output_dim, 1)
            )

    def reduce(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        """Apply `layer{i}_rn` to the four levels."""
        return [getattr(self, f"layer{i}_rn")(x) for i, x in enumerate(levels, start=1)]


# ---------------------------------------------------------------------------------------------
# Head
# ---------------------------------------------------------------------------------------------
DPT_SCALES = (4.0, 2.0, 1.0, 0.5)
"""Resampling of the four token maps in the released DPT layout: x4, x2, x1 and /2."""
SCALE_OPTIONS = (4.0, 2.0, 1.0, 0.5, 0.25)


def check_scales(scales: tuple[float, ...]) -> None:
    """Raise ValueError unless `scales` are four supported factors, each half the one before."""
    if len(scales) != 4 or any(s not in SCALE_OPTIONS for s in scales) or any(
            b * 2 != a for a, b in zip(scales, scales[1:], strict=False)):
        raise ValueError(f"dense head scales must be four halving factors from {SCALE_OPTIONS}, got {scales}")


def resample_layer(channels: int, scale: float) -> nn.Module:
    """One learned resampling of a token map by `scale` (transposed conv up, strided conv down)."""
    if scale >= 2:
        return nn.ConvTranspose2d(channels, channels, kernel_size=int(scale), stride=int(scale))
    if scale == 1:
        return nn.Identity()
    if scale == 0.5:
        return nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)
    return nn.Conv2d(channels, channels, kernel_size=4, stride=4)


def build_resize_layers(channels: tuple[int, ...], scales: tuple[float, ...] = DPT_SCALES) -> nn.ModuleList:
    """Resampling of the four token maps (DPT layout: x4, x2, x1 and /2).

    A finer token grid can use (2, 1, 1/2, 1/4): the decoder then runs at the same pixel resolution as the
    released layout on a grid twice as coarse, instead of at twice the input size.
    """
    check_scales(tuple(scales))
    return nn.ModuleList(resample_layer(c, s) for c, s in zip(channels, scales, strict=True))


def tokens_to_map(tokens: torch.Tensor, patch_start_idx: int, grid: tuple[int, int]) -> torch.Tensor:
    """[B, S, P, C] aggregator layer -> [B*S, h*w, C] patch tokens."""
    b, s, _, c = tokens.shape
    return tokens[:, :, patch_start_idx:].reshape(b * s, grid[0] * grid[1], c)


def activate_dense(out: torch.Tensor, activation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the last channel off as confidence (1 + exp) and activate the rest.

    Args:
        out: [N, C, H, W].
        activation: "exp" (depth) or "inv_log" (points: sign(x) * expm1(|x|)).

    Returns:
        (pred [N, H, W, C-1], conf [N, H, W]).
    """
    fmap = out.permute(0, 2, 3, 1)
    values, conf = fmap[..., :-1], fmap[..., -1]
    if activation == "exp":
        pred = torch.exp(values)
    elif activation == "inv_log":
        pred = torch.sign(values) * torch.expm1(values.abs())
    else:
        raise ValueError(f"unknown dense activation {activation!r}")
    return pred, 1 + conf.exp()


class DPTHead(nn.Module):
    """DPT head over four aggregator layers.

    Args:
        dim_in: token width (2x the aggregator width).
        patch_size: patch side in pixels.
        features: decoder width.
        out_channels: widths of the four projected token maps.
        layer_indices: aggregator layers to read.
        output_dim: prediction channels including confidence; None for a feature-only head.
        activation: "exp" or "inv_log" for the prediction channels.
        pos_embed: add the UV sin/cos embedding (after each projection and after the upsample).
        down_ratio: output resolution divisor.
        scales: resampling of the four token maps (`build_resize_layers`).
    """

    def __init__(
        self,
        dim_in: int,
        patch_size: int,
        features: int,
        out_channels: tuple[int, ...],
        layer_indices: tuple[int, ...],
        output_dim: int | None,
        activation: str = "exp",
        pos_embed: bool = True,
        down_ratio: int = 1,
        scales: tuple[float, ...] = DPT_SCALES,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.layer_indices = tuple(layer_indices)
        self.out_channels = tuple(out_channels)
        self.activation = activation
        self.pos_embed = pos_embed
        self.down_ratio = down_ratio
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, oc, 1) for oc in out_channels)
        self.resize_layers = build_resize_layers(self.out_channels, tuple(scales))
        self.scratch = FusionDecoder(self.out_channels, features, output_dim, keep_width=output_dim is None)

    def output_size(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        grid_h, grid_w = image_hw[0] // self.patch_size, image_hw[1] // self.patch_size
        return grid_h * self.patch_size // self.down_ratio, grid_w * self.patch_size // self.down_ratio

    def position_tables(self, image_hw: tuple[int, int]) -> list[UvTable]:
        """UV embeddings for one input size: four at the patch grid, one at the output size."""
        height, width = image_hw
        grid = (height // self.patch_size, width // self.patch_size)
        aspect = width / height
        tables = [uv_embedding_table(oc, *grid, aspect) for oc in self.out_channels]
        out_h, out_w = self.output_size(image_hw)
        tables.append(uv_embedding_table(self.scratch.output_conv1.out_channels, out_h, out_w, aspect))
        return tables

    def project_levels(
        self, layers: list[torch.Tensor], image_hw: tuple[int, int], patch_start_idx: int,
        tables: list[UvTable] | None,
    ) -> list[torch.Tensor]:
        """Normalise, project, embed and resample the four layers into [B*S, C_i, h_i, w_i] maps."""
        grid = (image_hw[0] // self.patch_size, image_hw[1] // self.patch_size)
        levels = []
        for i, layer_idx in enumerate(self.layer_indices):
            x = self.norm(tokens_to_map(layers[layer_idx], patch_start_idx, grid))
            x = x.permute(0, 2, 1).reshape(x.shape[0], x.shape[-1], grid[0], grid[1])
            x = self.projects[i](x)
            if self.pos_embed:
                x = add_uv_embedding(x, tables[i])
            levels.append(self.resize_layers[i](x))
        return levels

    def forward(
        self,
        layers: list[torch.Tensor],
        image_hw: tuple[int, int],
        patch_start_idx: int,
        tables: list[UvTable] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Predict a dense map.

        Args:
            layers: aggregator outputs, each [B, S, P, dim_in] (only `layer_indices` are read).
            image_hw: input (H, W).
            patch_start_idx: number of special tokens in front of the patches.
            tables: optional precomputed `position_tables(image_hw)`.

        Returns:
            (pred, conf, fusion) where pred is [B, S, H, W, C-1] and conf [B, S, H, W]; for a
            feature-only head pred is [B, S, F, H/r, W/r] and conf is None. `fusion` holds the
            raw refinenet2/3/4 outputs ([B*S, F, 4h, 4w], [B*S, F, 2h, 2w], [B*S, F, h, w]).
        """
        b, s = layers[self.layer_indices[0]].shape[:2]
        if self.pos_embed and tables is None:
            tables = self.position_tables(image_hw)
        l1, l2, l3, l4 = self.scratch.reduce(self.project_levels(layers, image_hw, patch_start_idx, tables))
        r4 = self.scratch.refinenet4(l4, size=l3.shape[-2:])
        r3 = self.scratch.refinenet3(r4, l3, size=l2.shape[-2:])
        r2 = self.scratch.refinenet2(r3, l2, size=l1.shape[-2:])
        out = self.scratch.output_conv1(self.scratch.refinenet1(r2, l1))
        out = resize_bilinear(out, self.output_size(image_hw))
        if self.pos_embed:
            # Quirk (released model): the UV embedding is added a second time after the final upsample.
            out = add_uv_embedding(out, tables[-1])
        fusion = (r2, r3, r4)
        if not hasattr(self.scratch, "output_conv2"):
            return out.reshape(b, s, *out.shape[1:]), None, fusion
        pred, conf = activate_dense(self.scratch.output_conv2(out), self.activation)
        return pred.reshape(b, s, *pred.shape[1:]), conf.reshape(b, s, *conf.shape[1:]), fusion
