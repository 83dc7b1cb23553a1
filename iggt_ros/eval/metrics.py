"""Evaluation metrics: temporal instance consistency, depth, camera trajectory.

Definitions follow the IGGT paper's appendix A.4 for the temporal instance metrics:

* Predicted IDs are matched to true objects once per sequence, by Hungarian assignment on the
  IoU summed over all views. A pair whose summed IoU is zero is not a match: such an object
  counts as unmatched.
* T-mIoU of an object is the mean, over the views where the object is visible (non-empty true
  mask), of the IoU between the mask of its matched predicted ID and its true mask.
* T-SR of an object is 1 when its matched predicted ID has a non-empty mask in every view where
  the object is visible, else 0.
* An unmatched object scores 0 in both; the sequence values are means over true objects.

Everything here needs numpy and scipy only. Instance metrics and per-view depth metrics are
also available as accumulators that take one view at a time and keep statistics whose size
depends on the number of IDs, not on the number of views, so an hour-long replay can be scored
without keeping its images.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from iggt_ros.spatial import umeyama_sim3

DEPTH_ALIGNMENTS = ("per_view", "sequence", "none")


def to_jsonable(value: Any) -> Any:
    """Plain JSON types: NaN and infinities become None (JSON has no NaN), numpy scalars Python."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value


class _DictMixin:
    """`to_dict()` for the result dataclasses, ready for `json.dumps`."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: to_jsonable(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Temporal instance metrics (T-mIoU, T-SR)
# --------------------------------------------------------------------------------------------


@dataclass
class ObjectScore(_DictMixin):
    """Scores of one true object over a sequence."""

    gt_id: int
    pred_id: int | None
    """Predicted ID matched to this object; None when unmatched."""
    t_miou: float
    t_sr: float
    """1.0 or 0.0."""
    views_visible: int
    """Views where the true mask is non-empty."""
    views_detected: int
    """Of those, views where the matched predicted ID has a non-empty mask."""


@dataclass
class TemporalInstanceMetrics(_DictMixin):
    """T-mIoU and T-SR of one sequence, with the per-object values and the matching."""

    t_miou: float
    """Mean over true objects; NaN when the sequence has no true object."""
    t_sr: float
    num_objects: int
    num_pred_ids: int
    num_views: int
    objects: list[ObjectScore] = field(default_factory=list)
    """One entry per true object, sorted by ID."""

    @property
    def matching(self) -> dict[int, int]:
        """True object ID -> matched predicted ID (unmatched objects are absent)."""
        return {o.gt_id: o.pred_id for o in self.objects if o.pred_id is not None}

    @property
    def per_object_miou(self) -> dict[int, float]:
        return {o.gt_id: o.t_miou for o in self.objects}

    @property
    def per_object_sr(self) -> dict[int, float]:
        return {o.gt_id: o.t_sr for o in self.objects}

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["matching"] = {str(k): v for k, v in self.matching.items()}
        return out


def _check_integer_image(values: np.ndarray, what: str) -> None:
    if not (np.issubdtype(values.dtype, np.integer) or values.dtype == np.bool_):
        raise ValueError(f"{what} must hold integer instance IDs, got dtype {values.dtype}")


def _compact_ids(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of an integer array and, per element, the index of its value among them.

    A lookup table over the value range is linear time; np.unique (a sort) is the fallback
    for sparse, very large IDs.
    """
    flat = values.ravel()
    if flat.size == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.intp)
    lo, hi = int(flat.min()), int(flat.max())
    if hi - lo <= max(4 * flat.size, 1 << 16):
        shifted = (flat.astype(np.int64) - lo).astype(np.intp)
        present = np.bincount(shifted, minlength=hi - lo + 1) > 0
        ids = np.flatnonzero(present).astype(np.int64) + lo
        lut = np.cumsum(present, dtype=np.intp) - 1
        return ids, lut[shifted]
    ids, inverse = np.unique(flat, return_inverse=True)
    return ids.astype(np.int64), inverse.ravel().astype(np.intp)


class TemporalInstanceAccumulator:
    """Collects the statistics T-mIoU and T-SR need, one view at a time.

    Per pair (predicted ID p, true object g) it keeps the IoU summed over views and the number of
    views where g is visible and p is non-empty; per object the number of views where it is
    visible. That is exactly enough to do the Hungarian matching at the end and to score every
    possible match, so memory is O(#predicted IDs x #objects) whatever the sequence length.

    Pixels with predicted ID 0 (or negative, e.g. clustering noise) belong to no predicted
    instance. Pixels whose true ID is in `ignore_gt_ids` belong to no true object, but a
    predicted mask covering them still pays for it in its IoU.
    """

    def __init__(self, ignore_gt_ids: Iterable[int] = (0,)) -> None:
        self._ignore = np.array(sorted({int(i) for i in ignore_gt_ids}), dtype=np.int64)
        self._pred_index: dict[int, int] = {}
        self._gt_index: dict[int, int] = {}
        self._iou_sum = np.zeros((0, 0), dtype=np.float64)
        self._co_present = np.zeros((0, 0), dtype=np.int64)
        self._gt_visible = np.zeros(0, dtype=np.int64)
        self.num_views = 0

    def _indices(self, table: dict[int, int], ids: np.ndarray) -> np.ndarray:
        out = np.empty(len(ids), dtype=np.intp)
        for k, i in enumerate(ids.tolist()):
            idx = table.get(i)
            if idx is None:
                idx = table[i] = len(table)
            out[k] = idx
        return out

    def _ensure_capacity(self) -> None:
        need_p, need_g = len(self._pred_index), len(self._gt_index)
        cap_p, cap_g = self._iou_sum.shape
        if need_p <= cap_p and need_g <= cap_g:
            return
        new_p = max(need_p, 2 * cap_p, 16) if need_p > cap_p else cap_p
        new_g = max(need_g, 2 * cap_g, 16) if need_g > cap_g else cap_g
        iou = np.zeros((new_p, new_g), dtype=np.float64)
        iou[:cap_p, :cap_g] = self._iou_sum
        co = np.zeros((new_p, new_g), dtype=np.int64)
        co[:cap_p, :cap_g] = self._co_present
        vis = np.zeros(new_g, dtype=np.int64)
        vis[:cap_g] = self._gt_visible
        self._iou_sum, self._co_present, self._gt_visible = iou, co, vis

    def add_view(self, pred_ids: np.ndarray, gt_ids: np.ndarray) -> None:
        """Add one view: predicted and true instance-ID images of the same shape."""
        pred = np.asarray(pred_ids)
        gt = np.asarray(gt_ids)
        if pred.shape != gt.shape:
            raise ValueError(f"predicted ID image has shape {pred.shape}, ground truth {gt.shape}; they must match")
        _check_integer_image(pred, "predicted ID image")
        _check_integer_image(gt, "ground-truth ID image")
        if np.issubdtype(pred.dtype, np.signedinteger) and pred.size and pred.min() < 0:
            pred = np.where(pred < 0, 0, pred)
        self.num_views += 1
        p_ids, p_inv = _compact_ids(pred)
        g_ids, g_inv = _compact_ids(gt)
        n_g = len(g_ids)
        joint = np.bincount(p_inv * n_g + g_inv, minlength=len(p_ids) * n_g).reshape(len(p_ids), n_g)
        pred_area = joint.sum(axis=1)
        gt_area = joint.sum(axis=0)
        p_obj = p_ids != 0
        g_obj = ~np.isin(g_ids, self._ignore)
        if not g_obj.any():
            # Predicted IDs seen only where no object is visible never score; they need no slot.
            return
        cols = self._indices(self._gt_index, g_ids[g_obj])
        rows = self._indices(self._pred_index, p_ids[p_obj])
        self._ensure_capacity()
        self._gt_visible[cols] += 1
        if rows.size:
            inter = joint[np.ix_(p_obj, g_obj)].astype(np.float64)
            union = pred_area[p_obj][:, None] + gt_area[g_obj][None, :] - inter
            block = np.ix_(rows, cols)
            self._iou_sum[block] += inter / union
            self._co_present[block] += 1

    def result(self) -> TemporalInstanceMetrics:
        """Match predicted IDs to objects over the whole sequence so far and score every object."""
        n_p, n_g = len(self._pred_index), len(self._gt_index)
        iou_sum = self._iou_sum[:n_p, :n_g]
        co = self._co_present[:n_p, :n_g]
        visible = self._gt_visible[:n_g]
        pred_of_row = np.empty(n_p, dtype=np.int64)
        for pid, row in self._pred_index.items():
            pred_of_row[row] = pid
        match: dict[int, int] = {}
        if n_p and n_g:
            rows, cols = linear_sum_assignment(iou_sum, maximize=True)
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                if iou_sum[r, c] > 0.0:
                    match[c] = r
        objects: list[ObjectScore] = []
        for gid, col in sorted(self._gt_index.items()):
            vis = int(visible[col])
            row = match.get(col)
            if row is None:
                objects.append(ObjectScore(gid, None, 0.0, 0.0, vis, 0))
                continue
            detected = int(co[row, col])
            objects.append(
                ObjectScore(
                    gt_id=gid,
                    pred_id=int(pred_of_row[row]),
                    t_miou=float(iou_sum[row, col] / vis),
                    t_sr=1.0 if detected == vis else 0.0,
                    views_visible=vis,
                    views_detected=detected,
                )
            )
        t_miou = float(np.mean([o.t_miou for o in objects])) if objects else math.nan
        t_sr = float(np.mean([o.t_sr for o in objects])) if objects else math.nan
        return TemporalInstanceMetrics(t_miou, t_sr, len(objects), n_p, self.num_views, objects)


def temporal_instance_metrics(
    pred: Sequence[np.ndarray], gt: Sequence[np.ndarray], ignore_gt_ids: Iterable[int] = (0,)
) -> TemporalInstanceMetrics:
    """T-mIoU and T-SR of one sequence of per-view instance-ID images (0 = no instance in both).

    `pred` and `gt` are sequences (or [V,H,W] arrays) of the same length with matching shapes
    view by view. See the module docstring for the definitions.
    """
    if len(pred) != len(gt):
        raise ValueError(f"{len(pred)} predicted views but {len(gt)} ground-truth views")
    acc = TemporalInstanceAccumulator(ignore_gt_ids)
    for p, g in zip(pred, gt, strict=True):
        acc.add_view(p, g)
    return acc.result()


# --------------------------------------------------------------------------------------------
# Depth
# --------------------------------------------------------------------------------------------


@dataclass
class DepthMetrics(_DictMixin):
    """Depth error after median scale alignment.

    Values pool all valid pixels of the sequence (each pixel weighs the same), whatever the
    alignment mode.
    """

    abs_rel: float
    """Mean of |s*pred - gt| / gt."""
    inlier_ratio: float
    """Fraction of pixels with max(s*pred/gt, gt/(s*pred)) < threshold."""
    threshold: float
    alignment: str
    """'per_view': one scale per view; 'sequence': one scale for all views; 'none': s = 1."""
    scale: float
    """The scale for 'sequence' and 'none'; the median of the per-view scales for 'per_view'."""
    num_pixels: int
    num_views: int
    """Views with at least one valid pixel."""
    ratio: float = math.nan
    """Median over views of median(pred) / median(gt) before any scaling: how far the depth as given is from
    the true unit (1 for metric depth in metres)."""


def _valid_depth_pairs(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"predicted depth has shape {pred.shape}, ground truth {gt.shape}; they must match")
    mask = np.isfinite(pred) & np.isfinite(gt) & (pred > 0) & (gt > 0)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != gt.shape:
            raise ValueError(f"depth validity mask has shape {valid.shape}, depth {gt.shape}; they must match")
        mask &= valid
    return pred[mask], gt[mask]


def _median_scale(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(np.median(gt) / np.median(pred))


class DepthAccumulator:
    """Depth statistics one view at a time with O(1) memory per view ('per_view' or 'none' alignment).

    'sequence' alignment needs the medians over all pixels of the run, hence all of them:
    use `depth_metrics` on the whole sequence for that.
    """

    def __init__(self, alignment: str = "per_view", threshold: float = 1.03) -> None:
        if alignment not in ("per_view", "none"):
            raise ValueError(f"DepthAccumulator alignment must be 'per_view' or 'none', got {alignment!r}")
        self.alignment = alignment
        self.threshold = float(threshold)
        self._abs_rel_sum = 0.0
        self._inliers = 0
        self._pixels = 0
        self._scales: list[float] = []
        self._ratios: list[float] = []

    def add_view(self, pred_depth: np.ndarray, gt_depth: np.ndarray, valid: np.ndarray | None = None) -> None:
        p, g = _valid_depth_pairs(pred_depth, gt_depth, valid)
        if p.size == 0:
            return
        raw = _median_scale(p, g)
        s = raw if self.alignment == "per_view" else 1.0
        self._add(p * s, g)
        self._scales.append(s)
        self._ratios.append(1.0 / raw)

    def _add(self, p: np.ndarray, g: np.ndarray) -> None:
        self._abs_rel_sum += float(np.sum(np.abs(p - g) / g))
        ratio = np.maximum(p / g, g / p)
        self._inliers += int(np.count_nonzero(ratio < self.threshold))
        self._pixels += int(p.size)

    def result(self) -> DepthMetrics:
        n = self._pixels
        scale = float(np.median(self._scales)) if self._scales else math.nan
        return DepthMetrics(
            abs_rel=self._abs_rel_sum / n if n else math.nan,
            inlier_ratio=self._inliers / n if n else math.nan,
            threshold=self.threshold,
            alignment=self.alignment,
            scale=scale,
            num_pixels=n,
            num_views=len(self._scales),
            ratio=float(np.median(self._ratios)) if self._ratios else math.nan,
        )


def _as_views(x: np.ndarray | Sequence[np.ndarray] | None, n_views_hint: int | None = None) -> list[Any]:
    if x is None:
        return [None] * (n_views_hint or 0)
    if isinstance(x, np.ndarray) and x.ndim == 2:
        return [x]
    return list(x)


def depth_metrics(
    pred_depth: np.ndarray | Sequence[np.ndarray],
    gt_depth: np.ndarray | Sequence[np.ndarray],
    valid: np.ndarray | Sequence[np.ndarray] | None = None,
    alignment: str = "per_view",
    threshold: float = 1.03,
) -> DepthMetrics:
    """Abs.Rel and inlier ratio (delta < `threshold`, 1.03 by default) after median scale alignment.

    Depth is a [H,W] image, a [V,H,W] array or a list of [H,W] images. Valid pixels have finite,
    positive predicted and true depth (and `valid` true where given). The scale multiplies the
    prediction: s = median(gt) / median(pred) over the valid pixels of each view ('per_view',
    for up-to-scale predictions whose scale drifts between windows) or of the whole sequence
    ('sequence', for a prediction with one global scale); 'none' scores metric depth as is.
    """
    if alignment not in DEPTH_ALIGNMENTS:
        raise ValueError(f"depth alignment must be one of {DEPTH_ALIGNMENTS}, got {alignment!r}")
    preds = _as_views(pred_depth)
    gts = _as_views(gt_depth)
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predicted depth views but {len(gts)} ground-truth views")
    masks = _as_views(valid, len(gts))
    if len(masks) != len(gts):
        raise ValueError(f"{len(masks)} depth validity masks for {len(gts)} views")
    if alignment != "sequence":
        acc = DepthAccumulator(alignment, threshold)
        for p, g, m in zip(preds, gts, masks, strict=True):
            acc.add_view(p, g, m)
        return acc.result()
    pairs = [_valid_depth_pairs(p, g, m) for p, g, m in zip(preds, gts, masks, strict=True)]
    pairs = [(p, g) for p, g in pairs if p.size]
    if not pairs:
        return DepthMetrics(math.nan, math.nan, float(threshold), alignment, math.nan, 0, 0)
    all_p = np.concatenate([p for p, _ in pairs])
    all_g = np.concatenate([g for _, g in pairs])
    s = _median_scale(all_p, all_g)
    acc = DepthAccumulator("none", threshold)
    acc._add(all_p * s, all_g)
    res = acc.result()
    ratio = float(np.median([1.0 / _median_scale(p, g) for p, g in pairs]))
    return DepthMetrics(res.abs_rel, res.inlier_ratio, res.threshold, alignment, s, res.num_pixels, len(pairs),
                        ratio)


# --------------------------------------------------------------------------------------------
# Camera trajectory
# --------------------------------------------------------------------------------------------





def camera_positions(poses: np.ndarray, camera_from_world: bool = False) -> np.ndarray:
    """Camera centres [N,3] from [N,3] positions or [N,4,4] / [N,3,4] poses.

    Poses are world-from-camera by default (the centre is the translation column); with
    camera_from_world=True (extrinsics, as engines return them) the centre is -R^T t.
    """
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim == 2 and poses.shape[1] == 3:
        return poses
    if poses.ndim == 3 and poses.shape[1:] in ((4, 4), (3, 4)):
        rot, t = poses[:, :3, :3], poses[:, :3, 3]
        if camera_from_world:
            return -np.einsum("nji,nj->ni", rot, t)
        return t.copy()
    raise ValueError(f"expected [N,3] positions or [N,4,4]/[N,3,4] poses, got shape {poses.shape}")


@dataclass
class PoseMetrics(_DictMixin):
    """Absolute trajectory error of camera positions after aligning the prediction to the truth."""

    ate_rmse: float
    ate_mean: float
    ate_median: float
    ate_max: float
    scale: float
    """Scale of the alignment (1 for a rigid one)."""
    with_scale: bool
    num_poses: int


def pose_ate(
    pred_positions: np.ndarray,
    gt_positions: np.ndarray,
    with_scale: bool = True,
    camera_from_world: bool = False,
) -> PoseMetrics:
    """ATE in the ground truth's units after a Sim(3) (or, with_scale=False, SE(3)) Umeyama fit.

    Accepts [N,3] positions or [N,4,4]/[N,3,4] poses (see `camera_positions`). Rows with
    non-finite values are left out of both the fit and the error.
    """
    p = camera_positions(pred_positions, camera_from_world)
    g = camera_positions(gt_positions, camera_from_world)
    if p.shape != g.shape:
        raise ValueError(f"{p.shape[0]} predicted positions but {g.shape[0]} ground-truth positions")
    keep = np.isfinite(p).all(axis=1) & np.isfinite(g).all(axis=1)
    p, g = p[keep], g[keep]
    if len(p) == 0:
        return PoseMetrics(math.nan, math.nan, math.nan, math.nan, math.nan, with_scale, 0)
    s, rot, t = umeyama_sim3(p, g, with_scale=with_scale)
    err = np.linalg.norm(s * p @ rot.T + t - g, axis=1)
    return PoseMetrics(
        ate_rmse=float(np.sqrt(np.mean(err**2))),
        ate_mean=float(err.mean()),
        ate_median=float(np.median(err)),
        ate_max=float(err.max()),
        scale=s,
        with_scale=with_scale,
        num_poses=int(len(p)),
    )


# --------------------------------------------------------------------------------------------
# scoring protocol
# --------------------------------------------------------------------------------------------


def drop_small_instances(ids: np.ndarray, min_area_px: int) -> np.ndarray:
    """Instance IDs with every instance smaller than `min_area_px` pixels set to 0 (background).

    The scoring protocol for ground truth: a mask the pipeline is configured never to emit
    (clustering.min_instance_area) counts as not visible in that view, rather than as a miss.
    """
    labels, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    keep = np.where(counts >= min_area_px, labels, 0).astype(ids.dtype)
    return keep[inverse.reshape(ids.shape)]
