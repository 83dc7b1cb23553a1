"""The evaluation accumulator: one `RunRecord` per run, fed view by view and window by window.

The replay, the training evaluation and the tests all score a run through it, so a number means
the same wherever it is printed; `iggt_ros.eval.report` renders a record into files.

Memory stays bounded over an hour-long replay (about 50k views): the record keeps no image of the
run. Instance and depth metrics are accumulated as they come (the instance accumulator holds one
number pair per (predicted ID, true object) pair, and the Hungarian matching of the whole sequence
is done at the end from those sums, exactly as on stored images). Depth is scored per view: once
after rescaling each view (scale drift between windows is expected of an up-to-scale model) and
once as published (what a robot uses when TF makes the output metric). The strip keeps at most
2 x `strip_views` + 1 views, downsampled to `strip_max_side` pixels, and thins them so that the
kept views stay evenly spread over the run. Timings and camera positions are kept as compact float
arrays (8 bytes a value: well under 10 MB per hour).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from iggt_ros.engine.preprocess import resize_nearest
from iggt_ros.eval.metrics import (
    DepthAccumulator,
    DepthMetrics,
    PoseMetrics,
    TemporalInstanceAccumulator,
    TemporalInstanceMetrics,
    camera_positions,
    pose_ate,
    to_jsonable,
)
from iggt_ros.eval.semantic import SegmentationAccumulator, SegmentationMetrics, point_truth

# --------------------------------------------------------------------------------------------
# Bounded sample of views for the strip
# --------------------------------------------------------------------------------------------


@dataclass
class StripSample:
    """One view kept for the instance strip, downsampled."""

    label: str
    pred_ids: np.ndarray
    gt_ids: np.ndarray | None = None
    image: np.ndarray | None = None
    """[h,w,3] uint8 RGB at the size of the ID images."""


class StripSampler:
    """Keeps `count` evenly spread views of a run of unknown length in bounded memory.

    Views whose running index is a multiple of the current stride are kept; when more than
    2 x count are held the stride doubles and every other kept view goes. At any time the kept
    views are evenly spaced over the run so far, and views that will not be kept are never
    copied or downsampled.
    """

    def __init__(self, count: int = 4, max_side: int = 336) -> None:
        if count < 1 or max_side < 1:
            raise ValueError(f"strip needs count >= 1 and max_side >= 1, got {count} and {max_side}")
        self.count = count
        self.max_side = max_side
        self._stride = 1
        self._seen = 0
        self._kept: list[tuple[int, StripSample]] = []

    @property
    def held(self) -> int:
        return len(self._kept)

    def offer(
        self, pred_ids: np.ndarray, gt_ids: np.ndarray | None = None, image: np.ndarray | None = None, label: str = ""
    ) -> bool:
        """Consider one view; returns whether it was kept for now."""
        index = self._seen
        self._seen += 1
        if index % self._stride:
            return False
        pred_ids = np.asarray(pred_ids)
        h, w = pred_ids.shape[:2]
        step = max(1, math.ceil(max(h, w) / self.max_side))
        small = pred_ids[::step, ::step].copy()
        gt_small = None if gt_ids is None else np.asarray(gt_ids)[::step, ::step].copy()
        img_small = None
        if image is not None:
            img = np.asarray(image)
            if img.ndim == 2:
                img = np.repeat(img[:, :, None], 3, axis=2)
            img_small = np.ascontiguousarray(resize_nearest(img[:, :, :3], small.shape))
        self._kept.append((index, StripSample(label or f"view {index}", small, gt_small, img_small)))
        if len(self._kept) > 2 * self.count:
            self._stride *= 2
            self._kept = [(i, s) for i, s in self._kept if i % self._stride == 0]
        return True

    def samples(self) -> list[StripSample]:
        """Up to `count` evenly spaced views, in run order."""
        if len(self._kept) <= self.count:
            return [s for _, s in self._kept]
        picks = np.unique(np.linspace(0, len(self._kept) - 1, self.count).round().astype(int))
        return [self._kept[i][1] for i in picks]


# --------------------------------------------------------------------------------------------
# Run record
# --------------------------------------------------------------------------------------------


@dataclass
class RunRecord:
    """Everything the report needs from a run, accumulated while it runs (see the module docstring).

    Feed it with `add_view` once per output view (camera image of a time step), with
    `add_window_timings` once per processed window and with `add_camera_position` once per view
    whose pose is known.
    """

    engine_name: str
    is_oracle: bool | None = None
    """Whether the engine is the ground-truth oracle; None: inferred from the engine name."""
    notes: list[str] = field(default_factory=list)
    ignore_gt_ids: tuple[int, ...] = (0,)
    depth_alignment: str = "per_view"
    depth_threshold: float = 1.03
    strip_views: int = 4
    strip_max_side: int = 336
    segmentation_classes: tuple[str, ...] = ()
    """Class words for the semantic segmentation scores (`iggt_ros.eval.semantic`); empty: not scored."""

    num_views: int = field(init=False, default=0)
    num_windows: int = field(init=False, default=0)
    num_metric_windows: int = field(init=False, default=0)
    """Windows published in metres (TF or a rig baseline gave the scale), when the caller says."""
    instances: TemporalInstanceAccumulator = field(init=False)
    depth: DepthAccumulator = field(init=False)
    """Depth after the record's `depth_alignment` (per view by default)."""
    published_depth: DepthAccumulator = field(init=False)
    """Depth as published: no rescaling."""
    strip: StripSampler = field(init=False)
    segmentation: SegmentationAccumulator | None = field(init=False, default=None)
    """Fed with the views here, with `add_cloud`, and by the caller with labels and true objects."""
    _timings: dict[str, array] = field(init=False, default_factory=dict)
    _pred_positions: array = field(init=False, default_factory=lambda: array("d"))
    _gt_positions: array = field(init=False, default_factory=lambda: array("d"))

    def __post_init__(self) -> None:
        self.instances = TemporalInstanceAccumulator(self.ignore_gt_ids)
        self.depth = DepthAccumulator(self.depth_alignment, self.depth_threshold)
        self.published_depth = DepthAccumulator("none", self.depth_threshold)
        self.strip = StripSampler(self.strip_views, self.strip_max_side)
        if any(c.strip() for c in self.segmentation_classes):
            self.segmentation = SegmentationAccumulator(self.segmentation_classes)

    @property
    def oracle(self) -> bool:
        if self.is_oracle is not None:
            return self.is_oracle
        return self.engine_name.strip().lower().startswith("oracle")

    @property
    def has_instance_gt(self) -> bool:
        return self.instances.num_views > 0

    def add_view(
        self,
        pred_ids: np.ndarray,
        gt_ids: np.ndarray | None = None,
        *,
        image: np.ndarray | None = None,
        pred_depth: np.ndarray | None = None,
        gt_depth: np.ndarray | None = None,
        depth_valid: np.ndarray | None = None,
        label: str = "",
    ) -> None:
        """Add one view's predicted instance IDs with whatever ground truth and image it has.

        Predictions at another resolution than the ground truth (model input size versus camera
        size) are resampled to the ground truth's size, nearest neighbour.
        """
        pred_ids = np.asarray(pred_ids)
        if pred_ids.ndim != 2:
            raise ValueError(f"predicted ID image must be [H,W], got shape {pred_ids.shape}")
        if gt_ids is not None:
            gt_ids = np.asarray(gt_ids)
            pred_ids = resize_nearest(pred_ids, gt_ids.shape[:2])
            self.instances.add_view(pred_ids, gt_ids)
            if self.segmentation is not None:
                self.segmentation.add_view(pred_ids, gt_ids)
        if pred_depth is not None and gt_depth is not None:
            gt_depth = np.asarray(gt_depth)
            pred_depth = resize_nearest(np.asarray(pred_depth), gt_depth.shape[:2])
            self.depth.add_view(pred_depth, gt_depth, depth_valid)
            self.published_depth.add_view(pred_depth, gt_depth, depth_valid)
        self.strip.offer(pred_ids, gt_ids, image, label)
        self.num_views += 1

    def add_cloud(self, points: np.ndarray, pred_ids: np.ndarray, views: list[tuple[np.ndarray, ...]]) -> None:
        """A published cloud for the 3D scores: points, their instance IDs, and per view of its window with truth
        (intrinsics, world_from_camera, published depth, true instance IDs), as `point_truth` takes them."""
        if self.segmentation is None or not views:
            return
        truth = point_truth(points, *(list(column) for column in zip(*views, strict=True)))
        self.segmentation.add_points(pred_ids, truth)

    def add_window_timings(self, timings_ms: Mapping[str, float], metric: bool | None = None) -> None:
        """Add the per-stage latency of one window, in milliseconds, and whether its output was in metres."""
        self.num_windows += 1
        if metric:
            self.num_metric_windows += 1
        for stage, ms in timings_ms.items():
            self._timings.setdefault(stage, array("d")).append(float(ms))

    def add_camera_position(self, pred: np.ndarray, gt: np.ndarray | None = None) -> None:
        """Add one camera position ([3]) or world-from-camera pose ([4,4]/[3,4]); kept only with its truth."""
        if gt is None:
            return
        self._pred_positions.extend(camera_positions(np.asarray(pred)[None])[0].tolist())
        self._gt_positions.extend(camera_positions(np.asarray(gt)[None])[0].tolist())

    @property
    def stage_timings_ms(self) -> dict[str, np.ndarray]:
        return {stage: np.frombuffer(values, dtype=np.float64).copy() for stage, values in self._timings.items()}

    @property
    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        """Predicted and true camera positions, [N,3] each."""
        pred = np.frombuffer(self._pred_positions, dtype=np.float64).reshape(-1, 3).copy()
        gt = np.frombuffer(self._gt_positions, dtype=np.float64).reshape(-1, 3).copy()
        return pred, gt


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


@dataclass
class RunMetrics:
    """The numbers of a report, computed once from a record."""

    instances: TemporalInstanceMetrics | None
    depth: DepthMetrics | None
    """Each view rescaled (the record's depth_alignment)."""
    pose: PoseMetrics | None
    latency_ms: dict[str, dict[str, float]]
    depth_published: DepthMetrics | None = None
    """As published, no rescaling."""
    segmentation: SegmentationMetrics | None = None
    """Semantic segmentation (2D and 3D) when the record has classes and instance ground truth."""


def latency_stats(values: np.ndarray) -> dict[str, float]:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"count": 0, "mean": math.nan, "p50": math.nan, "p95": math.nan, "max": math.nan}
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "max": float(values.max()),
    }


def compute_run_metrics(record: RunRecord) -> RunMetrics:
    instances = record.instances.result() if record.has_instance_gt else None
    depth = record.depth.result()
    published = record.published_depth.result()
    pred_pos, gt_pos = record.positions
    pose = pose_ate(pred_pos, gt_pos) if len(gt_pos) else None
    latency = {stage: latency_stats(v) for stage, v in record.stage_timings_ms.items()}
    segmentation = record.segmentation.result() if record.segmentation is not None and \
        record.segmentation.has_truth else None
    return RunMetrics(instances, depth if depth.num_pixels else None, pose, latency,
                      published if published.num_pixels else None, segmentation)


def metrics_document(record: RunRecord, metrics: RunMetrics) -> dict[str, Any]:
    """The content of metrics.json (NaN written as null)."""
    return to_jsonable(
        {
            "engine": record.engine_name,
            "oracle": record.oracle,
            "notes": list(record.notes),
            "num_views": record.num_views,
            "num_views_with_instance_gt": record.instances.num_views,
            "num_windows": record.num_windows,
            "num_metric_windows": record.num_metric_windows,
            "instances": metrics.instances.to_dict() if metrics.instances else None,
            "depth": metrics.depth.to_dict() if metrics.depth else None,
            "depth_published": metrics.depth_published.to_dict() if metrics.depth_published else None,
            "pose": metrics.pose.to_dict() if metrics.pose else None,
            "segmentation": metrics.segmentation.to_dict() if metrics.segmentation else None,
            "latency_ms": metrics.latency_ms,
        }
    )
