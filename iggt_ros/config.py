"""Every setting of iggt_ros as dataclasses, loaded from and saved to YAML.

The node and the CLI share one description of the settings, so a parameter file written for
`ros2 launch` works unchanged with `iggt-ros replay --config`. The YAML follows the ROS 2
parameter-file layout (``iggt_node: ros__parameters: {...}``); nested sections become dotted ROS
parameter names (``window.size``). ROS parameters cannot hold lists of structures, so per-camera
settings are keyed by camera name rather than listed.

Validation reports the dotted key, the value and what is allowed, because a user reading a launch
error should not have to open the source to find out what went wrong.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from iggt_ros.limits import MAX_VIEWS

NODE_NAME = "iggt_node"
PATCH_MULTIPLE = 28  # the instance head windows an even patch grid: sides must be multiples of 2*14


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and the allowed values."""


def _check(cond: bool, key: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ConfigError(f"config key '{key}' = {value!r} is invalid: {allowed}")


@dataclass(frozen=True)
class Bound:
    """What one setting may hold, declared beside the section's fields (`BOUNDS`) and checked by one rule.

    lo/hi are inclusive unless lo_open/hi_open; `choices` lists the allowed strings; `integer` refuses
    non-integers; `note` is appended to the message ("must be > 0 seconds")."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] = ()
    integer: bool = False
    note: str = ""

    def allows(self, value: Any) -> bool:
        if self.choices:
            return value in self.choices
        if self.integer and (not isinstance(value, int) or isinstance(value, bool)):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)

    def describe(self) -> str:
        if self.choices:
            return "allowed values are " + ", ".join(repr(c) for c in self.choices)
        kind = "an integer " if self.integer else ""
        if self.hi is None:
            text = f"must be {kind}{'>' if self.lo_open else '>='} {self.lo:g}"
        else:
            text = (f"must be {kind}in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}"
                    f"{')' if self.hi_open else ']'}")
        return text + (f" {self.note}" if self.note else "")


def _check_bounds(section: Any, prefix: str) -> None:
    """Every declared bound of a section: the one place simple range and choice rules are checked."""
    for key, bound in type(section).BOUNDS.items():
        value = getattr(section, key)
        _check(bound.allows(value), f"{prefix}.{key}", value, bound.describe())


@dataclass
class InputConfig:
    """Cameras, image size the model sees, synchronisation and frames."""

    cameras: list[str] = field(default_factory=lambda: ["camera"])
    """Camera names; each subscribes to `<name>/image_raw` and `<name>/camera_info` (remappable)."""
    compressed_cameras: list[str] = field(default_factory=list)
    """Cameras whose images arrive as sensor_msgs/CompressedImage on `<name>/image_raw/compressed`."""
    image_width: int = 504
    image_height: int = 336
    sync_slop_s: float = 0.05
    """Largest stamp difference between cameras of one synchronised set (message_filters 'slop')."""
    sync_queue_size: int = 10
    qos: str = "sensor_data"
    """Subscription QoS profile: 'sensor_data' (best effort, depth 5) or 'reliable' (depth 10)."""
    world_frame: str = "odom"
    """Fixed frame to align windows to when TF provides camera poses."""
    fallback_frame: str = "iggt_map"
    """Frame the node publishes in when TF is unavailable (scale then comes from the model)."""
    use_tf: bool = True
    tf_timeout_s: float = 0.05
    tf_lag_warn_s: float = 0.1
    """/diagnostics warns when /tf messages arrive later than this after their stamps."""

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "sync_slop_s": Bound(0, lo_open=True, note="seconds"),
        "sync_queue_size": Bound(1),
        "qos": Bound(choices=("sensor_data", "reliable")),
        "tf_timeout_s": Bound(0),
        "tf_lag_warn_s": Bound(0, lo_open=True, note="seconds"),
    }

    def validate(self, prefix: str = "input") -> None:
        _check_bounds(self, prefix)
        _check(len(self.cameras) > 0, f"{prefix}.cameras", self.cameras, "list at least one camera name")
        _check(len(set(self.cameras)) == len(self.cameras), f"{prefix}.cameras", self.cameras,
               "camera names must be unique")
        for name in self.compressed_cameras:
            _check(name in self.cameras, f"{prefix}.compressed_cameras", name,
                   f"must be one of input.cameras {self.cameras}")
        for key in ("image_width", "image_height"):
            v = getattr(self, key)
            _check(isinstance(v, int) and v > 0 and v % PATCH_MULTIPLE == 0, f"{prefix}.{key}", v,
                   f"must be a positive multiple of {PATCH_MULTIPLE} (e.g. 504x336 or 504x392)")
        _check(bool(self.world_frame), f"{prefix}.world_frame", self.world_frame, "must not be empty")
        _check(bool(self.fallback_frame), f"{prefix}.fallback_frame", self.fallback_frame, "must not be empty")


@dataclass
class WindowConfig:
    """Keyframe selection and the sliding multi-view window."""

    size: int = 8
    """Keyframe time steps per window (S). IGGT supports 1..12 frames per forward pass."""
    stride: int = 4
    """New keyframes between consecutive windows; size - stride frames are shared for tracking."""
    min_translation_m: float = 0.05
    min_rotation_deg: float = 5.0
    min_image_change: float = 0.04
    """Without TF: mean absolute grey-level change (0..1) that makes a frame a keyframe."""
    max_interval_s: float = 1.0
    """A frame becomes a keyframe after this long even without motion."""
    max_queue: int = 2
    """Windows waiting for inference; beyond this the oldest is dropped and counted."""

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "min_translation_m": Bound(0),
        "min_rotation_deg": Bound(0),
        "min_image_change": Bound(0, 1),
        "max_interval_s": Bound(0, lo_open=True),
        "max_queue": Bound(1),
    }

    def validate(self, prefix: str = "window") -> None:
        _check_bounds(self, prefix)
        _check(1 <= self.size <= MAX_VIEWS, f"{prefix}.size", self.size,
               f"must be in 1..{MAX_VIEWS} (IGGT's frame limit)")
        _check(1 <= self.stride <= self.size, f"{prefix}.stride", self.stride, "must be in 1..window.size")


ENGINE_BACKENDS = ("torch", "onnxruntime", "tensorrt", "oracle")


@dataclass
class EngineConfig:
    """Which inference backend runs the model, and from which weights."""

    backend: str = "torch"
    model: str = "tiny"
    """Model configuration: 'tiny' (the embedded default), 'official' (IGGT-1B), or a JSON config path."""
    checkpoint: str = ""
    """Weights (.safetensors/.pt/.pth). Empty: the embedded tiny weights shipped with the package."""
    engine_path: str = ""
    """ONNX model (onnxruntime) or TensorRT plan (tensorrt). Empty: looked up in cache_dir."""
    device: str = "cpu"
    precision: str = "fp32"
    """torch: fp32, or fp16/bf16 for the backbone (heads stay fp32). tensorrt: fp16 or fp32."""
    allow_partial_checkpoint: bool = False
    """Run even when the checkpoint misses keys. Off: a partial load is refused with the key names."""
    cache_dir: str = "~/.cache/iggt_ros/engines"
    build_if_missing: bool = False
    """tensorrt: build the plan at configure time when the cache has none (minutes on a Jetson)."""

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "backend": Bound(choices=ENGINE_BACKENDS),
        "precision": Bound(choices=("fp32", "fp16", "bf16")),
    }

    def validate(self, prefix: str = "engine") -> None:
        _check_bounds(self, prefix)
        _check(self.device == "cpu" or self.device.startswith("cuda"), f"{prefix}.device", self.device,
               "allowed values are 'cpu', 'cuda' or 'cuda:N'")
        _check(bool(self.model), f"{prefix}.model", self.model, "'tiny', 'official' or a JSON config path")


@dataclass
class ClusteringConfig:
    """Instance clustering of the 8-D per-pixel features of a window."""

    backend: str = "fast_hdbscan"
    """'fast_hdbscan' or 'hdbscan' for the first clustering pass (the same algorithm, near-identical clusters;
    fast_hdbscan runs on every core and took 8-10 ms where hdbscan took 20 on 1200 samples over 2 cores). The passes
    that may return a single cluster always run hdbscan (see clustering.run_hdbscan)."""
    max_samples: int = 1200
    """Feature patches clustered per window; every pixel is then assigned to the nearest cluster prototype."""
    patches_per_view: int = 10000
    """Candidate patches (one clustering sample each: their mean feature) per view, whatever the model input
    size: the patch grid follows the pixel count (4-px patches at 504x336, 2-px at 252x168, overlapping 2-px
    patches on a 1-px grid below), so an object gives the same number of samples at every size."""
    min_patch_coherence: float = 0.9
    """Patch coherence (|sum of features| / sum of |features|, 1 = all aligned) below which the patch (an
    instance boundary or noise) is not sampled."""
    min_cluster_size: int = 10
    """HDBSCAN min_cluster_size, in samples (about a tenth of a percent of a view's patches); smaller, down to 3,
    on views too small to hold patches_per_view patches."""
    min_samples: int = 5
    cluster_selection_epsilon: float = 0.0
    min_instance_area: float = 0.0009
    """Masks smaller than this fraction of a view's pixels are dropped from that view (152 px at 504x336,
    11 px at 140x84)."""
    min_instance_area_px: int = 0
    """When > 0: the smallest mask in pixels at the model resolution, instead of min_instance_area."""
    confidence_percentile: float = 10.0
    """Pixels below this percentile of depth confidence are not sampled (they are still labelled)."""
    max_assign_distance: float = 0.6
    """Pixels farther than this (L2, normalised features) from every prototype stay unlabelled."""
    position_weight: float = 0.0
    """Weight of normalised 3D position appended to the features (0 = features only, as the paper)."""
    background_fraction: float = 0.3
    """A cluster covering more than this fraction of a window's valid pixels is scene structure (label 0)."""
    min_piece_fraction: float = 0.1
    """Per view, a connected piece of a mask is kept when it is at least this fraction of the mask's largest piece
    and at least half the minimum instance area; smaller pieces (speckle) become 0."""
    rim_width_px: int = 0
    """A label that is a band at most this wide (pixels at the model input) hugging one instance, over the window's
    views, is that instance's blurred outline and becomes ID 0 (`perception.rims`): a feature map blurred across an
    object's boundary gives the outline its own cluster, which would be tracked as an extra ID. A thin object
    standing apart, or touching an instance along one side only, is kept. 0 = keep every label (the default).
    2 suits the embedded model: on tuning scenes outside every benchmark (default look, seeds 907101-907106) its
    T-mIoU 0.376 -> 0.392, IDs per object 1.32 -> 1.01, the oracle engine's unchanged (3 cost it 0.006); on the
    quality benchmark's default look its IDs per object 1.62 -> 0.95 (worst sequence 2.40 -> 1.40) but T-SR
    0.690 -> 0.599 and T-mIoU 0.512 -> 0.502, and it costs about 25-30 ms a window at 504x336, not yet weighed
    against the post-processing budget: off until both are settled."""
    merge_cosine: float = 0.95
    """Clusters whose prototypes have at least this cosine are one instance (HDBSCAN splits groups of identical
    or near-identical features, which instance heads give: an object would split into pieces). 1 = never merge.
    0.95 was chosen on tuning scenes outside every benchmark: it halves the embedded model's IDs per object
    (3.8 -> 1.6) and leaves the oracle engine's instances as they were (0.9999 before)."""
    split_gap_m: float = 0.05
    """An instance whose points fall cleanly into parts at least this far apart in space (metres, with metric depth; at
    an unknown scale only the points' own spacing counts), parts that a view sees together, becomes one instance per
    part: identical objects get the same features but stand apart (`perception.twin_split`). 0 = never split."""
    assignment: str = "coarse_to_fine"
    """'coarse_to_fine': 4x4-px blocks that agree with their neighbours are assigned whole, the rest pixel by pixel;
    'exact': every pixel on its own (the reference the shortcut is measured against)."""
    pixel_device: str = "auto"
    """Where the per-pixel passes run: 'numpy', or a torch device ('cpu', 'cuda', 'cuda:N'); 'auto' = 'cuda' when
    PyTorch sees a CUDA GPU, else 'numpy' (faster than torch on a CPU)."""

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "backend": Bound(choices=("fast_hdbscan", "hdbscan")),
        "max_samples": Bound(50),
        "min_cluster_size": Bound(2),
        "min_samples": Bound(1),
        "cluster_selection_epsilon": Bound(0),
        "min_instance_area": Bound(0, 1, hi_open=True, note="(a fraction of the view)"),
        "min_instance_area_px": Bound(0, note="(0 = use min_instance_area)"),
        "confidence_percentile": Bound(0, 100, hi_open=True),
        "max_assign_distance": Bound(0, lo_open=True),
        "position_weight": Bound(0),
        "patches_per_view": Bound(100),
        "min_patch_coherence": Bound(0, 1),
        "background_fraction": Bound(0, 1, lo_open=True),
        "min_piece_fraction": Bound(0, 1, note="(0 keeps every piece of at least half the minimum area)"),
        "merge_cosine": Bound(0, 1, lo_open=True, note="(1 never merges clusters)"),
        "rim_width_px": Bound(0, integer=True, note="(0 keeps every label)"),
        "split_gap_m": Bound(0, note="(0 never splits)"),
        "assignment": Bound(choices=("coarse_to_fine", "exact")),
    }

    def validate(self, prefix: str = "clustering") -> None:
        _check_bounds(self, prefix)
        _check(self.pixel_device in ("auto", "numpy", "cpu", "cuda") or self.pixel_device.startswith("cuda:"),
               f"{prefix}.pixel_device", self.pixel_device, "must be 'auto', 'numpy', 'cpu', 'cuda' or 'cuda:N'")


@dataclass
class TrackingConfig:
    """Persistent instance IDs across windows."""

    confirm_windows: int = 2
    """A track becomes confirmed after being matched in this many windows."""
    lost_windows: int = 3
    """A confirmed track becomes lost after this many windows without a match."""
    forget_windows: int = 0
    """A lost track is removed after this many windows; 0 = never by count (the object map's bounds,
    ``mapping.max_instances`` and ``mapping.max_lost_age_s``, decide)."""
    min_match_score: float = 0.3
    """Assignments scoring below this start a new track instead."""
    mask_iou_weight: float = 1.0
    feature_weight: float = 0.5
    position_weight: float = 1.0
    position_scale_m: float = 0.1
    """Smallest width (standard deviation, metres) of the centroid-distance kernel when the frame is metric;
    otherwise the width is half the object's size."""

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "confirm_windows": Bound(1, integer=True),
        "lost_windows": Bound(1, integer=True),
        "forget_windows": Bound(0, integer=True),
        "min_match_score": Bound(0, 1),
        "mask_iou_weight": Bound(0),
        "feature_weight": Bound(0),
        "position_weight": Bound(0),
        "position_scale_m": Bound(0, lo_open=True),
    }

    def validate(self, prefix: str = "tracking") -> None:
        _check_bounds(self, prefix)


@dataclass
class MappingConfig:
    """World frame, metric scale and the object map."""

    voxel_size_m: float = 0.02
    """Voxel size of the published cloud and of each object's point set."""
    max_points_per_object: int = 4000
    """Voxels kept per instance; the ones observed longest ago go first."""
    max_instances: int = 1000
    """Most instances the map holds; beyond it, instances not detected in the current window are removed,
    tentative before confirmed, least recently seen first (see `perception.map_bounds`)."""
    max_lost_age_s: float = 3600.0
    """A lost instance not seen for this many seconds of input is removed (0 = kept until max_instances)."""
    max_object_size_m: float = 2.5
    """In a metric window, an instance longer than this (its extent in a window or its box in the map) is scene
    structure (walls, floor), not an object: tracked but kept out of the map and the published IDs
    (`perception.structure`; 0 = no limit)."""
    map_directory: str = "~/.local/share/iggt_ros/maps"
    """The one directory saved maps are written to and read from; services name a map, never a path."""
    map_file: str = ""
    """Name of a saved map in map_directory to load at configure time ('' = start empty)."""
    max_cloud_points: int = 150000
    """Upper bound on /iggt/points per window (rclpy copies cost ~7 ms per MB)."""
    min_depth_m: float = 0.05
    max_depth_m: float = 20.0
    """Metric depth range of the pixels that are labelled, published and mapped (applied once a window is metric)."""
    rig_baseline_m: float = 0.0
    """Known baseline between the first two cameras of a rig (0 = unknown); gives metric scale without TF."""
    tf_settle_windows: int = 3
    """Windows in a row with a TF pose for every view (one at least with an observable metric scale) before a map
    started without TF is re-expressed in input.world_frame and published there; 1 switches at the first such
    window."""

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "voxel_size_m": Bound(0, lo_open=True, note="metres"),
        "max_points_per_object": Bound(10),
        "max_instances": Bound(1, integer=True),
        "max_lost_age_s": Bound(0, note="seconds"),
        "max_object_size_m": Bound(0, note="metres (0 = no limit)"),
        "max_cloud_points": Bound(100),
        "rig_baseline_m": Bound(0),
        "tf_settle_windows": Bound(1, integer=True),
    }

    def validate(self, prefix: str = "mapping") -> None:
        _check_bounds(self, prefix)
        _check(0 <= self.min_depth_m < self.max_depth_m, f"{prefix}.min_depth_m", self.min_depth_m,
               "must be >= 0 and below mapping.max_depth_m")


@dataclass
class PublishConfig:
    """Which outputs the node publishes (all can be toggled at run time)."""

    points: bool = True
    instance_images: bool = True
    colorized_instance_images: bool = False
    depth: bool = True
    markers: bool = True
    detections: bool = True
    instance_frames: bool = False
    """A TF frame `iggt/instance_<id>` at the box of every confirmed instance, on /tf (for planners that
    look objects up with TF); a frame is no longer sent once its instance leaves the map or is lost."""
    collision_objects: bool = False
    """Confirmed instances as moveit_msgs/CollisionObject boxes on /collision_object (added, moved and removed as
    the map changes) for a MoveIt planning scene; needs moveit_msgs (`iggt_ros.ros.collision_objects`)."""
    diagnostics_period_s: float = 1.0

    BOUNDS: ClassVar[dict[str, Bound]] = {"diagnostics_period_s": Bound(0, lo_open=True, note="seconds")}

    def validate(self, prefix: str = "publish") -> None:
        _check_bounds(self, prefix)


@dataclass
class QueryConfig:
    """Text queries and the vision-language plug-ins that embed instances."""

    text_encoder: str = "embedded"
    """'embedded' (shipped MiniLM + region model), 'open_clip', or 'none' (queries disabled)."""
    region_encoder: str = "embedded"
    open_clip_model: str = "ViT-B-32"
    open_clip_weights: str = ""
    """Local open_clip weights file; required when text_encoder is 'open_clip'. Nothing is downloaded."""
    embedded_weights: str = ""
    """Weights of the embedded text-region model; empty = the file shipped in iggt_ros/data."""
    max_results: int = 5
    min_score: float = 0.0
    """Scores are in [0, 1] ((1 + cosine) / 2); instances below this are not returned."""
    max_text_length: int = 200
    embed_min_area_px: int = 100
    """Masks smaller than this (pixels) are not embedded from that view."""
    embed_refresh_views: int = 8
    """An instance is re-embedded after this many new views even when none is larger."""
    embed_area_growth: float = 0.25
    """An instance is re-embedded when a view shows its mask this much larger (fraction) than before."""
    embed_max_views: int = 8
    """Views kept per instance for its aggregated embedding (the best by mask area x confidence)."""
    embed_queue_size: int = 8
    """Views waiting for the embedding worker; beyond this the oldest is dropped and counted."""
    lmm_endpoint: str = ""
    """OpenAI-compatible chat endpoint for LMM grounding (empty = disabled)."""
    lmm_model: str = ""
    lmm_timeout_s: float = 10.0
    lmm_max_views: int = 3
    """Views of a candidate shown to the LMM (its largest masks)."""
    label_vocabulary: list[str] = field(default_factory=list)
    """Words /iggt/instances labels are chosen from (best match of the region embedding); empty = every
    colour and shape of the attribute vocabulary ('red cube', ...)."""

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "text_encoder": Bound(choices=("embedded", "open_clip", "none")),
        "region_encoder": Bound(choices=("embedded", "open_clip", "none")),
        "max_results": Bound(1),
        "max_text_length": Bound(1),
        "lmm_timeout_s": Bound(0, lo_open=True, note="seconds"),
        "min_score": Bound(0, 1),
        "embed_min_area_px": Bound(1),
        "embed_refresh_views": Bound(1),
        "embed_max_views": Bound(1),
        "embed_queue_size": Bound(1),
        "lmm_max_views": Bound(1),
        "embed_area_growth": Bound(0),
    }

    def validate(self, prefix: str = "query") -> None:
        _check_bounds(self, prefix)


@dataclass
class ThreadsConfig:
    """How the process shares the CPU with the rest of the robot (applied by `iggt_ros.threads`).

    Waiting worker threads of PyTorch, numba and ONNX Runtime always sleep (OpenMP's passive wait policy, no
    spinning in ONNX Runtime): spinning threads made a window 3 to 5 times slower beside two busy processes
    on 2 cores (benchmarks/results/contention.md). The pool sizes are read by the libraries when they load:
    entry points apply this section before importing them (the launch file passes it to the node's
    environment), and an environment variable the user sets (OMP_WAIT_POLICY, OMP_NUM_THREADS,
    OPENBLAS_NUM_THREADS, NUMBA_NUM_THREADS) wins. Counts of 0 mean every CPU this process may use."""

    torch: int = 1
    """PyTorch intra-op threads (the torch engine on the CPU). One thread ran the embedded model as fast as two on an
    idle 2-core machine and faster beside busy processes; raise it for a larger model on a machine of its own."""
    torch_interop: int = 1
    """PyTorch inter-op threads: the model runs one graph at a time, a second pool only competes for the CPU."""
    pixel: int = 0
    """Threads of the compiled per-pixel passes and of fast_hdbscan (they split a window's views; on 2 cores two
    threads take a quarter off post-processing)."""
    openblas: int = 1
    """numpy's and scipy's OpenBLAS threads: post-processing's products are too small to gain from more."""
    onnxruntime: int = 0
    """ONNX Runtime intra-op threads (the onnxruntime engine on the CPU)."""
    onnxruntime_interop: int = 1
    """ONNX Runtime inter-op threads."""

    BOUNDS: ClassVar[dict[str, Bound]] = {
        key: Bound(0, integer=True, note="(0 = every CPU the process may use)")
        for key in ("torch", "torch_interop", "pixel", "openblas", "onnxruntime", "onnxruntime_interop")
    }

    def validate(self, prefix: str = "threads") -> None:
        _check_bounds(self, prefix)


@dataclass
class IggtConfig:
    """The whole configuration of the node and the CLI."""

    input: InputConfig = field(default_factory=InputConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    mapping: MappingConfig = field(default_factory=MappingConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    threads: ThreadsConfig = field(default_factory=ThreadsConfig)

    def validate(self) -> IggtConfig:
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate(f.name)
        views = self.window.size * len(self.input.cameras)
        _check(views <= MAX_VIEWS, "window.size", self.window.size,
               f"window.size x {len(self.input.cameras)} cameras = {views} images per window, more than the "
               f"{MAX_VIEWS} IGGT accepts; set window.size to {max(1, MAX_VIEWS // len(self.input.cameras))} "
               "or less")
        return self

    # ---------------------------------------------------------------- conversions
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_flat(self) -> dict[str, Any]:
        """Dotted names and values, as ROS parameters see them."""
        flat: dict[str, Any] = {}
        for section, values in self.to_dict().items():
            for key, value in values.items():
                flat[f"{section}.{key}"] = value
        return flat

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> IggtConfig:
        """Build from a nested dict; unknown sections or keys are errors (typos must not pass silently)."""
        data = dict(data or {})
        sections = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            if name not in sections:
                raise ConfigError(f"unknown config section '{name}': allowed sections are "
                                  + ", ".join(sorted(sections)))
            section_cls = _section_type(name)
            kwargs[name] = _build_section(section_cls, name, value or {})
        return cls(**kwargs).validate()

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> IggtConfig:
        nested: dict[str, dict[str, Any]] = {}
        for key, value in flat.items():
            if "." not in key:
                raise ConfigError(f"config key '{key}' is not of the form 'section.key'")
            section, sub = key.split(".", 1)
            nested.setdefault(section, {})[sub] = value
        return cls.from_dict(nested)

    def replace(self, **flat: Any) -> IggtConfig:
        """A copy with dotted keys overridden, e.g. replace(**{'window.size': 4})."""
        merged = self.to_flat()
        for key, value in flat.items():
            if key not in merged:
                raise ConfigError(f"unknown config key '{key}'")
            merged[key] = value
        return IggtConfig.from_flat(merged)


MOVED_KEYS = {"clustering.threads": "threads.pixel", "clustering.openblas_threads": "threads.openblas"}
"""Keys that moved, so an older parameter file gets the new name instead of 'unknown key'."""


def _section_type(name: str) -> type:
    return {
        "input": InputConfig,
        "window": WindowConfig,
        "engine": EngineConfig,
        "clustering": ClusteringConfig,
        "tracking": TrackingConfig,
        "mapping": MappingConfig,
        "publish": PublishConfig,
        "query": QueryConfig,
        "threads": ThreadsConfig,
    }[name]


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Accept YAML's natural types; ints where floats are expected; reject the rest clearly."""
    if isinstance(default, bool):
        _check(isinstance(value, bool), key, value, "must be true or false")
        return value
    if isinstance(default, int):
        _check(isinstance(value, int) and not isinstance(value, bool), key, value, "must be an integer")
        return value
    if isinstance(default, float):
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), key, value, "must be a number")
        return float(value)
    if isinstance(default, str):
        _check(isinstance(value, str), key, value, "must be a string")
        return value
    if isinstance(default, list):
        if value is None or value == [""]:  # ROS cannot declare an empty string array parameter
            return []
        _check(isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value), key, value,
               "must be a list of strings")
        return list(value)
    return value


def _build_section(section_cls: type, name: str, values: dict[str, Any]) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{name}' must be a mapping of keys to values, got {values!r}")
    defaults = section_cls()
    allowed = {f.name for f in dataclasses.fields(section_cls)}
    kwargs = {}
    for key, value in values.items():
        if f"{name}.{key}" in MOVED_KEYS:
            raise ConfigError(f"config key '{name}.{key}' is now '{MOVED_KEYS[name + '.' + key]}': every thread "
                              "setting is in the 'threads' section")
        if key not in allowed:
            raise ConfigError(f"unknown config key '{name}.{key}': keys of '{name}' are " + ", ".join(sorted(allowed)))
        kwargs[key] = _coerce(f"{name}.{key}", value, getattr(defaults, key))
    return section_cls(**kwargs)


# -------------------------------------------------------------------- YAML files
def load_config(path: str | os.PathLike[str] | None = None) -> IggtConfig:
    """Load a ROS-style parameter file (or a plain nested mapping). None gives the defaults."""
    if path is None:
        return IggtConfig().validate()
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"config file '{p}' does not exist; pass a YAML file such as "
                          "share/iggt_ros/config/iggt.yaml, or omit --config for the defaults")
    try:
        doc = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{p}' is not valid YAML: {exc}") from exc
    return config_from_document(doc, source=str(p))


def config_from_document(doc: dict[str, Any], source: str = "<document>") -> IggtConfig:
    """Find our parameters in a parameter document: under iggt_node (any namespace) or `/**`."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    params = _find_ros_parameters(doc)
    if params is None:
        params = doc  # a plain nested mapping
    # ROS parameter files may also use dotted keys; accept both forms.
    nested: dict[str, Any] = {}
    for key, value in params.items():
        if "." in key:
            section, sub = key.split(".", 1)
            nested.setdefault(section, {})[sub] = value
        else:
            if isinstance(value, dict):
                nested.setdefault(key, {}).update(value)
            else:
                nested[key] = value
    try:
        return IggtConfig.from_dict(nested)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def _find_ros_parameters(doc: dict[str, Any]) -> dict[str, Any] | None:
    for key, value in doc.items():
        if not isinstance(value, dict):
            continue
        if "ros__parameters" in value and (key.split("/")[-1] == NODE_NAME or key == "/**"):
            return value["ros__parameters"] or {}
        inner = _find_ros_parameters(value)  # namespaced: ns: iggt_node: ros__parameters
        if inner is not None:
            return inner
    return None


def save_config(config: IggtConfig, path: str | os.PathLike[str]) -> None:
    doc = {NODE_NAME: {"ros__parameters": config.to_dict()}}
    Path(path).write_text(yaml.safe_dump(doc, sort_keys=False))
