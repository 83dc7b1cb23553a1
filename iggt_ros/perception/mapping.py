"""One world frame for all windows: similarity alignment of each window's model-frame geometry.

A window's prediction is in its own model frame (the first view's camera frame at a normalised scale),
known only up to a similarity transform. `WorldAligner` finds world_from_model = (s, R, t) per window:

* TF mode (every view has `CameraFrame.world_from_camera`): the robot knows where the cameras are, in
  metres, better than the model does. Each view is placed by its TF pose and its geometry is its depth
  times the window's metric scale s, back-projected with the camera's own intrinsics (camera_info
  scaled to the model input; the model's prediction when there is none). s comes from the depth and
  the images with the TF poses (`metric_scale.fit_metric_scale`), fused with the scale carried over
  from the previous metric window through the views both windows contain (same pixels, so the ratio of
  the previous window's metric depth to this window's model depth is the scale). When the cameras do
  not translate enough to observe s, the carried scale alone is used; with neither, the previous
  window's scale (and a warning). R and t are the rigid fit of the model's point map, scaled by s, onto
  that geometry (they place the model's own points, e.g. for a window that must be reused). The output
  is metric and gravity-aligned, in ``input.world_frame``.
* Chain mode (no TF): the first window defines ``input.fallback_frame``: origin at the first camera,
  x forward, y left, z up (gravity, if the camera is held level), unit = the model's unit or metres
  from a rig baseline. Every later window is fitted to the previous one by a robust, confidence-
  weighted Umeyama Sim(3) on the points of the views both windows contain (same pixels, so
  correspondences are free). Trimmed re-fits drop outliers (moving things, bad depth).
* Rig baseline (``mapping.rig_baseline_m`` > 0, two or more cameras): the model's distance between
  the first two cameras of a time step against the known baseline gives metric scale without TF.

Which frame (one per message, never a mix):

* TF for every view of the very first window, with an observable scale: ``input.world_frame`` from the
  start.
* Otherwise the output starts in ``input.fallback_frame`` (on a robot the first images usually arrive
  before TF) and stays there until TF has given a pose for every view in ``mapping.tf_settle_windows``
  windows in a row, at least one of them with an observable scale. Each of those windows pairs its
  geometry as published in the fallback frame with the same pixels placed by TF (when its scale is
  observable); the similarity fitted to those pairs
  (`Alignment.reexpress`, world_from_fallback) re-expresses the whole map, instances, boxes,
  centroids and tracks, and from that window on everything is published in the world frame.
* Once in the world frame it stays there: a window without TF for every view (late TF, a lookup past
  ``input.tf_timeout_s``, a dropout) is chained onto the previous windows, whose points are in the world
  frame, with the metric scale carried through the shared views; it is flagged (`Alignment.tf_dropout`),
  warned about at the start of each gap and counted in `WorldAligner.tf_dropout_windows`.

Scale drift: whenever a reference scale exists (TF or rig) next to a chained one, the relative
difference s_chain / s_ref - 1 is reported per window (in TF mode the carried scale against the one
the TF poses give); the scale of one window relative to the previous is reported always.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from iggt_ros.config import InputConfig, MappingConfig
from iggt_ros.engine.base import ViewKey, WindowPrediction
from iggt_ros.engine.preprocess import scale_intrinsics
from iggt_ros.perception.frames import CameraFrame
from iggt_ros.perception.metric_scale import ScaleFit, fit_metric_scale
from iggt_ros.spatial import umeyama_sim3

log = logging.getLogger(__name__)

FALLBACK_FROM_CAMERA = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
"""Rotation of an OpenCV optical frame into an x-forward, y-left, z-up body frame (REP 103)."""

GRID_STEP = 4
"""Pixel stride of the point grid kept per view for chaining."""
MAX_CORRESPONDENCES = 4000
PLACEMENT_POINTS = 1000
"""Points of the rigid fit that places the model's point map on the TF-placed depth (TF mode)."""
SCALE_MEMORY = 5
"""In TF mode the metric scale is a running mean (in log) of the per-window estimates carried from window
to window; the newest estimate weighs at least 1 / (SCALE_MEMORY + 1)."""


@dataclass
class Similarity:
    """new = scale * rotation @ old + translation: re-expresses points of frame `source` in frame `target`."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray
    source: str = ""
    target: str = ""
    residual: float = float("nan")
    """Trimmed RMS distance of the fitted correspondences, in target units."""
    num_correspondences: int = 0

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Points [...,3] of the source frame in the target frame (float64)."""
        return self.scale * np.einsum("ij,...j->...i", self.rotation, np.asarray(points, np.float64)) \
            + self.translation

    def apply_extent(self, extent: np.ndarray) -> np.ndarray:
        """Axis-aligned size [3] of a box in the source frame -> that of the rotated, scaled box in the target."""
        return self.scale * np.abs(self.rotation) @ np.asarray(extent, np.float64)


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
    view_poses: np.ndarray | None = None
    """[V,4,4] world_from_camera of each view from TF (TF mode): the views are placed by these, not by the
    similarity, and their geometry is their depth times `scale`. None in the other modes."""
    view_intrinsics: np.ndarray | None = None
    """[V,3,3] intrinsics at the model resolution (pixel centres at integer coordinates) that back-project the
    depth in TF mode."""
    scale_source: str = ""
    """Where the scale came from: 'tf' (depth and images with the TF poses), 'tf+carried' (that, fused with the
    scale carried from the previous window), 'carried', 'previous' (unobservable: the last one kept), 'rig',
    'chain' or 'model'."""
    scale_fit: ScaleFit | None = None
    """The TF scale search of this window (TF mode), for diagnostics."""
    tf_dropout: bool = False
    """The output was in the world frame but this window had no TF pose for every view: it stayed there,
    chained onto the previous windows."""
    reexpress: Similarity | None = None
    """Set on the window that moves the output from the fallback frame to the world frame: how everything kept
    so far (object map, tracks) is re-expressed before this window's instances join it."""

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Model-frame points [...,3] -> world frame (float32)."""
        m_t = np.ascontiguousarray((self.scale * self.rotation).T, dtype=np.float32)
        # a C-contiguous right operand keeps the product in one BLAS call (a transposed view, or einsum, is
        # 2 to 5 times slower on the 85 k points of a window's grid)
        out = np.asarray(points, np.float32) @ m_t
        out += self.translation.astype(np.float32)
        return out

    def view_points(self, pred: WindowPrediction, step: int = 1) -> np.ndarray:
        """[V,h,w,3] output-frame points of every `step`-th pixel (rows and columns) of each view (float32).

        TF mode: each view's depth, scaled and back-projected, placed by its TF pose. Otherwise the
        model's point map through the similarity.
        """
        if self.view_poses is None or self.view_intrinsics is None:
            return self.apply(pred.world_points[:, ::step, ::step])
        return back_project(pred.depth[:, ::step, ::step] * np.float32(self.scale), self.view_intrinsics,
                            self.view_poses, step)

    def pixel_points(self, pred: WindowPrediction, view: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        """[N,3] output-frame points (float32) of the pixels (view[i], row[i], col[i]): `view_points` where only a
        few pixels of a window are needed."""
        if self.view_poses is None or self.view_intrinsics is None:
            return self.apply(pred.world_points[view, row, col])
        pix = np.stack([col, row, np.ones_like(col)], axis=-1).astype(np.float32)
        direction = np.einsum("nij,nj->ni", self._rays[view], pix)
        depth = pred.depth[view, row, col].astype(np.float32) * np.float32(self.scale)
        return direction * depth[:, None] + np.asarray(self.view_poses, np.float32)[view, :3, 3]

    @cached_property
    def _rays(self) -> np.ndarray:
        """`_pixel_rays` of the TF-placed views, worked out once: `pixel_points` is called several times a window."""
        return _pixel_rays(self.view_intrinsics, self.view_poses)

    def camera_poses(self, extrinsics: np.ndarray) -> np.ndarray:
        """[V,4,4] world_from_camera of the views in the output frame (rigid; depth carries the scale).

        TF mode: the TF poses. Otherwise from the model's [V,3,4] camera_from_model extrinsics: the rotation
        of a camera is R_a @ R_i^T and its centre the aligned model-frame centre.
        """
        if self.view_poses is not None:
            return np.array(self.view_poses, np.float64)
        r = np.asarray(extrinsics, np.float64)[:, :, :3]
        t = np.asarray(extrinsics, np.float64)[:, :, 3]
        poses = np.tile(np.eye(4), (len(r), 1, 1))
        poses[:, :3, :3] = np.einsum("ij,vkj->vik", self.rotation, r)
        centres = -np.einsum("vji,vj->vi", r, t)
        poses[:, :3, 3] = self.scale * np.einsum("ij,vj->vi", self.rotation, centres) + self.translation
        return poses

    def matrix(self) -> np.ndarray:
        out = np.eye(4)
        out[:3, :3] = self.scale * self.rotation
        out[:3, 3] = self.translation
        return out


def _pixel_rays(intrinsics: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """[V,3,3] float32: R_i @ K_i^-1, the world direction, per unit of depth, of pixel (u, v) is this @ (u, v, 1)."""
    poses = np.asarray(poses, np.float64)
    return np.einsum("vij,vjk->vik", poses[:, :3, :3], np.linalg.inv(np.asarray(intrinsics, np.float64))
                     ).astype(np.float32)


def back_project(depth: np.ndarray, intrinsics: np.ndarray, poses: np.ndarray, step: int = 1) -> np.ndarray:
    """[V,h,w,3] world points (float32) of [V,h,w] depth sampled at every `step`-th pixel of the full image.

    intrinsics are those of the full image (pixel centres at integer coordinates); poses world_from_camera.
    """
    _, h, w = depth.shape
    poses = np.asarray(poses, np.float64)
    m = _pixel_rays(intrinsics, poses)
    u = (np.arange(w, dtype=np.float32) * step)[None, None, :, None]
    vv = (np.arange(h, dtype=np.float32) * step)[None, :, None, None]
    rays = m[:, None, None, :, 0] * u + m[:, None, None, :, 1] * vv + m[:, None, None, :, 2]
    return rays * np.asarray(depth, np.float32)[..., None] + poses[:, None, None, :3, 3].astype(np.float32)


def model_intrinsics(pred: WindowPrediction, frames: Sequence[CameraFrame]) -> np.ndarray:
    """[V,3,3] intrinsics at the model resolution with pixel centres at integer coordinates.

    The camera's own (camera_info, scaled to the model input) where the frame has them; otherwise the
    model's prediction, whose pixel centres sit at half-integers (shifted by half a pixel here).
    """
    h, w = pred.image_size
    out = np.zeros((len(frames), 3, 3))
    for i, frame in enumerate(frames):
        if frame.intrinsics is not None:
            out[i] = scale_intrinsics(np.asarray(frame.intrinsics, np.float64), np.asarray(frame.image).shape[:2],
                                      (h, w))
        else:
            k = np.asarray(pred.intrinsics[i], np.float64).copy()
            k[0, 2] -= 0.5
            k[1, 2] -= 0.5
            out[i] = k
    return out


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


@dataclass
class _GridView:
    """What a window leaves of one view for the next window: output-frame points and depth on a coarse grid."""

    points: np.ndarray
    """[N,3] float64, NaN where the pixel was not valid."""
    weights: np.ndarray
    """[N] confidence, 0 where not valid."""
    depth: np.ndarray
    """[N] depth in output units (metres when the window was metric), NaN where not valid."""


@dataclass
class _TfScale:
    """The metric scale a TF window would use, before anything is committed."""

    scale: float
    source: str
    drift: float | None
    weight: int
    """SCALE_MEMORY bookkeeping once the scale is used."""
    fit: ScaleFit


class WorldAligner:
    """Aligns successive windows into one world frame, and decides which frame that is (module docstring)."""

    def __init__(self, mapping: MappingConfig, input_config: InputConfig) -> None:
        self.mapping = mapping
        self.input = input_config
        self._grid: dict[ViewKey, _GridView] = {}
        self._last: Alignment | None = None
        self._scale_weight = 0
        self._in_world = False
        self._settle: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = []
        """Per window in a row with TF while in the fallback frame: (fallback points, TF points, weights), or
        None when its scale was unobservable."""
        self._dropout_run = 0
        self._warned_unobservable = False
        self.max_abs_scale_drift = 0.0
        self.tf_dropout_windows = 0
        """Windows aligned without TF after the output moved to input.world_frame."""

    def reset(self) -> None:
        self._grid.clear()
        self._last = None
        self._scale_weight = 0
        self._in_world = False
        self._settle.clear()
        self._dropout_run = 0
        self._warned_unobservable = False
        self.max_abs_scale_drift = 0.0

    @property
    def last(self) -> Alignment | None:
        return self._last

    def align(self, pred: WindowPrediction, views: Sequence[ViewKey], frames: Sequence[CameraFrame],
              valid: np.ndarray) -> Alignment:
        """Find world_from_model of this window and remember its points for the next one."""
        warnings: list[str] = []
        tf_ok = self.input.use_tf and len(frames) > 0 and all(f.world_from_camera is not None for f in frames)
        if self._in_world and not tf_ok:
            result = self._dropout(pred, views, valid, warnings)
        else:
            tf = self._tf_inputs(pred, views, frames, valid, warnings) if tf_ok else None
            if tf is not None and self._dropout_run:
                log.info("TF camera poses are back after %d window(s) without them", self._dropout_run)
                self._dropout_run = 0
            if self._in_world or (self._last is None and tf is not None and tf[2] is not None):
                assert tf is not None
                result = self._tf_alignment(pred, valid, *tf, warnings)
                self._in_world = True
            else:
                result = self._model_fit(pred, views, frames, valid, warnings)
                if tf is None:
                    self._settle.clear()  # "in a row": a window without TF starts the count again
                else:
                    result = self._settle_step(pred, valid, result, *tf, warnings)
        if result.scale_drift is not None:
            self.max_abs_scale_drift = max(self.max_abs_scale_drift, abs(result.scale_drift))
        self._remember(pred, views, valid, result)
        self._last = result
        return result

    # ------------------------------------------------------------------ modes
    def _model_fit(self, pred: WindowPrediction, views: Sequence[ViewKey], frames: Sequence[CameraFrame],
                   valid: np.ndarray, warnings: list[str]) -> Alignment:
        """Without TF: chain onto the previous window, or define the frame, or reuse the last alignment."""
        chain = self._chain_fit(pred, views, valid)
        rig_scale = self._rig_scale(pred, frames)
        last = self._last
        if chain is not None:
            assert last is not None  # a chained fit needs a previous window
            s, r, t, rms, n = chain
            result = Alignment(s, r, t, "chain", last.metric, last.frame_id, rms, n, scale_ratio=s / last.scale,
                               warnings=warnings, scale_source="chain")
            if rig_scale is not None:
                result = self._apply_rig_to_chain(result, pred, views, valid, rig_scale)
            return result
        if last is None:
            return self._first(pred, rig_scale, warnings)
        return self._reuse(warnings)

    def _reuse(self, warnings: list[str], tf_dropout: bool = False) -> Alignment:
        msg = ("window shares no frames with the previous one (window.stride equals window.size, or a view was "
               "missing): the world frame cannot be chained, the previous alignment is reused and this window "
               "may be offset")
        log.warning(msg)
        warnings.append(msg)
        last = self._last
        assert last is not None
        return Alignment(last.scale, last.rotation, last.translation, "reuse", last.metric, last.frame_id,
                         warnings=warnings, scale_source=last.scale_source, tf_dropout=tf_dropout)

    def _first(self, pred: WindowPrediction, rig_scale: float | None, warnings: list[str]) -> Alignment:
        r_cm = pred.extrinsics[0, :, :3].astype(np.float64)
        t_cm = pred.extrinsics[0, :, 3].astype(np.float64)
        s = rig_scale if rig_scale is not None else 1.0
        rot = FALLBACK_FROM_CAMERA @ r_cm
        trans = s * (FALLBACK_FROM_CAMERA @ t_cm)
        return Alignment(s, rot, trans, "first", rig_scale is not None, self.input.fallback_frame,
                         warnings=warnings, scale_source="rig" if rig_scale is not None else "model")

    def _tf_inputs(self, pred: WindowPrediction, views: Sequence[ViewKey], frames: Sequence[CameraFrame],
                   valid: np.ndarray, warnings: list[str]) -> tuple[np.ndarray, np.ndarray, _TfScale | None]:
        """(TF poses, intrinsics, metric scale or None) of a window whose views all have a TF pose."""
        poses = np.stack([np.asarray(f.world_from_camera, np.float64) for f in frames])
        intrinsics = model_intrinsics(pred, frames)
        last = self._last
        carried = self._carried_scale(pred, views, valid) if last is not None and last.metric else None
        prior = carried if carried is not None else (last.scale if last is not None and last.metric else None)
        fit = fit_metric_scale(pred.depth, valid, pred.images, intrinsics, poses, prior)
        weight = self._scale_weight
        if fit.scale is not None and carried is not None:
            s = math.exp((weight * math.log(carried) + math.log(fit.scale)) / (weight + 1))
            return poses, intrinsics, _TfScale(s, "tf+carried", carried / fit.scale - 1.0,
                                               min(weight + 1, SCALE_MEMORY), fit)
        if fit.scale is not None:
            return poses, intrinsics, _TfScale(fit.scale, "tf", None, 1, fit)
        if carried is not None:
            return poses, intrinsics, _TfScale(carried, "carried", None, weight, fit)
        if self._in_world and last is not None:
            msg = (f"metric scale is unobservable in this window ({fit.reason}) and no view is shared with the "
                   "previous window: the previous window's scale is used")
            log.warning(msg)
            warnings.append(msg)
            return poses, intrinsics, _TfScale(last.scale, "previous", None, weight, fit)
        msg = (f"TF gives the camera poses but the metric scale is unobservable so far ({fit.reason}): the output "
               f"stays in {self.input.fallback_frame}; move the cameras (or set mapping.rig_baseline_m for a rig)")
        if not self._warned_unobservable:
            log.warning(msg)
            self._warned_unobservable = True
        warnings.append(msg)
        return poses, intrinsics, None

    def _tf_alignment(self, pred: WindowPrediction, valid: np.ndarray, poses: np.ndarray, intrinsics: np.ndarray,
                      tf: _TfScale | None, warnings: list[str]) -> Alignment:
        """TF mode (see the module docstring): views placed by TF, depth times the metric scale."""
        assert tf is not None
        self._scale_weight = tf.weight
        last = self._last
        s = tf.scale
        r, t, rms, n = self._place_model_points(pred, valid, s, intrinsics, poses)
        same_frame = last is not None and last.frame_id == self.input.world_frame
        return Alignment(s, r, t, "tf", True, self.input.world_frame, rms, n,
                         scale_ratio=s / last.scale if same_frame else float("nan"), scale_drift=tf.drift,
                         warnings=warnings, view_poses=poses, view_intrinsics=intrinsics, scale_source=tf.source,
                         scale_fit=tf.fit)

    def _dropout(self, pred: WindowPrediction, views: Sequence[ViewKey], valid: np.ndarray,
                 warnings: list[str]) -> Alignment:
        """In the world frame without TF for every view: stay there, chained onto the previous windows."""
        last = self._last
        assert last is not None
        self.tf_dropout_windows += 1
        self._dropout_run += 1
        carried = self._carried_scale(pred, views, valid) if last.metric else None
        msg = (f"no TF pose for every view of this window (TF late or dropped out): the output stays in "
               f"{last.frame_id}, this window is chained onto the previous ones"
               + (" with the metric scale carried over" if carried is not None else ""))
        if self._dropout_run == 1:
            log.warning(msg)
        warnings.append(msg)
        chain = self._chain_fit(pred, views, valid, fixed_scale=carried)
        if chain is None:
            return self._reuse(warnings, tf_dropout=True)
        s, r, t, rms, n = chain
        return Alignment(s, r, t, "chain", last.metric, last.frame_id, rms, n, scale_ratio=s / last.scale,
                         warnings=warnings, scale_source="carried" if carried is not None else "chain",
                         tf_dropout=True)

    def _settle_step(self, pred: WindowPrediction, valid: np.ndarray, fallback: Alignment, poses: np.ndarray,
                     intrinsics: np.ndarray, tf: _TfScale | None, warnings: list[str]) -> Alignment:
        """A window in the fallback frame with TF: count it; after enough in a row, move the map to TF's frame.

        Each such window whose scale is observable gives correspondences between its geometry as published
        in the fallback frame and the same pixels placed by TF; the similarity fitted to those of the last
        ``mapping.tf_settle_windows`` windows re-expresses the map (`Alignment.reexpress`), and this window
        is published in the world frame (at its own TF scale, or, when that is unobservable, at the scale
        the similarity gives its fallback-frame depth).
        """
        if tf is not None:
            self._warned_unobservable = False
            step = GRID_STEP
            ok = valid[:, ::step, ::step]
            src = fallback.view_points(pred, step)[ok].astype(np.float64)
            dst = back_project(pred.depth[:, ::step, ::step] * np.float32(tf.scale), intrinsics, poses, step)[ok]
            wts = np.nan_to_num(pred.world_points_conf[:, ::step, ::step][ok].astype(np.float64))
            if len(src) > MAX_CORRESPONDENCES:
                pick = np.random.default_rng(len(src)).choice(len(src), MAX_CORRESPONDENCES, replace=False)
                src, dst, wts = src[pick], dst[pick], wts[pick]
            self._settle.append((src, dst.astype(np.float64), wts))
        else:
            self._settle.append(None)
        needed = self.mapping.tf_settle_windows
        del self._settle[:-needed]
        pairs = [p for p in self._settle if p is not None]
        if len(self._settle) < needed or not pairs:
            log.info("TF gives camera poses (%d of %d windows in a row): the output stays in %s until then",
                     len(self._settle), needed, fallback.frame_id)
            return fallback
        s, r, t, rms, n = robust_sim3(*(np.concatenate(a) for a in zip(*pairs, strict=True)))
        self._settle.clear()
        if tf is None:
            tf = _TfScale(s * fallback.scale, "carried", None, self._scale_weight,
                          ScaleFit(None, math.nan, 1.0, 0, 0.0, "carried from the fallback frame"))
        result = self._tf_alignment(pred, valid, poses, intrinsics, tf, warnings)
        self._in_world = True
        result.reexpress = Similarity(s, r, t, fallback.frame_id, result.frame_id, rms, n)
        log.warning("TF has given camera poses for %d windows in a row: the map is re-expressed from %s into %s "
                    "(scale %.4g, fit residual %.3f m over %d points) and published in %s from now on",
                    needed, fallback.frame_id, result.frame_id, s, rms, n, result.frame_id)
        return result

    @staticmethod
    def _place_model_points(pred: WindowPrediction, valid: np.ndarray, scale: float, intrinsics: np.ndarray,
                            poses: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, int]:
        """Rigid fit of the model's point map, times `scale`, onto the TF-placed depth: (R, t, rms, inliers)."""
        view, row, col = np.nonzero(valid[:, ::GRID_STEP, ::GRID_STEP])
        if len(view) > PLACEMENT_POINTS:  # a rigid fit of two point sets that agree needs few points
            pick = np.sort(np.random.default_rng(len(view)).choice(len(view), PLACEMENT_POINTS, replace=False))
            view, row, col = view[pick], row[pick], col[pick]
        row, col = row * GRID_STEP, col * GRID_STEP
        inv_k = np.linalg.inv(np.asarray(intrinsics, np.float64))[view]
        pix = np.stack([col, row, np.ones_like(col)], axis=-1).astype(np.float64)
        cam = np.einsum("nij,nj->ni", inv_k, pix) * (pred.depth[view, row, col].astype(np.float64) * scale)[:, None]
        dst = np.einsum("nij,nj->ni", poses[view, :3, :3], cam) + poses[view, :3, 3]
        src = pred.world_points[view, row, col].astype(np.float64) * scale
        wts = np.nan_to_num(pred.world_points_conf[view, row, col].astype(np.float64))
        _, r, t, rms, n = robust_sim3(src, dst, wts, iterations=2, with_scale=False)
        return r, t, rms, n

    def _carried_scale(self, pred: WindowPrediction, views: Sequence[ViewKey], valid: np.ndarray) -> float | None:
        """Previous window's output depth over this window's model depth on the views both contain."""
        ratios = []
        for i, key in enumerate(views):
            stored = self._grid.get(key)
            if stored is None:
                continue
            depth = pred.depth[i, ::GRID_STEP, ::GRID_STEP].reshape(-1).astype(np.float64)
            ok = valid[i, ::GRID_STEP, ::GRID_STEP].reshape(-1)
            if depth.shape != stored.depth.shape:
                continue
            ok = ok & np.isfinite(stored.depth) & (stored.depth > 0) & (depth > 0)
            ratios.append(stored.depth[ok] / depth[ok])
        ratio = np.concatenate(ratios) if ratios else np.zeros(0)
        return float(np.median(ratio)) if len(ratio) >= 10 else None

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
        # the correspondences are chosen first (by index) and only the chosen ones gathered: a window shares tens of
        # thousands of grid points with the previous one, a few thousand pin a Sim(3) down
        grid = pred.world_points[0, ::GRID_STEP, ::GRID_STEP].shape[:2]
        chosen: list[tuple[int, np.ndarray, _GridView]] = []
        for i, key in enumerate(views):
            stored = self._grid.get(key)
            if stored is None or len(stored.weights) != grid[0] * grid[1]:
                continue
            # the stored grid is NaN with weight 0 where it was not valid; valid pixels have finite points
            ok = valid[i, ::GRID_STEP, ::GRID_STEP].reshape(-1) & (stored.weights > 0)
            chosen.append((i, np.flatnonzero(ok), stored))
        total = sum(len(idx) for _, idx, _ in chosen)
        if total < 10:
            return None
        if total > MAX_CORRESPONDENCES:
            pick = np.sort(np.random.default_rng(total).choice(total, MAX_CORRESPONDENCES, replace=False))
            starts = np.cumsum([0] + [len(idx) for _, idx, _ in chosen])
            chosen = [(i, idx[pick[(pick >= a) & (pick < b)] - a], stored)
                      for (i, idx, stored), a, b in zip(chosen, starts[:-1], starts[1:], strict=True)]
        src, dst, wts = [], [], []
        for i, idx, stored in chosen:
            rows, cols = np.divmod(idx, grid[1])
            rows, cols = rows * GRID_STEP, cols * GRID_STEP
            src.append(pred.world_points[i, rows, cols].astype(np.float64))
            dst.append(stored.points[idx])
            conf = np.nan_to_num(pred.world_points_conf[i, rows, cols].astype(np.float64))
            wts.append(np.minimum(conf, stored.weights[idx]))
        src_a, dst_a, w_a = np.concatenate(src), np.concatenate(dst), np.concatenate(wts)
        if fixed_scale is not None:
            s, r, t, rms, n = robust_sim3(src_a * fixed_scale, dst_a, w_a, with_scale=False)
            return fixed_scale, r, t, rms, n
        return robust_sim3(src_a, dst_a, w_a)

    def _remember(self, pred: WindowPrediction, views: Sequence[ViewKey], valid: np.ndarray,
                  alignment: Alignment) -> None:
        """Keep this window's output-frame points and depth on a coarse grid, for the next window (last only)."""
        points = alignment.view_points(pred, GRID_STEP).astype(np.float64)
        depth = pred.depth[:, ::GRID_STEP, ::GRID_STEP].astype(np.float64) * alignment.scale
        grid: dict[ViewKey, _GridView] = {}
        for i, key in enumerate(views):
            w = np.nan_to_num(pred.world_points_conf[i, ::GRID_STEP, ::GRID_STEP].reshape(-1).astype(np.float64))
            ok = valid[i, ::GRID_STEP, ::GRID_STEP].reshape(-1)
            world = points[i].reshape(-1, 3)
            world[~ok] = np.nan
            d = depth[i].reshape(-1)
            d[~ok] = np.nan
            grid[key] = _GridView(world, np.where(ok, w, 0.0), d)
        self._grid = grid
