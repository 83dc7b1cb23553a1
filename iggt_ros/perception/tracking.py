"""Persistent instance IDs across windows.

Clustering labels are window-local: label 3 in one window has nothing to do with label 3 in the next,
and a real instance head's embedding space is itself window-local. Three cues connect windows:

* Mask IoU on shared frames. Consecutive windows contain ``size - stride`` identical views; the same
  object covers the same pixels there, whatever its label. This is the strongest cue when present.
* 3D position in the world frame: a Gaussian kernel on the centroid distance, as wide as half the
  object's size (at least ``position_scale_m`` when the frame is metric). It gates every match, so two identical-looking
  objects side by side never exchange IDs, and it re-identifies an object that comes back into view. A lost track's
  kernel is ``LOST_KERNEL_SCALE`` times as wide: the object usually comes back seen from another side, whose centroid
  lies up to the object's size from the side seen last (`reidentify` gives a lost track the whole mapped object's
  centroid and extent).
* Feature prototypes (cosine similarity of mean unit features): helpful when the feature space is
  stable across windows, weighted low because it often is not.

Scores combine the cues as a weighted mean; the IoU weight shrinks with the share of the pair's pixels
that lie in shared views (IoU says nothing about an object that is not in them). Hungarian assignment
(scipy) maximises the total, and pairs below ``min_match_score`` start new tracks. States: tentative until matched in
``confirm_windows`` windows, confirmed, lost after ``lost_windows`` windows without a match (still
matchable: re-identification), removed after ``forget_windows`` windows lost when that is set, or when the
object map's bounds remove the instance (`forget`; see `map_bounds`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import linear_sum_assignment

from iggt_ros.config import TrackingConfig
from iggt_ros.engine.base import ViewKey
from iggt_ros.perception import pixel_kernels
from iggt_ros.perception.records import TrackState

if TYPE_CHECKING:
    from iggt_ros.perception.mapping import Similarity

log = logging.getLogger(__name__)

TENTATIVE = TrackState.TENTATIVE
CONFIRMED = TrackState.CONFIRMED
LOST = TrackState.LOST
MAX_ID = 65535  # IDs travel as uint16 images
LOST_KERNEL_SCALE = 2.0
"""Width of a lost track's position kernel relative to a track in view (see the module docstring)."""


@dataclass
class Detection:
    """One window-local instance, with what the tracker compares."""

    label: int
    """Window-local label (1..K) in the cluster label images."""
    prototype: np.ndarray
    """[C] unit mean feature."""
    centroid: np.ndarray
    """[3] world frame."""
    extent: np.ndarray
    """[3] axis-aligned size in the world frame."""
    pixel_count: int = 0
    views: int = 0
    """Views of the window in which the mask is non-empty."""


@dataclass
class Track:
    """A persistent instance."""

    id: int
    state: TrackState
    prototype: np.ndarray
    centroid: np.ndarray
    extent: np.ndarray
    hits: int = 1
    misses: int = 0
    """Consecutive windows without a match."""
    first_window: int = 0
    last_window: int = 0
    first_seen_ns: int = 0
    last_seen_ns: int = 0
    reidentified: int = 0
    """How often the track came back from the lost state."""
    last_pixel_count: int = 0
    """Pixels of the track in the last window that detected it."""
    co_visible: set[int] = field(default_factory=set)
    """Tracks detected as separate instances in the same window (never merge candidates)."""
    structure: bool = False
    """Scene structure (walls, floor: `perception.structure`), not an object: still matched, so that the same
    piece of wall keeps being recognised, but kept out of the object map and the published IDs."""

    @property
    def diameter(self) -> float:
        return float(np.linalg.norm(self.extent))


@dataclass
class TrackingResult:
    label_to_id: np.ndarray
    """[K+1] uint16 lookup table: window-local label -> track ID (0 -> 0)."""
    matched: dict[int, int]
    """Window-local label -> ID of an existing track it continued."""
    created: list[int]
    reidentified: list[int]
    scores: dict[int, float] = field(default_factory=dict)
    """Window-local label -> match score (new tracks absent)."""


class InstanceTracker:
    """Assigns persistent IDs to the window-local instances of successive windows."""

    iou_grid_px = 2
    """Mask IoU on shared views is counted on a grid of this pixel stride: the IDs of every view are kept
    for the next window and compared with its labels, and at full resolution that was a fifth of the
    post-processing. A mask's IoU on a 2-px grid differs from the full-resolution one only along its
    boundary, far below what decides a match (min_match_score)."""

    def __init__(self, config: TrackingConfig) -> None:
        self.config = config
        self.tracks: dict[int, Track] = {}
        self._next_id = 1
        self._window = 0
        self._last_labels: dict[ViewKey, np.ndarray] = {}
        """Window-local labels of the last window's views on the IoU grid; through `_last_lut` they are its IDs
        (looked up only for the views the next window shares)."""
        self._last_lut = np.zeros(1, np.uint16)
        self.reidentifications = 0

    def reset(self) -> None:
        self.tracks.clear()
        self._next_id = 1
        self._window = 0
        self._last_labels.clear()
        self._last_lut = np.zeros(1, np.uint16)

    def reexpress(self, similarity: Similarity) -> None:
        """Move every track's centroid and extent into another frame (the world frame changed under them)."""
        for track in self.tracks.values():
            track.centroid = similarity.apply(track.centroid)
            track.extent = similarity.apply_extent(track.extent)

    def snapshot(self) -> list[Track]:
        """Deep copies of the tracks (safe to hand to another thread)."""
        return [copy.deepcopy(t) for t in self.tracks.values()]

    # ------------------------------------------------------------------ update
    def update(self, detections: Sequence[Detection], labels: np.ndarray, views: Sequence[ViewKey],
               stamp_ns: int, metric: bool = False) -> TrackingResult:
        """Match a window's detections to tracks; return the label -> ID table and remember the ID images.

        Args:
            detections: one per window-local label present.
            labels: [V,H,W] window-local label images (0 = none).
            views: ViewKey of each of the V views (shared views are found by key).
            stamp_ns: stamp of the window (its newest view).
            metric: whether centroids are in metres (enables the absolute ``position_scale_m``).
        """
        cfg = self.config
        self._window += 1
        max_label = int(labels.max()) if labels.size else 0
        max_label = max(max_label, max((d.label for d in detections), default=0))
        lut = np.zeros(max_label + 1, np.uint16)
        track_list = list(self.tracks.values())
        scores = (self._score(detections, track_list, labels, views, metric, max_label)
                  if detections and track_list else None)

        matched: dict[int, int] = {}
        match_scores: dict[int, float] = {}
        if scores is not None:
            rows, cols = linear_sum_assignment(scores, maximize=True)
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                if scores[r, c] >= cfg.min_match_score:
                    matched[detections[r].label] = track_list[c].id
                    match_scores[detections[r].label] = float(scores[r, c])

        created: list[int] = []
        reidentified: list[int] = []
        for det in detections:
            tid = matched.get(det.label)
            if tid is None:
                tid = self._new_track(det, stamp_ns)
                created.append(tid)
            else:
                if self._continue_track(self.tracks[tid], det, stamp_ns):
                    reidentified.append(tid)
            lut[det.label] = tid
        seen = {int(lut[d.label]) for d in detections}
        for tid in seen:
            self.tracks[tid].co_visible |= seen - {tid}
        self._age_unmatched(seen)

        g = self.iou_grid_px
        self._last_labels = {key: labels[i, ::g, ::g] for i, key in enumerate(views)}
        self._last_lut = lut
        if reidentified:
            log.info("re-identified instances %s after they were lost", reidentified)
        return TrackingResult(lut, {k: v for k, v in matched.items()}, created, reidentified, match_scores)

    def _score(self, detections: Sequence[Detection], tracks: list[Track], labels: np.ndarray,
               views: Sequence[ViewKey], metric: bool, max_label: int) -> np.ndarray:
        """[D,T] match scores in [0, 1]; 0 where the position gate rejects the pair."""
        cfg = self.config
        n_d, n_t = len(detections), len(tracks)
        det_index = {d.label: i for i, d in enumerate(detections)}
        track_index = {t.id: j for j, t in enumerate(tracks)}

        # mask IoU over the shared views, pooled
        inter = np.zeros((n_d, n_t))
        det_area = np.zeros(n_d)
        trk_area = np.zeros(n_t)
        shared = [(i, key) for i, key in enumerate(views) if key in self._last_labels]
        det_row = np.full(max_label + 1, -1, np.int64)
        for lab, i in det_index.items():
            if lab <= max_label:
                det_row[lab] = i
        g = self.iou_grid_px
        # the last window's labels become their IDs through its table: columns of the same ID are summed
        prev_ids, to_id = np.unique(self._last_lut, return_inverse=True)
        n_prev = len(self._last_lut)
        for i, key in shared:
            prev = self._last_labels[key]
            cur = labels[i, ::g, ::g]
            if prev.shape != cur.shape:
                continue
            # counted by (label now, label then), both window-local and few
            if pixel_kernels.AVAILABLE and cur.dtype == np.int32 and prev.dtype == np.int32:
                by_label = pixel_kernels.pair_counts(cur, prev, max_label + 1, n_prev)
            else:
                by_label = np.bincount(cur.ravel().astype(np.int64) * n_prev + prev.ravel(),
                                       minlength=(max_label + 1) * n_prev).reshape(max_label + 1, n_prev)
            joint = np.zeros((max_label + 1, len(prev_ids)), np.int64)
            np.add.at(joint.T, to_id, by_label.T)
            rows = det_row[: max_label + 1]
            cols = np.array([track_index.get(int(p), -1) for p in prev_ids])
            r_ok = rows >= 0
            c_ok = cols >= 0
            det_area[rows[r_ok]] += joint[r_ok].sum(axis=1)
            trk_area[cols[c_ok]] += joint[:, c_ok].sum(axis=0)
            inter[np.ix_(rows[r_ok], cols[c_ok])] += joint[np.ix_(r_ok, c_ok)]
        union = det_area[:, None] + trk_area[None, :] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        # how much the shared views say about a pair: a detection (or track) with a fifth of its pixels
        # there is fully judged by IoU; a few stray pixels say nothing
        # pixel counts are at full resolution, the shared areas on the grid: one grid cell stands for g x g pixels
        det_total = np.array([max(d.pixel_count, 1) for d in detections], float) / (g * g)
        trk_total = np.array([max(t.last_pixel_count, 1) for t in tracks], float) / (g * g)
        evidence = np.maximum(det_area[:, None] / det_total[:, None], trk_area[None, :] / trk_total[None, :])
        iou_available = np.clip(evidence / 0.2, 0.0, 1.0)

        # 3D position, relative to object size (and the absolute scale when metric)
        dc = np.stack([d.centroid for d in detections])
        tc = np.stack([t.centroid for t in tracks])
        dist = np.linalg.norm(dc[:, None, :] - tc[None, :, :], axis=-1)
        dd = np.array([float(np.linalg.norm(d.extent)) for d in detections])
        td = np.array([t.diameter for t in tracks])
        # a partly seen object's centroid moves by up to half its size: the kernel is as wide
        sigma = 0.5 * np.maximum(dd[:, None], td[None, :])
        # a lost object is usually seen again from another side, whose centroid lies up to its size away
        sigma = sigma * np.where([t.state == LOST for t in tracks], LOST_KERNEL_SCALE, 1.0)[None, :]
        if metric:
            sigma = np.maximum(sigma, cfg.position_scale_m)
        sigma = np.maximum(sigma, 1e-6)
        pos = np.exp(-0.5 * (dist / sigma) ** 2)
        gate = dist <= 2.5 * sigma
        # size consistency: an object does not double or halve its size between windows
        size_ratio = np.maximum(dd[:, None], 1e-6) / np.maximum(td[None, :], 1e-6)
        gate &= (size_ratio < 3.0) & (size_ratio > 1 / 3.0)

        dp = np.stack([d.prototype for d in detections])
        tp = np.stack([t.prototype for t in tracks])
        feat = np.clip(dp @ tp.T, 0.0, 1.0) if dp.shape[1] == tp.shape[1] else np.zeros((n_d, n_t))

        w_i, w_p, w_f = cfg.mask_iou_weight, cfg.position_weight, cfg.feature_weight
        num = w_i * iou * iou_available + w_p * pos + w_f * feat
        den = w_i * iou_available + w_p + w_f
        score = np.where(den > 0, num / np.maximum(den, 1e-12), 0.0)
        # strong overlap on the very same pixels overrides the gate (the centroid of a partly seen object moves)
        strong_overlap = iou >= 0.5
        return np.where(gate | strong_overlap, score, 0.0)

    # ------------------------------------------------------------------ bookkeeping
    def _new_track(self, det: Detection, stamp_ns: int) -> int:
        tid = self._allocate_id()
        state = CONFIRMED if self.config.confirm_windows <= 1 else TENTATIVE
        self.tracks[tid] = Track(tid, state, det.prototype.copy(), det.centroid.copy(), det.extent.copy(),
                                 first_window=self._window, last_window=self._window, first_seen_ns=stamp_ns,
                                 last_seen_ns=stamp_ns, last_pixel_count=det.pixel_count)
        return tid

    def _allocate_id(self) -> int:
        for _ in range(MAX_ID):
            tid = self._next_id
            self._next_id = 1 if self._next_id >= MAX_ID else self._next_id + 1
            if tid not in self.tracks:
                return tid
        raise RuntimeError(f"all {MAX_ID} instance IDs are in use; lower tracking.forget_windows")

    def _continue_track(self, track: Track, det: Detection, stamp_ns: int) -> bool:
        """Update a matched track; return True when it came back from the lost state."""
        came_back = track.state == LOST
        track.hits += 1
        track.misses = 0
        track.last_window = self._window
        track.last_seen_ns = stamp_ns
        track.last_pixel_count = det.pixel_count
        alpha = 0.5
        track.centroid = (1 - alpha) * track.centroid + alpha * det.centroid
        track.extent = (1 - alpha) * track.extent + alpha * det.extent
        proto = (1 - alpha) * track.prototype + alpha * det.prototype
        track.prototype = proto / max(float(np.linalg.norm(proto)), 1e-12)
        if came_back:
            track.reidentified += 1
            self.reidentifications += 1
            track.state = CONFIRMED
        elif track.state == TENTATIVE and track.hits >= self.config.confirm_windows:
            track.state = CONFIRMED
        return came_back

    def _age_unmatched(self, seen: set[int]) -> None:
        cfg = self.config
        for tid in list(self.tracks):
            if tid in seen:
                continue
            track = self.tracks[tid]
            track.misses += 1
            if track.state != LOST and track.misses >= cfg.lost_windows:
                track.state = LOST
                log.debug("instance %d lost after %d windows unseen", tid, track.misses)
            elif track.state == LOST and cfg.forget_windows and track.misses >= cfg.lost_windows + cfg.forget_windows:
                del self.tracks[tid]
                log.debug("instance %d forgotten", tid)
        for track in self.tracks.values():
            track.co_visible &= set(self.tracks)

    def forget(self, ids: Sequence[int]) -> None:
        """Remove tracks (the map's bounds dropped their instances); their IDs may be handed out again."""
        gone = {int(i) for i in ids} & set(self.tracks)
        for tid in gone:
            del self.tracks[tid]
        for track in self.tracks.values():
            track.co_visible -= gone

    @property
    def next_id(self) -> int:
        """The ID the next new track gets (unless it is in use then)."""
        return self._next_id

    def restore(self, tracks: Sequence[Track], next_id: int) -> None:
        """Add tracks of a saved map and hand out new IDs from `next_id` on (skipping IDs in use)."""
        for track in tracks:
            self.tracks[track.id] = track
        self._next_id = max(self._next_id, min(int(next_id), MAX_ID))

    def merge(self, keep: int, drop: int, lut: np.ndarray | None = None) -> None:
        """Fold track `drop` into `keep` (the object map found them to be one object); rewrite `lut` in place."""
        if keep not in self.tracks or drop not in self.tracks:
            return
        k, d = self.tracks[keep], self.tracks.pop(drop)
        came_back = k.state == LOST and d.misses == 0
        k.hits += d.hits
        k.first_window = min(k.first_window, d.first_window)
        k.first_seen_ns = min(k.first_seen_ns, d.first_seen_ns)
        if d.last_window >= k.last_window:
            k.centroid, k.extent, k.prototype = d.centroid, d.extent, d.prototype
            k.last_window, k.last_seen_ns, k.misses = d.last_window, d.last_seen_ns, d.misses
        k.co_visible |= d.co_visible
        k.co_visible.discard(keep)
        if came_back:
            k.reidentified += 1
            self.reidentifications += 1
        k.state = CONFIRMED if k.hits >= self.config.confirm_windows else k.state
        for t in self.tracks.values():
            if drop in t.co_visible:
                t.co_visible.discard(drop)
                t.co_visible.add(keep)
        if lut is not None:
            lut[lut == drop] = keep
        if lut is not self._last_lut:  # the last window's table (the same object when merging in that window)
            self._last_lut[self._last_lut == drop] = keep
