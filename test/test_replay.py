"""Replay end to end on small synthetic bags with the ground-truth oracle: the output bag read back with rosbags."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from iggt_ros import cli
from iggt_ros.apps.replay import ReplaySummary, default_report_dir, replay_bag
from iggt_ros.apps.replay_truth import TruthStore
from iggt_ros.bag.reader import CameraImage
from iggt_ros.bag.sample import SampleBagSpec, write_sample_bag
from iggt_ros.bag.typestore import typestore
from iggt_ros.config import IggtConfig
from iggt_ros.engine.base import ViewKey
from iggt_ros.messages import layouts as L
from iggt_ros.messages.message import stamp_ns
from iggt_ros.spatial import umeyama_sim3
from iggt_ros.vlm.state import load_query_state

W, H = 252, 168
FRAMES = 16


def oracle_config(width: int = W, height: int = H, **overrides) -> IggtConfig:
    """The oracle at a small model size; masks below 40 px (150 at 504x336, scaled by area) are dropped."""
    return IggtConfig().replace(**{"engine.backend": "oracle", "input.image_width": width,
                                   "input.image_height": height, "clustering.min_instance_area_px": 40,
                                   **overrides})


def read_bag(path: Path) -> dict[str, list[tuple[int, object]]]:
    """topic -> [(record time, deserialised message)] in bag order."""
    store = typestore()
    out: dict[str, list] = defaultdict(list)
    with Reader(path) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        for conn, t, raw in reader.messages():
            out[conn.topic].append((t, store.deserialize_cdr(raw, conn.msgtype)))
        assert types  # the bag has its metadata
        out["__types__"] = [(0, types)]
    return out


@pytest.fixture(scope="module")
def mcap_run(tmp_path_factory) -> tuple[Path, ReplaySummary, dict]:
    root = tmp_path_factory.mktemp("replay_mcap")
    write_sample_bag(root / "in", SampleBagSpec(seed=0, frames=FRAMES, width=W, height=H))
    summary = replay_bag(root / "in", root / "out", oracle_config(**{"publish.colorized_instance_images": True}))
    return root, summary, read_bag(root / "out")


def test_every_output_topic_is_in_the_bag_with_its_type(mcap_run):
    _, summary, bag = mcap_run
    types = bag["__types__"][0][1]
    assert summary.stopped == "" and not summary.truncated
    assert summary.engine == "oracle" and summary.oracle
    assert types == {
        "/front/image_raw": "sensor_msgs/msg/Image", "/front/camera_info": "sensor_msgs/msg/CameraInfo",
        "/tf": "tf2_msgs/msg/TFMessage", "/tf_static": "tf2_msgs/msg/TFMessage",
        "/iggt/points": "sensor_msgs/msg/PointCloud2",
        "/iggt/instances": "iggt_ros/msg/InstanceArray", "/iggt/detections": "vision_msgs/msg/Detection3DArray",
        "/iggt/markers": "visualization_msgs/msg/MarkerArray", "/iggt/instance_image/front": "sensor_msgs/msg/Image",
        "/iggt/instance_image/front/colorized": "sensor_msgs/msg/Image", "/iggt/depth/front": "sensor_msgs/msg/Image"}
    assert summary.images_read == FRAMES and len(bag["/front/image_raw"]) == FRAMES
    assert summary.windows >= 2
    assert 0 < summary.first_window_s <= summary.wall_s
    assert summary.process_age_at_first_window_s >= summary.first_window_s, "the process started before the replay"
    assert any(line.startswith("first window") for line in summary.headline())
    for topic in ("/iggt/points", "/iggt/instances", "/iggt/detections", "/iggt/markers"):
        assert len(bag[topic]) == summary.windows
    # each output view once, on every per-view topic
    for topic in ("/iggt/instance_image/front", "/iggt/instance_image/front/colorized", "/iggt/depth/front"):
        stamps = [stamp_ns(m.header.stamp) for _, m in bag[topic]]
        assert len(stamps) == summary.views == len(set(stamps))
    assert {k: len(v) for k, v in bag.items() if k != "__types__"} == summary.output_counts
    times = [t for msgs in bag.values() for t, _ in msgs if t]
    assert min(times) > 0


def test_headers_frames_and_layouts(mcap_run):
    _, _, bag = mcap_run
    input_stamps = {stamp_ns(m.header.stamp) for _, m in bag["/front/image_raw"]}
    for topic, encoding in (("/iggt/instance_image/front", "16UC1"), ("/iggt/depth/front", "32FC1"),
                            ("/iggt/instance_image/front/colorized", "rgb8")):
        for _, msg in bag[topic]:
            assert msg.header.frame_id == "front_optical_frame"
            assert stamp_ns(msg.header.stamp) in input_stamps
            assert (msg.encoding, msg.height, msg.width) == (encoding, H, W)  # the source size
    for _, msg in bag["/front/camera_info"]:
        assert (msg.height, msg.width) == (H, W)
    for topic in ("/iggt/points", "/iggt/instances", "/iggt/detections"):
        for _, msg in bag[topic]:
            assert msg.header.frame_id == "odom"
    for _, msg in bag["/iggt/points"]:
        assert [(f.name, f.offset, f.datatype) for f in msg.fields] == [
            ("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("rgb", 12, 7), ("label", 16, 6)]
        assert msg.point_step == 20 and msg.height == 1 and msg.width > 100
    for _, msg in bag["/tf"]:
        (tf,) = msg.transforms
        assert tf.header.frame_id == "odom" and tf.child_frame_id == "front_optical_frame"
    # every window's stamp is one of its newest views' stamps
    for _, msg in bag["/iggt/instances"]:
        assert stamp_ns(msg.header.stamp) in input_stamps


def test_ids_agree_between_cloud_images_instances_and_markers(mcap_run):
    _, _, bag = mcap_run
    by_time: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for topic in ("/iggt/points", "/iggt/instances", "/iggt/markers", "/iggt/detections",
                  "/iggt/instance_image/front"):
        for t, msg in bag[topic]:
            by_time[t][topic].append(msg)
    seen_any = False
    for t, msgs in by_time.items():
        instances = msgs["/iggt/instances"][0].instances
        ids = {i.id for i in instances}
        live = {i.id for i in instances if i.state != L.STATE_LOST}
        labels = set(np.unique(L.read_points(msgs["/iggt/points"][0])["label"]).tolist()) - {0}
        assert labels <= ids, t
        for img in msgs["/iggt/instance_image/front"]:
            pixel_ids = set(np.unique(np.frombuffer(img.data, np.uint16)).tolist()) - {0}
            assert pixel_ids <= ids
            seen_any |= bool(pixel_ids)
        markers = msgs["/iggt/markers"][0].markers
        added = {m.id for m in markers if m.action == L.MARKER_ADD and m.ns == L.BOX_NAMESPACE}
        assert added == live
        assert {int(d.id) for d in msgs["/iggt/detections"][0].detections} == live
    assert seen_any


def test_oracle_metrics_report_and_query_state(mcap_run):
    root, summary, _ = mcap_run
    report = summary.report
    assert report is not None and report.out_dir == default_report_dir(root / "out")
    metrics = json.loads(report.metrics_json.read_text())
    assert metrics["engine"] == "oracle" and metrics["oracle"] is True
    assert metrics["num_views"] == summary.views and metrics["num_windows"] == summary.windows
    assert metrics["instances"]["t_miou"] > 0.75
    assert metrics["depth"]["abs_rel"] < 0.02
    # the bag has TF: depth is published in metres, so it scores as well without rescaling
    assert metrics["num_metric_windows"] == summary.windows
    assert metrics["depth_published"]["abs_rel"] < 0.02 and abs(metrics["depth_published"]["ratio"] - 1) < 0.01
    assert any("depth as published" in line for line in summary.headline())
    assert metrics["pose"]["num_poses"] == summary.views and metrics["pose"]["ate_rmse"] < 0.05
    for png in report.plots.values():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    state = load_query_state(root / "out")
    assert state.frame_id == "odom" and state.instances
    assert state.embedding_space and sum(i.embedding is not None for i in state.instances) >= len(state.instances) // 2


def test_sqlite3_bag_two_cameras_paced_through_the_command_line(tmp_path, capsys):
    w, h = 168, 112
    write_sample_bag(tmp_path / "in", SampleBagSpec(seed=3, cameras=2, frames=12, width=w, height=h,
                                                    storage="sqlite3"))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"iggt_node:\n  ros__parameters:\n    input:\n      image_width: {w}\n      image_height: {h}\n"
                   "    window:\n      size: 4\n      stride: 2\n    query:\n      region_encoder: none\n")
    started = time.monotonic()
    rc = cli.main(["replay", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--config", str(cfg),
                   "--engine", "oracle", "--rate", "4", "--no-progress", "--report", str(tmp_path / "rep")])
    took = time.monotonic() - started
    out = capsys.readouterr().out
    assert rc == 0, out
    assert took >= 1.1 / 4  # 12 frames at 10 Hz span 1.1 s of bag time
    assert "T-mIoU" in out and str(tmp_path / "rep" / "summary.md") in out
    bag = read_bag(tmp_path / "out")
    for cam in ("front_left", "front_right"):
        assert len(bag[f"/{cam}/image_raw"]) == 12
        msgs = bag[f"/iggt/instance_image/{cam}"]
        assert msgs and all(m.header.frame_id == f"{cam}_optical_frame" for _, m in msgs)
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert metrics["num_views"] == 2 * 12 and metrics["instances"]["num_views"] == 2 * 12


def test_truth_store_keeps_only_the_views_the_pipeline_still_holds():
    from iggt_ros.bag.reader import GroundTruthImage
    from iggt_ros.perception.pipeline import Pipeline

    config = oracle_config(**{"input.cameras": ["front"], "window.size": 3, "window.stride": 1,
                              "window.min_translation_m": 0.0,
                              "window.min_rotation_deg": 0.0, "window.min_image_change": 0.0})
    pipeline = Pipeline(config, engine=None)  # collecting frames never runs the engine
    store = TruthStore(window_size=3, cameras=1, sync_queue_size=2)
    rgb = np.zeros((4, 6, 3), np.uint8)
    for stamp in range(1, 10):
        image = CameraImage("front", "/front/image_raw", stamp, stamp, "front_optical_frame", rgb, np.eye(3))
        store.add_image(image)
        pipeline.add_frame(image.to_frame())
        store.keep_only(pipeline.held_views())
    assert [t for t in range(10) if store.get(ViewKey("front", t))] == [7, 8, 9]  # the buffered keyframes
    # ground truth read ahead of its image is kept until the image has been offered
    store.add_ground_truth(GroundTruthImage("front", "depth", 10, "front_optical_frame", np.ones((4, 6), np.float32)))
    store.keep_only(pipeline.held_views())
    assert store.get(ViewKey("front", 10)) is not None
    store.add_image(CameraImage("front", "/front/image_raw", 10, 10, "front_optical_frame", rgb, np.eye(3)))
    with pytest.raises(KeyError, match="no ground-truth instances, pose"):
        store.rendered_view(ViewKey("front", 10))
    for stamp in range(11, 11 + 2 * store.max_views):  # truth whose image never comes: the cap bounds it
        store.add_ground_truth(GroundTruthImage("front", "depth", stamp, "f", np.ones((4, 6), np.float32)))
    assert len(store) == store.max_views


# ---------------------------------------------------------------------- TF late and dropping out, embedded model
LATE_TF = SampleBagSpec(seed=0, frames=60, width=W, height=H, tf_start_s=2.0, tf_gaps=((4.0, 1.0),))
"""/tf from 2 s on (the first 20 images have no pose), missing again from 4 s to 5 s."""


@pytest.fixture(scope="module")
def late_tf_run(tmp_path_factory) -> tuple[ReplaySummary, dict, list]:
    root = tmp_path_factory.mktemp("late_tf")
    write_sample_bag(root / "in", LATE_TF)
    summary = replay_bag(root / "in", root / "out", IggtConfig().replace(**{"engine.backend": "torch"}))
    truth = read_bag(root / "in")["/gt/objects"][-1][1]
    return summary, read_bag(root / "out"), L.read_instances(truth)


def output_frames(bag: dict) -> dict[int, set[str]]:
    """Record time -> every frame the map outputs published then (points, instances, detections, markers)."""
    frames: dict[int, set[str]] = defaultdict(set)
    for topic in ("/iggt/points", "/iggt/instances", "/iggt/detections"):
        for t, msg in bag[topic]:
            frames[t].add(msg.header.frame_id)
    for t, msg in bag["/iggt/markers"]:
        frames[t] |= {m.header.frame_id for m in msg.markers if m.action != 3}  # DELETEALL carries no pose
    return frames


@pytest.mark.slow
def test_late_tf_replay_never_mixes_frames(late_tf_run):
    """The embedded model on a bag whose TF comes 2 s late and drops out for 1 s: every window's messages
    share one frame, iggt_map until TF has settled, then odom for good (the dropout stays in odom); the
    replay reports the move and the windows without TF."""
    summary, bag, _ = late_tf_run
    assert summary.engine.startswith("torch") and not summary.stopped and summary.windows >= 10
    frames = output_frames(bag)
    assert all(len(f) == 1 for f in frames.values()), frames
    sequence = [next(iter(frames[t])) for t in sorted(frames)]
    switch = sequence.index("odom")
    assert sequence == ["iggt_map"] * switch + ["odom"] * (len(sequence) - switch) and switch >= 4, sequence
    assert summary.reexpressions == 1 and summary.tf_dropout_windows >= 1
    assert any("TF: map moved into the TF world frame 1 time(s)" in line for line in summary.headline())
    # nothing kept its iggt_map coordinates in odom: the instances the moving window did not see moved by one
    # common similarity (model units to metres), not left where they were
    before = {i.id: i for i in L.read_instances(bag["/iggt/instances"][switch - 1][1])}
    after = {i.id: i for i in L.read_instances(bag["/iggt/instances"][switch][1])}
    kept = [i for i in before if i in after and before[i].last_seen_ns == after[i].last_seen_ns]
    assert len(kept) >= 3
    src, dst = np.array([before[i].centroid for i in kept]), np.array([after[i].centroid for i in kept])
    s, r, t = umeyama_sim3(src, dst)
    assert np.linalg.norm(s * src @ r.T + t - dst, axis=1).max() < 0.05
    assert abs(s - 1.0) > 0.05 or np.linalg.norm(t) > 0.1
    final = bag["/iggt/instances"][-1][1]
    assert final.header.frame_id == "odom" and len(final.instances) > 0


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="embedded tiny model: its masks follow objects better, but its coarse depth "
                   "places the final instances off the objects; measured 3 of 12 final instances within 0.25 m on "
                   "this bag, median 0.37 m (before the twin split's cube grid: 3 of 14, 0.33 m; its 60-minute copy: "
                   "3 of 14, 0.32 m; the 10x6-token weights: 3 of 15, 0.66 m). "
                   "The oracle holds the criterion: "
                   "test_perception_pipeline.py::test_late_tf_and_a_dropout_never_mix_frames")
def test_late_tf_replay_final_instances_lie_on_true_objects(late_tf_run):
    _, bag, truth = late_tf_run
    centres = np.array([i.centroid for i in truth])
    final = L.read_instances(bag["/iggt/instances"][-1][1])
    errors = sorted(float(np.linalg.norm(centres - i.centroid, axis=1).min()) for i in final)
    print(f"{sum(e < 0.25 for e in errors)} of {len(errors)} final instances within 0.25 m of a true object; "
          f"median distance {np.median(errors):.3f} m")
    assert errors[-1] < 0.25
