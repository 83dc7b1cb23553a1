"""One world frame for all windows: similarity alignment of each window's model-frame geometry.

A window's prediction is in its own model frame (the first view's camera frame at a normalised scale),
known only up to a similarity transform. `WorldAligner` finds world_from_model = (s, R, t) per window:

* TF mode (every view has `CameraFrame.world_from_camera`): the robot knows where the cameras are.
  R is the rotation average of world_from_camera_i * camera_i_from_model over the views, s the
  least-squares ratio of camera-centre spreads in world and model frames, t matches the centres'
  means. The output is metric and gravity-aligned, in ``input.world_frame``. When the centres do not
  spread (a static robot), scale comes from the shared-frame fit to the previous window, else from
  the rig baseline.
* Chain mode (no TF): the first window defines ``input.fallback_frame``: origin at the first camera,
  x forward, y left, z up (gravity, if the camera is held level), unit = the model's unit or metres
  from a rig baseline. Every later window is fitted to the previous one by a robust, confidence-
  weighted Umeyama Sim(3) on the points of the views both windows contain (same pixels, so
  correspondences are free). Trimmed re-fits drop outliers (moving things, bad depth).
* Rig baseline (``mapping.rig_baseline_m`` > 0, two or more cameras): the model's distance between
  the first two cameras of a time step against the known baseline gives metric scale without TF.

Scale drift: whenever a reference scale exists (TF or rig) next to a chained fit, the relative
difference s_chain / s_ref - 1 is reported per window; the chained scale of one window relative to the
previous is reported always.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from iggt_ros.config import InputConfig, MappingConfig
from iggt_ros.engine.base import ViewKey, WindowPrediction
from iggt_ros.eval.metrics import umeyama_sim3
from iggt_ros.perception.frames import CameraFrame

log = logging.getLogger(__name__)

FALLBACK_FROM_CAMERA = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
"""Rotation of an OpenCV optical frame into an x-forward, y-left, z-up body frame (REP 103)."""

GRID_STEP = 4
"""Pixel stride of the point grid kept per view for chaining."""
MAX_CORRESPONDENCES = 4000


@dataclass
class Alignment:
    """world = scale * rotation @ model + translation, for one window."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray
    mode: str
    """'tf', 'chain', 'first' (the window that defines the frame) or 'reuse' (nothing to fit: previous one)."""
    metric: bool
    frame_id: str
    residual: float = float("nan")
    """Trimmed RMS distance of the fitted correspondences, in world units (chain mode)."""
    num_correspondences: int = 0
    scale_ratio: float = float("nan")
    """Chained scale relative to the previous window's (how much the model's unit changed)."""
    scale_drift: float | None = None
    """s_chain / s_reference - 1 when both a chained fit and a TF or rig scale exist."""
    warnings: list[str] = field(default_factory=list)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Model-frame points [...,3] -> world frame (float32)."""
        m = (self.scale * self.rotation).astype(np.float32)
        t = self.translation.astype(np.float32)
        # einsum: BLAS handles [N,3] x [3,3] products poorly (tens of ms for 100k points)
        return np.einsum("ij,...j->...i", m, np.asarray(points, np.float32)) + t

    def matrix(self) -> np.ndarray:
        out = np.eye(4)
        out[:3, :3] = self.scale * self.rotation
        out[:3, 3] = self.translation
        return out


def _project_so3(m: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    return u @ np.diag([1.0, 1.0, d]) @ vt


def camera_centres(extrinsics: np.ndarray) -> np.ndarray:
    """[V,3] camera centres from [V,3,4] camera-from-world extrinsics."""
    r = extrinsics[:, :, :3].astype(np.float64)
    t = extrinsics[:, :, 3].astype(np.float64)
    return -np.einsum("vji,vj->vi", r, t)


def robust_sim3(src: np.ndarray, dst: np.ndarray, weights: np.ndarray, iterations: int = 3,
                with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray, float, int]:
    """Weighted Umeyama with trimmed re-fits: (s, R, t, rms of inliers, number of inliers)."""
    keep = np.isfinite(src).all(1) & np.isfinite(dst).all(1) & (weights > 0)
    s, r, t = 1.0, np.eye(3), np.zeros(3)
    for _ in range(iterations):
        if keep.sum() < 3:
            break
        s, r, t = umeyama_sim3(src[keep], dst[keep], weights[keep], with_scale=with_scale)
        res = np.linalg.norm(dst - (s * np.einsum("ij,nj->ni", r, src) + t), axis=1)
        res[~np.isfinite(res)] = np.inf
        med = float(np.median(res[keep]))
        new_keep = keep & (res <= max(3.0 * med, 1e-9))
        if new_keep.sum() == keep.sum():
            break
        keep = new_keep
    rms = float(np.sqrt(np.mean(np.linalg.norm(dst[keep] - (s * src[keep] @ r.T + t), axis=1) ** 2))) \
        if keep.any() else float("nan")
    return s, r, t, rms, int(keep.sum())


class WorldAligner:
    """Aligns successive windows into one world frame."""

    def __init__(self, mapping: MappingConfig, input_config: InputConfig) -> None:
        self.mapping = mapping
        self.input = input_config
        self._grid: dict[ViewKey, tuple[np.ndarray, np.ndarray]] = {}
        self._last: Alignment | None = None
        self.max_abs_scale_drift = 0.0

    def reset(self) -> None:
        self._grid.clear()
        self._last = None
        self.max_abs_scale_drift = 0.0

    @property
    def last(self) -> Alignment | None:
        return self._last

    def align(self, pred: WindowPrediction, views: Sequence[ViewKey], frames: Sequence[CameraFrame],
              valid: np.ndarray) -> Alignment:
        """Find world_from_model of this window and remember its points for the next one."""
        warnings: list[str] = []
        chain = self._chain_fit(pred, views, valid)
        rig_scale = self._rig_scale(pred, frames)
        tf_ok = self.input.use_tf and len(frames) > 0 and all(f.world_from_camera is not None for f in frames)
        if tf_ok:
            result = self._tf_fit(pred, frames, chain, rig_scale, warnings)
        elif chain is not None:
            s, r, t, rms, n = chain
            last = self._last
            assert last is not None  # a chained fit needs a previous window
            result = Alignment(s, r, t, "chain", last.metric, last.frame_id, rms, n,
                               scale_ratio=s / last.scale, warnings=warnings)
            if rig_scale is not None:
                result = self._apply_rig_to_chain(result, pred, views, valid, rig_scale)
        elif self._last is None:
            result = self._first(pred, rig_scale)
        else:
            msg = ("window shares no frames with the previous one (window.stride equals window.size, or a view was "
                   "missing): the world frame cannot be chained, the previous alignment is reused and this window "
                   "may be offset")
            log.warning(msg)
            warnings.append(msg)
            last = self._last
            result = Alignment(last.scale, last.rotation, last.translation, "reuse", last.metric, last.frame_id,
                               warnings=warnings)
        if result.scale_drift is not None:
            self.max_abs_scale_drift = max(self.max_abs_scale_drift, abs(result.scale_drift))
        self._remember(pred, views, valid, result)
        self._last = result
        return result

    # ------------------------------------------------------------------ modes
    def _first(self, pred: WindowPrediction, rig_scale: float | None) -> Alignment:
        r_cm = pred.extrinsics[0, :, :3].astype(np.float64)
        t_cm = pred.extrinsics[0, :, 3].astype(np.float64)
        s = rig_scale if rig_scale is not None else 1.0
        rot = FALLBACK_FROM_CAMERA @ r_cm
        trans = s * (FALLBACK_FROM_CAMERA @ t_cm)
        return Alignment(s, rot, trans, "first", rig_scale is not None, self.input.fallback_frame)

    def _tf_fit(self, pred: WindowPrediction, frames: Sequence[CameraFrame],
                chain: tuple[float, np.ndarray, np.ndarray, float, int] | None, rig_scale: float | None,
                warnings: list[str]) -> Alignment:
        poses = np.stack([np.asarray(f.world_from_camera, np.float64) for f in frames])
        r_cm = pred.extrinsics[:, :, :3].astype(np.float64)
        rot = _project_so3(np.einsum("vij,vjk->ik", poses[:, :3, :3], r_cm))
        c_model = camera_centres(pred.extrinsics)
        c_world = poses[:, :3, 3]
        dm = c_model - c_model.mean(0)
        dw = c_world - c_world.mean(0)
        spread_world = float(np.sqrt((dw ** 2).sum(1).mean()))
        denom = float((dm ** 2).sum())
        tf_scale = float(np.sum((dm @ rot.T) * dw) / denom) if denom > 0 and spread_world >= 0.02 else None
        drift = None
        if tf_scale is not None and tf_scale > 0:
            s = tf_scale
            if chain is not None and self._last is not None and self._last.metric:
                drift = chain[0] / s - 1.0
        elif chain is not None and self._last is not None and self._last.metric:
            s = chain[0]
        elif rig_scale is not None:
            s = rig_scale
        else:
            s = self._last.scale if self._last is not None else 1.0
            msg = ("cameras did not move within the window and no rig baseline is configured: metric scale is "
                   "unobservable, the previous window's scale is used")
            log.warning(msg)
            warnings.append(msg)
        trans = c_world.mean(0) - s * rot @ c_model.mean(0)
        res = np.linalg.norm(c_world - (s * c_model @ rot.T + trans), axis=1)
        return Alignment(s, rot, trans, "tf", True, self.input.world_frame, float(np.sqrt(np.mean(res ** 2))),
                         len(frames), scale_ratio=s / self._last.scale if self._last else float("nan"),
                         scale_drift=drift, warnings=warnings)

    def _apply_rig_to_chain(self, chained: Alignment, pred: WindowPrediction, views: Sequence[ViewKey],
                            valid: np.ndarray, rig_scale: float) -> Alignment:
        """Rig baseline known: keep the scale metric (no drift) and report how far the chain alone drifted."""
        drift = chained.scale / rig_scale - 1.0 if self._last is not None and self._last.metric else None
        fit = self._chain_fit(pred, views, valid, fixed_scale=rig_scale)
        if fit is None:
            return chained
        s, r, t, rms, n = fit
        return Alignment(s, r, t, "chain", True, chained.frame_id, rms, n, scale_ratio=chained.scale_ratio,
                         scale_drift=drift, warnings=chained.warnings)

    def _rig_scale(self, pred: WindowPrediction, frames: Sequence[CameraFrame]) -> float | None:
        """Metres per model unit from the known baseline between the first two cameras."""
        baseline = self.mapping.rig_baseline_m
        cams = list(dict.fromkeys(f.camera for f in frames))
        if baseline <= 0 or len(cams) < 2:
            return None
        centres = camera_centres(pred.extrinsics)
        by_stamp: dict[int, dict[str, int]] = {}
        for i, f in enumerate(frames):
            by_stamp.setdefault(f.stamp_ns, {})[f.camera] = i
        dists = [float(np.linalg.norm(centres[idx[cams[0]]] - centres[idx[cams[1]]]))
                 for idx in by_stamp.values() if cams[0] in idx and cams[1] in idx]
        dists = [d for d in dists if d > 1e-9]
        if not dists:
            return None
        return baseline / float(np.median(dists))

    def _chain_fit(self, pred: WindowPrediction, views: Sequence[ViewKey], valid: np.ndarray,
                   fixed_scale: float | None = None) -> tuple[float, np.ndarray, np.ndarray, float, int] | None:
        if self._last is None:
            return None
        src, dst, wts = [], [], []
        for i, key in enumerate(views):
            stored = self._grid.get(key)
            if stored is None:
                continue
            pts_prev, w_prev = stored
            pts = pred.world_points[i, ::GRID_STEP, ::GRID_STEP].reshape(-1, 3).astype(np.float64)
            conf = pred.world_points_conf[i, ::GRID_STEP, ::GRID_STEP].reshape(-1).astype(np.float64)
            ok = valid[i, ::GRID_STEP, ::GRID_STEP].reshape(-1)
            if pts.shape != pts_prev.shape:
                continue
            src.append(pts[ok])
            dst.append(pts_prev[ok])
            wts.append(np.minimum(np.nan_to_num(conf[ok]), w_prev[ok]))
        if not src:
            return None
        src_a, dst_a, w_a = np.concatenate(src), np.concatenate(dst), np.concatenate(wts)
        ok = np.isfinite(dst_a).all(1) & np.isfinite(src_a).all(1) & (w_a > 0)
        src_a, dst_a, w_a = src_a[ok], dst_a[ok], w_a[ok]
        if len(src_a) < 10:
            return None
        if len(src_a) > MAX_CORRESPONDENCES:  # a few thousand points pin a Sim(3) down; more only cost time
            pick = np.random.default_rng(len(src_a)).choice(len(src_a), MAX_CORRESPONDENCES, replace=False)
            src_a, dst_a, w_a = src_a[pick], dst_a[pick], w_a[pick]
        if fixed_scale is not None:
            s, r, t, rms, n = robust_sim3(src_a * fixed_scale, dst_a, w_a, with_scale=False)
            return fixed_scale, r, t, rms, n
        return robust_sim3(src_a, dst_a, w_a)

    def _remember(self, pred: WindowPrediction, views: Sequence[ViewKey], valid: np.ndarray,
                  alignment: Alignment) -> None:
        """Keep this window's world points on a coarse grid, for the next window's fit (last window only)."""
        grid: dict[ViewKey, tuple[np.ndarray, np.ndarray]] = {}
        for i, key in enumerate(views):
            pts = pred.world_points[i, ::GRID_STEP, ::GRID_STEP].reshape(-1, 3)
            w = np.nan_to_num(pred.world_points_conf[i, ::GRID_STEP, ::GRID_STEP].reshape(-1).astype(np.float64))
            ok = valid[i, ::GRID_STEP, ::GRID_STEP].reshape(-1)
            world = alignment.apply(pts).astype(np.float64)
            world[~ok] = np.nan
            grid[key] = (world, np.where(ok, w, 0.0))
        self._grid = grid
