"""The node's ROS-free parts: bounded queue, diagnostics aggregation, parameter rules, camera input, worker."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from iggt_ros.config import IggtConfig
from iggt_ros.messages import layouts as L
from iggt_ros.messages.message import Header
from iggt_ros.messages.tf_buffer import TransformBuffer
from iggt_ros.perception.warn_once import WarnOnce
from iggt_ros.ros.camera_input import CameraInputs, NumpyImageDecoder, PoseSource, rgb_from_pixels
from iggt_ros.ros.param_rules import apply_update, check_update, is_runtime_key
from iggt_ros.ros.runtime_stats import ERROR, OK, WARN, RuntimeStats
from iggt_ros.ros.work_queue import DropOldestQueue


# ------------------------------------------------------------------------------------------ queue
def test_queue_drops_the_oldest_and_counts():
    q: DropOldestQueue[int] = DropOldestQueue(2)
    assert q.put(1) is None and q.put(2) is None
    assert q.put(3) == 1
    assert q.put(4) == 2
    s = q.stats()
    assert (s.enqueued, s.dropped, s.depth, s.max_depth, s.capacity) == (4, 2, 2, 2, 2)
    assert q.get(0) == 3 and q.get(0) == 4
    assert q.get(0.01) is None
    assert q.stats().taken == 2


def test_queue_get_waits_for_a_producer_and_close_wakes_it():
    q: DropOldestQueue[str] = DropOldestQueue(1)
    threading.Timer(0.05, lambda: q.put("x")).start()
    assert q.get(2.0) == "x"
    got = []
    t = threading.Thread(target=lambda: got.append(q.get(5.0)))
    t.start()
    time.sleep(0.05)
    q.close()
    t.join(2.0)
    assert got == [None] and not t.is_alive()
    with pytest.raises(RuntimeError):
        q.put("y")


def test_queue_clear_and_capacity_check():
    q: DropOldestQueue[int] = DropOldestQueue(3)
    for i in range(3):
        q.put(i)
    assert q.clear() == 3 and len(q) == 0
    with pytest.raises(ValueError):
        DropOldestQueue(0)


# ------------------------------------------------------------------------------------------ diagnostics
def test_stats_report_latency_rate_and_drops_per_period():
    now = [100.0]
    stats = RuntimeStats("oracle", clock=lambda: now[0])
    stats.info["sync"] = "fallback"
    stats.record_window({"inference": 10.0, "publish": 2.0})
    stats.record_window({"inference": 30.0, "publish": 4.0})
    now[0] += 2.0
    q: DropOldestQueue[int] = DropOldestQueue(1)
    q.put(1)
    q.put(2)
    report = stats.report(q.stats())
    assert report.level == WARN and "1 windows dropped" in report.message
    v = report.values
    assert v["engine"] == "oracle" and v["sync"] == "fallback"
    assert v["latency_inference_ms"] == "20.00" and v["latency_inference_max_ms"] == "30.00"
    assert v["latency_publish_ms"] == "3.00"
    assert v["window_rate_hz"] == "1.000" and v["windows_dropped"] == "1" and v["queue_depth"] == "1"
    # next period: no new drops, no windows -> OK; latency still describes the recent windows
    now[0] += 1.0
    report = stats.report(q.stats())
    assert report.level == OK and report.values["latency_inference_ms"] == "20.00"
    assert report.values["windows_dropped"] == "1" and report.values["window_rate_hz"] == "0.000"
    stats.record_error("publishing failed")
    assert stats.report(q.stats()).level == ERROR
    short = RuntimeStats("e", clock=lambda: now[0], history=2)
    for ms in (100.0, 1.0, 3.0):
        short.record_window({"inference": ms})
    assert short.report().values["latency_inference_max_ms"] == "3.00", "only the most recent windows count"


# ------------------------------------------------------------------------------------------ parameters
def test_runtime_parameters_apply_in_place_and_unsafe_ones_are_refused():
    cfg = IggtConfig()
    tracking = cfg.tracking
    update = check_update(cfg, {"tracking.lost_windows": 5, "publish.depth": False, "clustering.min_samples": 3})
    assert update.successful, update.reason
    apply_update(cfg, update)
    assert cfg.tracking is tracking and tracking.lost_windows == 5
    assert cfg.publish.depth is False and cfg.clustering.min_samples == 3

    refused = check_update(cfg, {"input.cameras": ["a", "b"]})
    assert not refused.successful and "'input.cameras'" in refused.reason and "configure" in refused.reason
    assert not check_update(cfg, {"engine.backend": "tensorrt"}).successful
    assert not check_update(cfg, {"publish.diagnostics_period_s": 5.0}).successful
    invalid = check_update(cfg, {"tracking.min_match_score": 2.0})
    assert not invalid.successful and "'tracking.min_match_score'" in invalid.reason
    assert cfg.tracking.min_match_score == 0.3
    # setting a fixed key to its current value is not a change
    assert check_update(cfg, {"engine.backend": "torch", "input.compressed_cameras": [""]}).successful
    assert is_runtime_key("query.min_score") and not is_runtime_key("window.size")


# ------------------------------------------------------------------------------------------ camera input
def _image_msg(pixels: np.ndarray, encoding: str, stamp_ns: int = 5_000_000_123, frame: str = "cam_optical"):
    data = L.rgb_image(Header(stamp_ns, frame), pixels) if encoding == "rgb8" else None
    if data is None:
        arr = np.ascontiguousarray(pixels)
        channels = 1 if arr.ndim == 2 else arr.shape[2]
        data = L._image(Header(stamp_ns, frame), arr, encoding, channels, arr.dtype.str)
    f = data.fields
    header = SimpleNamespace(stamp=SimpleNamespace(sec=f["header"]["stamp"]["sec"],
                                                   nanosec=f["header"]["stamp"]["nanosec"]),
                             frame_id=f["header"]["frame_id"])
    return SimpleNamespace(header=header, height=f["height"], width=f["width"], encoding=f["encoding"],
                           is_bigendian=0, step=f["step"], data=np.asarray(f["data"]).tobytes())


def _info_msg(width: int, height: int, frame: str = "cam_optical"):
    k = [100.0, 0, width / 2, 0, 100.0, height / 2, 0, 0, 1]
    return SimpleNamespace(k=k, width=width, height=height, header=SimpleNamespace(frame_id=frame))


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8", "mono16", "16UC1"])
def test_decoded_colour_matches_the_shared_decoder(encoding):
    rng = np.random.default_rng(1)
    if encoding in ("rgb8", "bgr8"):
        pixels = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    elif encoding == "mono8":
        pixels = rng.integers(0, 255, (6, 8), dtype=np.uint8)
    else:
        pixels = rng.integers(0, 65535, (6, 8), dtype=np.uint16)
    msg = _image_msg(pixels, encoding)
    ours = NumpyImageDecoder().image(msg, "/cam/image_raw")
    assert ours.shape == (6, 8, 3) and ours.dtype == np.uint8
    np.testing.assert_array_equal(rgb_from_pixels(pixels, encoding), ours)
    if encoding == "bgr8":
        np.testing.assert_array_equal(ours, pixels[..., ::-1])


def test_camera_inputs_build_frames_and_warn_once_per_topic():
    warnings: list[str] = []
    inputs = CameraInputs(["cam"], NumpyImageDecoder(), warnings.append,
                          poses=lambda frame, stamp: np.eye(4) * (1 if frame == "cam_optical" else 0))
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[3:, 4:] = 200  # some structure: a flat image is dropped (no geometry)
    frame = inputs.frame("cam", _image_msg(rgb, "rgb8"), "/cam/image_raw")
    assert frame is not None and frame.intrinsics is None and frame.stamp_ns == 5_000_000_123
    assert len(warnings) == 1 and "no camera_info" in warnings[0]
    inputs.set_camera_info("cam", _info_msg(8, 6), "/cam/camera_info")
    frame = inputs.frame("cam", _image_msg(rgb, "rgb8"), "/cam/image_raw")
    assert frame.intrinsics[0, 0] == 100.0 and frame.frame_id == "cam_optical"
    np.testing.assert_array_equal(frame.world_from_camera, np.eye(4))
    bad = _image_msg(np.zeros((6, 8), np.float32), "32FC1")
    for _ in range(3):
        assert inputs.frame("cam", bad, "/cam/image_raw") is None
    decode = [w for w in warnings if "32FC1" in w]
    assert len(decode) == 1 and "/cam/image_raw" in decode[0]
    assert inputs.skipped == 3
    # camera_info for twice the image size (calibrated at full resolution): K is scaled to the image
    inputs.set_camera_info("cam", _info_msg(16, 12), "/cam/camera_info")
    k = inputs.frame("cam", _image_msg(rgb, "rgb8"), "/cam/image_raw").intrinsics
    assert k[0, 0] == 50.0 and k[2, 2] == 1.0
    assert sum("16x12" in w and "scaled" in w for w in warnings) == 1


@pytest.mark.parametrize("encoding", ["yuv422", "yuyv", "uyvy", "yuv422_yuy2"])
def test_usb_camera_yuv_frames_are_used(encoding):
    """Packed 4:2:2 (the usual USB camera output) gives frames instead of being skipped."""
    warnings: list[str] = []
    inputs = CameraInputs(["cam"], NumpyImageDecoder(), warnings.append)
    inputs.set_camera_info("cam", _info_msg(8, 6), "/cam/camera_info")
    grey = np.full((6, 8, 2), 128, np.uint8)  # Y = 128 and neutral chroma in either byte order
    grey[4:] = 200  # some structure below: a flat image is dropped (no geometry)
    frame = inputs.frame("cam", _image_msg(grey, encoding), "/cam/image_raw")
    assert frame is not None and inputs.skipped == 0 and not warnings
    assert frame.image.shape == (6, 8, 3) and np.abs(frame.image[:4].astype(int) - 130).max() <= 1


def test_warn_once_repeats_nothing_until_forgotten():
    lines: list[str] = []
    once = WarnOnce(lines.append)
    assert once("a", "first") and not once("a", "again") and once("b", "other")
    assert lines == ["first", "other"]
    once.forget("a")
    assert once("a", "back") and lines[-1] == "back"


def test_pose_source_waits_for_late_tf_and_reports_changes_once():
    buffer = TransformBuffer()
    said: list[str] = []
    poses = PoseSource(buffer.lookup, "odom", "iggt_map", timeout_s=0.5, info=said.append)
    assert PoseSource(buffer.lookup, "odom", "iggt_map", timeout_s=0.0, info=said.append)("cam", 10) is None
    assert len(said) == 1 and "iggt_map" in said[0]
    pose = np.eye(4)
    pose[0, 3] = 1.5
    threading.Timer(0.1, lambda: buffer.set_transform("odom", "cam", 10, pose)).start()
    got = poses("cam", 10)
    assert got is not None and got[0, 3] == 1.5
    assert "available" in said[-1]
    quick = PoseSource(buffer.lookup, "odom", "iggt_map", timeout_s=0.0, info=said.append)
    n = len(said)
    assert quick("other_frame", 10) is None and quick("other_frame", 11) is None
    assert len(said) == n + 1 and quick.failures == 2


# ------------------------------------------------------------------------------------------ worker
def test_worker_discards_windows_of_before_a_reset_and_publishes_the_new_ones():
    from iggt_ros.engine.oracle import OracleEngine
    from iggt_ros.perception.frames import CameraFrame, FrameSet
    from iggt_ros.perception.pipeline import Pipeline
    from iggt_ros.ros.worker import InferenceWorker
    from iggt_ros.synthetic.sequence import make_sequence

    seq = make_sequence(seed=2, num_steps=7, cameras=1, width=84, height=56, coverage=0.1, num_objects=3)
    cfg = IggtConfig().replace(**{"input.cameras": list(seq.rig.names), "input.image_width": 84,
                                  "input.image_height": 56, "window.size": 2, "window.stride": 1,
                                  "window.min_translation_m": 0.0, "window.min_rotation_deg": 0.0,
                                  "window.min_image_change": 0.0, "mapping.max_cloud_points": 1000})
    gate, entered = threading.Event(), threading.Event()

    class GatedOracle(OracleEngine):
        def infer(self, images, views=None):
            entered.set()
            gate.wait(30.0)
            return super().infer(images, views)

    pipeline = Pipeline(cfg, GatedOracle.from_sequence(seq, input_size=(56, 84)))

    def collect(steps):
        windows = []
        for step in steps:
            v = step[0]
            fs = FrameSet(int(v.stamp_ns), {v.camera: CameraFrame(v.camera, int(v.stamp_ns), v.rgb, v.intrinsics,
                                                                  "cam", v.world_from_camera)})
            w = pipeline.collect(fs).window
            if w is not None:
                windows.append(w)
        return windows

    windows = collect(seq.steps[:5])
    assert len(windows) == 4
    published: list = []
    stats = RuntimeStats("oracle")
    queue: DropOldestQueue = DropOldestQueue(2)
    worker = InferenceWorker(pipeline, queue, lambda r, w: published.append(w) or {}, stats)
    worker.start()
    queue.put(windows[0])
    assert entered.wait(10.0), "the worker took the first window"
    for w in windows[1:]:
        queue.put(w)  # one in flight, two waiting: windows[1] is dropped
    assert queue.stats().dropped == 1
    worker.discard_pending()  # a reset: the waiting windows go, the one in flight is stale
    pipeline.reset("test")
    assert len(queue) == 0
    (fresh,) = collect(seq.steps[5:])  # a new buffer: two keyframes give the first window of the new map
    queue.put(windows[3])  # collected before the reset: stale even though it reaches the queue after it
    queue.put(fresh)
    gate.set()
    deadline = time.monotonic() + 60
    while worker.processed + worker.discarded < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert worker.stop(10.0) and not worker.running
    assert worker.discarded == 2 and published == [fresh] and worker.processed == 1
    report = stats.report(queue.stats())
    assert report.values["windows_processed"] == "1" and "latency_inference_ms" in report.values


# ------------------------------------------------------------------------------------------ TF health
def test_tf_health_reports_lag_and_lookup_failures_per_period():
    from iggt_ros.ros.tf_health import TfHealth

    now = [10.0]
    health = TfHealth(lag_warn_s=0.1, clock=lambda: now[0])
    for lag_ms in (5, 7):
        health.record_message(1_000_000_000, 1_000_000_000 + lag_ms * 10**6)
    for _ in range(4):
        health.record_lookup(True)
    now[0] += 2.0
    report = health.report("iggt_map")
    assert report.level == OK, report.message
    assert report.values["tf_lag_ms"] == "6.0" and report.values["tf_lag_max_ms"] == "7.0"
    assert report.values["tf_lookup_failure_rate"] == "0.000"

    health.record_message(1_000_000_000, 2_500_000_000)  # 1.5 s late
    health.record_lookup(True)
    for _ in range(3):
        health.record_lookup(False, "extrapolation into the future")
    now[0] += 1.0
    report = health.report("iggt_map")
    v = report.values
    assert report.level == WARN
    assert v["tf_lookups"] == "8" and v["tf_lookup_failures"] == "3"
    assert v["tf_lookup_failure_rate"] == "0.750" and v["tf_lookup_failures_per_s"] == "3.000"
    assert v["tf_lag_max_ms"] == "1500.0"
    assert "3 of 4 camera pose lookups failed" in report.message and "'iggt_map'" in report.message
    assert "1.50 s" in report.message and "large_images:=true" in report.message
    assert "extrapolation" in report.message

    now[0] += 1.0
    quiet = health.report("iggt_map")
    assert quiet.level == OK and "tf_lag_ms" not in quiet.values, "a period without /tf shows no stale lag"
    assert quiet.values["tf_lookup_failures"] == "3", "totals stay"


def test_pose_source_reports_every_lookup_to_tf_health():
    from iggt_ros.ros.tf_health import TfHealth

    buffer = TransformBuffer()
    buffer.set_transform("odom", "cam", 10, np.eye(4))
    health = TfHealth(lag_warn_s=0.1)
    poses = PoseSource(buffer.lookup, "odom", "iggt_map", timeout_s=0.0, info=lambda _: None, health=health)
    assert poses("cam", 10) is not None and poses("other", 10) is None
    assert (health.lookups, health.failures) == (2, 1) and "other" in health.last_failure
