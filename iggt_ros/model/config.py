"""One dataclass that fixes every dimension of an IGGT model.

The same architecture serves three sizes: the released 1B model (`official`), the small
random-weight model that the numerical parity fixture was produced with (`parity_fixture`), and
the embedded default we train ourselves (`tiny`). Keeping every width in one plain, JSON
serialisable dataclass lets a weights file carry its own architecture (see `checkpoint.py`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from iggt_ros.model.dpt import check_scales

OFFICIAL_DPT_CHANNELS = (256, 512, 1024, 1024)


RETIRED_FIELDS = frozenset({"track_head", "track_features", "track_hidden_size", "track_depth", "track_corr_levels",
                            "track_corr_radius", "track_num_heads", "track_virtual_tracks"})
"""Fields of the point-track head, which the package no longer builds; checkpoints written with them still load."""


@dataclass
class IggtModelConfig:
    """Every size and switch of the IGGT architecture.

    Attributes fall into groups: the DINOv2 patch embedding, the alternating-attention
    aggregator, the camera head, the depth/point DPT heads, the instance branch (adaptor and
    part head with its window attention), and optional parameter groups that the forward pass
    never uses but that exist in the official state dict.
    """

    # Patch embedding (DINOv2 ViT with register tokens).
    img_size: int = 518
    """Side the DINO position table was trained for; the table holds (img_size/patch_size)^2 cells."""
    patch_size: int = 14
    embed_dim: int = 1024
    dino_depth: int = 24
    dino_num_heads: int = 16
    dino_layer_scale_init: float = 1.0
    num_register_tokens: int = 4

    # Aggregator (alternating frame / global attention).
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    rope_freq: float = 100.0
    layer_scale_init: float = 0.01
    intermediate_layers: tuple[int, ...] = (4, 11, 17, 23)
    """Aggregator layers the dense heads read (4 entries)."""

    # Camera head.
    camera_trunk_depth: int = 4
    camera_num_heads: int = 16
    camera_iterations: int = 4

    # Depth and point heads.
    dpt_features: int = 256
    dpt_out_channels: tuple[int, ...] = OFFICIAL_DPT_CHANNELS
    dense_scales: tuple[float, ...] = (4.0, 2.0, 1.0, 0.5)
    """Resampling of the four token maps in the depth, point and instance decoders (finest first)."""

    # Instance branch.
    adaptor_channels: tuple[int, ...] = (256, 256, 256, 256)
    part_features: int = 256
    part_output_dim: int = 8
    cross_attention_heads: int = 8
    window_size: int = 8
    overlap_ratio: float = 0.5
    window_cross_heads: int = 4
    window_self_heads: int = 4
    window_conv_hidden: int = 64
    """Width of `conv_before_upsample` in both window-attention modules."""
    cab_compress_ratio: int = 3
    cab_squeeze_factor: int = 30
    cab_scale: float = 0.01
    image_features: int = 0
    """Width of a light full-resolution convolution branch on the input image whose output the instance
    head fuses before its last layer, so masks can follow object boundaries finer than a token; 0 builds none
    (the released architecture)."""

    # Parameter groups that the forward pass never reads.
    part_head_legacy_channels: tuple[int, ...] | None = OFFICIAL_DPT_CHANNELS
    """Shapes of the part head's inherited, unused `norm/projects/resize_layers`; None omits them."""
    keep_dead_cross_attention: bool = True
    """Keep the weights of `part_head.cross_attention_1` (its result is discarded by the released model)."""
    keep_mask_token: bool = True
    """Keep the DINO `mask_token` (frozen, unused at inference)."""

    extra: dict = field(default_factory=dict)
    """Free-form notes (training recipe, data set); never affects the architecture."""

    # ------------------------------------------------------------------ derived sizes
    @property
    def head_dim_in(self) -> int:
        """Channels the heads read: frame and global tokens concatenated."""
        return 2 * self.embed_dim

    @property
    def patch_start_idx(self) -> int:
        """Tokens in front of the patches in every frame: 1 camera + registers."""
        return 1 + self.num_register_tokens

    @property
    def window_self_dim(self) -> int:
        """Window self-attention runs on the part head's `output_conv1` output."""
        return self.part_features // 2

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this: whole patches, a token grid the coarsest level divides, and a
        finest level (where the instance head's 8x8 windows run) of whole windows."""
        down = max(1, round(1 / min(self.dense_scales)))
        up = max(self.dense_scales)
        grid = max(down, int(8 / up)) if up < 8 else down
        return grid * self.patch_size

    def validate(self) -> None:
        """Raise ValueError on sizes the architecture cannot run."""
        problems = []
        if self.embed_dim % self.num_heads or (self.embed_dim // self.num_heads) % 4:
            problems.append("embed_dim / num_heads must be a multiple of 4 (2D RoPE splits it in quarters)")
        if self.embed_dim % self.dino_num_heads:
            problems.append("embed_dim must be divisible by dino_num_heads")
        if self.head_dim_in % self.camera_num_heads:
            problems.append("2*embed_dim must be divisible by camera_num_heads")
        if len(self.intermediate_layers) != 4 or max(self.intermediate_layers) >= self.depth:
            problems.append("intermediate_layers needs 4 indices below depth")
        if len(self.dpt_out_channels) != 4 or len(self.adaptor_channels) != 4:
            problems.append("dpt_out_channels and adaptor_channels need 4 entries")
        if self.part_features % self.cross_attention_heads or self.part_features % self.window_cross_heads:
            problems.append("part_features must be divisible by the cross/window attention heads")
        if self.dpt_features != self.part_features:
            problems.append("dpt_features must equal part_features (the part head attends to point-head features)")
        if self.part_features % self.window_size:
            problems.append("part_features must be a multiple of window_size (window cross-attention layout)")
        if self.window_self_dim % self.window_self_heads:
            problems.append("part_features//2 must be divisible by window_self_heads")
        if self.window_self_dim // self.cab_squeeze_factor < 1 or self.window_self_dim // self.cab_compress_ratio < 1:
            problems.append("part_features//2 must be at least cab_squeeze_factor and cab_compress_ratio")
        try:
            check_scales(tuple(self.dense_scales))
        except ValueError as exc:
            problems.append(str(exc))
        if self.image_features < 0:
            problems.append("image_features must be >= 0 (0: no full-resolution image branch)")
        if self.img_size % self.patch_size:
            problems.append("img_size must be a multiple of patch_size")
        if problems:
            raise ValueError("invalid IggtModelConfig: " + "; ".join(problems))

    # ------------------------------------------------------------------ presets
    @classmethod
    def official(cls) -> IggtModelConfig:
        """The released IGGT model (VGGT-1B backbone) without its point-track head.

        The pipeline never tracks query points, so the head is not built; the `track_head.*` weights of an
        official checkpoint are skipped when it is loaded (`checkpoint.KNOWN_UNUSED_PREFIXES`).
        """
        return cls()

    @classmethod
    def parity_fixture(cls) -> IggtModelConfig:
        """The small random-weight model of the numerical parity fixture (`tiny_iggt_config.json`)."""
        return cls(
            embed_dim=64,
            dino_depth=2,
            dino_num_heads=4,
            depth=24,
            num_heads=4,
            dpt_features=64,
            dpt_out_channels=(32, 64, 128, 128),
            adaptor_channels=(64, 64, 64, 64),
            part_features=64,
            part_head_legacy_channels=(32, 64, 128, 128),
        )

    @classmethod
    def tiny(cls) -> IggtModelConfig:
        """The embedded default: small enough to train and run on a CPU, same architecture.

        Meant for 140x84 inputs (`extra["input_hw"]`). Drops every parameter group the forward
        pass never reads, uses 8 aggregator layers and a 2-block camera trunk, and narrows the
        dense decoders to 24 channels: at full resolution their convolutions and the instance
        head's window attention dominate CPU time. The DINO position table is sized for
        224-pixel inputs.
        """
        return cls(
            img_size=224,
            embed_dim=64,
            dino_depth=2,
            dino_num_heads=4,
            depth=8,
            num_heads=4,
            intermediate_layers=(1, 3, 5, 7),
            camera_trunk_depth=2,
            camera_num_heads=8,
            dpt_features=24,
            dpt_out_channels=(24, 48, 64, 64),
            adaptor_channels=(24, 24, 24, 24),
            part_features=24,
            cross_attention_heads=4,
            window_cross_heads=4,
            window_self_heads=2,
            window_conv_hidden=24,
            cab_squeeze_factor=6,
            part_head_legacy_channels=None,
            keep_dead_cross_attention=False,
            keep_mask_token=False,
            extra={"input_hw": [84, 140]},
        )

    @classmethod
    def tiny_fine(cls) -> IggtModelConfig:
        """The tiny model with 7-pixel patches: a 20x12 token grid at 140x84 instead of 10x6.

        An object of the benchmark scenes covers 1 to 4 tokens of the 10x6 grid, and the best answer
        that is constant over a token reaches only about a third of the true masks' IoU; halving the
        patch side doubles the grid in both axes (`benchmarks/ceiling.py` measures both ceilings).
        The decoders resample the token maps by (2, 1, 1/2, 1/4) instead of (4, 2, 1, 1/2), so they run at
        the pixel resolution of `tiny()`; the attention runs over four times the tokens.
        """
        return replace(cls.tiny(), patch_size=7, dense_scales=(2.0, 1.0, 0.5, 0.25))

    @classmethod
    def tiny_fine_image(cls) -> IggtModelConfig:
        """`tiny_fine()` plus a 16-channel full-resolution image branch fused into the instance head."""
        return replace(cls.tiny_fine(), image_features=16)

    @classmethod
    def tiny_wide_image(cls) -> IggtModelConfig:
        """`tiny_fine_image()` with 96-channel tokens instead of 64: the trunk's capacity, where the 64-channel
        design's training loss stops falling after a few thousand steps. The decoders, which take most of the time
        at 140x84, keep their width, so a window costs about 1.3x."""
        return replace(cls.tiny_fine_image(), embed_dim=96)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> IggtModelConfig:
        known = {f.name: f for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k not in RETIRED_FIELDS}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown IggtModelConfig fields: {', '.join(unknown)}")
        values = {}
        for name, value in data.items():
            # JSON has no tuples; the tuple-typed fields come back as lists.
            values[name] = tuple(value) if isinstance(value, list) else value
        config = cls(**values)
        config.validate()
        return config

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialise to JSON text; also write it to `path` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> IggtModelConfig:
        """Parse JSON text, or read a JSON file when given a path."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        return cls.from_dict(json.loads(text))
