"""IGGT: the VGGT geometry transformer plus an instance head, as one module."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import torch
from torch import nn

from iggt_ros.model.adaptor import PartAdaptor
from iggt_ros.model.aggregator import Aggregator
from iggt_ros.model.camera_head import CameraHead
from iggt_ros.model.config import IggtModelConfig
from iggt_ros.model.dino import resize_pos_embed
from iggt_ros.model.dpt import DPTHead
from iggt_ros.model.part_head import PartHead
from iggt_ros.model.tables import FixedInputTables, InputTables, build_input_tables, is_tracing

OUTPUT_KEYS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf", "part_feat")


class Iggt(nn.Module):
    """Instance-grounded geometry transformer.

    Submodule names follow the official release, so official state dicts load strictly.

    Args:
        config: every size of the model; defaults to the released model.
    """

    def __init__(self, config: IggtModelConfig | None = None) -> None:
        super().__init__()
        config = config or IggtModelConfig.official()
        config.validate()
        self.config = config
        c = config
        self.aggregator = Aggregator(c)
        self.camera_head = CameraHead(c.head_dim_in, c.camera_trunk_depth, c.camera_num_heads, c.camera_iterations)
        self.point_head = DPTHead(c.head_dim_in, c.patch_size, c.dpt_features, c.dpt_out_channels,
                                  c.intermediate_layers, output_dim=4, activation="inv_log", scales=c.dense_scales)
        self.depth_head = DPTHead(c.head_dim_in, c.patch_size, c.dpt_features, c.dpt_out_channels,
                                  c.intermediate_layers, output_dim=2, activation="exp", scales=c.dense_scales)
        self.part_adaptor = PartAdaptor(c.head_dim_in, c.patch_size, c.adaptor_channels, c.intermediate_layers,
                                        c.dense_scales)
        self.part_head = PartHead(c)
        self.fixed_tables: FixedInputTables | None = None

    # ------------------------------------------------------------------ input size
    def check_input_size(self, height: int, width: int) -> None:
        """Raise ValueError unless H and W are positive multiples of `size_multiple` (patches, 8x8 windows)."""
        m = self.config.size_multiple
        if height <= 0 or width <= 0 or height % m or width % m:
            raise ValueError(f"IGGT needs H and W to be multiples of {m}; got {height}x{width}")

    def fix_input_size(self, height: int, width: int) -> Iggt:
        """Precompute every positional table for input size (H, W), for export and repeated inference.

        Call after the weights are loaded (the DINO table and window bias snapshot the weights)
        and before tracing; traced graphs then contain only float32 constants for them. Eager
        calls of another size still work (they compute their tables on the fly).
        """
        self.check_input_size(height, width)
        with torch.no_grad():
            self.fixed_tables = FixedInputTables(build_input_tables(self, (height, width)))
        return self

    def release_input_size(self) -> None:
        """Forget the tables of `fix_input_size`."""
        self.fixed_tables = None

    def input_tables(self, image_hw: tuple[int, int]) -> InputTables:
        """Tables for one input size: the fixed ones when they match, fresh ones otherwise.

        In eager mode the weight-dependent entries are always recomputed from the current weights
        (cheap), so training or reloading weights never leaves them stale.
        """
        fixed = self.fixed_tables
        if fixed is None or fixed.image_hw != tuple(image_hw):
            return build_input_tables(self, image_hw)
        tables = fixed.tables()
        if is_tracing():
            return tables
        grid = (image_hw[0] // self.config.patch_size, image_hw[1] // self.config.patch_size)
        return replace(
            tables,
            dino_pos_embed=resize_pos_embed(self.aggregator.patch_embed.pos_embed, *grid),
            window_bias=self.part_head.window_cross_attention.relative_bias(),
        )

    # ------------------------------------------------------------------ forward
    def used_layers(self) -> tuple[int, ...]:
        """Aggregator layers any head reads."""
        return tuple(sorted(set(self.config.intermediate_layers) | {self.config.depth - 1}))

    def forward(self, images: torch.Tensor) -> dict:
        """Predict geometry and instance features for a window of frames.

        Args:
            images: [S, 3, H, W] or [B, S, 3, H, W] RGB in [0, 1]; H, W multiples of 28.

        Returns:
            dict with
              pose_enc: list of `camera_iterations` tensors [B, S, 9] (T, quaternion xyzw, fov_h,
                fov_w); the last is the final estimate.
              depth [B, S, H, W, 1], depth_conf [B, S, H, W],
              world_points [B, S, H, W, 3] (first-camera frame), world_points_conf [B, S, H, W],
              part_feat [B, S, 8, H, W] raw instance features, images [B, S, 3, H, W].
        """
        if images.ndim == 4:
            images = images.unsqueeze(0)
        b, s, _, height, width = images.shape
        self.check_input_size(height, width)
        hw = (height, width)
        tables = self.input_tables(hw)
        layers = self.aggregator(images, tables.rope, tables.dino_pos_embed, keep_layers=self.used_layers())
        start = self.aggregator.patch_start_idx

        # The heads run in float32 even when the backbone runs under autocast (as the release does).
        autocast_off = (
            torch.autocast(device_type=images.device.type, enabled=False)
            if torch.is_autocast_enabled(images.device.type)
            else contextlib.nullcontext()
        )
        with autocast_off:
            layers = [None if x is None else x.float() for x in layers]
            pose_enc = self.camera_head(layers[-1])
            depth, depth_conf, _ = self.depth_head(layers, hw, start, tables.depth_uv)
            points, points_conf, point_features = self.point_head(layers, hw, start, tables.point_uv)
            pyramid = self.part_adaptor(layers, hw, start)
            part_feat = self.part_head(pyramid, point_features, hw, (b, s), tables.window_bias,
                                       images.reshape(b * s, 3, height, width))
        return {
            "pose_enc": pose_enc,
            "depth": depth,
            "depth_conf": depth_conf,
            "world_points": points,
            "world_points_conf": points_conf,
            "part_feat": part_feat,
            "images": images,
        }


class IggtTensorOutputs(nn.Module):
    """The model as a function of tensors only, for tracing and export.

    Returns the outputs in `OUTPUT_KEYS` order, with the camera-head iterations stacked:
    pose_enc [iterations, B, S, 9], depth [B, S, H, W, 1], depth_conf [B, S, H, W],
    world_points [B, S, H, W, 3], world_points_conf [B, S, H, W], part_feat [B, S, 8, H, W].
    Call `model.fix_input_size(H, W)` before tracing.
    """

    def __init__(self, model: Iggt) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(images)
        return (torch.stack(out["pose_enc"], 0), *(out[key] for key in OUTPUT_KEYS[1:]))
