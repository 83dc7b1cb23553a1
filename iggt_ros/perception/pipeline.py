"""The perception pipeline: synchronised frames in, one `WindowResult` per window out.

Both ROS adapters (the node and the rosbag replay) drive this object and nothing else, so everything
the node computes can be run and tested without ROS. The calls they share: `add_frame` (one camera
frame through the package's synchroniser) or `collect` (a set synchronised elsewhere) return a
`Collected` (the set, a completed window, whether the pipeline reset itself), and `process_window`
returns the window's `WindowResult`. Stages, each timed:

    frames -> WindowBuffer -> preprocess (engine.preprocess) -> Engine.infer -> validity -> WorldAligner (mapping)
           -> InstanceClusterer (clustering, assignment) -> InstanceTracker (tracking)
           -> ObjectMap (object_map) -> cloud packing (cloud)

Threading: the node processes windows on a worker thread while its service callbacks read the state.
`reset()` and `snapshot()` never wait for a window to finish: `reset()` swaps in fresh components at
once, and `snapshot()` returns the immutable state published by the last completed window. Each
window carries the reset generation it was collected in: one collected before a reset (queued, or
in flight) comes back with `WindowResult.discarded` set, so no adapter keeps its own reset count.

Frames: every result is in one frame (`WindowResult.frame_id`): input.fallback_frame until TF has settled,
then input.world_frame for good (`mapping` has the rules). On the window that moves the output, the tracks and
the object map are re-expressed in the new frame before that window's detections join them.

Bad input never raises out of `push`/`process_window`: an empty window, a camera missing from a
window, NaN depth, features that are pure noise, an engine error, time going backwards: each gives a
defined result (possibly without instances) and a warning in the log and in `WindowResult.warnings`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from iggt_ros import threads
from iggt_ros.config import IggtConfig
from iggt_ros.engine.base import Engine, EngineError, ViewKey, WindowPrediction
from iggt_ros.engine.preprocess import preprocess_images
from iggt_ros.perception import map_store, pixel_kernels, reidentify, structure, twin_split
from iggt_ros.perception.clustering import ClusterResult, InstanceClusterer, label_order
from iggt_ros.perception.frames import CameraFrame, FrameSet, MissingFrame
from iggt_ros.perception.map_bounds import MapBounds, MapSize
from iggt_ros.perception.map_store import MapFileError, SavedMap
from iggt_ros.perception.mapping import Alignment, WorldAligner
from iggt_ros.perception.object_map import ObjectInstance, ObjectMap, first_per_voxel
from iggt_ros.perception.records import TrackState
from iggt_ros.perception.reframe import ReexpressibleObjectMap
from iggt_ros.perception.tracking import Detection, InstanceTracker
from iggt_ros.perception.window import ApproximateTimeSynchronizer, Window, WindowBuffer

log = logging.getLogger(__name__)

CLOUD_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4"), ("label", "<u4")])
"""Point layout of /iggt/points: xyz, rgb packed as float32 (0x00RRGGBB bits), instance ID (0 = none)."""

MERGE_OVERLAP = 0.5
"""Voxel overlap (of the smaller instance) above which a new instance is folded into a lost one."""


STAT_POINTS = 2000
"""Points an instance's centroid and extent are computed from (every n-th of its grid points: spread over its
views and rows); medians and percentiles of a few thousand points are as good as of all of them."""


def _spread_subset(points: np.ndarray) -> np.ndarray:
    """At most about STAT_POINTS rows of `points`, every n-th."""
    return points[:: max(1, math.ceil(len(points) / STAT_POINTS))]


@dataclass
class ViewInfo:
    """Where one view of a window came from (the header of its output images)."""

    camera: str
    stamp_ns: int
    frame_id: str
    new: bool
    """True when the previous window did not contain this view (publish it once)."""
    intrinsics: np.ndarray | None = None
    """[3,3] at the model resolution in the model's convention (pixel centres at half-integers): the camera's
    own (camera_info, scaled) when TF places the view, else as the engine predicted them."""
    world_from_camera: np.ndarray | None = None
    """[4,4] pose of the camera (OpenCV optical axes) in the result's output frame: the TF pose when TF placed
    the window, else the model's prediction after the window's alignment. A rigid transform whose translation
    is the camera centre in output units (metres when the result is metric). Depth of this view back-projected
    with `intrinsics` and mapped by it gives the published points (exactly with TF; up to the model's own
    consistency of depth and point map without). None when the window produced no geometry."""


@dataclass
class WindowResult:
    """Everything one window produced, in the output frame."""

    window_index: int
    stamp_ns: int
    frame_id: str
    """input.world_frame when aligned to TF, otherwise input.fallback_frame."""
    views: list[ViewInfo]
    instance_images: np.ndarray
    """[V,H,W] uint16 persistent instance IDs at the model resolution (0 = none)."""
    depth: np.ndarray
    """[V,H,W] float32 depth in output-frame units (metres when `metric`), NaN where invalid."""
    metric: bool
    cloud: np.ndarray
    """[N] CLOUD_DTYPE points, voxel-downsampled and at most mapping.max_cloud_points."""
    instances: list[ObjectInstance]
    alignment: Alignment | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    images: np.ndarray | None = None
    """[V,H,W,3] uint8 RGB of the views at the model resolution (what the engine saw; None when skipped)."""
    discarded: bool = False
    """The pipeline was reset after this window was collected: the result belongs to the old map and must
    not be published or evaluated."""

    @property
    def points(self) -> np.ndarray:
        return np.stack([self.cloud["x"], self.cloud["y"], self.cloud["z"]], axis=-1)

    @property
    def colors(self) -> np.ndarray:
        rgb = self.cloud["rgb"].view(np.uint32)
        return np.stack([(rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255], axis=-1).astype(np.uint8)

    @property
    def point_ids(self) -> np.ndarray:
        return self.cloud["label"]


@dataclass(frozen=True)
class MapSnapshot:
    """Read-only state after the last completed window (safe to use from any thread)."""

    window_index: int
    stamp_ns: int
    frame_id: str
    instances: tuple[ObjectInstance, ...]


@dataclass
class Collected:
    """What one input frame (or synchronised set) did to the pipeline."""

    frameset: FrameSet | None
    """The synchronised set the frame completed (None: it waits for the other cameras)."""
    window: Window | None
    """A completed window to process (`Pipeline.process_window`), possibly on another thread."""
    reset: bool
    """Time went backwards, so the pipeline started over: windows collected before are stale."""


def pack_cloud(points: np.ndarray, colors: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Structured CLOUD_DTYPE array, ready to be sent as PointCloud2 data with .tobytes()."""
    out = np.empty(len(points), CLOUD_DTYPE)
    out["x"], out["y"], out["z"] = points[:, 0], points[:, 1], points[:, 2]
    c = colors.astype(np.uint32)
    out["rgb"] = ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)
    out["label"] = ids
    return out


def view_intrinsics(pred: WindowPrediction, alignment: Alignment, index: int) -> np.ndarray:
    """Intrinsics of view `index` for `ViewInfo` (the ones its published points were made with)."""
    if alignment.view_intrinsics is None:
        return pred.intrinsics[index].copy()
    k = np.array(alignment.view_intrinsics[index], np.float32)
    k[0, 2] += 0.5  # integer pixel centres -> the model's half-integer convention
    k[1, 2] += 0.5
    return k


class Pipeline:
    """Frames in, `WindowResult`s out; holds the window buffer, tracker, world frame and object map."""

    def __init__(self, config: IggtConfig, engine: Engine, seed: int = 0) -> None:
        config.validate()
        self.config = config
        self.engine = engine
        self.seed = seed
        self._state_lock = threading.Lock()
        self._window_lock = threading.Lock()
        """Held while a window is processed: a map save waits for it, so tracks and voxels are read whole."""
        self._generation = 0
        self._pending_map: SavedMap | None = None
        """A loaded map waiting for the first window in its frame (`load_map`)."""
        self.synchronizer = ApproximateTimeSynchronizer(config.input.cameras, config.input.sync_queue_size,
                                                        config.input.sync_slop_s)
        self._make_components()
        # the libraries are loaded now (engine, clustering): size the pools they brought per the thread policy
        threads.apply_runtime(config.threads)
        self._snapshot = MapSnapshot(-1, 0, self._initial_frame(), ())
        self.windows_processed = 0
        self.resets = 0
        self.time_jumps = 0
        self.tf_dropout_windows = 0
        """Windows aligned without TF after the output moved to the world frame (they stay in it; for diagnostics)."""
        self.reexpressions = 0
        """Times the map was moved from the fallback frame into the world frame (TF arrived after it started)."""

    def _initial_frame(self) -> str:
        return self.config.input.fallback_frame

    def _make_components(self) -> None:
        cfg = self.config
        self.window_buffer = WindowBuffer(cfg.window, cfg.input.cameras)
        self.clusterer = InstanceClusterer(cfg.clustering, seed=self.seed, threads=cfg.threads.pixel)
        self.tracker = InstanceTracker(cfg.tracking)
        self.aligner = WorldAligner(cfg.mapping, cfg.input)
        self.object_map = ReexpressibleObjectMap(cfg.mapping, seed=self.seed)
        self.bounds = MapBounds(cfg.mapping)

    # ------------------------------------------------------------------ thread-safe control
    def reset(self, reason: str = "reset requested") -> None:
        """Forget all windows, tracks and the map now; a window in flight is discarded."""
        with self._state_lock:
            self._generation += 1
            self._make_components()
            self.synchronizer.reset()
            self._snapshot = MapSnapshot(-1, 0, self._initial_frame(), ())
            self._pending_map = None
            self.resets += 1
        log.warning("perception pipeline reset (%s): instance IDs, the object map and the world frame start over",
                    reason)

    def set_label(self, instance_id: int, label: str, score: float) -> None:
        """A label for an instance of the map (from any thread); published with the next window."""
        with self._state_lock:
            omap = self.object_map
        omap.set_label(instance_id, label, score)

    def snapshot(self) -> MapSnapshot:
        """The instances as of the last completed window."""
        with self._state_lock:
            return self._snapshot

    # ------------------------------------------------------------------ input
    def push(self, frameset: FrameSet) -> WindowResult | None:
        """One synchronised frame set, processed at once; a result when it completes a window."""
        window = self.collect(frameset).window
        return None if window is None else self.process_window(window)

    def add_frame(self, frame: CameraFrame | MissingFrame) -> Collected:
        """One camera frame through the package's synchroniser, then as `collect` once a set forms.

        A `MissingFrame` (that camera's message was bad) lets the set of its time step form without it."""
        with self._state_lock:
            synchronizer = self.synchronizer
        frameset = synchronizer.add(frame)
        if frameset is None:
            return Collected(None, None, False)
        return self.collect(frameset)

    def collect(self, frameset: FrameSet) -> Collected:
        """Buffer one synchronised frame set; a completed window is returned, never processed here.

        Cheap (keyframe selection only), so the node calls it from subscription callbacks and hands
        the window to its inference thread. Time going backwards resets the whole pipeline; the
        window then carries the new generation, and windows of the old one are discarded when processed.
        """
        with self._state_lock:
            buffer = self.window_buffer
        jumps = buffer.time_jumps
        window = buffer.push(frameset)
        reset = buffer.time_jumps != jumps
        if reset:
            self.time_jumps += 1
            self.reset("time went backwards")
            window = self.window_buffer.push(frameset)
        if window is not None:
            with self._state_lock:
                window.generation = self._generation
        return Collected(frameset, window, reset)

    def held_views(self) -> set[ViewKey]:
        """Views a coming window may still contain: frames waiting in the synchroniser and the buffered
        keyframes. What an adapter keeps alongside frames (the replay's ground truth) follows this."""
        with self._state_lock:
            synchronizer, buffer = self.synchronizer, self.window_buffer
        held = {ViewKey(cam, stamp) for cam in synchronizer.cameras for stamp in synchronizer.queued(cam)}
        held.update(ViewKey(f.camera, f.stamp_ns) for step in buffer.held() for f in step.frames.values())
        return held

    # ------------------------------------------------------------------ one window
    def process_window(self, window: Window) -> WindowResult:
        """Run the engine and post-processing on one window."""
        with self._window_lock, contextlib.ExitStack() as post_processing:
            return self._process_window(window, post_processing)

    def _process_window(self, window: Window, post_processing: contextlib.ExitStack) -> WindowResult:
        with self._state_lock:
            generation = self._generation
            clusterer, tracker, aligner, omap = self.clusterer, self.tracker, self.aligner, self.object_map
            bounds, pending = self.bounds, self._pending_map
        t_start = time.perf_counter()
        if window.generation != generation:
            return self._discarded(window, aligner)
        timings: dict[str, float] = {}
        warnings = list(window.warnings)
        for msg in window.warnings:
            log.warning("window %d: %s", window.index, msg)
        frames = window.frames()
        h, w = self.engine.input_size
        new_keys = {(f.camera, f.stamp_ns) for step in window.steps[len(window.steps) - window.new_steps:]
                    for f in step.frames.values()}
        views = [ViewInfo(f.camera, f.stamp_ns, f.frame_id, (f.camera, f.stamp_ns) in new_keys) for f in frames]
        keys = [ViewKey(f.camera, f.stamp_ns) for f in frames]

        def empty(msg: str) -> WindowResult:
            log.warning("window %d: %s", window.index, msg)
            warnings.append(msg)
            timings["total"] = (time.perf_counter() - t_start) * 1e3
            v = len(frames)
            return WindowResult(window.index, window.stamp_ns if window.steps else 0, aligner.last.frame_id
                                if aligner.last else self.config.input.fallback_frame, views,
                                np.zeros((v, h, w), np.uint16), np.full((v, h, w), np.nan, np.float32),
                                False, np.zeros(0, CLOUD_DTYPE), [i for i in self.snapshot().instances], None,
                                timings, warnings)

        if not frames:
            return empty("empty window (no camera frames): nothing to process")

        t = time.perf_counter()
        try:
            images = preprocess_images([np.asarray(f.image) for f in frames], (h, w))
        except ValueError as exc:
            return empty(f"images of this window cannot be used, skipped: {exc}")
        timings["preprocess"] = (time.perf_counter() - t) * 1e3

        t = time.perf_counter()
        try:
            pred = self.engine.infer(images, keys)
            pred.validate()
        except (EngineError, ValueError) as exc:
            return empty(f"engine failed on this window, skipped: {exc}")
        timings["inference"] = (time.perf_counter() - t) * 1e3
        if pred.num_views != len(frames):
            return empty(f"engine returned {pred.num_views} views for {len(frames)} images; window skipped")
        # from here on the compiled per-pixel passes split the views among the configured threads
        post_processing.enter_context(pixel_kernels.parallel_section(self.config.threads.pixel))

        t = time.perf_counter()
        valid = self._valid_pixels(pred, warnings, window.index)
        timings["validity"] = (time.perf_counter() - t) * 1e3
        if not valid.any():
            return empty("no valid pixel in the window (depth or points are NaN, infinite or <= 0 everywhere): "
                         "no instances, no points")

        t = time.perf_counter()
        alignment = aligner.align(pred, keys, frames, valid)
        warnings.extend(alignment.warnings)
        if alignment.reexpress is not None:  # the output frame changes: what is kept moves with it, first
            tracker.reexpress(alignment.reexpress)
            omap.reexpress(alignment.reexpress)
        if pending is not None and alignment.frame_id == pending.frame_id:  # a loaded map joins in its frame
            self._join_saved_map(pending, tracker, omap, bounds, window.stamp_ns, generation)
        valid = self._in_depth_range(pred, valid, alignment, warnings, window.index)
        timings["mapping"] = (time.perf_counter() - t) * 1e3
        if not valid.any():
            return empty(f"no pixel within mapping.min_depth_m..max_depth_m ({self.config.mapping.min_depth_m} to "
                         f"{self.config.mapping.max_depth_m} m): no instances, no points")

        cluster = clusterer.cluster(pred.instance_features, valid, pred.depth_conf, pred.world_points)
        warnings.extend(cluster.warnings)
        timings["clustering"] = cluster.timings_ms.get("sampling", 0.0) + cluster.timings_ms.get("hdbscan", 0.0)
        timings["assignment"] = cluster.timings_ms.get("assignment", 0.0) + cluster.timings_ms.get("cleanup", 0.0)

        t = time.perf_counter()
        step = self._grid_step(pred)
        if self.config.clustering.split_gap_m > 0:  # look-alikes standing apart: one instance each
            split_step = twin_split.points_step(step)
            cluster = twin_split.split_parts(cluster, lambda v, y, x: alignment.pixel_points(pred, v, y, x), split_step,
                                             self.config.clustering.split_gap_m if alignment.metric else 0.0)
        grid = self._grid(pred, valid, cluster, alignment, step)
        detections, det_points = self._detections(cluster, grid)
        track_result = tracker.update(detections, cluster.labels, keys, window.stamp_ns, alignment.metric)
        lut = track_result.label_to_id
        timings["tracking"] = (time.perf_counter() - t) * 1e3

        t = time.perf_counter()
        self._update_map(omap, tracker, detections, det_points, lut, window, alignment.metric)
        bounds.apply(tracker, omap, {int(lut[d.label]) for d in detections}, window.stamp_ns)
        lut = structure.published(lut, tracker)  # scene structure is tracked, never published as an instance
        id_images = clusterer.pixels.id_image(cluster.labels, lut)
        timings["object_map"] = (time.perf_counter() - t) * 1e3

        t = time.perf_counter()
        cloud = self._cloud(grid, lut)
        depth = clusterer.pixels.scaled_depth(pred.depth, valid, alignment.scale)
        timings["cloud"] = (time.perf_counter() - t) * 1e3

        poses = alignment.camera_poses(pred.extrinsics)
        for i, vi in enumerate(views):
            vi.intrinsics = view_intrinsics(pred, alignment, i)
            vi.world_from_camera = poses[i]
        instances = omap.instances()
        timings["total"] = (time.perf_counter() - t_start) * 1e3
        timings["postprocess"] = timings["total"] - timings["inference"] - timings["preprocess"]
        result = WindowResult(window.index, window.stamp_ns, alignment.frame_id, views, id_images, depth,
                              alignment.metric, cloud, instances, alignment, timings, warnings,
                              images=np.asarray(pred.images, dtype=np.uint8))
        with self._state_lock:
            if generation != self._generation:
                log.warning("window %d finished after a reset; its result is discarded", window.index)
                result.warnings.append("discarded: the pipeline was reset while this window was processed")
                result.discarded = True
                return result
            self._snapshot = MapSnapshot(window.index, window.stamp_ns, alignment.frame_id, tuple(instances))
            self.windows_processed += 1
            self.tf_dropout_windows += int(alignment.tf_dropout)
            self.reexpressions += int(alignment.reexpress is not None)
        return result

    # ------------------------------------------------------------------ saved maps
    def map_size(self) -> MapSize:
        """Instances and voxels of the map after the last window; removals since the last reset."""
        with self._state_lock:
            snap, bounds = self._snapshot, self.bounds
        inst = snap.instances
        return MapSize(len(inst), sum(i.state == TrackState.CONFIRMED for i in inst),
                       sum(i.state == TrackState.LOST for i in inst), sum(i.num_points for i in inst),
                       bounds.removed_by_age, bounds.removed_by_count)

    def capture_map(self) -> SavedMap:
        """The map as of the last window, for `map_store.write_map` (waits for a window in progress)."""
        world = self.config.input.world_frame
        with self._window_lock:
            with self._state_lock:
                tracker, omap, pending, snap = self.tracker, self.object_map, self._pending_map, self._snapshot
            if pending is not None:
                return pending  # loaded, waiting for its frame: saved as it was loaded
            if snap.window_index < 0:
                raise MapFileError("no window has been processed since the start or the last reset: there is no "
                                   "map to save yet")
            if snap.frame_id != world:
                raise MapFileError(f"the map is in '{snap.frame_id}', this run's own frame (no TF to "
                                   f"input.world_frame '{world}' yet), which a restarted node cannot place; save it "
                                   "once the outputs are in the world frame")
            return map_store.capture(tracker, omap, snap.frame_id, snap.stamp_ns, snap.window_index,
                                     self.config.mapping.voxel_size_m)

    def check_map(self, saved: SavedMap) -> None:
        """`MapFileError` when `saved` cannot be placed in this pipeline's output (`load_map` refuses it)."""
        world = self.config.input.world_frame
        if not self.config.input.use_tf:
            raise MapFileError(f"input.use_tf is false: this node publishes in its own frame "
                               f"'{self.config.input.fallback_frame}', where a saved map cannot be placed")
        if saved.frame_id != world:
            raise MapFileError(f"the map was saved in frame '{saved.frame_id}' but this node maps in '{world}' "
                               "(input.world_frame); the running map is kept. Load a map saved in the same world "
                               "frame")

    def load_map(self, saved: SavedMap) -> None:
        """Replace the map by a saved one; refused (`MapFileError`, nothing changed) when it cannot be placed.

        The saved instances join the tracks at the first window whose output is in the saved frame (at
        once when TF places it), as lost instances that get their IDs back when seen again; new IDs
        continue after the largest saved one. An instance created between the load and that window
        whose voxels coincide with a saved one is folded into it.
        """
        self.check_map(saved)
        preview = ObjectMap(self.config.mapping)
        map_store.restore(saved, InstanceTracker(self.config.tracking), preview, self.config.tracking.lost_windows)
        with self._state_lock:
            self._generation += 1
            self._make_components()
            self.synchronizer.reset()
            self.tracker.restore([], saved.next_id)
            self._pending_map = saved
            self._snapshot = MapSnapshot(-1, saved.stamp_ns, saved.frame_id, tuple(preview.instances()))
        log.warning("map of %d instances loaded (frame '%s'); the previous map, tracks and windows are dropped",
                    len(saved.instances), saved.frame_id)

    def _join_saved_map(self, saved: SavedMap, tracker: InstanceTracker, omap: ObjectMap, bounds: MapBounds,
                        stamp_ns: int, generation: int) -> None:
        existing = list(tracker.tracks.values())  # made since the load, in the fallback frame then moved here
        ids = map_store.restore(saved, tracker, omap, self.config.tracking.lost_windows)
        bounds.loaded(ids, stamp_ns)
        for track in existing:
            best, best_overlap = None, MERGE_OVERLAP
            for lid in ids:
                if lid in tracker.tracks and track.id not in tracker.tracks[lid].co_visible:
                    overlap = omap.overlap(lid, track.id)
                    if overlap >= best_overlap:
                        best, best_overlap = lid, overlap
            if best is not None:
                omap.merge(best, track.id)
                tracker.merge(best, track.id)
        with self._state_lock:
            if generation == self._generation and self._pending_map is saved:
                self._pending_map = None
        log.info("loaded map joined: %d instances in '%s'", len(ids), saved.frame_id)

    # ------------------------------------------------------------------ helpers
    def _discarded(self, window: Window, aligner: WorldAligner) -> WindowResult:
        """The result of a window collected before a reset: nothing computed, flagged discarded."""
        h, w = self.engine.input_size
        v = len(window.frames())
        msg = "discarded: the pipeline was reset after this window was collected"
        log.info("window %d: %s", window.index, msg)
        return WindowResult(window.index, window.stamp_ns if window.steps else 0,
                            aligner.last.frame_id if aligner.last else self.config.input.fallback_frame, [],
                            np.zeros((v, h, w), np.uint16), np.full((v, h, w), np.nan, np.float32), False,
                            np.zeros(0, CLOUD_DTYPE), [], None, {"total": 0.0}, [msg], discarded=True)

    def _valid_pixels(self, pred: WindowPrediction, warnings: list[str], index: int) -> np.ndarray:
        # on numpy or the clusterer's torch device (clustering.pixel_device): NaN or inf anywhere propagates
        valid = self.clusterer.pixels.valid_pixels(pred.depth, pred.world_points, pred.depth_conf)
        bad = 1.0 - np.count_nonzero(valid) / max(valid.size, 1)
        if bad > 0.01:
            msg = f"{100 * bad:.1f}% of the pixels have non-finite or non-positive depth/points; they stay unlabelled"
            log.warning("window %d: %s", index, msg)
            warnings.append(msg)
        return valid

    def _in_depth_range(self, pred: WindowPrediction, valid: np.ndarray, alignment: Alignment,
                        warnings: list[str], index: int) -> np.ndarray:
        """Valid pixels whose metric depth lies in mapping.min_depth_m..max_depth_m.

        The range is in metres, so it applies once the window's depth is metric (TF or a rig baseline);
        a window at the model's own scale is not cut, since its units say nothing about metres.
        """
        if not alignment.metric:
            return valid
        cfg = self.config.mapping
        with np.errstate(invalid="ignore"):
            metric = np.asarray(pred.depth, np.float32) * np.float32(alignment.scale)
            in_range = valid & (metric >= cfg.min_depth_m) & (metric <= cfg.max_depth_m)
        cut = np.count_nonzero(valid) - np.count_nonzero(in_range)
        if cut and cut > 0.01 * max(np.count_nonzero(valid), 1):
            msg = (f"{100 * cut / max(np.count_nonzero(valid), 1):.1f}% of the valid pixels lie outside "
                   f"mapping.min_depth_m..max_depth_m ({cfg.min_depth_m} to {cfg.max_depth_m} m); they stay "
                   "unlabelled and out of the cloud")
            log.info("window %d: %s", index, msg)
            warnings.append(msg)
        return in_range

    def _grid_step(self, pred: WindowPrediction) -> int:
        """Pixel stride of the point grid used for the cloud, object points and instance statistics."""
        v, h, w = pred.depth.shape
        target = self.config.mapping.max_cloud_points // 2  # voxels thin it further; statistics need far fewer
        return max(2, int(math.ceil(math.sqrt(v * h * w / max(target, 1)))))

    @staticmethod
    def _grid(pred: WindowPrediction, valid: np.ndarray, cluster: ClusterResult, alignment: Alignment,
              step: int) -> dict[str, np.ndarray]:
        """Output-frame points, colours and window-local labels of the valid pixels of every `step`-th row, column."""
        ok = valid[:, ::step, ::step]
        points = alignment.view_points(pred, step)
        images = np.asarray(pred.images)
        if pixel_kernels.AVAILABLE and images.dtype == np.uint8 and cluster.labels.dtype == np.int32:
            pts, cols, labels = pixel_kernels.grid_gather(np.ascontiguousarray(points, np.float32),
                                                          np.ascontiguousarray(ok), np.ascontiguousarray(images),
                                                          np.ascontiguousarray(cluster.labels), step)
            return {"points": pts, "colors": cols, "labels": labels}
        return {"points": points[ok], "colors": images[:, ::step, ::step][ok],
                "labels": cluster.labels[:, ::step, ::step][ok]}

    @staticmethod
    def _detections(cluster: ClusterResult, grid: dict[str, np.ndarray]) -> tuple[list[Detection], dict]:
        labels = grid["labels"]
        sel = labels > 0
        lab, pts, cols = labels[sel], grid["points"][sel], grid["colors"][sel]
        order = label_order(lab, cluster.num_instances)
        lab, pts, cols = lab[order], pts[order], cols[order]
        bounds = np.searchsorted(lab, np.arange(1, cluster.num_instances + 2))
        detections: list[Detection] = []
        det_points: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        views_per_label = (cluster.pixel_counts[:, 1:] > 0).sum(axis=0)
        for k in range(1, cluster.num_instances + 1):
            a, b = bounds[k - 1], bounds[k]
            if b - a < 3:
                continue
            p, c = pts[a:b], cols[a:b]
            # pixels on a depth edge carry the background's depth: drop points far from the instance's median
            sub = _spread_subset(p)
            centre = np.median(sub, axis=0)
            radius = 3.0 * max(float(np.median(np.linalg.norm(sub - centre, axis=1))), 1e-9)
            near = np.linalg.norm(p - centre, axis=1) <= radius
            if near.sum() >= 3:
                p, c = p[near], c[near]
            stats = _spread_subset(p)
            lo, hi = np.percentile(stats, [5, 95], axis=0)
            detections.append(Detection(label=k, prototype=cluster.prototypes[k - 1].astype(np.float64),
                                        centroid=np.median(stats, axis=0).astype(np.float64),
                                        extent=(hi - lo).astype(np.float64),
                                        pixel_count=int(cluster.pixel_counts[:, k].sum()),
                                        views=int(views_per_label[k - 1])))
            det_points[k] = (p, c)
        return detections, det_points

    def _update_map(self, omap: ObjectMap, tracker: InstanceTracker, detections: list[Detection],
                    det_points: dict, lut: np.ndarray, window: Window, metric: bool) -> None:
        limit = self.config.mapping.max_object_size_m if metric else 0.0  # metres say nothing at the model's scale
        mapped = []
        for det in detections:
            tid = int(lut[det.label])
            track = tracker.tracks[tid]
            track.structure = track.structure or structure.too_large(det.extent, limit)
            if track.structure:
                omap.remove(tid)
                continue
            pts, cols = det_points[det.label]
            omap.update(tid, pts, cols, det.views, window.stamp_ns, window.index, track.state)
            mapped.append(tid)
        structure.check_map(omap, tracker, mapped, limit)
        # an instance in view and one out of view on the same surface, never seen apart, are one object
        reidentify.fold(tracker, omap, mapped, self.config.mapping.voxel_size_m, lut)
        reidentify.refresh_lost(tracker, omap)
        for tid, track in tracker.tracks.items():
            omap.set_state(tid, track.state)
        for inst in omap.instances():
            if inst.id not in tracker.tracks:
                omap.remove(inst.id)

    def _cloud(self, grid: dict[str, np.ndarray], lut: np.ndarray) -> np.ndarray:
        pts = grid["points"]
        if len(pts) == 0:
            return np.zeros(0, CLOUD_DTYPE)
        idx = first_per_voxel(pts, self.config.mapping.voxel_size_m)
        limit = self.config.mapping.max_cloud_points
        if len(idx) > limit:
            rng = np.random.default_rng(self.seed + len(idx))
            idx = np.sort(rng.choice(idx, size=limit, replace=False))
        words = self.clusterer.pixels.pack_cloud_columns(pts[idx], grid["colors"][idx],
                                                         lut[grid["labels"][idx]].astype(np.uint32))
        return words.view(CLOUD_DTYPE).reshape(-1)  # the pack_cloud layout, packed where the pixel passes run
