"""Synchronised multi-camera frame sets and the sliding window of keyframes fed to the engine.

Two stages, both free of ROS so that the node and the rosbag replay group frames identically:

* `ApproximateTimeSynchronizer` turns per-camera frames into `FrameSet`s. It follows the policy of
  message_filters' Python ApproximateTimeSynchronizer, so a bag replayed offline is grouped the way the
  node groups it live: every camera keeps a queue of at most ``queue_size`` frames keyed by stamp (a
  frame with an existing stamp replaces it, the oldest frame is dropped when the queue overflows). On
  each arrival, the frames of the other cameras whose stamps lie within ``slop`` of the new frame are
  ranked by their distance to it; candidate sets are visited in the order of the Cartesian product of
  those rankings (closest first), and the first set whose stamp spread is strictly below ``slop`` is
  emitted and removed from the queues. Older frames stay queued until they age out.
  One addition: a camera whose stamp goes backwards (a looped bag) drops the queued frames of the old
  sequence (those nearer its last stamp than its new one), because the oldest-first eviction would
  otherwise throw every new frame away and the synchroniser would stall; frames other cameras already
  sent in the new sequence stay, so the first set after the loop forms.
  A second: a `MissingFrame` (a camera's bad message, dropped) is queued like a frame and matched like
  one, and the set it completes holds the other cameras only. Without it, the other cameras' images of
  that time step would wait for a partner that never comes and age out: a bad image would cost its
  whole time step. A set of missing frames only is not emitted.

* `WindowBuffer` selects keyframes and emits windows of ``size`` time steps with ``stride`` new steps
  between consecutive windows, so consecutive windows share ``size - stride`` steps: the shared views
  are what tracking (mask IoU on the same pixels) and mapping (Sim(3) fit on the same points) use to
  connect windows. Memory is bounded by ``size`` frame sets.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from iggt_ros.config import WindowConfig
from iggt_ros.perception.frames import CameraFrame, FrameSet, MissingFrame

log = logging.getLogger(__name__)


class ApproximateTimeSynchronizer:
    """Groups frames of N cameras into `FrameSet`s (message_filters ApproximateTimeSynchronizer policy)."""

    def __init__(self, cameras: Sequence[str], queue_size: int = 10, slop_s: float = 0.05) -> None:
        if not cameras:
            raise ValueError("ApproximateTimeSynchronizer needs at least one camera")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if slop_s <= 0:
            raise ValueError(f"slop_s must be > 0 seconds, got {slop_s}")
        self.cameras = list(cameras)
        self.queue_size = int(queue_size)
        self.slop_ns = int(round(slop_s * 1e9))
        self._queues: dict[str, dict[int, CameraFrame | MissingFrame]] = {c: {} for c in self.cameras}
        self._last_stamp: dict[str, int] = {}
        self.emitted = 0
        self.incomplete = 0
        """Sets emitted without a camera whose message at that time was bad (`MissingFrame`)."""
        self.unknown_camera_frames = 0
        self.time_jumps = 0

    def reset(self) -> None:
        for q in self._queues.values():
            q.clear()
        self._last_stamp.clear()

    def _forget_old_sequence(self, last: int, stamp: int) -> int:
        """Drop the queued frames nearer the old sequence (`last`) than the new one (`stamp`).

        Cameras of a looped bag go back one after the other: frames another camera already sent in
        the new sequence stay queued, so the first set after the loop still forms.
        """
        dropped = 0
        for queue in self._queues.values():
            for s in [s for s in queue if abs(s - last) <= abs(s - stamp)]:
                del queue[s]
                dropped += 1
        return dropped

    def queued(self, camera: str) -> list[int]:
        """Stamps of the frames waiting in a camera's queue (oldest first); for diagnostics and tests."""
        return sorted(s for s, f in self._queues[camera].items() if isinstance(f, CameraFrame))

    def add(self, frame: CameraFrame | MissingFrame) -> FrameSet | None:
        """Queue one frame (or a camera's missing one); return the set it completes, if any."""
        queue = self._queues.get(frame.camera)
        if queue is None:
            self.unknown_camera_frames += 1
            log.warning("frame from camera '%s' ignored: not one of the configured cameras %s",
                        frame.camera, self.cameras)
            return None
        stamp = int(frame.stamp_ns)
        last = self._last_stamp.get(frame.camera)
        if last is not None and stamp < last:
            self.time_jumps += 1
            dropped = self._forget_old_sequence(last, stamp)
            log.warning("camera '%s' stamp went backwards from %.3f s to %.3f s (looped bag or restarted clock): "
                        "%d queued frames of the old sequence dropped", frame.camera, last * 1e-9, stamp * 1e-9,
                        dropped)
        self._last_stamp[frame.camera] = stamp
        queue[stamp] = frame
        while len(queue) > self.queue_size:
            del queue[min(queue)]
        if stamp not in queue:  # evicted itself: older than everything queued
            return None

        ranked: list[list[int]] = []
        for cam in self.cameras:
            if cam == frame.camera:
                ranked.append([stamp])
                continue
            near = [s for s in self._queues[cam] if abs(s - stamp) <= self.slop_ns]
            if not near:
                return None
            near.sort(key=lambda s: abs(s - stamp))
            ranked.append(near)
        for combo in itertools.product(*ranked):
            if max(combo) - min(combo) < self.slop_ns:
                taken = [self._queues[cam].pop(s) for cam, s in zip(self.cameras, combo, strict=True)]
                frames = {f.camera: f for f in taken if isinstance(f, CameraFrame)}
                if not frames:
                    return None
                self.emitted += 1
                if len(frames) < len(taken):
                    self.incomplete += 1
                return FrameSet(stamp_ns=int(next(iter(frames.values())).stamp_ns), frames=frames)
        return None


@dataclass
class Window:
    """S keyframe time steps of N cameras, ready for the engine."""

    index: int
    steps: list[FrameSet]
    new_steps: int
    """How many of the trailing steps were not in the previous window (all of them for the first)."""
    shared_steps: int = 0
    """How many leading steps the previous window also contained."""
    warnings: list[str] = field(default_factory=list)
    generation: int = 0
    """The pipeline's reset count when the window was collected (a window of an older one is stale)."""

    @property
    def stamp_ns(self) -> int:
        return self.steps[-1].stamp_ns

    def frames(self) -> list[CameraFrame]:
        """All views, time-major, cameras in the order of each frame set."""
        return [f for step in self.steps for f in step.frames.values()]


def _grey_thumbnail(image: np.ndarray, step: int = 8) -> np.ndarray:
    """Coarse grey image in [0, 1]; cheap enough to compare every incoming frame."""
    thumb = np.asarray(image)[::step, ::step]
    if thumb.ndim == 3:
        thumb = thumb[..., :3].mean(axis=-1)
    return thumb.astype(np.float32) / 255.0


def _rotation_angle_deg(r: np.ndarray) -> float:
    cos = (float(np.trace(r)) - 1.0) * 0.5
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


class WindowBuffer:
    """Keyframe selection and sliding windows (S steps x N cameras, stride between windows).

    A frame set becomes a keyframe when the reference camera (the first configured camera present)
    moved at least ``min_translation_m`` or ``min_rotation_deg`` since the last keyframe (when TF poses
    are present), otherwise when its coarse grey image changed by ``min_image_change``, and in any case
    after ``max_interval_s``. Time going backwards clears the buffer (and says so) so that a looped bag
    starts a fresh sequence instead of mixing the end of one loop with the start of the next.
    """

    def __init__(self, config: WindowConfig, cameras: Sequence[str]) -> None:
        self.config = config
        self.cameras = list(cameras)
        self._keyframes: deque[FrameSet] = deque(maxlen=config.size)
        self._last_stamp: int | None = None
        self._last_key_pose: np.ndarray | None = None
        self._last_key_thumb: np.ndarray | None = None
        self._last_key_stamp: int | None = None
        self._new_since_emit = 0
        self._emitted_any = False
        self._window_index = 0
        self.time_jumps = 0
        self.frames_seen = 0
        self.keyframes = 0
        self.incomplete_sets = 0
        self._warned_unknown: set[str] = set()

    def reset(self) -> None:
        self._keyframes.clear()
        self._last_stamp = None
        self._last_key_pose = None
        self._last_key_thumb = None
        self._last_key_stamp = None
        self._new_since_emit = 0
        self._emitted_any = False

    def push(self, frameset: FrameSet) -> Window | None:
        """Offer one synchronised frame set; return a window when one is complete."""
        if not frameset.frames:
            log.warning("empty frame set at %.3f s ignored (no camera frames)", frameset.stamp_ns * 1e-9)
            return None
        stamp = int(frameset.stamp_ns)
        if self._last_stamp is not None and stamp <= self._last_stamp:
            if stamp == self._last_stamp:
                log.debug("duplicate frame set at %.3f s ignored", stamp * 1e-9)
                return None
            self.time_jumps += 1
            log.warning("time went backwards from %.3f s to %.3f s (looped bag or restarted clock): window buffer "
                        "reset, %d buffered keyframes dropped (time jumps so far: %d)",
                        self._last_stamp * 1e-9, stamp * 1e-9, len(self._keyframes), self.time_jumps)
            self.reset()
        self._last_stamp = stamp
        self.frames_seen += 1
        unknown = [c for c in frameset.frames if c not in self.cameras]
        if unknown:
            fresh = [c for c in unknown if c not in self._warned_unknown]
            if fresh:
                self._warned_unknown.update(fresh)
                log.warning("frames of cameras %s are ignored: they are not in input.cameras %s (said once)",
                            fresh, self.cameras)
            frameset = FrameSet(stamp, {c: f for c, f in frameset.frames.items() if c in self.cameras})
            if not frameset.frames:
                return None
        else:  # keep the configured camera order whatever order the frames were inserted in
            frameset = FrameSet(stamp, {c: frameset.frames[c] for c in self.cameras if c in frameset.frames})
        missing = [c for c in self.cameras if c not in frameset.frames]
        if missing:
            self.incomplete_sets += 1
            log.warning("frame set at %.3f s misses cameras %s; the window will hold only the views present",
                        stamp * 1e-9, missing)

        if not self._is_keyframe(frameset):
            return None
        self._remember_keyframe(frameset)
        self._keyframes.append(frameset)
        self._new_since_emit += 1
        self.keyframes += 1
        cfg = self.config
        if len(self._keyframes) < cfg.size:
            return None
        if self._emitted_any and self._new_since_emit < cfg.stride:
            return None
        new_steps = cfg.size if not self._emitted_any else self._new_since_emit
        window = Window(index=self._window_index, steps=list(self._keyframes), new_steps=new_steps,
                        shared_steps=cfg.size - new_steps)
        for step in window.steps:
            missing = [c for c in self.cameras if c not in step.frames]
            if missing:
                window.warnings.append(f"step at {step.stamp_ns * 1e-9:.3f} s misses cameras {missing}")
        self._window_index += 1
        self._new_since_emit = 0
        self._emitted_any = True
        return window

    def held(self) -> list[FrameSet]:
        """The keyframe steps buffered now (the next window holds them, or the newest of them)."""
        return list(self._keyframes)

    # ------------------------------------------------------------------ keyframes
    def _reference(self, frameset: FrameSet) -> CameraFrame:
        for cam in self.cameras:
            if cam in frameset.frames:
                return frameset.frames[cam]
        return next(iter(frameset.frames.values()))

    def _remember_keyframe(self, frameset: FrameSet) -> None:
        ref = self._reference(frameset)
        self._last_key_stamp = frameset.stamp_ns
        self._last_key_pose = None if ref.world_from_camera is None else np.asarray(ref.world_from_camera, float)
        self._last_key_thumb = _grey_thumbnail(ref.image)

    def _is_keyframe(self, frameset: FrameSet) -> bool:
        if self._last_key_stamp is None:
            return True
        cfg = self.config
        if (frameset.stamp_ns - self._last_key_stamp) * 1e-9 >= cfg.max_interval_s:
            return True
        ref = self._reference(frameset)
        if ref.world_from_camera is not None and self._last_key_pose is not None:
            pose = np.asarray(ref.world_from_camera, float)
            moved = float(np.linalg.norm(pose[:3, 3] - self._last_key_pose[:3, 3]))
            turned = _rotation_angle_deg(self._last_key_pose[:3, :3].T @ pose[:3, :3])
            return moved >= cfg.min_translation_m or turned >= cfg.min_rotation_deg
        thumb = _grey_thumbnail(ref.image)
        if self._last_key_thumb is None or thumb.shape != self._last_key_thumb.shape:
            return True
        return float(np.abs(thumb - self._last_key_thumb).mean()) >= cfg.min_image_change
