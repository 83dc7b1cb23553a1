"""Approximate-time synchronisation and the sliding keyframe window."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from iggt_ros.config import WindowConfig
from iggt_ros.perception.frames import CameraFrame, FrameSet
from iggt_ros.perception.window import ApproximateTimeSynchronizer, WindowBuffer

MS = 1_000_000


def frame(camera: str, t_ms: float, image: np.ndarray | None = None, pose: np.ndarray | None = None) -> CameraFrame:
    img = np.zeros((16, 16, 3), np.uint8) if image is None else image
    return CameraFrame(camera, int(round(t_ms * MS)), img, None, f"{camera}_optical", pose)


def stamps(fs: FrameSet) -> dict[str, float]:
    return {c: f.stamp_ns / MS for c, f in fs.frames.items()}


# ---------------------------------------------------------------------- synchroniser
def test_sync_emits_complete_set_within_slop():
    sync = ApproximateTimeSynchronizer(["a", "b"], queue_size=10, slop_s=0.05)
    assert sync.add(frame("a", 100)) is None
    out = sync.add(frame("b", 120))
    assert out is not None and stamps(out) == {"a": 100, "b": 120}
    assert out.stamp_ns == 100 * MS  # the first camera's stamp
    assert sync.queued("a") == [] and sync.queued("b") == []


def test_sync_spread_must_be_strictly_below_slop():
    sync = ApproximateTimeSynchronizer(["a", "b"], queue_size=10, slop_s=0.05)
    sync.add(frame("a", 100))
    assert sync.add(frame("b", 150)) is None  # |delta| == slop: a candidate, but the spread is not < slop
    assert sync.queued("a") == [100 * MS] and sync.queued("b") == [150 * MS]


def test_sync_picks_the_closest_candidate_to_the_new_frame():
    sync = ApproximateTimeSynchronizer(["a", "b"], queue_size=10, slop_s=0.05)
    sync.add(frame("a", 100))
    sync.add(frame("a", 130))
    out = sync.add(frame("b", 125))
    assert stamps(out) == {"a": 130, "b": 125}
    assert sync.queued("a") == [100 * MS]  # older unmatched frames stay queued until evicted


def test_sync_three_cameras_first_consistent_combination_in_rank_order():
    sync = ApproximateTimeSynchronizer(["a", "b", "c"], queue_size=10, slop_s=0.05)
    sync.add(frame("a", 100))
    sync.add(frame("a", 160))
    sync.add(frame("b", 110))
    # candidates for a near 140: 160 (20 ms) then 100 (40 ms); b: 110. (160, 110, 140) spreads 50 ms: rejected;
    # (100, 110, 140) spreads 40 ms: emitted although 160 is closer to the new frame
    out = sync.add(frame("c", 140))
    assert stamps(out) == {"a": 100, "b": 110, "c": 140}


def test_sync_queue_size_evicts_oldest():
    sync = ApproximateTimeSynchronizer(["a", "b"], queue_size=2, slop_s=0.01)
    for t in (100, 200, 300):
        sync.add(frame("a", t))
    assert sync.queued("a") == [200 * MS, 300 * MS]
    assert sync.add(frame("b", 101)) is None  # its partner was evicted
    assert stamps(sync.add(frame("b", 201))) == {"a": 200, "b": 201}


def test_sync_same_stamp_replaces():
    sync = ApproximateTimeSynchronizer(["a", "b"], queue_size=5, slop_s=0.01)
    first = frame("a", 100)
    second = frame("a", 100, image=np.ones((16, 16, 3), np.uint8))
    sync.add(first)
    sync.add(second)
    out = sync.add(frame("b", 100))
    assert out.frames["a"] is second


def test_sync_unknown_camera_and_time_backwards(caplog):
    sync = ApproximateTimeSynchronizer(["a", "b"], queue_size=5, slop_s=0.01)
    with caplog.at_level(logging.WARNING):
        assert sync.add(frame("zzz", 100)) is None
        assert "not one of the configured cameras" in caplog.text
        sync.add(frame("a", 500))
        sync.add(frame("a", 100))  # looped bag
    assert "went backwards" in caplog.text and sync.time_jumps == 1
    assert sync.queued("a") == [100 * MS]
    assert stamps(sync.add(frame("b", 102))) == {"a": 100, "b": 102}


def test_sync_rejects_bad_parameters():
    with pytest.raises(ValueError):
        ApproximateTimeSynchronizer([], 10, 0.1)
    with pytest.raises(ValueError):
        ApproximateTimeSynchronizer(["a"], 0, 0.1)
    with pytest.raises(ValueError):
        ApproximateTimeSynchronizer(["a"], 10, 0.0)


# ---------------------------------------------------------------------- window buffer
def no_motion_config(**kw) -> WindowConfig:
    base = dict(size=4, stride=2, min_translation_m=0.0, min_rotation_deg=0.0, min_image_change=0.0,
                max_interval_s=10.0)
    base.update(kw)
    return WindowConfig(**base)


def test_windows_share_size_minus_stride_steps():
    buf = WindowBuffer(no_motion_config(), ["a"])
    windows = [w for t in range(10) if (w := buf.push(FrameSet(t * 100 * MS, {"a": frame("a", t * 100)}))) is not None]
    assert [[s.stamp_ns // (100 * MS) for s in w.steps] for w in windows] == [[0, 1, 2, 3], [2, 3, 4, 5],
                                                                              [4, 5, 6, 7], [6, 7, 8, 9]]
    assert windows[0].new_steps == 4 and windows[0].shared_steps == 0
    assert all(w.new_steps == 2 and w.shared_steps == 2 for w in windows[1:])
    assert [w.index for w in windows] == [0, 1, 2, 3]
    assert len(buf._keyframes) <= 4  # bounded memory


def pose(x: float, yaw_deg: float = 0.0) -> np.ndarray:
    out = np.eye(4)
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    out[:2, :2] = [[c, -s], [s, c]]
    out[0, 3] = x
    return out


def test_keyframes_from_tf_motion():
    cfg = no_motion_config(size=2, stride=1, min_translation_m=0.1, min_rotation_deg=10.0)
    buf = WindowBuffer(cfg, ["a"])
    for t, p in enumerate([pose(0), pose(0.05), pose(0.12), pose(0.13, 12.0), pose(0.14, 13.0)]):
        buf.push(FrameSet(t * 100 * MS, {"a": frame("a", t * 100, pose=p)}))
    assert buf.keyframes == 3  # 0 (first), 0.12 m moved, 12 deg turned


def test_keyframes_from_image_change_and_time():
    cfg = no_motion_config(size=2, stride=1, min_image_change=0.1, max_interval_s=0.35)
    buf = WindowBuffer(cfg, ["a"])
    dark = np.zeros((32, 32, 3), np.uint8)
    bright = np.full((32, 32, 3), 128, np.uint8)
    images = [dark, dark, bright, bright, bright, bright, bright]
    for t, img in enumerate(images):
        buf.push(FrameSet(t * 100 * MS, {"a": frame("a", t * 100, image=img)}))
    # 0 first, 200 ms image change, 550 ms would be next by time: 600 ms qualifies (>= 350 ms after 200)
    assert buf.keyframes == 3


def test_time_backwards_resets_buffer_with_message(caplog):
    buf = WindowBuffer(no_motion_config(), ["a"])
    for t in range(3):
        buf.push(FrameSet(t * 100 * MS, {"a": frame("a", t * 100)}))
    with caplog.at_level(logging.WARNING):
        assert buf.push(FrameSet(50 * MS, {"a": frame("a", 50)})) is None
    assert "time went backwards" in caplog.text and "reset" in caplog.text
    assert buf.time_jumps == 1 and len(buf._keyframes) == 1
    windows = [buf.push(FrameSet((60 + t) * MS, {"a": frame("a", 60 + t)})) for t in range(3)]
    assert windows[-1] is not None and windows[-1].index == 0  # a fresh sequence


def test_missing_camera_keeps_present_views_and_says_so(caplog):
    buf = WindowBuffer(no_motion_config(size=2, stride=2), ["a", "b"])
    buf.push(FrameSet(0, {"a": frame("a", 0), "b": frame("b", 0)}))
    with caplog.at_level(logging.WARNING):
        window = buf.push(FrameSet(100 * MS, {"b": frame("b", 100)}))
    assert "misses cameras ['a']" in caplog.text
    assert [f.camera for f in window.frames()] == ["a", "b", "b"]
    assert window.warnings and "misses cameras" in window.warnings[0]


def test_empty_frameset_is_ignored(caplog):
    buf = WindowBuffer(no_motion_config(), ["a"])
    with caplog.at_level(logging.WARNING):
        assert buf.push(FrameSet(0, {})) is None
    assert "empty frame set" in caplog.text and buf.frames_seen == 0
